"""IGCV1's networks (Zhang, Qi, Xiao & Wang, ICCV 2017): wider ResNets at about equal parameters.

IGCV1's claim is "wider at the same parameter count": a ResNet whose 3x3
convolutions are interleaved group convolutions (`InterleavedGroupConv2D`,
`L` primary groups of `M` channels, width `G = L * M`) can be much wider
than a regular ResNet with the same parameters, and is more accurate. The
networks here follow the authors' released MXNet models
(hellozting/InterleavedGroupConvolutions: the ImageNet symbol files and
`network/resnet_igc*.py`), read layer by layer:

- the block is ResNet v1's basic block (`resnet.basic_block`) with each 3x3
  convolution an IGC unit: primary 3x3 group conv, interleave, secondary
  1x1 group conv, interleave back, no BN or ReLU inside, then BN (and ReLU,
  except after the second unit, where it follows the addition). "+Ident."
  in the paper's names is this identity shortcut; every network here has it;
- stride 2 sits on the first unit's primary conv; the secondary conv of
  that unit already has the new stage's width;
- where the shape changes the shortcut is a 1x1 convolution with `L`
  groups (of the new stage) + BN;
- all convolutions have no bias; BN epsilon 1e-5 (ImageNet, torchvision's;
  the authors use 2e-5) and momentum 0.9 (CIFAR, as the other small
  networks here and the authors).

ImageNet, depth 18 (`IGCResNet18`): the 7x7 stem (stride 2, BN, ReLU, 3x3
max pooling), four stages of two blocks.

| variant | stem | stage widths G | L per stage | M per stage |
|---|---:|---|---|---|
| L4M32 | 128 | 128, 256, 512, 1024 | 4 | 32, 64, 128, 256 |
| L16M16 | 256 | 256, 512, 1024, 2048 | 16 | 16, 32, 64, 128 |
| L100M2 | 100 | 200, 400, 800, 1600 | 100, 200, 400, 800 | 2 |

(L100M2 doubles `L`, not `M`, per stage, as the released code does; its
first block has a 1x1 projection from the 100-channel stem.)

CIFAR (`IGCResNetCIFAR`, 28-32 px): a 3x3 stem with the first stage's
width, three stages of six blocks (depth 38) at full, 1/2 and 1/4
resolution, `L` fixed and `M` doubled per stage: L4M8 (widths 32, 64, 128),
L24M2 (48, 96, 192), L32M26 (832, 1664, 3328).

`regular=True` builds the regular-convolution ResNet the paper compares
with: the same depth and layout with `Conv2D` 3x3 convolutions, its width
`W` (stages `W, 2W, 4W(, 8W)`, stem `W`) chosen so that its parameters are
the closest to the IGC network's (`EQUAL_PARAMS_WIDTH`).

Costs against the paper's table: `benchmarks/results/cost_tables.md`.
"""

import keras

from keras_effconv import _validation
from keras_effconv.applications import cifar
from keras_effconv.applications import resnet
from keras_effconv.applications.conv_types import ConvReplacer
from keras_effconv.layers import InterleavedGroupConv2D

# variant -> (stem width, L per stage, M per stage)
IMAGENET_VARIANTS = {
    "L4M32": (128, (4, 4, 4, 4), (32, 64, 128, 256)),
    "L16M16": (256, (16, 16, 16, 16), (16, 32, 64, 128)),
    "L100M2": (100, (100, 200, 400, 800), (2, 2, 2, 2)),
}
CIFAR_VARIANTS = {
    "L4M8": ((4, 4, 4), (8, 16, 32)),
    "L24M2": ((24, 24, 24), (2, 4, 8)),
    "L32M26": ((32, 32, 32), (26, 52, 104)),
}
CIFAR_DEPTH = 38  # three stages of six blocks
# The paper's table (depth 18, ImageNet): params, FLOPs (multiply-adds).
PAPER_IMAGENET = {"L4M32": (11.205e6, 1.9e9), "L16M16": (11.329e6, 2.2e9), "L100M2": (8.61e6, 1.3e9)}
# Width W of the regular ResNet with the parameters closest to each variant's (1000 / 10 classes;
# tests/applications/test_igc_networks.py checks that W - 1 and W + 1 are further away).
EQUAL_PARAMS_WIDTH = {"L4M32": 66, "L16M16": 69, "L100M2": 55, "L4M8": 16, "L24M2": 12, "L32M26": 151}


class _IGCReplacer:
    """Turns the block convolutions of stage `s` into IGC units with `L = groups[s]`."""

    def __init__(self, groups):
        self.groups = groups

    def check_input(self, img_input):
        pass

    def require_replacements(self, what):
        pass

    def __call__(self, conv, x, free_input_order=False, free_output_order=False):
        # IGC units have no faster channel order: the hints change nothing here.
        stage = conv.name.split("_")[0]
        if stage not in self.groups:
            return conv(x)  # the stem
        config = conv.get_config()
        groups = self.groups[stage]
        if tuple(config["kernel_size"]) == (1, 1):  # the projection shortcut
            layer = keras.layers.Conv2D(
                config["filters"], 1, strides=config["strides"], use_bias=False, groups=groups, name=conv.name
            )
        else:
            layer = InterleavedGroupConv2D(
                config["filters"],
                config["kernel_size"],
                strides=config["strides"],
                padding="same",
                use_bias=False,
                primary_groups=groups,
                name=conv.name,
            )
        return layer(x)


def _design(variant, variants, regular, stage_name, prefix):
    """`(regular width or None, stage widths, replacer factory, default name)` of one network.

    `variants[variant]` ends with the `L` and the `M` of every stage.
    """
    _validation.check_choice(variant, "variant", tuple(variants))
    if not isinstance(regular, bool):
        raise _validation.invalid_value("regular", "expected True or False", regular)
    groups, multipliers = variants[variant][-2:]
    if regular:
        width = EQUAL_PARAMS_WIDTH[variant]
        stages = tuple(width * 2**i for i in range(len(groups)))
        return width, stages, lambda: ConvReplacer("standard"), f"regular_{prefix}_w{width}"
    by_stage = {stage_name(s): l for s, l in enumerate(groups)}
    stages = tuple(l * m for l, m in zip(groups, multipliers))
    return None, stages, lambda: _IGCReplacer(by_stage), f"igc_{prefix}_{variant.lower()}"


def IGCResNet18(
    variant="L4M32",
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name=None,
    regular=False,
):
    """Instantiates an IGCV1 ImageNet network of depth 18 (or its regular counterpart).

    The architectures and every choice are in the module docstring of
    `keras_effconv.applications.igc`; keras.applications' interface;
    `model.pyramid_outputs` holds the stage outputs (`"P2"`..`"P5"`).

    Args:
        variant: `"L4M32"`, `"L16M16"` or `"L100M2"` (the paper's "+Ident."
            networks).
        include_top: whether to include the classifier.
        weights: `None` or the path to a weights file; `"imagenet"` raises.
        input_tensor: optional Keras tensor to use as image input.
        input_shape: optional shape tuple (default `(224, 224, 3)`); at
            least 32x32.
        pooling: `None`, `"avg"` or `"max"` when `include_top` is `False`.
        classes: number of classes.
        classifier_activation: activation of `predictions`, or `None`.
        name: the model's name; `None` gives `"igc_resnet18_l4m32"` (or
            `"regular_resnet18_w66"` with `regular=True`).
        regular: build the regular ResNet-18 with about the same parameters
            instead (width `EQUAL_PARAMS_WIDTH[variant]`).

    Returns:
        A `keras_effconv.applications.EffConvModel`.

    Raises:
        ValueError: for an unknown `variant`, a non-boolean `regular`, and
            keras.applications' argument errors.

    Example:

    >>> model = IGCResNet18("L4M32", input_shape=(64, 64, 3), include_top=False, pooling="avg")
    >>> model.get_layer("conv3_block1_1_conv").primary_groups, model.output.shape[-1]
    (4, 1024)
    """
    width, stages, make, default_name = _design(
        variant, IMAGENET_VARIANTS, regular, lambda s: f"conv{s + 2}", "resnet18"
    )
    stem = width or IMAGENET_VARIANTS[variant][0]
    return resnet.build_resnet(
        "resnet18", include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
        name or default_name, make, "IGCResNet18", stem_filters=stem, stage_filters=stages,
    )


def IGCResNetCIFAR(
    variant="L4M8",
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=10,
    classifier_activation="softmax",
    name=None,
    regular=False,
):
    """Instantiates an IGCV1 CIFAR network (three stages of six blocks) or its regular counterpart.

    For 28-32 px images; the architectures are in the module docstring of
    `keras_effconv.applications.igc`. `model.pyramid_outputs` holds the
    three stage outputs (`"P0"`..`"P2"`).

    Args:
        variant: `"L4M8"`, `"L24M2"` or `"L32M26"`.
        include_top: whether to include the classifier.
        weights: `None` or the path to a weights file; `"imagenet"` raises.
        input_tensor: optional Keras tensor to use as image input.
        input_shape: optional shape tuple (default `(32, 32, 3)`), e.g.
            `(28, 28, 1)`; at least 8x8.
        pooling: `None`, `"avg"` or `"max"` when `include_top` is `False`.
        classes: number of classes.
        classifier_activation: activation of `predictions`, or `None`.
        name: the model's name; `None` gives `"igc_resnet38_l4m8"` (or
            `"regular_resnet38_w16"` with `regular=True`).
        regular: build the regular ResNet-38 with about the same parameters
            instead (width `EQUAL_PARAMS_WIDTH[variant]`).

    Returns:
        A `keras_effconv.applications.EffConvModel`.

    Raises:
        ValueError: for an unknown `variant`, a non-boolean `regular`, and
            keras.applications' argument errors.

    Example:

    >>> model = IGCResNetCIFAR("L4M8", input_shape=(28, 28, 1))
    >>> model.get_layer("stack3_block1_1_conv").width, model.output.shape[-1]
    (128, 10)
    """
    _, stages, make, default_name = _design(
        variant, CIFAR_VARIANTS, regular, lambda s: f"stack{s + 1}", f"resnet{CIFAR_DEPTH}"
    )
    return cifar.build_cifar_resnet(
        CIFAR_DEPTH, include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
        name or default_name, make, "IGCResNetCIFAR", stage_filters=stages,
    )
