"""The conv-method registry: one entry per efficient convolution method.

A method is one registered unit, as a model is in timm (`@register_model`):

1. its layer, a Keras layer with `Conv2D`'s constructor arguments
   (`keras_effconv/layers/<method>.py`, usually an `EfficientConv2D`);
2. its export lowering rule (`keras_effconv/export/lowering/<method>.py`,
   `@lowering_rule(LayerClass)`), which reads only the layer's public
   inference form;
3. one `register_conv_method(...)` call (the built-in ones are at the end of
   this module).

Everything that lists methods reads this registry: the applications'
`conv=` argument and `convert()` (`applications/conv_types.py`), the CLI's
`--conv` choices, the tests' parametrisation, the benchmarks and the tables
in the docs (`conv_methods_markdown()`). A method registered from user code
(`register_conv_method("mine", MyConv2D, ...)`) is usable everywhere at once.

Example:

>>> from keras_effconv import conv_methods
>>> conv_methods.conv_method_names()[:3]
('standard', 'hetconv', 'igc')
>>> conv_methods.get_conv_method("hetconv").default_config
{'part': 4}
"""

import dataclasses
import inspect
import re
from typing import Callable
from typing import Optional

import keras

from keras_effconv import _validation
from keras_effconv import layers as effconv_layers

# Conv2D arguments every replacement receives from the Conv2D it replaces.
SHARED_CONV2D_ARGUMENTS = (
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
KERNEL_ARGUMENTS = ("kernel_initializer", "kernel_regularizer", "kernel_constraint")
_NOT_METHOD_ARGUMENTS = set(SHARED_CONV2D_ARGUMENTS) | set(KERNEL_ARGUMENTS) | {"self", "kwargs"}
_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


def spatial_conv_only(conv2d_config):
    """The default `replaces` rule: every ungrouped k x k `Conv2D` with k > 1.

    Args:
        conv2d_config: a `keras.layers.Conv2D` config (`layer.get_config()`).

    Returns:
        None when the layer may be replaced, else the reason it is kept.
    """
    if conv2d_config.get("groups", 1) != 1:
        return f"grouped convolution (groups={conv2d_config['groups']})"
    if conv2d_config.get("lora_rank"):
        return "LoRA-enabled convolution"
    kernel_size = conv2d_config["kernel_size"]
    kernel_size = tuple(kernel_size) if isinstance(kernel_size, (list, tuple)) else (kernel_size,)
    if max(kernel_size) == 1:
        return "1x1 convolution (only k x k convolutions with k > 1 are replaced)"
    return None


def conv2d_arguments(conv2d_config):
    """The arguments of a `Conv2D` config that carry over to its replacement.

    Args:
        conv2d_config: a `keras.layers.Conv2D` config.

    Returns:
        A dict with the shared geometry/bias/name arguments and the kernel
        initializer, regularizer and constraint.
    """
    arguments = {name: conv2d_config[name] for name in SHARED_CONV2D_ARGUMENTS if name in conv2d_config}
    arguments.update({name: conv2d_config[name] for name in KERNEL_ARGUMENTS if name in conv2d_config})
    return arguments


@dataclasses.dataclass(frozen=True)
class ConvMethod:
    """One registered convolution method (see `register_conv_method`).

    Attributes:
        name: the `conv=` name, e.g. `"hetconv"`.
        layer: the layer class, or None for `"standard"` (replaces nothing).
        default_config: the method's own arguments used when `conv_config`
            does not set them.
        summary: one line for the docs (what it is, its paper).
        replaces: `conv2d_config -> None | reason`: which `Conv2D`s it may
            replace (default `spatial_conv_only`).
        make_layer: `(conv2d_config, method_config) -> layer`: builds the
            replacement of one `Conv2D`; default passes
            `conv2d_arguments(conv2d_config)` and `method_config` to `layer`.
        relabelled_channels: `{"inputs": argument, "outputs": argument}`
            (either key optional): the layer's bool arguments that make it
            take its input channels, or return its output channels, in
            another order in which it runs faster (HetConv's blocked order).
            The networks set them where the neighbour on that side is a
            learned convolution reached through per-channel layers only, so
            that its weights absorb the relabelling; `convert()` leaves them
            off.
    """

    name: str
    layer: Optional[type]
    default_config: dict
    summary: str
    replaces: Callable = spatial_conv_only
    make_layer: Optional[Callable] = None
    relabelled_channels: dict = dataclasses.field(default_factory=dict)

    def config_arguments(self):
        """The names `conv_config` may set: the layer's own constructor arguments."""
        if self.layer is None:
            return frozenset()
        parameters = inspect.signature(self.layer.__init__).parameters
        return frozenset(p for p in parameters if p not in _NOT_METHOD_ARGUMENTS)

    def build_layer(self, conv2d_config, method_config):
        """The (unbuilt) layer replacing the `Conv2D` with `conv2d_config`.

        Args:
            conv2d_config: the replaced layer's `get_config()`.
            method_config: the method's arguments (defaults merged in).

        Returns:
            A new `keras.layers.Layer`.

        Raises:
            ValueError: from the layer, for channel counts it cannot take.
        """
        if self.layer is None:
            raise ValueError(f"conv='{self.name}' replaces no convolution.")
        if self.make_layer is not None:
            return self.make_layer(dict(conv2d_config), dict(method_config))
        return self.layer(**conv2d_arguments(conv2d_config), **method_config)


_REGISTRY = {}


def register_conv_method(
    name, layer, default_config=None, summary="", replaces=None, make_layer=None, overwrite=False,
    relabelled_channels=None,
):
    """Registers a convolution method under `name`.

    After this call `name` works as `conv=name` in every application, in
    `convert()`, `profile()` of such networks, the CLI's `--conv`, and in
    `optimize_for_inference`/`export_litert` once the layer's lowering rule is
    registered (`keras_effconv.export.lowering_rule`).

    Args:
        name: lower-case identifier, e.g. `"hetconv"`.
        layer: a `keras.layers.Layer` subclass taking `Conv2D`'s arguments
            (`filters, kernel_size, strides, padding, ...`) plus its own, or
            None for a method that replaces nothing.
        default_config: dict of the layer's own arguments used by default.
        summary: one line for the docs.
        replaces: optional `conv2d_config -> None | reason` (default
            `spatial_conv_only`).
        make_layer: optional `(conv2d_config, method_config) -> layer` for a
            layer whose arguments differ from `Conv2D`'s.
        overwrite: replace an existing registration of `name`.
        relabelled_channels: optional `{"inputs": argument, "outputs":
            argument}` naming the layer's bool arguments for a faster channel
            order on that side (see `ConvMethod`).

    Returns:
        The registered `ConvMethod`.

    Raises:
        ValueError: for a bad name, a name already registered (without
            `overwrite`), a `layer` that is not a Layer subclass, or a
            `default_config` or `relabelled_channels` naming an argument the
            layer does not have.

    Example:

    >>> class DoubledConv2D(keras.layers.Conv2D):
    ...     pass
    >>> method = register_conv_method("doubled", DoubledConv2D, summary="demo")
    >>> "doubled" in conv_method_names()
    True
    >>> unregister_conv_method("doubled")
    """
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise _validation.invalid_value("name", "expected a lower-case identifier like 'hetconv'", name)
    if name in _REGISTRY and not overwrite:
        raise _validation.invalid_value(
            "name", "expected a name not registered yet, or pass overwrite=True to replace it", name
        )
    if layer is not None and not (isinstance(layer, type) and issubclass(layer, keras.layers.Layer)):
        raise _validation.invalid_value("layer", "expected a keras.layers.Layer subclass or None", layer)
    default_config = dict(default_config or {})
    relabelled_channels = dict(relabelled_channels or {})
    method = ConvMethod(
        name=name,
        layer=layer,
        default_config=default_config,
        summary=str(summary),
        replaces=replaces or spatial_conv_only,
        make_layer=make_layer,
        relabelled_channels=relabelled_channels,
    )
    unknown = sorted(set(default_config) - method.config_arguments())
    if unknown and make_layer is None:
        raise _validation.invalid_value(
            "default_config", f"{layer.__name__} has no argument(s) {unknown}", default_config
        )
    if set(relabelled_channels) - {"inputs", "outputs"} or (
        relabelled_channels and not set(relabelled_channels.values()) <= method.config_arguments()
    ):
        raise _validation.invalid_value(
            "relabelled_channels",
            "expected keys 'inputs'/'outputs' naming bool arguments of the layer",
            relabelled_channels,
        )
    _REGISTRY[name] = method
    return method


def unregister_conv_method(name):
    """Removes a registered method (for tests and plugins that reload).

    Args:
        name: a registered name.

    Raises:
        ValueError: if `name` is not registered.
    """
    get_conv_method(name)
    del _REGISTRY[name]


def get_conv_method(name):
    """The registered `ConvMethod` called `name`.

    Args:
        name: e.g. `"hetconv"`.

    Returns:
        A `ConvMethod`.

    Raises:
        ValueError: naming the registered methods when `name` is not one.
    """
    return _REGISTRY[_validation.check_choice(name, "conv", conv_method_names())]


def conv_methods():
    """Every registered `ConvMethod`, in registration order."""
    return tuple(_REGISTRY.values())


def conv_method_names():
    """The registered method names, in registration order (`"standard"` first)."""
    return tuple(_REGISTRY)


def conv_methods_markdown():
    """A markdown table of the registered methods (name, layer, defaults, summary)."""
    lines = ["| conv | layer | default `conv_config` | what it is |", "|---|---|---|---|"]
    for method in conv_methods():
        layer = "`keras.layers.Conv2D` (nothing replaced)" if method.layer is None else f"`{method.layer.__name__}`"
        lines.append(f"| `\"{method.name}\"` | {layer} | `{method.default_config}` | {method.summary} |")
    return "\n".join(lines)


def _separable_from_conv2d(conv2d_config, method_config):
    # SeparableConv2D names its kernel arguments per half; both halves get the Conv2D's.
    arguments = conv2d_arguments(conv2d_config)
    for name in KERNEL_ARGUMENTS:
        value = arguments.pop(name, None)
        kind = name.split("_", 1)[1]
        arguments[f"depthwise_{kind}"] = value
        arguments[f"pointwise_{kind}"] = value
    return effconv_layers.DepthwiseSeparableConv2D(**arguments, **method_config)


register_conv_method(
    "standard", None, summary="keras' `Conv2D`: the reference every other method is measured against"
)
register_conv_method(
    "hetconv",
    effconv_layers.HetConv2D,
    {"part": 4},
    summary="HetConv (Singh et al., CVPR 2019): k x k kernels on 1/P of the input channels, 1x1 on the rest",
    relabelled_channels={"inputs": "blocked_inputs", "outputs": "blocked_outputs"},
)
register_conv_method(
    "igc",
    effconv_layers.InterleavedGroupConv2D,
    {"primary_groups": 4},
    summary="IGCV1 (Zhang et al., ICCV 2017): grouped k x k, interleave, grouped 1x1 (`M = filters / L`)",
)
register_conv_method(
    "compconv",
    effconv_layers.CompConv2D,
    {"depth": "auto", "c0": 128},
    summary="CompConv (Zhang, Xu & Shen, CVPRW 2021): recursive divide and conquer with identity parts",
)
register_conv_method(
    "factorized",
    effconv_layers.FactorizedConv2D,
    {"num_units": 1},
    summary=(
        "single intra-channel convolution (Wang, Liu & Foroosh, ICCVW 2017): depthwise + projection; "
        "one unit, since the replaced convs carry no activation and two linear units would collapse into one"
    ),
)
register_conv_method(
    "depthwise_separable",
    effconv_layers.DepthwiseSeparableConv2D,
    {"depth_multiplier": 1},
    summary=(
        "keras' `SeparableConv2D` (depthwise + pointwise), the MobileNet baseline, "
        "running the library's fastest exact depthwise form per backend"
    ),
    make_layer=_separable_from_conv2d,
)
