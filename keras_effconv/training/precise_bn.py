"""Precise BatchNormalization statistics: recomputed on training images after training.

Keras' `BatchNormalization` keeps exponential moving averages of the batch
statistics (momentum 0.99): after `n` steps the initial values (mean 0,
variance 1) still weigh `0.99 ** n`. In a short run (40 steps: 67%) the
moving statistics lag the weights so far that the model scores at chance in
inference mode while it fits the training data. "Precise BN" (Wu & Johnson,
"Rethinking 'Batch' in BatchNorm", 2021; fvcore's `update_bn_stats`)
replaces them by statistics computed over many training batches with the
final weights.

How: a probe graph runs the model as in a training step (every trainable
`BatchNormalization` normalizes with the statistics of its batch, as
`model.fit` does) and returns, per image, the mean and the mean square of
each such layer's input per channel. `probe.predict` (compiled on every
backend) runs it over the images; the population mean and variance per
channel (over every pixel of every image) become the layer's moving mean and
variance. Frozen (`trainable=False`) BatchNormalization layers run in
inference mode in `fit` and keep their statistics here too.

The recipe recomputes the statistics always, before every evaluation
(each epoch's validation and the final test), on up to
`TrainConfig.precise_bn_images` un-augmented training images (5,000 by
default, a few seconds for ResNet-20): in long runs they change the
moving averages little, in short runs they make the reported accuracy the
accuracy of the trained weights.
"""

import numpy as np

import keras

from keras_effconv._model_graph import all_layers
from keras_effconv._model_graph import is_functional
from keras_effconv._model_graph import run_graph


class _BatchStatisticsNormalization(keras.layers.Layer):
    """What a `BatchNormalization` layer computes in a training step, without touching its moving statistics."""

    def __init__(self, batchnorm, **kwargs):
        super().__init__(dtype=batchnorm.dtype_policy, **kwargs)
        self._batchnorm = [batchnorm]  # a list: not tracked as a sublayer (its weights stay the model's)

    def call(self, inputs):
        bn = self._batchnorm[0]
        rank = len(inputs.shape)
        axis = bn.axis % rank
        reduce_axes = [i for i in range(rank) if i != axis]
        x = keras.ops.cast(inputs, "float32")
        mean, variance = keras.ops.moments(x, axes=reduce_axes, keepdims=True)
        y = (x - mean) * keras.ops.rsqrt(variance + bn.epsilon)
        shape = [1] * rank
        shape[axis] = inputs.shape[axis]
        if bn.scale:
            y = y * keras.ops.reshape(keras.ops.cast(bn.gamma, "float32"), shape)
        if bn.center:
            y = y + keras.ops.reshape(keras.ops.cast(bn.beta, "float32"), shape)
        return keras.ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


class _ChannelMoments(keras.layers.Layer):
    """Per image: the mean and the mean square of each channel (concatenated), in float32."""

    def __init__(self, axis, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.axis = axis

    def call(self, inputs):
        rank = len(inputs.shape)
        axis = self.axis % rank
        x = keras.ops.cast(inputs, "float32")
        spatial = [i for i in range(1, rank) if i != axis]
        if spatial:
            return keras.ops.concatenate(
                [keras.ops.mean(x, axis=spatial), keras.ops.mean(keras.ops.square(x), axis=spatial)], axis=-1
            )
        return keras.ops.concatenate([x, keras.ops.square(x)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[self.axis % len(input_shape)])


def _trainable_batchnorms(model):
    return [
        layer
        for layer in all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


def _probe(model):
    """`(probe model, [BatchNormalization layers])`: the probe's outputs are their inputs' channel moments."""
    found = []

    def call(operation, *args, **kwargs):
        if isinstance(operation, keras.layers.BatchNormalization) and operation.trainable:
            found.append((operation, args[0]))
            return _BatchStatisticsNormalization(operation)(args[0])
        if is_functional(operation) or isinstance(operation, keras.Sequential):
            return run_graph(operation, list(args) if len(args) > 1 else args[0], call)
        return operation(*args, **kwargs)

    inputs = [keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype) for tensor in model.inputs]
    run_graph(model, inputs if len(inputs) > 1 else inputs[0], call)
    outputs = [_ChannelMoments(layer.axis)(tensor) for layer, tensor in found]
    return keras.Model(inputs, outputs), [layer for layer, _ in found]


def recompute_batchnorm_statistics(model, images, steps=None, verbose=0):
    """Replaces the moving statistics of `model`'s BatchNormalization layers by precise ones.

    Each trainable `BatchNormalization` layer (nested models included) gets
    the mean and the variance of its input over every position of every
    image, computed as in a training step (each layer normalizing with its
    batch's statistics). Frozen ones (`trainable=False`) are left as they
    are.

    Args:
        model: a Functional or Sequential `keras.Model`.
        images: what `model.predict` takes: a batched `tf.data.Dataset` (of
            images or `(images, labels)` pairs), a NumPy array or a
            generator. Use un-augmented training images.
        steps: optional number of batches of `images` to use.
        verbose: `model.predict` verbosity (0: silent).

    Returns:
        The number of layers whose statistics were replaced (0 if the model
        has none).

    Raises:
        ValueError: for a subclassed model (its graph is not visible), or if
            `images` yields no batch or the statistics are not finite (the
            model is left unchanged then).

    Example:

    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()])
    >>> recompute_batchnorm_statistics(model, np.random.rand(16, 8, 8, 3).astype("float32"))
    1
    """
    if not _trainable_batchnorms(model):
        return 0
    return _update_statistics(*_probe(model), images, steps, verbose)


def _update_statistics(probe, layers, images, steps, verbose):
    """Runs `probe` over `images` and assigns the population statistics to `layers`; returns their count."""
    moments = probe.predict(images, steps=steps, verbose=verbose)
    if not isinstance(moments, (list, tuple)):
        moments = [moments]
    updates = []
    for layer, per_image in zip(layers, moments):
        per_image = np.asarray(per_image, dtype="float64")
        if per_image.shape[0] == 0:
            raise ValueError("recompute_batchnorm_statistics: `images` yielded no image")
        channels = per_image.shape[1] // 2
        mean = per_image[:, :channels].mean(axis=0)
        variance = np.maximum(per_image[:, channels:].mean(axis=0) - mean**2, 0.0)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(variance))):
            raise ValueError(
                f"recompute_batchnorm_statistics: non-finite statistics at layer '{layer.name}'; "
                "the model's moving statistics are left unchanged"
            )
        updates.append((layer, mean, variance))
    for layer, mean, variance in updates:
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
    return len(updates)


class PreciseBatchNormalization(keras.callbacks.Callback):
    """Recomputes BatchNormalization statistics before each evaluation in `model.fit`.

    Runs `recompute_batchnorm_statistics` on `images` when validation
    starts, so each epoch's validation metrics (and the checkpoint written
    at the end of the epoch) use statistics of the epoch's final weights.
    The probe graph is built (and compiled) once per model, not per epoch.

    Args:
        images: batched un-augmented training images (see
            `recompute_batchnorm_statistics`).
        steps: optional number of batches to use.

    Example:

    >>> callback = PreciseBatchNormalization(train_images.batch(128), steps=40)  # doctest: +SKIP
    >>> model.fit(train, validation_data=test, callbacks=[callback])  # doctest: +SKIP
    """

    def __init__(self, images, steps=None):
        super().__init__()
        self.images = images
        self.steps = steps
        self._probe = None  # (model, probe, layers)

    def on_test_begin(self, logs=None):
        if self._probe is None or self._probe[0] is not self.model:
            self._probe = (self.model, *_probe(self.model)) if _trainable_batchnorms(self.model) else (self.model, None, [])
        _, probe, layers = self._probe
        if layers:
            _update_statistics(probe, layers, self.images, self.steps, verbose=0)
