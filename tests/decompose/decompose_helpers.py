"""Shared helpers of the decomposition tests (imported, not a conftest)."""

import functools

import numpy as np

import keras

import reference


def dense_from_depthwise(dw_kernel, pw_kernel):
    """Dense `(kh, kw, M, N)` kernel of DepthwiseConv2D(dw_kernel) -> 1x1 Conv2D(pw_kernel).

    Written from Keras' documented channel order (output m * r + j of the
    depthwise conv is input channel m with kernel j), independently of the
    package's own reshapes.
    """
    kh, kw, m, r = dw_kernel.shape
    n = pw_kernel.shape[-1]
    dense = np.zeros((kh, kw, m, n))
    for c in range(m):
        for j in range(r):
            dense[:, :, c, :] += dw_kernel[:, :, c, j][:, :, None] * pw_kernel[0, 0, c * r + j][None, None, :]
    return dense


def per_channel_singular_values(kernel):
    kh, kw, m, n = kernel.shape
    return np.stack(
        [np.linalg.svd(kernel[:, :, c, :].reshape(kh * kw, n), compute_uv=False) for c in range(m)]
    )


def analytic_macs(model):
    """MACs of one sample: conv / depthwise / dense layers, from each layer's output shape.

    Deliberately independent of keras_effconv.decompose (flat models only).
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            out = layer.output.shape
            spatial = out[1:3] if layer.data_format == "channels_last" else out[2:4]
            total += int(np.prod(spatial)) * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Conv2D):
            out = layer.output.shape
            spatial = out[1:3] if layer.data_format == "channels_last" else out[2:4]
            total += int(np.prod(spatial)) * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def weights_snapshot(model):
    return [np.array(reference.to_numpy(w)) for w in model.weights]


@functools.cache
def trained_cnn():
    """A small CNN trained for 300 steps on real Fashion-MNIST (cached per process).

    Returns `(model, x_fit, x_heldout)`: 512 training images for the
    data-driven fits and 500 test images never seen by training or fitting.
    The network ends with logits (no softmax) so errors are on a linear scale.
    """
    from keras_effconv.datasets import fashion_mnist

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, _) = fashion_mnist()
    x_train = x_train[:9600, :, :, None].astype("float32") / 255.0
    y_train = y_train[:9600]
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, batch_size=32, epochs=1, verbose=0)  # 300 steps
    x_heldout = x_test[:500, :, :, None].astype("float32") / 255.0
    return model, x_train[:512], x_heldout


def relative_output_error(model, new_model, x):
    y = reference.to_numpy(model(x))
    y_hat = reference.to_numpy(new_model(x))
    return np.linalg.norm(y - y_hat) / np.linalg.norm(y)
