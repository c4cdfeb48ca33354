"""keras' depthwise separable convolution, run through the library's fastest exact convolutions."""

import keras

from keras_effconv.layers import _core


@keras.saving.register_keras_serializable(package="keras_effconv")
class DepthwiseSeparableConv2D(keras.layers.SeparableConv2D):
    """`keras.layers.SeparableConv2D` with the library's depthwise and pointwise convolutions.

    The same layer as keras' (a subclass: same arguments, weights, their
    order and names, `get_config()`, MAC count, export lowering), computing
    the same function: a depthwise `k x k` convolution with the layer's
    strides, padding and dilation, then a `1 x 1` convolution, bias and
    activation. Only how the two convolutions run differs: through
    `keras_effconv.layers._core`, which picks each backend's fastest exact
    form. XLA:CPU runs a native depthwise convolution 10-20x slower than a
    sum of shifted, per-channel scaled inputs, so on JAX and under
    TensorFlow's `jit_compile=True` the depthwise half is that shift form
    (with its own weight gradient); on torch both halves read channels_last
    tensors without Keras' layout copies. Measured at 28x28x16, batch 128,
    on JAX: keras' `SeparableConv2D` runs 0.09x a `Conv2D`'s forward speed,
    this layer 2.5x (`benchmarks/results/layers_jax.md`).

    It is the layer of the `"depthwise_separable"` conv method (the
    MobileNet baseline), so converted networks get it; weights saved from
    keras' `SeparableConv2D` load into it unchanged.

    Args:
        filters, kernel_size, strides, padding, data_format, dilation_rate,
        depth_multiplier, activation, use_bias, depthwise_initializer,
        pointwise_initializer, bias_initializer, depthwise_regularizer,
        pointwise_regularizer, bias_regularizer, activity_regularizer,
        depthwise_constraint, pointwise_constraint, bias_constraint: as in
            `keras.layers.SeparableConv2D`.

    Returns:
        A layer mapping `(batch, H, W, C_in)` to `(batch, H', W', filters)`
        (channels_last), exactly as `keras.layers.SeparableConv2D`.

    Raises:
        ValueError: as `keras.layers.SeparableConv2D` for bad arguments or
            inputs.

    Example:

    >>> layer = DepthwiseSeparableConv2D(32, 3, padding="same")
    >>> tuple(layer(keras.ops.ones((2, 16, 16, 8))).shape)
    (2, 16, 16, 32)
    >>> [w.name for w in layer.weights]
    ['depthwise_kernel', 'pointwise_kernel', 'bias']
    """

    def call(self, inputs, training=None):
        # `training` picks the primitives' forms (`_core.training_step`), as in the library's own layers.
        outputs = _core.depthwise_conv(
            inputs,
            self.depthwise_kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        with _core.training_step(training):
            outputs = _core.conv(outputs, self.pointwise_kernel, padding="valid", data_format=self.data_format)
        if self.use_bias:
            outputs = _core.add_bias(outputs, self.bias, self.data_format)
        if self.activation is not None:
            return self.activation(outputs)
        return outputs
