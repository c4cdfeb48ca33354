"""Base class shared by the convolution-like layers of keras_effconv."""

import numpy as np

import keras
from keras import activations
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

from keras_effconv import _validation
from keras_effconv.layers import _core


class EfficientConv2D(keras.layers.Layer):
    """Common argument handling for 2-D efficient convolutions.

    Mirrors `keras.layers.Conv2D`: same argument names, order and
    normalisation. The contract for subclasses:

    - `_build_kernels(input_channels)` creates every weight and sub-layer
      (`build()` calls it, then adds the bias);
    - `_convolve(inputs)` computes the output without the layer's bias and
      final activation (`call()` adds both);
    - `_macs_for(input_channels, output_spatial, input_shape)` returns the
      multiply-accumulates for one sample (the one MAC hook; `compute_macs`
      validates the shape and calls it);
    - a subclass whose bias lives in its sub-layers sets `_owns_bias = False`,
      and the base class then creates no `bias` weight;
    - `inference_form()` (methods with an export lowering rule) returns the
      layer's weights in the form its lowering rule emits, as NumPy arrays,
      so that export never reads private attributes.

    - a subclass with several exact forms (the same function computed
      differently, e.g. a MAC-exact one and the dense-equivalent kernel)
      lists them in `EXECUTION_FORMS`, takes an `execution` argument
      (`"auto"` or one of them, checked by `_check_execution`), implements
      `_auto_execution(input_shape, training)` (its measured cost rule) and
      takes the chosen form as `_convolve(inputs, form)`.

    `kernel_initializer`, `kernel_regularizer` and `kernel_constraint` apply to
    every kernel the layer owns.
    """

    _owns_bias = True
    EXECUTION_FORMS = ()

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        padding="same",
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = _validation.check_positive_int(filters, "filters")
        self.kernel_size = _validation.normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = _validation.normalize_tuple(strides, 2, "strides")
        self.padding = _validation.normalize_padding(padding)
        self.data_format = _validation.normalize_data_format(data_format)
        self.dilation_rate = _validation.normalize_tuple(dilation_rate, 2, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise _validation.invalid_value(
                "dilation_rate",
                "`dilation_rate > 1` is not supported together with `strides > 1`",
                received=f"strides={self.strides}, dilation_rate={self.dilation_rate}",
            )
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    # -- helpers for subclasses ---------------------------------------------

    def _add_kernel(self, name, shape, initializer=None):
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer or self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            trainable=True,
        )

    def _conv_kwargs(self):
        return dict(
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )

    # -- Execution forms ------------------------------------------------------

    def _check_execution(self, execution):
        allowed = ("auto",) + tuple(self.EXECUTION_FORMS)
        if execution not in allowed:
            raise _validation.invalid_value("execution", f"expected one of {allowed}", execution)
        return execution

    def execution_form(self, input_shape=None, training=False):
        """The exact form a call with `input_shape` runs (and, in inference, export emits).

        Args:
            input_shape: the input shape with batch dimension (None entries
                for unknown sizes), or None when unknown.
            training: whether the call is a training step (forward and
                backward); some forms differentiate faster than others.

        Returns:
            The layer's `execution` argument, or with `"auto"` the choice of
            its measured cost rule for this backend, shape and mode; None for
            a layer with a single form. On TensorFlow the rules also ask
            whether the call is being traced under `jit_compile=True`, so
            asked inside such a trace this answers for XLA.
        """
        if not self.EXECUTION_FORMS:
            return None
        if self.execution != "auto":
            return self.execution
        if input_shape is not None:
            input_shape = _core.batched_shape(input_shape)
        return self._auto_execution(input_shape, bool(training))

    def _auto_execution(self, input_shape, training):
        return self.EXECUTION_FORMS[0]

    # -- Layer API ------------------------------------------------------------

    def build(self, input_shape):
        input_channels = _validation.check_input_shape(self, input_shape)
        self.compute_output_shape(input_shape)
        self._build_kernels(input_channels)
        if self.use_bias and self._owns_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                trainable=True,
            )
        else:
            self.bias = None
        axis = _core.channel_axis(self.data_format)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={axis: input_channels})
        self.input_channels = input_channels

    def call(self, inputs, training=None):
        with _core.training_step(training):
            if self.EXECUTION_FORMS:
                form = self.execution_form(tuple(inputs.shape), training=bool(training))
                return self._bias_and_activation(self._convolve(inputs, form))
            return self._bias_and_activation(self._convolve(inputs))

    def _bias_and_activation(self, outputs):
        """Adds the layer's bias and applies its activation (the end of `call`)."""
        if self.bias is not None:
            outputs = _core.add_bias(outputs, self.bias, self.data_format)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            _validation.check_input_shape(self, input_shape)
        spatial = _core.spatial_dims(input_shape, self.data_format)
        out = tuple(
            _core.conv_output_length(length, k, s, self.padding, d)
            for length, k, s, d in zip(
                spatial, self.kernel_size, self.strides, self.dilation_rate
            )
        )
        if any(o is not None and o <= 0 for o in out):
            raise ValueError(
                f"Layer '{self.name}': the output would have a zero or negative "
                f"spatial size {out} for input_shape={input_shape}, "
                f"kernel_size={self.kernel_size}, strides={self.strides}, "
                f"padding='{self.padding}', dilation_rate={self.dilation_rate}."
            )
        return _core.with_spatial_and_channels(
            input_shape, out, self.filters, self.data_format
        )

    def compute_macs(self, input_shape):
        """Multiply-accumulates for ONE sample (bias and activation excluded).

        Args:
            input_shape: the input shape, with or without the batch dimension
                (e.g. `(56, 56, 64)` or `(None, 56, 56, 64)`). Spatial sizes
                must be known.

        Returns:
            int, the number of multiply-accumulates (1 MAC = 2 FLOPs).
        """
        input_shape = _core.batched_shape(input_shape)
        input_channels = _validation.check_input_shape(self, input_shape)
        output_shape = self.compute_output_shape(input_shape)
        spatial = _core.spatial_dims(output_shape, self.data_format)
        if any(s is None for s in spatial):
            raise _validation.invalid_value(
                "input_shape", "compute_macs needs known spatial sizes", input_shape
            )
        return int(self._macs_for(input_channels, spatial, input_shape))

    def _macs_for(self, input_channels, output_spatial, input_shape):
        raise NotImplementedError(f"{type(self).__name__} must implement _macs_for")

    def centre_tap_crop(self, input_shape):
        """Where this layer's `1 x 1` parts read its input: the windows' centre taps.

        HetConv's `1 x 1` kernels and CompConv's identity channels see the
        input at the centre tap of each `k x k` window. Cropping the input
        by the returned amounts and taking every `strides`-th position gives
        exactly those taps (the export lowers it as Cropping2D + a strided
        `1 x 1` convolution or pooling).

        Args:
            input_shape: the input shape, with or without batch dimension.

        Returns:
            None when the taps are the input itself (stride 1, `"same"`, odd
            kernel), else `((top, bottom), (left, right))`.

        Raises:
            ValueError: when the crop needs a spatial size that is unknown.
        """
        spatial = _core.spatial_dims(_core.batched_shape(input_shape), self.data_format)
        return _core.centre_tap_crop(spatial, self.kernel_size, self.strides, self.padding, self.dilation_rate)

    @staticmethod
    def _numpy(weight):
        return None if weight is None else np.asarray(ops.convert_to_numpy(weight), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": regularizers.serialize(
                    self.activity_regularizer
                ),
                "kernel_constraint": constraints.serialize(self.kernel_constraint),
                "bias_constraint": constraints.serialize(self.bias_constraint),
            }
        )
        return config

    def _require_built(self):
        if not self.built:
            raise ValueError(
                f"Layer '{self.name}' is not built yet: call it on an input or "
                "call `layer.build(input_shape)` first."
            )

    @staticmethod
    def _to_float32(tensor):
        return ops.cast(tensor, "float32")
