"""Precise BatchNormalization statistics against NumPy moments of Keras' own training-mode activations."""

import numpy as np
import pytest

import keras

from keras_effconv.training.precise_bn import PreciseBatchNormalization
from keras_effconv.training.precise_bn import recompute_batchnorm_statistics


def _images(count=24, size=8, channels=3, seed=0):
    return np.random.default_rng(seed).normal(1.5, 2.0, (count, size, size, channels)).astype("float32")


def _two_bn_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(5, 3, padding="same", name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def _moments(values):
    values = np.asarray(values, dtype="float64").reshape(-1, values.shape[-1])
    return values.mean(axis=0), values.var(axis=0)


def test_statistics_equal_the_moments_of_the_training_mode_activations():
    keras.utils.set_random_seed(1)
    model = _two_bn_model()
    images = _images()
    # One batch holding every image: the layer inputs of a training-mode call on it are the reference.
    conv1 = keras.Model(model.input, model.get_layer("conv1").output)(images, training=True)
    conv2 = keras.Model(model.input, model.get_layer("conv2").output)(images, training=True)
    updated = recompute_batchnorm_statistics(model, keras_batches(images, len(images)))
    assert updated == 2
    for name, activations in (("bn1", conv1), ("bn2", conv2)):
        mean, variance = _moments(keras.ops.convert_to_numpy(activations))
        layer = model.get_layer(name)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance), variance, rtol=1e-4, atol=1e-5)


def keras_batches(images, batch_size):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(images).batch(batch_size)


def test_population_statistics_over_several_batches():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    outputs = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, outputs)
    images = _images(30)
    conv = keras.ops.convert_to_numpy(keras.Model(inputs, x)(images))
    recompute_batchnorm_statistics(model, keras_batches(images, 8))  # 8 + 8 + 8 + 6 images
    mean, variance = _moments(conv)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean), mean, rtol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.get_layer("bn").moving_variance), variance, rtol=1e-4)


def test_channels_first_nested_and_frozen_layers():
    keras.utils.set_random_seed(3)
    inner = keras.Sequential(
        [keras.Input((3, 8, 8)), keras.layers.Conv2D(4, 3, data_format="channels_first"),
         keras.layers.BatchNormalization(axis=1, name="inner_bn")],
        name="inner",
    )
    inputs = keras.Input((3, 8, 8))
    frozen = keras.layers.BatchNormalization(axis=1, name="frozen")
    frozen.trainable = False
    outputs = inner(frozen(inputs))
    model = keras.Model(inputs, outputs)
    frozen_before = [keras.ops.convert_to_numpy(v) for v in frozen.non_trainable_weights]
    images = np.moveaxis(_images(16), -1, 1)
    assert recompute_batchnorm_statistics(model, keras_batches(images, 16)) == 1
    for before, after in zip(frozen_before, frozen.non_trainable_weights):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))
    conv = keras.ops.convert_to_numpy(inner.layers[0](frozen(images, training=False)))
    mean = np.moveaxis(conv, 1, -1).reshape(-1, 4).mean(axis=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(inner.get_layer("inner_bn").moving_mean), mean, rtol=1e-4, atol=1e-6)


def test_non_finite_statistics_leave_the_model_unchanged():
    model = _two_bn_model()
    before = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_weights]
    images = _images()
    images[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite statistics"):
        recompute_batchnorm_statistics(model, keras_batches(images, 8))
    for value, variable in zip(before, model.non_trainable_weights):
        np.testing.assert_array_equal(value, keras.ops.convert_to_numpy(variable))


def test_model_without_batchnorm_is_untouched():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert recompute_batchnorm_statistics(model, np.zeros((2, 4), "float32")) == 0


def test_callback_sets_the_statistics_before_validation():
    keras.utils.set_random_seed(4)
    model = _two_bn_model()
    images = _images(32)
    labels = keras.utils.to_categorical(np.arange(32) % 3, 3)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            seen.append(keras.ops.convert_to_numpy(self.model.get_layer("bn1").moving_mean).copy())

    model.fit(images, labels, batch_size=8, epochs=1, validation_data=(images, labels), verbose=0,
              callbacks=[PreciseBatchNormalization(keras_batches(images, 32)), Record()])
    conv1 = keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer("conv1").output)(images))
    np.testing.assert_allclose(seen[0], _moments(conv1)[0], rtol=1e-4, atol=1e-5)
