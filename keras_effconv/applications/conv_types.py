"""Which efficient convolution replaces which `Conv2D`: one recipe per method.

The applications (`EffResNet50`, `EffVGG16`, ...) and `convert()` share this
module, so a network built with `conv="hetconv"` and `keras.applications`'
network converted with `conv="hetconv"` replace exactly the same layers.

Default recipe, for every method (each paper keeps the image stem and the
pointwise convolutions standard and replaces the spatial ones):

- a `Conv2D` is replaced when its kernel is larger than 1x1, it is not
  grouped (`groups=1`), it reads at least `min_input_channels` channels
  (default 16: the image stem, e.g. ResNet's 7x7 `conv1_conv` on RGB,
  stays standard), and the efficient layer accepts its channel counts;
- the replacement keeps the layer's name, filters, kernel size, strides,
  padding, dilation, data format, activation, bias, initializers,
  regularizers, constraints and dtype policy; its weights are new.

Method arguments (`conv_config`), defaults following the papers:

| conv | layer | default `conv_config` |
|---|---|---|
| `"standard"` | `keras.layers.Conv2D` (nothing replaced) | `{}` |
| `"hetconv"` | `HetConv2D` | `{"part": 4}` |
| `"igc"` | `InterleavedGroupConv2D` | `{"primary_groups": 4}` (`M = filters / 4`) |
| `"compconv"` | `CompConv2D` | `{"depth": "auto", "c0": 128}` |
| `"factorized"` | `FactorizedConv2D` | `{"num_units": 1}` |
| `"depthwise_separable"` | `keras.layers.SeparableConv2D` | `{"depth_multiplier": 1}` |

`"factorized"` uses one SIC unit per replaced convolution: the replaced
convolutions carry no activation of their own in ResNet/VGG (BN and ReLU
follow), and two units without an activation between them would collapse
into one linear map. `conv_config` may also hold `min_input_channels`.
"""

import inspect

import keras

from keras_effconv import layers as effconv_layers

_LAYERS = {
    "standard": None,
    "hetconv": effconv_layers.HetConv2D,
    "igc": effconv_layers.InterleavedGroupConv2D,
    "compconv": effconv_layers.CompConv2D,
    "factorized": effconv_layers.FactorizedConv2D,
    "depthwise_separable": keras.layers.SeparableConv2D,
}

CONV_TYPES = tuple(_LAYERS)

DEFAULT_CONV_CONFIGS = {
    "standard": {},
    "hetconv": {"part": 4},
    "igc": {"primary_groups": 4},
    "compconv": {"depth": "auto", "c0": 128},
    "factorized": {"num_units": 1},
    "depthwise_separable": {"depth_multiplier": 1},
}

DEFAULT_MIN_INPUT_CHANNELS = 16

# Arguments every replacement receives from the Conv2D it replaces.
_SHARED_ARGS = (
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "data_format",
    "dilation_rate",
    "activation",
    "use_bias",
    "bias_initializer",
    "bias_regularizer",
    "activity_regularizer",
    "bias_constraint",
    "name",
    "dtype",
    "trainable",
)
_KERNEL_ARGS = ("kernel_initializer", "kernel_regularizer", "kernel_constraint")
# Conv2D arguments whose value the efficient layers set themselves.
_LAYER_OWN_ARGS = set(_SHARED_ARGS) | set(_KERNEL_ARGS) | {"self", "kwargs"}


def check_conv(conv):
    """Validates a `conv` argument and returns it."""
    if not isinstance(conv, str) or conv not in _LAYERS:
        raise ValueError(
            f"Invalid value for argument `conv`: expected one of {CONV_TYPES}. "
            f"Received: conv={conv!r}"
        )
    return conv


def _allowed_method_args(conv):
    cls = _LAYERS[conv]
    if cls is None:
        return set()
    params = inspect.signature(cls.__init__).parameters
    return {p for p in params if p not in _LAYER_OWN_ARGS}


def resolve_conv_config(conv, conv_config):
    """Merges `conv_config` over the method's defaults.

    Returns:
        `(method_kwargs, min_input_channels)`.

    Raises:
        ValueError: for a `conv_config` that is not a dict or names an
            argument the method's layer does not have.
    """
    check_conv(conv)
    if conv_config is None:
        conv_config = {}
    if not isinstance(conv_config, dict):
        raise ValueError(
            "Invalid value for argument `conv_config`: expected a dict of "
            f"arguments for conv='{conv}' or None. Received: "
            f"conv_config={conv_config!r}"
        )
    config = dict(conv_config)
    min_input_channels = config.pop("min_input_channels", DEFAULT_MIN_INPUT_CHANNELS)
    if isinstance(min_input_channels, bool) or not isinstance(min_input_channels, int) or min_input_channels < 1:
        raise ValueError(
            "Invalid value for `conv_config['min_input_channels']`: expected a "
            f"positive integer. Received: {min_input_channels!r}"
        )
    allowed = _allowed_method_args(conv)
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(
            f"Invalid `conv_config` for conv='{conv}': unknown argument(s) "
            f"{unknown}. Allowed: {sorted(allowed | {'min_input_channels'})}."
        )
    merged = dict(DEFAULT_CONV_CONFIGS[conv])
    merged.update(config)
    return merged, min_input_channels


def _as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


class ConvReplacer:
    """Decides, for each `Conv2D`, whether and by what it is replaced.

    Records every decision in `replaced` and `skipped` (lists of dicts with
    the layer name and, for skipped layers, the reason), which `convert()`
    returns as its report.

    Args:
        conv: one of `CONV_TYPES`.
        conv_config: dict of method arguments (see the module docstring), or
            None for the defaults.
        only: optional collection of layer names; when given, only these
            layers are considered.
    """

    def __init__(self, conv, conv_config=None, only=None):
        self.conv = check_conv(conv)
        self.method_config, self.min_input_channels = resolve_conv_config(conv, conv_config)
        self.only = None if only is None else set(only)
        self.replaced = []
        self.skipped = []

    def _skip(self, layer, reason):
        self.skipped.append({"name": layer.name, "reason": reason})
        return None

    def replacement(self, conv_layer, input_shape):
        """Returns the built efficient layer replacing `conv_layer`, or None.

        Args:
            conv_layer: a `keras.layers.Conv2D` (built or not).
            input_shape: its input shape, batch dimension included.
        """
        if self.only is not None and conv_layer.name not in self.only:
            return self._skip(conv_layer, "not listed in `layers`")
        if self.conv == "standard":
            return self._skip(conv_layer, "conv='standard' replaces nothing")
        config = conv_layer.get_config()
        if config.get("groups", 1) != 1:
            return self._skip(conv_layer, f"grouped convolution (groups={config['groups']})")
        if config.get("lora_rank"):
            return self._skip(conv_layer, "LoRA-enabled convolution")
        kernel_size = _as_tuple(config["kernel_size"])
        if max(kernel_size) == 1:
            return self._skip(conv_layer, "1x1 convolution (only k x k convolutions with k > 1 are replaced)")
        axis = -1 if config["data_format"] == "channels_last" else 1
        input_channels = input_shape[axis]
        if input_channels is None:
            return self._skip(conv_layer, "unknown number of input channels")
        if input_channels < self.min_input_channels:
            return self._skip(
                conv_layer,
                f"reads {input_channels} channels < min_input_channels="
                f"{self.min_input_channels} (image stem)",
            )
        try:
            layer = self._build_layer(config)
            layer.build(tuple(input_shape))
        except ValueError as error:
            return self._skip(conv_layer, f"{_LAYERS[self.conv].__name__} does not apply: {error}")
        self.replaced.append(
            {"name": conv_layer.name, "layer": type(layer).__name__, "input_channels": int(input_channels)}
        )
        return layer

    def _build_layer(self, config):
        kwargs = {name: config[name] for name in _SHARED_ARGS if name in config}
        if self.conv == "depthwise_separable":
            kwargs.update(
                depthwise_initializer=config["kernel_initializer"],
                pointwise_initializer=config["kernel_initializer"],
                depthwise_regularizer=config["kernel_regularizer"],
                pointwise_regularizer=config["kernel_regularizer"],
                depthwise_constraint=config["kernel_constraint"],
                pointwise_constraint=config["kernel_constraint"],
            )
        else:
            kwargs.update({name: config[name] for name in _KERNEL_ARGS})
        kwargs.update(self.method_config)
        return _LAYERS[self.conv](**kwargs)

    def require_replacements(self, what):
        """Raises if a non-standard `conv` replaced nothing in `what`.

        A recipe that silently leaves a network standard (e.g.
        `conv_config={"part": 3}` where no channel count is divisible by 3)
        would report standard costs under an efficient name.
        """
        if self.conv != "standard" and not self.replaced:
            reasons = sorted({row["reason"] for row in self.skipped})
            raise ValueError(
                f"conv='{self.conv}' with conv_config={self.method_config} replaces "
                f"no convolution of {what}. Reasons: {reasons[:4]}"
            )

    def __call__(self, conv_layer, inputs):
        """Applies `conv_layer` or its replacement to the Keras tensor `inputs`."""
        layer = self.replacement(conv_layer, tuple(inputs.shape))
        return (layer or conv_layer)(inputs)
