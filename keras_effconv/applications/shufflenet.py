"""ShuffleNet V2 (Ma, Zhang, Zheng & Sun, ECCV 2018), with the interface of `keras.applications`.

The network of the paper's Table 5 in torchvision's layout:

- stem: `3 x 3` convolution with 24 filters and stride 2, BN, ReLU, `3 x 3`
  max pooling with stride 2 (`conv1_*`, `pool1`);
- three stages of 4, 8 and 4 units (`stage2` .. `stage4`) whose first unit
  halves the resolution; output channels 48/96/192 (0.5x), 116/232/464
  (1.0x), 176/352/704 (1.5x), 244/488/976 (2.0x);
- `1 x 1` convolution to 1024 channels (2048 for 2.0x), BN, ReLU
  (`conv5_*`), global average pooling and the classifier.

A unit with stride 1 splits its channels in half (`ChannelSplit`); one half
is the identity, the other runs `1 x 1` conv, BN, ReLU, `3 x 3` depthwise
conv, BN, `1 x 1` conv, BN, ReLU; the halves are concatenated and shuffled
with two groups (`ChannelShuffle`, written with 4-D tensors only, so the
LiteRT GPU delegate accelerates it: DESIGN.md section 5). A unit with
stride 2 feeds its whole input to both branches; the left one is `3 x 3`
depthwise conv (stride 2), BN, `1 x 1` conv, BN, ReLU. There is no
nonlinearity between a depthwise convolution and the `1 x 1` convolution
after it, which is what makes every such pair one linear map
(`keras_effconv.decompose.expand_separable`).

Choices the paper leaves open (torchvision's unless said otherwise):
convolutions have no bias (BN follows each); the `3 x 3` convolutions and the
max pooling use `padding="same"` (torchvision pads 1 on each side, which
gives the same output sizes at even input sizes); BatchNormalization keeps
keras' defaults (momentum 0.99, epsilon 1e-3) in the ImageNet network.

`style="cifar"` is the small-input variant for 28-32 px images (as in the
common CIFAR ports, e.g. kuangliu/pytorch-cifar): the stem convolution has
stride 1 and no max pooling follows, so the three stages run at 1/2, 1/4 and
1/8 of the input size (14, 7, 4 at 28 px); BN momentum 0.9, as in the other
small networks (`keras_effconv.applications.cifar`), because short CPU runs
evaluate with moving statistics that must have caught up.

Cost at 224 px with 1000 classes (`keras_effconv.profile`), against the
paper's figures: see `benchmarks/results/cost_tables.md`.
"""

import keras

from keras_effconv import _validation
from keras_effconv.applications import _common
from keras_effconv.layers import ChannelShuffle
from keras_effconv.layers import ChannelSplit

# Output channels of stage2, stage3, stage4 and conv5 per width multiplier (the paper's Table 5).
STAGE_CHANNELS = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}
STAGE_REPEATS = (4, 8, 4)
STEM_FILTERS = 24
STYLES = ("imagenet", "cifar")
_CIFAR_BN_MOMENTUM = 0.9


def _width_name(width_multiplier):
    return f"x{width_multiplier:.1f}".replace(".", "_")


def _check_arguments(width_multiplier, style):
    if isinstance(width_multiplier, bool) or width_multiplier not in STAGE_CHANNELS:
        raise _validation.invalid_value(
            "width_multiplier", f"expected one of {sorted(STAGE_CHANNELS)} (the paper's widths)", width_multiplier
        )
    _validation.check_choice(style, "style", STYLES)


class _Layers:
    """Creates the network's layers with its BatchNormalization settings."""

    def __init__(self, style):
        self.axis = _common.channel_axis()
        self.bn_kwargs = {"momentum": _CIFAR_BN_MOMENTUM} if style == "cifar" else {}

    def conv_bn_relu(self, x, filters, name, conv_name=None):
        """`1 x 1` conv `conv_name` (default `name`), BN `<name>_bn`, ReLU `<name>_relu`."""
        x = keras.layers.Conv2D(filters, 1, use_bias=False, name=conv_name or name)(x)
        x = keras.layers.BatchNormalization(axis=self.axis, name=f"{name}_bn", **self.bn_kwargs)(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x)

    def depthwise_bn(self, x, strides, name):
        x = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=name)(x)
        return keras.layers.BatchNormalization(axis=self.axis, name=f"{name}_bn", **self.bn_kwargs)(x)


def _unit(layers, x, filters, strides, name):
    """One ShuffleNet V2 unit (Fig. 3 c for stride 1, d for stride 2)."""
    half = filters // 2
    if strides == 1:
        left, right = ChannelSplit(2, name=f"{name}_split")(x)
    else:
        left = layers.depthwise_bn(x, strides, f"{name}_branch1_dw")
        left = layers.conv_bn_relu(left, half, f"{name}_branch1_pw")
        right = x
    right = layers.conv_bn_relu(right, half, f"{name}_branch2_pw1")
    right = layers.depthwise_bn(right, strides, f"{name}_branch2_dw")
    right = layers.conv_bn_relu(right, half, f"{name}_branch2_pw2")
    x = keras.layers.Concatenate(axis=layers.axis, name=f"{name}_concat")([left, right])
    return ChannelShuffle(2, name=f"{name}_shuffle")(x)


def ShuffleNetV2(
    width_multiplier=1.0,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name=None,
    style="imagenet",
):
    """Instantiates ShuffleNet V2 (Ma et al., ECCV 2018).

    The architecture, its layer names and the choices the paper leaves open
    are in the module docstring of `keras_effconv.applications.shufflenet`.
    `model.pyramid_outputs` holds the stem, stage and final feature maps
    (`"P1"`..`"P5"` for `style="imagenet"`; `"P0"`..`"P3"` for
    `style="cifar"`, whose stem keeps the input resolution).

    Args:
        width_multiplier: 0.5, 1.0, 1.5 or 2.0 (the paper's widths).
        include_top: whether to include the classifier (global average
            pooling + `Dense(classes)`).
        weights: `None` or the path to a weights file saved with
            `model.save_weights()`; `"imagenet"` raises a `ValueError`
            (nothing is ever downloaded).
        input_tensor: optional Keras tensor to use as image input.
        input_shape: optional shape tuple, only to be specified if
            `include_top` is `False` (otherwise `(224, 224, 3)`, or
            `(32, 32, 3)` for `style="cifar"`); at least 32x32 (8x8 for
            `style="cifar"`).
        pooling: `None`, `"avg"` or `"max"` when `include_top` is `False`.
        classes: number of classes.
        classifier_activation: activation of the `predictions` layer, or
            `None` for logits.
        name: the model's name; `None` gives `"shufflenet_v2_x1_0"` (width
            1.0) and so on, with a `"_cifar"` suffix for the small variant.
        style: `"imagenet"` (224 px, the paper's network) or `"cifar"` (the
            small-input variant for 28-32 px data).

    Returns:
        A `keras_effconv.applications.EffConvModel` (a Functional
        `keras.Model`).

    Raises:
        ValueError: for an unknown `width_multiplier` or `style`,
            `weights="imagenet"`, a missing weights file, or an invalid
            `input_shape`.

    Example:

    >>> model = ShuffleNetV2(0.5, input_shape=(28, 28, 1), classes=10, style="cifar")
    >>> tuple(model.output.shape)
    (None, 10)
    """
    _check_arguments(width_multiplier, style)
    if name is None:
        name = f"shufflenet_v2_{_width_name(width_multiplier)}" + ("_cifar" if style == "cifar" else "")
    _common.check_weights(weights, "ShuffleNetV2")
    cifar = style == "cifar"
    img_input = _common.image_input(
        input_tensor, input_shape, include_top, default_size=32 if cifar else 224, min_size=8 if cifar else 32
    )
    layers = _Layers(style)
    *stage_channels, last_channels = STAGE_CHANNELS[width_multiplier]

    x = keras.layers.Conv2D(
        STEM_FILTERS, 3, strides=1 if cifar else 2, padding="same", use_bias=False, name="conv1_conv"
    )(img_input)
    x = keras.layers.BatchNormalization(axis=layers.axis, name="conv1_bn", **layers.bn_kwargs)(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    level = 0 if cifar else 1
    pyramid = {f"P{level}": x}
    if not cifar:
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
        level += 1
        pyramid[f"P{level}"] = x
    for stage, (filters, repeats) in enumerate(zip(stage_channels, STAGE_REPEATS), start=2):
        for unit in range(1, repeats + 1):
            x = _unit(layers, x, filters, 2 if unit == 1 else 1, f"stage{stage}_unit{unit}")
        level += 1
        pyramid[f"P{level}"] = x
    x = layers.conv_bn_relu(x, last_channels, "conv5", conv_name="conv5_conv")
    pyramid[f"P{level}"] = x  # the last stage's level, after conv5 (same resolution)

    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = _common.classifier(x, classes, classifier_activation)
    else:
        x = _common.pool_features(x, pooling)
    return _common.assemble(img_input, input_tensor, x, name, weights, pyramid)
