"""The SIC paper's networks: ResNet-50/101, VGG-16 and CIFAR ResNet-20/56 built from SIC layers.

Wang, Liu & Foroosh, "Factorized Convolutional Neural Networks" (ICCVW 2017,
arXiv 1608.04337) report ResNet-50 at 845 M MACs (4.5x less than ResNet-50),
ResNet-101 at 1172 M (6.5x less) and VGG-16 with 42x less computation, at
similar accuracy. The paper does not publish its network configurations
(which layers it replaces, its grids and windows, units per layer, where the
spatial bottleneck sits), so every choice below is ours. Each is a keyword
argument ("knob") after keras' arguments, whose default meets the paper's
budget.

Design choices and their reasons:

- **Layout and names are keras'.** `FactorizedResNet50/101` are
  `keras.applications.ResNet50/101`: ResNet v1 with the stride 2 of a
  stage's first block in its first 1x1 convolution and in its shortcut,
  where keras places it (so the 3x3 always runs at the stage's resolution).
  `FactorizedVGG16` is `keras.applications.VGG16` (or, with
  `style="cifar"`, the CIFAR VGG-16 of `EffVGG16`), `FactorizedResNet20/56`
  are the CIFAR ResNets of `EffResNet20/56`. Every layer keeps keras' name
  (`conv2_block1_1_conv`, `block2_conv1`, `predictions`, ...), so tooling
  that goes by name keeps working, and the arguments, their order and their
  validation are keras.applications' (`weights` is `None` or a file; nothing
  is downloaded).
- **Which layers are replaced.** Every 3x3 convolution except the stem
  becomes a `FactorizedConv2D` (SIC units: depthwise 3x3 -> 1x1 projection
  -> + input when the shapes match). In the ImageNet ResNets every 1x1
  convolution (`_1_conv`, `_3_conv` and the shortcut `_0_conv`) becomes a
  `TopologicalProjection`: with only the 3x3s factorized (dense
  projections) ResNet-50 still costs 2.23 G MACs (1.7x less), 85% of it in
  the 1x1s, so the paper's 4.5x is out of reach without subdividing them.
- **Grid and window.** Every projection (inside the SIC units and the
  standalone 1x1s) uses one topology, by default `grid=(1, 8)`,
  `window=(1, 2)`: a ring of 8 channel cells in which each output cell reads
  its own cell and the next, 4x fewer projection MACs and parameters. Of the
  4x cuts it is the one that runs fastest: `TopologicalProjection` infers
  it as two grouped 1x1 convolutions (`"rolled_groups"`) on maps of at most
  14x14 (1.0-3.4x faster than the dense masked matmul there, TensorFlow and
  LiteRT), and as the masked matmul on the larger maps of the early stages,
  where the rolled copies cost more than the MACs saved, while a 4x4 grid
  with a 2x2 window (also 4x) runs 1.3x and 1.5x slower than dense at
  14x14x256 (`keras_effconv.layers.factorized.choose_execution`; training
  steps use the masked dense form). The grid's cell
  count must divide every channel count it subdivides (for these networks:
  a divisor of 64, or of 16 for the CIFAR ResNets). `grid=None,
  window=None` makes every projection dense (keras' `Conv2D` for the
  standalone ones).
- **Units per layer.** `sic_units=1`: one SIC unit per replaced 3x3, the
  same for every network. Each further unit adds the 3x3's cost again: two
  units fit ResNet-50's budget (0.72 G) but not ResNet-101's (1.28 G). A
  `FactorizedConv2D` gets the activation of the Conv2D it replaces (`None`
  in the ResNets and the CIFAR VGG, where BN + ReLU follow; `"relu"` in the
  ImageNet VGG, whose convolutions carry theirs); with `sic_units > 1` the
  same activation joins its units (so a ResNet's extra units are linear,
  each with its residual).
- **Where the spatial bottleneck sits** (`spatial_bottleneck_stages`: stage
  names as in the layer names, or their numbers). The bottleneck runs a
  3x3's depthwise conv and projection at half resolution (~4x cheaper).
  ResNets: nowhere; they meet the paper's budgets without it (ResNet-101
  costs 1.15 G, the paper 1.17 G; a bottleneck in `conv4` would make it
  1.09 G). ImageNet VGG-16: every block, as its 3x3s at 224 px are nearly
  the whole cost (without it: 0.71 G, 22x less, not 42x). CIFAR VGG-16:
  blocks 1-3, the 32x32 to 8x8 maps (42x; every block would cut 65x, none
  25x). A stage whose feature map is smaller than 2x2 for the given input is
  refused. A strided first unit stays regular (`FactorizedConv2D`'s rule),
  so in a CIFAR ResNet stage with a bottleneck the strided 3x3 of its first
  block has none.
- **BN and ReLU** stay where keras (or `cifar.py`/`vgg.py`) has them, after
  every replaced convolution; the replacement layers carry no
  normalization, and the ImageNet VGG's carry their ReLU as keras' do. The
  ImageNet ResNets' projections keep keras' biases (`use_bias=True`), the
  CIFAR ResNets' layers have none (BN follows), as in `cifar.py`.
- **The stem stays standard** (`conv1_conv` 7x7 in the ResNets,
  `block1_conv1` in VGG, the 3x3 `conv1_conv` of the CIFAR ResNets). It
  reads the image's 1-4 channels: no channel grid divides them, and a
  depthwise factorization would leave the projection only 3 filtered maps
  of the image to build 64 (16) features from. It costs 2-25% of the
  factorized networks' MACs (18% of ResNet-50's, 25% of VGG-16's).
- **Shortcut projections** (`factorize_shortcuts=True`): the ImageNet
  ResNets' `_0_conv` is a `TopologicalProjection` with the block's stride;
  a dense one (`factorize_shortcuts=False`, keras' `Conv2D`) would add
  0.27 G to ResNet-50 (0.93 G) and break its budget. The CIFAR ResNets
  default to dense projections, so their shortcuts are keras' `Conv2D`;
  given a grid they become `TopologicalProjection`s like the rest (the grid
  divides 16, so it fits the 16-64 channel shortcuts too).
- **CIFAR ResNets use dense projections** (`grid=None`): at 16-64 channels
  the ring would cut ResNet-20 13x, twice the ImageNet ResNets' ratio; one
  SIC unit with a dense projection cuts 6.1x, in line with them (5.9x,
  6.6x).

Budgets measured with `keras_effconv.profiling.profile(model)` with the
default knobs: total MACs for one image (1 MAC = 2 FLOPs) with the top;
ImageNet networks at 224x224x3 with 1000 classes, CIFAR ones at 32x32x3
with 10 classes.

| network | MACs | params | standard (MACs / params) | MACs ratio | paper |
|---|---:|---:|---|---:|---|
| FactorizedResNet50 | 655.9 M | 5.57 M | ResNet50 3858.0 M / 25.64 M | 5.9x | 845 M, 4.5x |
| FactorizedResNet101 | 1154.9 M | 8.25 M | ResNet101 7570.2 M / 44.71 M | 6.6x | 1172 M, 6.5x |
| FactorizedVGG16 | 346.7 M | 124.11 M | VGG16 15470.3 M / 138.36 M | 44.6x | 42x |
| FactorizedVGG16(style="cifar") | 7.53 M | 0.74 M | CIFAR VGG-16 313.46 M / 15.00 M | 41.7x | 42x (CIFAR not given) |
| FactorizedResNet20 | 6.65 M | 0.042 M | ResNet-20 40.81 M / 0.274 M | 6.1x | - |
| FactorizedResNet56 | 19.19 M | 0.124 M | ResNet-56 125.75 M / 0.860 M | 6.6x | - |

The standard counterparts are `EffResNet50/101(conv="standard")` (keras'
networks), `EffVGG16(conv="standard")`, `EffVGG16(style="cifar",
conv="standard")` and `EffResNet20/56(conv="standard")`. FactorizedVGG16
keeps many parameters because keras' top stays (fc1 + fc2: 119.5 M
parameters, 0.12 G MACs).
"""

import dataclasses
import math

import keras

from keras_effconv import _validation
from keras_effconv.applications import cifar
from keras_effconv.applications import resnet
from keras_effconv.applications import vgg
from keras_effconv.layers import FactorizedConv2D
from keras_effconv.layers import TopologicalProjection
from keras_effconv.layers.factorized import EXECUTION_FORMS
from keras_effconv.layers.factorized import normalize_topology


_RESNET_STAGES = ("conv2", "conv3", "conv4", "conv5")
_VGG_STAGES = ("block1", "block2", "block3", "block4", "block5")
_VGG_AUTO_STAGES = {"imagenet": _VGG_STAGES, "cifar": _VGG_STAGES[:3]}
_CIFAR_STAGES = ("stack1", "stack2", "stack3")


@dataclasses.dataclass(frozen=True)
class _Knobs:
    """The validated knobs; builds the replacement layers."""

    topology: object  # None (dense projections) or {"grid": ..., "window": ...}
    sic_units: int
    bottleneck_stages: frozenset
    factorize_shortcuts: bool
    projection_execution: str

    def projection(self, conv_layer):
        """The `TopologicalProjection` replacing a 1x1 `Conv2D`, or None to keep it (dense)."""
        shortcut = conv_layer.name.endswith("_0_conv")
        if self.topology is None or (shortcut and not self.factorize_shortcuts):
            return None
        return TopologicalProjection(
            conv_layer.filters,
            self.topology["grid"],
            self.topology["window"],
            strides=conv_layer.strides,
            use_bias=conv_layer.use_bias,
            execution=self.projection_execution,
            name=conv_layer.name,
        )

    def conv3x3(self, conv_layer, stage):
        """The `FactorizedConv2D` replacing a 3x3 `Conv2D` of `stage` (same activation and bias)."""
        return FactorizedConv2D(
            conv_layer.filters,
            3,
            strides=conv_layer.strides,
            padding="same",
            activation=conv_layer.activation,
            use_bias=conv_layer.use_bias,
            num_units=self.sic_units,
            topology=self.topology,
            spatial_bottleneck=stage in self.bottleneck_stages,
            name=conv_layer.name,
        )


# The stems read the image: they stay keras' Conv2D.
_STEMS = ("conv1_conv", "block1_conv1")


class _SICReplacer:
    """What the shared network builders call for every `Conv2D` (the `ConvReplacer` interface).

    1x1 convolutions become `TopologicalProjection`s (or stay dense), 3x3
    ones `FactorizedConv2D`s of their stage (the layer name's first part:
    `conv2`, `stack1`, `block3`), the stems stay.
    """

    def __init__(self, knobs, stage_sizes, bottleneck_value):
        self.knobs = knobs
        self.stage_sizes = stage_sizes
        self.bottleneck_value = bottleneck_value

    def check_input(self, img_input):
        _check_bottleneck_sizes(self.knobs, img_input, self.stage_sizes, self.bottleneck_value)

    def require_replacements(self, what):
        """Every non-stem convolution is replaced by construction: nothing to check."""

    def __call__(self, conv_layer, inputs, free_input_order=False, free_output_order=False):
        # The SIC layers have no faster channel order: the hints change nothing here.
        layer = None
        if conv_layer.name not in _STEMS:
            if conv_layer.kernel_size == (1, 1):
                layer = self.knobs.projection(conv_layer)
            elif conv_layer.kernel_size == (3, 3):
                layer = self.knobs.conv3x3(conv_layer, conv_layer.name.split("_")[0])
        return (layer or conv_layer)(inputs)


def _stage_list(value, stage_names, auto=False):
    """`spatial_bottleneck_stages` -> frozenset of stage names (names or their numbers accepted).

    `auto`: whether the network also takes `"auto"` (resolved by the caller), for the message.
    """
    prefix = stage_names[0].rstrip("0123456789")
    numbers = tuple(int(name[len(prefix) :]) for name in stage_names)
    words = "None, 'auto'" if auto else "None"
    expected = f"expected {words} or a sequence of stage names {stage_names} or their numbers {numbers}"
    if value is None:
        return frozenset()
    if isinstance(value, str) or _validation.is_int(value):
        raise _validation.invalid_value(
            "spatial_bottleneck_stages", expected + " (a list or tuple, even for one stage)", value
        )
    try:
        entries = tuple(value)
    except TypeError:
        raise _validation.invalid_value("spatial_bottleneck_stages", expected, value) from None
    stages = set()
    for entry in entries:
        if isinstance(entry, str) and entry in stage_names:
            stages.add(entry)
        elif _validation.is_int(entry) and entry in numbers:
            stages.add(f"{prefix}{int(entry)}")
        else:
            raise _validation.invalid_value(
                "spatial_bottleneck_stages",
                expected,
                received=f"spatial_bottleneck_stages={value!r} (unknown stage {entry!r})",
            )
    return frozenset(stages)


def _check_knobs(
    grid,
    window,
    sic_units,
    spatial_bottleneck_stages,
    factorize_shortcuts,
    projection_execution,
    stage_names,
    channels,
    auto_stages=None,
):
    """Validates the knobs that do not depend on the input shape; returns `_Knobs`.

    `auto_stages`: the stages `spatial_bottleneck_stages="auto"` stands for,
    or None when the network has no `"auto"`.
    """
    if (grid is None) != (window is None):
        # Named after the one that is set (the user left the other at its default).
        raise _validation.invalid_value(
            "window" if grid is None else "grid",
            "expected `grid` and `window` both None (dense projections) or both set",
            received=f"grid={grid!r}, window={window!r}",
        )
    topology = None
    if grid is not None:
        # The layers' own check: positive pairs, window within the grid.
        topology = normalize_topology({"grid": grid, "window": window})
        grid = topology["grid"]
        cells = grid[0] * grid[1]
        common = math.gcd(*channels)
        if common % cells:
            raise _validation.invalid_value(
                "grid",
                f"expected d1 * d2 to divide every channel count the projections subdivide "
                f"{tuple(sorted(set(channels)))}, i.e. a divisor of {common}",
                received=f"grid={grid} (d1 * d2 = {cells})",
            )
    sic_units = _validation.check_positive_int(sic_units, "sic_units")
    if auto_stages is not None and isinstance(spatial_bottleneck_stages, str) and spatial_bottleneck_stages == "auto":
        spatial_bottleneck_stages = auto_stages
    stages = _stage_list(spatial_bottleneck_stages, stage_names, auto=auto_stages is not None)
    factorize_shortcuts = _validation.check_choice(factorize_shortcuts, "factorize_shortcuts", (True, False))
    projection_execution = _validation.check_choice(projection_execution, "projection_execution", EXECUTION_FORMS)
    return _Knobs(topology, sic_units, stages, factorize_shortcuts, projection_execution)


def _spatial(tensor):
    shape = tuple(tensor.shape)
    return shape[1:3] if keras.config.image_data_format() == "channels_last" else shape[2:4]


def _check_bottleneck_sizes(knobs, img_input, stage_sizes, value):
    """Refuses the spatial bottleneck on a stage whose feature map is smaller than 2x2.

    `stage_sizes(length)` returns `{stage name: size}` for an input height
    (or width) `length`. Unknown input sizes (None) are not checked.
    """
    height, width = _spatial(img_input)
    sizes_h = stage_sizes(height) if height is not None else {}
    sizes_w = stage_sizes(width) if width is not None else {}
    for stage in sorted(knobs.bottleneck_stages):
        h, w = sizes_h.get(stage), sizes_w.get(stage)
        if min(s for s in (h, w, 2) if s is not None) < 2:
            raise _validation.invalid_value(
                "spatial_bottleneck_stages",
                "expected stages whose feature maps are at least 2x2 (the bottleneck halves them); "
                f"stage '{stage}' is {h if h is not None else '?'}x{w if w is not None else '?'} "
                f"for an input of {height}x{width}",
                value,
            )


def _stage_sizes(length, names, halvings_before, step):
    """`{stage: size}`: `halvings_before` halvings, then one more before every stage but the first."""
    for _ in range(halvings_before):
        length = step(length)
    sizes = {}
    for i, name in enumerate(names):
        if i > 0:
            length = step(length)
        sizes[name] = length
    return sizes


def _ceil_half(length):
    return -(-length // 2)


def _floor_half(length):
    return length // 2


# --------------------------------------------------------------------------- ResNet-50/101


def _factorized_resnet(
    depth_name,
    include_top,
    weights,
    input_tensor,
    input_shape,
    pooling,
    classes,
    classifier_activation,
    name,
    grid,
    window,
    sic_units,
    spatial_bottleneck_stages,
    factorize_shortcuts,
    projection_execution,
):
    def make_replacer():
        channels = (64,) + resnet.STAGE_FILTERS + tuple(4 * f for f in resnet.STAGE_FILTERS)
        knobs = _check_knobs(
            grid, window, sic_units, spatial_bottleneck_stages, factorize_shortcuts, projection_execution,
            _RESNET_STAGES, channels,
        )
        # Stem conv (stride 2) and max pooling (stride 2), then conv3..conv5 halve: all "ceil".
        sizes = lambda length: _stage_sizes(length, _RESNET_STAGES, 2, _ceil_half)  # noqa: E731
        return _SICReplacer(knobs, sizes, spatial_bottleneck_stages)

    return resnet.build_resnet(
        depth_name,
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        make_replacer,
        f"Factorized{depth_name.replace('resnet', 'ResNet')}",
    )


_KERAS_ARGS_DOC = """        include_top: whether to include the classifier{top}.
        weights: `None` (random initialization) or the path to a weights file
            saved with `model.save_weights()`. There are no pretrained
            ImageNet weights; `"imagenet"` raises a `ValueError`.
        input_tensor: optional Keras tensor to use as image input.
        input_shape: optional shape tuple, only to be specified if
            `include_top` is `False` (otherwise {default_shape}); at least
            {min_size}. Any number of channels.
        pooling: `None`, `"avg"` or `"max"`: pooling of the last feature map
            when `include_top` is `False`.
        classes: number of classes, used with `include_top=True`.
        classifier_activation: activation of the `predictions` layer, or
            `None` for logits.
        name: the model's name."""

_KNOBS_DOC = """        grid: `(d1, d2)`, the channel grid of every projection (a
            `TopologicalProjection` or the projections inside each
            `FactorizedConv2D`); `d1 * d2` must divide {divides}. `None`
            (with `window=None`): dense projections.
        window: `(c1, c2)` with `c1 <= d1`, `c2 <= d2`: the cells each
            output reads. Projection MACs drop by `d1 d2 / (c1 c2)`.
        sic_units: int >= 1, SIC units per factorized 3x3 (`num_units`).
        spatial_bottleneck_stages: the stages whose 3x3s use the SIC spatial
            bottleneck: a list or tuple of stage names ({stages}) or their
            numbers, or `None` for none. Each needs a feature map of at least
            2x2 for the input shape."""

_RESNET_DOC = """Instantiates the {title} built from SIC layers (SIC paper, Wang et al. 2017).

    `keras.applications.{keras_name}`'s layout and layer names (ResNet v1,
    the stride in the first 1x1 of a stage's first block and in its
    shortcut), with the 7x7 stem kept standard and, in every bottleneck
    block, `_1_conv`, `_3_conv` and the shortcut `_0_conv` as
    `TopologicalProjection`s and `_2_conv` as a `FactorizedConv2D`, each
    followed by keras' BN (and ReLU). The defaults give {macs} MACs at 224 px
    with 1000 classes ({ratio} less than {keras_name}'s {standard_macs}; the
    paper: {paper}); see the module docstring for every design choice. The
    returned `EffConvModel` has `model.pyramid_outputs` (`"P2"` .. `"P5"`,
    strides 4 to 32).

    Args:
{keras_args}
{knobs}
        factorize_shortcuts: bool; whether the shortcut `_0_conv` is a
            `TopologicalProjection` (True) or keras' dense `Conv2D`.
        projection_execution: `execution` of the standalone
            `TopologicalProjection`s (`_0_conv`, `_1_conv`, `_3_conv`):
            `"auto"`, `"rolled_groups"` or `"masked_dense"` (same results,
            different speed). The projections inside `FactorizedConv2D` run
            their `"auto"` form.

    Returns:
        A `keras_effconv.applications.EffConvModel` (a Functional
        `keras.Model`).

    Raises:
        ValueError: for `weights="imagenet"`, a missing weights file, an
            invalid `input_shape`, `pooling` or `classifier_activation` (as
            keras does), or a bad knob (named in the message): a grid whose
            cell count does not divide the channel counts, a window larger
            than the grid, an unknown stage, `sic_units < 1`, or a
            bottleneck stage smaller than 2x2 for the input shape.

    Example:

    >>> model = {func}(include_top=False, input_shape=(64, 64, 3)){skip}
    >>> [type(model.get_layer(f"conv2_block1_{{i}}_conv")).__name__ for i in range(4)]{skip}
    ['TopologicalProjection', 'TopologicalProjection', 'FactorizedConv2D', 'TopologicalProjection']
    """


def FactorizedResNet50(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="factorized_resnet50",
    grid=(1, 8),
    window=(1, 2),
    sic_units=1,
    spatial_bottleneck_stages=(),
    factorize_shortcuts=True,
    projection_execution="auto",
):
    return _factorized_resnet(
        "resnet50",
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        grid,
        window,
        sic_units,
        spatial_bottleneck_stages,
        factorize_shortcuts,
        projection_execution,
    )


def FactorizedResNet101(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="factorized_resnet101",
    grid=(1, 8),
    window=(1, 2),
    sic_units=1,
    spatial_bottleneck_stages=(),
    factorize_shortcuts=True,
    projection_execution="auto",
):
    return _factorized_resnet(
        "resnet101",
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        grid,
        window,
        sic_units,
        spatial_bottleneck_stages,
        factorize_shortcuts,
        projection_execution,
    )


_IMAGENET_KERAS_ARGS = _KERAS_ARGS_DOC.format(
    top=" (global average pooling + `Dense(classes)`)",
    default_shape="`(224, 224, 3)` or `(3, 224, 224)`",
    min_size="32x32",
)
_RESNET_KNOBS = _KNOBS_DOC.format(
    divides="64 (every channel count from 64 to 2048)",
    stages='`"conv2"` .. `"conv5"`, numbers 2-5',
)
FactorizedResNet50.__doc__ = _RESNET_DOC.format(
    title="ResNet50",
    keras_name="ResNet50",
    macs="0.66 G",
    ratio="5.9x",
    standard_macs="3.86 G",
    paper="845 M, 4.5x",
    keras_args=_IMAGENET_KERAS_ARGS,
    knobs=_RESNET_KNOBS + ' Default: none.',
    func="FactorizedResNet50",
    skip="",
)
FactorizedResNet101.__doc__ = _RESNET_DOC.format(
    title="ResNet101",
    keras_name="ResNet101",
    macs="1.15 G",
    ratio="6.6x",
    standard_macs="7.57 G",
    paper="1172 M, 6.5x",
    keras_args=_IMAGENET_KERAS_ARGS,
    knobs=_RESNET_KNOBS + ' Default: none.',
    func="FactorizedResNet101",
    # Building 101 layers takes seconds: tests/applications/test_factorized_networks.py covers it with -m slow.
    skip="  # doctest: +SKIP",
)


# --------------------------------------------------------------------------- VGG-16


def FactorizedVGG16(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="factorized_vgg16",
    grid=(1, 8),
    window=(1, 2),
    sic_units=1,
    spatial_bottleneck_stages="auto",
    style="imagenet",
):
    """Instantiates VGG16 built from SIC layers (SIC paper, Wang et al. 2017).

    `style="imagenet"` is `keras.applications.VGG16` layer for layer (names,
    pooling, top: flatten, fc1, fc2, predictions) with `block1_conv1` kept
    standard (it reads the image) and every other 3x3 convolution a
    `FactorizedConv2D` with the spatial bottleneck and ReLU inside, as keras'
    convolutions carry theirs. `style="cifar"` is `EffVGG16`'s CIFAR VGG-16
    (each conv followed by BN + ReLU, `"same"` pooling, a `Dense(512)` + BN +
    ReLU top). With the defaults: 0.35 G MACs at 224 px and 1000 classes,
    45x less than VGG16's 15.47 G (the paper: 42x); 7.53 M MACs for CIFAR at
    32 px and 10 classes, 42x less than 313.5 M. See the module docstring.
    It has no shortcuts and no standalone 1x1 projections, hence no
    `factorize_shortcuts` and `projection_execution`.
    `model.pyramid_outputs` holds the five block outputs (`"P1"` .. `"P5"`,
    strides 2 to 32).

    Args:
        include_top: whether to include the classifier (`style="imagenet"`:
            flatten + fc1 + fc2 + predictions as in keras; `"cifar"`:
            flatten + `Dense(512)` + BN + ReLU + predictions).
        weights: `None` (random initialization) or the path to a weights file
            saved with `model.save_weights()`; `"imagenet"` raises a
            `ValueError` (no pretrained weights exist).
        input_tensor: optional Keras tensor to use as image input.
        input_shape: optional shape tuple, only to be specified if
            `include_top` is `False` (otherwise `(224, 224, 3)`, or
            `(32, 32, 3)` for `style="cifar"`); at least 32x32
            (`"imagenet"`) or 8x8 (`"cifar"`). Any number of channels.
        pooling: `None`, `"avg"` or `"max"` when `include_top` is `False`.
        classes: number of classes, used with `include_top=True`.
        classifier_activation: activation of the `predictions` layer, or
            `None` for logits.
        name: the model's name.
        grid: `(d1, d2)`, the channel grid of the projections inside every
            `FactorizedConv2D`; `d1 * d2` must divide 64. `None` (with
            `window=None`): dense projections.
        window: `(c1, c2)` with `c1 <= d1`, `c2 <= d2`.
        sic_units: int >= 1, SIC units per factorized 3x3 (`num_units`).
        spatial_bottleneck_stages: `"auto"` (every block for
            `style="imagenet"`, `block1`-`block3` for `"cifar"`), `None` for
            none, or a list or tuple of block names (`"block1"` ..
            `"block5"`) or numbers 1-5. Each needs a feature map of at least
            2x2 for the input shape.
        style: `"imagenet"` (keras' VGG16) or `"cifar"`.

    Returns:
        A `keras_effconv.applications.EffConvModel` (a Functional
        `keras.Model`).

    Raises:
        ValueError: for `weights="imagenet"`, a missing weights file, an
            invalid `input_shape` or `style`, or a bad knob (named in the
            message).

    Example:

    >>> model = FactorizedVGG16(input_shape=(32, 32, 3), classes=10, style="cifar")
    >>> [type(model.get_layer(n)).__name__ for n in ("block1_conv1", "block1_conv2")]
    ['Conv2D', 'FactorizedConv2D']
    """

    def make_replacer():
        cifar_style = style == "cifar"  # validated by build_vgg16 before
        knobs = _check_knobs(
            grid, window, sic_units, spatial_bottleneck_stages, True, "auto", _VGG_STAGES,
            tuple(filters for filters, _ in vgg.BLOCKS), auto_stages=_VGG_AUTO_STAGES[style],
        )
        sizes = lambda length: _stage_sizes(length, _VGG_STAGES, 0, _ceil_half if cifar_style else _floor_half)  # noqa: E731
        return _SICReplacer(knobs, sizes, spatial_bottleneck_stages)

    return vgg.build_vgg16(
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        style,
        make_replacer,
        "FactorizedVGG16",
    )


# --------------------------------------------------------------------------- CIFAR ResNet-20/56


def _factorized_cifar_resnet(
    depth,
    include_top,
    weights,
    input_tensor,
    input_shape,
    pooling,
    classes,
    classifier_activation,
    name,
    grid,
    window,
    sic_units,
    spatial_bottleneck_stages,
    factorize_shortcuts,
    projection_execution,
):
    def make_replacer():
        knobs = _check_knobs(
            grid, window, sic_units, spatial_bottleneck_stages, factorize_shortcuts, projection_execution,
            _CIFAR_STAGES, cifar.STAGE_FILTERS,
        )
        sizes = lambda length: _stage_sizes(length, _CIFAR_STAGES, 0, _ceil_half)  # noqa: E731
        return _SICReplacer(knobs, sizes, spatial_bottleneck_stages)

    return cifar.build_cifar_resnet(
        depth,
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        make_replacer,
        f"FactorizedResNet{depth}",
    )


_CIFAR_DOC = """Instantiates the CIFAR ResNet-{depth} built from SIC layers.

    The CIFAR ResNet-{depth} of `EffResNet{depth}` (He et al. 2016; layer
    names `conv1_conv`, `stack{{1..3}}_block{{i}}_{{0,1,2}}_conv`, ...) with
    the 3x3 stem kept standard and both 3x3 convolutions of every basic block
    `FactorizedConv2D`s, each followed by BN (and ReLU) as in `cifar.py`. By
    default the projections are dense (`grid=None`): {macs} MACs at 32 px
    with 10 classes, {ratio} less than the standard ResNet-{depth}'s
    {standard_macs} (see the module docstring). The shortcut `_0_conv` is
    keras' `Conv2D` with dense projections, a `TopologicalProjection` with a
    grid (and `factorize_shortcuts=True`). `model.pyramid_outputs` holds the
    three stage outputs (`"P0"`, `"P1"`, `"P2"`).

    Args:
{keras_args}
{knobs}
        factorize_shortcuts: bool; with a grid, whether the shortcut
            `_0_conv` is a `TopologicalProjection` (True) or keras' dense
            `Conv2D` (with `grid=None` it is always dense).
        projection_execution: `execution` of the shortcut
            `TopologicalProjection`s (with a grid): `"auto"`,
            `"rolled_groups"` or `"masked_dense"`. The projections inside
            `FactorizedConv2D` run their `"auto"` form.

    Returns:
        A `keras_effconv.applications.EffConvModel` (a Functional
        `keras.Model`).

    Raises:
        ValueError: for `weights="imagenet"`, a missing weights file, an
            invalid `input_shape`, or a bad knob (named in the message).

    Example:

    >>> model = FactorizedResNet{depth}(input_shape=(28, 28, 1), include_top=False, pooling="avg")
    >>> tuple(model.output.shape), type(model.get_layer("stack1_block1_1_conv")).__name__
    ((None, 64), 'FactorizedConv2D')
    """


def FactorizedResNet20(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=10,
    classifier_activation="softmax",
    name="factorized_resnet20",
    grid=None,
    window=None,
    sic_units=1,
    spatial_bottleneck_stages=(),
    factorize_shortcuts=True,
    projection_execution="auto",
):
    return _factorized_cifar_resnet(
        20,
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        grid,
        window,
        sic_units,
        spatial_bottleneck_stages,
        factorize_shortcuts,
        projection_execution,
    )


def FactorizedResNet56(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=10,
    classifier_activation="softmax",
    name="factorized_resnet56",
    grid=None,
    window=None,
    sic_units=1,
    spatial_bottleneck_stages=(),
    factorize_shortcuts=True,
    projection_execution="auto",
):
    return _factorized_cifar_resnet(
        56,
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        grid,
        window,
        sic_units,
        spatial_bottleneck_stages,
        factorize_shortcuts,
        projection_execution,
    )


_CIFAR_KERAS_ARGS = _KERAS_ARGS_DOC.format(
    top=" (global average pooling + `Dense(classes)`)",
    default_shape="`(32, 32, 3)`; e.g. `(28, 28, 1)` for Fashion-MNIST",
    min_size="8x8",
)
_CIFAR_KNOBS = _KNOBS_DOC.format(
    divides="16 (every channel count from 16 to 64)",
    stages='`"stack1"` .. `"stack3"`, numbers 1-3',
) + " Default: none."
FactorizedResNet20.__doc__ = _CIFAR_DOC.format(
    depth=20, macs="6.65 M", ratio="6.1x", standard_macs="40.8 M", keras_args=_CIFAR_KERAS_ARGS, knobs=_CIFAR_KNOBS
)
FactorizedResNet56.__doc__ = _CIFAR_DOC.format(
    depth=56, macs="19.19 M", ratio="6.6x", standard_macs="125.7 M", keras_args=_CIFAR_KERAS_ARGS, knobs=_CIFAR_KNOBS
)
