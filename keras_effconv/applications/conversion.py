"""`convert()`: any Functional or Sequential model, with efficient convolutions."""

import dataclasses

import keras

from keras_effconv import _validation
from keras_effconv._model_graph import all_layers
from keras_effconv._model_graph import copy_layer
from keras_effconv._model_graph import functional_graph
from keras_effconv.applications.conv_types import ConvReplacer


@dataclasses.dataclass
class ConversionReport:
    """What `convert()` replaced, and why it left the other `Conv2D` layers.

    Attributes:
        conv: the method used.
        conv_config: the method arguments in effect (defaults included).
        replaced: one dict per replaced layer: `name`, `layer` (new class),
            `input_channels`.
        skipped: one dict per `Conv2D` left as it was: `name`, `reason`.
    """

    conv: str
    conv_config: dict
    replaced: list
    skipped: list

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_markdown(self):
        lines = [
            f"conv='{self.conv}', conv_config={self.conv_config}: "
            f"{len(self.replaced)} Conv2D replaced, {len(self.skipped)} kept",
            "",
            "| layer | result |",
            "|---|---|",
        ]
        lines += [f"| {row['name']} | replaced by {row['layer']} |" for row in self.replaced]
        lines += [f"| {row['name']} | kept: {row['reason']} |" for row in self.skipped]
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()


def _channels_shape(conv_layer):
    """A build shape for a built Conv2D: its channels, unknown spatial sizes."""
    input_channels = conv_layer.kernel.shape[2] * conv_layer.groups
    if conv_layer.data_format == "channels_last":
        return (None, None, None, input_channels)
    return (None, input_channels, None, None)


def convert(model, conv="hetconv", conv_config=None, layers=None):
    """Rebuilds a model with its eligible `Conv2D` layers replaced.

    Works on any Functional or Sequential model, including branches, shared
    layers and nested models (e.g. `keras.applications.ResNet50`, `VGG16`,
    `DenseNet121`). Which convolutions are eligible and the method defaults
    are the recipes of `keras_effconv.applications.conv_types` (the same
    ones `EffResNet50(conv=...)` uses): k x k convolutions (k > 1), not
    grouped, reading at least `min_input_channels` channels, with channel
    counts the efficient layer accepts. Replacements keep the layer names and
    get new, untrained weights; every other layer is a copy with
    bit-identical weights. `model` itself is not modified and shares no layer
    with the result.

    Args:
        model: a built Functional or Sequential `keras.Model`.
        conv: the name of a registered conv method (see
            `keras_effconv.conv_methods.conv_method_names()`).
        conv_config: dict of arguments for the efficient layer (e.g.
            `{"part": 8}`), plus optionally `min_input_channels`; `None` for
            the defaults.
        layers: optional list of `Conv2D` layer names (nested models
            included); when given, only these are considered.

    Returns:
        `(new_model, report)`, `report` a `ConversionReport`.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: for a subclassed model, an unknown `conv`, a bad
            `conv_config`, `layers` naming layers that are not `Conv2D`
            layers of the model, or when no convolution is eligible (except
            for `conv="standard"`).

    Example:

    >>> base = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), include_top=False)
    >>> new, report = convert(base, conv="hetconv")
    >>> len(report.replaced), new.get_layer("conv2_block1_2_conv").__class__.__name__
    (16, 'HetConv2D')
    """
    _validation.check_type(model, "model", keras.Model, "a keras.Model")
    functional_graph(model, "`convert`")
    if not model.built:
        raise _validation.invalid_value(
            "model", "expected a built model: call it on an input or build it first", received=f"the unbuilt model '{model.name}'"
        )
    if layers is not None:
        if isinstance(layers, str):
            layers = [layers]
        by_name = {layer.name: layer for layer in all_layers(model)}
        wrong = [name for name in layers if not isinstance(by_name.get(name), keras.layers.Conv2D)]
        if wrong:
            conv_names = sorted(n for n, l in by_name.items() if isinstance(l, keras.layers.Conv2D))
            raise _validation.invalid_value(
                "layers",
                f"{wrong} are not Conv2D layers of model '{model.name}'; its Conv2D layers: {conv_names[:20]} ...",
                layers,
            )
    replacer = ConvReplacer(conv, conv_config, only=layers)
    copies = []

    def clone_layer(layer):
        if isinstance(layer, keras.layers.Conv2D) and layer.built:
            replacement = replacer.replacement(layer, _channels_shape(layer))
            if replacement is not None:
                return replacement
        clone = copy_layer(layer, layer.get_config(), "`convert`", model)
        copies.append((layer, clone))
        return clone

    new_model = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    replacer.require_replacements(f"model '{model.name}'")
    for original, clone in copies:
        clone.set_weights(original.get_weights())
    report = ConversionReport(
        conv=conv,
        conv_config=dict(replacer.method_config, min_input_channels=replacer.min_input_channels),
        replaced=replacer.replaced,
        skipped=replacer.skipped,
    )
    return new_model, report
