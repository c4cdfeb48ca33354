"""Which efficient convolution replaces which `Conv2D`: the recipe every network uses.

The applications (`EffResNet50`, `EffVGG16`, ...) and `convert()` share this
module, so a network built with `conv="hetconv"` and `keras.applications`'
network converted with `conv="hetconv"` replace exactly the same layers.
The methods themselves (layer, default arguments, which `Conv2D`s they may
replace) come from the registry, `keras_effconv.conv_methods`.

Recipe, for every method (each paper keeps the image stem and the pointwise
convolutions standard and replaces the spatial ones):

- a `Conv2D` is replaced when the method's `replaces` rule accepts it (by
  default: kernel larger than 1x1, not grouped, no LoRA), it reads at least
  `min_input_channels` channels (default 16: the image stem, e.g. ResNet's
  7x7 `conv1_conv` on RGB, stays standard), and the efficient layer accepts
  its channel counts;
- the replacement keeps the layer's name, filters, kernel size, strides,
  padding, dilation, data format, activation, bias, initializers,
  regularizers, constraints and dtype policy; its weights are new;
- where the network builder says that the channel order on a side is free
  (the neighbour there is a learned convolution reached through per-channel
  layers only, e.g. the 3x3 of a ResNet bottleneck between its 1x1s), a
  method with `relabelled_channels` runs in its faster channel order there
  unless `conv_config` sets that argument; `convert()` never says so.

`conv_config` holds the method's own arguments (merged over its registered
defaults) and may also hold `min_input_channels`.
"""

from keras_effconv import _validation
from keras_effconv.conv_methods import get_conv_method

DEFAULT_MIN_INPUT_CHANNELS = 16


def resolve_conv_config(conv, conv_config):
    """Merges `conv_config` over the method's defaults.

    Returns:
        `(method_kwargs, min_input_channels)`.

    Raises:
        ValueError: for an unknown `conv`, or a `conv_config` that is not a
            dict or names an argument the method's layer does not have.
    """
    method = get_conv_method(conv)
    if conv_config is None:
        conv_config = {}
    if not isinstance(conv_config, dict):
        raise _validation.invalid_value(
            "conv_config", f"expected a dict of arguments for conv='{conv}' or None", conv_config
        )
    config = dict(conv_config)
    min_input_channels = _validation.check_positive_int(
        config.pop("min_input_channels", DEFAULT_MIN_INPUT_CHANNELS), "conv_config['min_input_channels']"
    )
    allowed = method.config_arguments()
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise _validation.invalid_value(
            "conv_config",
            f"unknown argument(s) {unknown} for conv='{conv}'; allowed: {sorted(allowed | {'min_input_channels'})}",
            conv_config,
        )
    merged = dict(method.default_config)
    merged.update(config)
    return merged, min_input_channels


class ConvReplacer:
    """Decides, for each `Conv2D`, whether and by what it is replaced.

    Records every decision in `replaced` and `skipped` (lists of dicts with
    the layer name and, for skipped layers, the reason), which `convert()`
    returns as its report.

    Args:
        conv: a registered method name (`keras_effconv.conv_methods`).
        conv_config: dict of method arguments (see the module docstring), or
            None for the defaults.
        only: optional collection of layer names; when given, only these
            layers are considered.
    """

    def __init__(self, conv, conv_config=None, only=None):
        self.method = get_conv_method(conv)
        self.conv = conv
        self.method_config, self.min_input_channels = resolve_conv_config(conv, conv_config)
        self._user_arguments = set(conv_config or {})
        self.only = None if only is None else set(only)
        self.replaced = []
        self.skipped = []

    def _skip(self, layer, reason):
        self.skipped.append({"name": layer.name, "reason": reason})
        return None

    def replacement(self, conv_layer, input_shape, free_input_order=False, free_output_order=False):
        """Returns the built efficient layer replacing `conv_layer`, or None.

        Args:
            conv_layer: a `keras.layers.Conv2D` (built or not).
            input_shape: its input shape, batch dimension included.
            free_input_order: whether the input comes from a learned
                convolution through per-channel layers only (its channels
                may be relabelled).
            free_output_order: whether the output goes only to learned
                convolutions through per-channel layers.
        """
        if self.only is not None and conv_layer.name not in self.only:
            return self._skip(conv_layer, "not listed in `layers`")
        if self.method.layer is None:
            return self._skip(conv_layer, f"conv='{self.conv}' replaces nothing")
        config = conv_layer.get_config()
        reason = self.method.replaces(config)
        if reason:
            return self._skip(conv_layer, reason)
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
        method_config = dict(self.method_config)
        for side, free in (("inputs", free_input_order), ("outputs", free_output_order)):
            argument = self.method.relabelled_channels.get(side)
            if free and argument and argument not in self._user_arguments:
                method_config[argument] = True
        try:
            layer = self.method.build_layer(config, method_config)
            layer.build(tuple(input_shape))
        except ValueError as error:
            return self._skip(conv_layer, f"{self.method.layer.__name__} does not apply: {error}")
        self.replaced.append(
            {"name": conv_layer.name, "layer": type(layer).__name__, "input_channels": int(input_channels)}
        )
        return layer

    def require_replacements(self, what):
        """Raises if a non-standard `conv` replaced nothing in `what`.

        A recipe that silently leaves a network standard (e.g.
        `conv_config={"part": 3}` where no channel count is divisible by 3)
        would report standard costs under an efficient name.
        """
        if self.method.layer is not None and not self.replaced:
            reasons = sorted({row["reason"] for row in self.skipped})
            raise ValueError(
                f"conv='{self.conv}' with conv_config={self.method_config} replaces "
                f"no convolution of {what}. Reasons: {reasons[:4]}"
            )

    def check_input(self, img_input):
        """Checks the network's input before its layers are built; a conv method fits any size the network takes.

        The network builders call it after `image_input` (the SIC networks'
        replacer checks there that its spatial bottlenecks fit the maps).
        """

    def __call__(self, conv_layer, inputs, free_input_order=False, free_output_order=False):
        """Applies `conv_layer` or its replacement to the Keras tensor `inputs` (see `replacement`)."""
        layer = self.replacement(conv_layer, tuple(inputs.shape), free_input_order, free_output_order)
        return (layer or conv_layer)(inputs)

