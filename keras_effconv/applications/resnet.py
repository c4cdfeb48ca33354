"""EffResNet18/34/50/101/152: ResNet v1 with efficient convolutions.

EffResNet50/101/152 are layer for layer the networks of
`keras.applications.resnet` (bottleneck blocks, stride in the first 1x1 of
each block, same layer names). EffResNet18/34 are the basic-block networks
keras.applications lacks, in torchvision's (and keras-hub's) layout: a 7x7
stem convolution with stride 2 and no bias, BN, ReLU, 3x3 max pooling with
stride 2, then stages of 2/2/2/2 (ResNet-18) or 3/4/6/3 (ResNet-34) basic
blocks of two 3x3 convolutions (no bias, each followed by BN) with 64, 128,
256, 512 filters; the first block of stages 3-5 has stride 2 in its first
3x3 convolution and a 1x1 convolution + BN shortcut (torchvision's
`downsample`, the paper's option B). BN epsilon is 1e-5 as in torchvision;
layer names follow keras' bottleneck networks (`conv3_block1_1_conv`, ...).
In every network the convolutions the chosen method's recipe selects (see
`conv_types`) are replaced.
"""

import keras

from keras_effconv.applications import _common
from keras_effconv.applications.conv_types import ConvReplacer

# Blocks per stage (conv2 .. conv5) of each depth.
STAGE_BLOCKS = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
}
STAGE_FILTERS = (64, 128, 256, 512)
BASIC_BLOCK_DEPTHS = ("resnet18", "resnet34")
_BASIC_EPSILON = 1e-5


def basic_block(x, filters, replace, stride=1, name=None, bn_kwargs=None):
    """torchvision's BasicBlock: 3x3 (stride) + BN + ReLU, 3x3 + BN, add, ReLU.

    The shortcut is a 1x1 convolution + BN where the shape changes (option
    B), else the identity. Shared by EffResNet18/34 and the CIFAR ResNets,
    which differ only in `bn_kwargs`.
    """
    bn_axis = _common.channel_axis()
    Conv2D = keras.layers.Conv2D
    bn_kwargs = dict(bn_kwargs or {})

    def batch_norm(suffix):
        return keras.layers.BatchNormalization(axis=bn_axis, name=f"{name}_{suffix}", **bn_kwargs)

    if stride != 1 or x.shape[bn_axis] != filters:
        shortcut = replace(Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv"), x)
        shortcut = batch_norm("0_bn")(shortcut)
    else:
        shortcut = x
    # The 3x3s' shared side (block input, residual sum) keeps its order; between them it is free.
    x = replace(Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_1_conv"), x,
                free_output_order=True)
    x = batch_norm("1_bn")(x)
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = replace(Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv"), x, free_input_order=True)
    x = batch_norm("2_bn")(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def _residual_block(x, filters, replace, stride=1, conv_shortcut=True, name=None):
    bn_axis = _common.channel_axis()
    Conv2D = keras.layers.Conv2D
    BatchNormalization = keras.layers.BatchNormalization
    if conv_shortcut:
        shortcut = replace(Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv"), x)
        shortcut = BatchNormalization(axis=bn_axis, epsilon=1.001e-5, name=f"{name}_0_bn")(shortcut)
    else:
        shortcut = x
    x = replace(Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv"), x)
    x = BatchNormalization(axis=bn_axis, epsilon=1.001e-5, name=f"{name}_1_bn")(x)
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(x)
    # Between the bottleneck's 1x1s (through batch norm and ReLU): both channel orders are free.
    x = replace(Conv2D(filters, 3, padding="SAME", name=f"{name}_2_conv"), x,
                free_input_order=True, free_output_order=True)
    x = BatchNormalization(axis=bn_axis, epsilon=1.001e-5, name=f"{name}_2_bn")(x)
    x = keras.layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = replace(Conv2D(4 * filters, 1, name=f"{name}_3_conv"), x)
    x = BatchNormalization(axis=bn_axis, epsilon=1.001e-5, name=f"{name}_3_bn")(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def _stack(x, filters, blocks, replace, stride1=2, name=None, basic=False):
    if basic:
        for i in range(1, blocks + 1):
            x = basic_block(x, filters, replace, stride=stride1 if i == 1 else 1, name=f"{name}_block{i}",
                            bn_kwargs={"epsilon": _BASIC_EPSILON})
        return x
    x = _residual_block(x, filters, replace, stride=stride1, name=f"{name}_block1")
    for i in range(2, blocks + 1):
        x = _residual_block(x, filters, replace, conv_shortcut=False, name=f"{name}_block{i}")
    return x


def build_resnet(
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
    model_label,
    stem_filters=64,
    stage_filters=STAGE_FILTERS,
):
    """keras' ResNet v1 of `depth_name` whose convolutions go through a replacer.

    `make_replacer()` returns the callable `replace(conv2d, x,
    free_input_order=False, free_output_order=False)` (e.g. a
    `ConvReplacer`, or the SIC networks' replacer; the two hints say where a
    convolution's channel order is free, see `conv_types`) after validating its
    arguments; its `check_input(img_input)` runs once the input is known and
    `require_replacements(what)` at the end. `model_label` names the network
    in the weights message. `stem_filters` and `stage_filters` (conv2 ..
    conv5) set the widths (IGCV1's wider networks).
    """
    _common.check_weights(weights, model_label)
    replace = make_replacer()
    img_input = _common.image_input(input_tensor, input_shape, include_top, default_size=224, min_size=32)
    replace.check_input(img_input)
    bn_axis = _common.channel_axis()

    basic = depth_name in BASIC_BLOCK_DEPTHS
    x = keras.layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(img_input)
    x = replace(keras.layers.Conv2D(stem_filters, 7, strides=2, use_bias=not basic, name="conv1_conv"), x)
    epsilon = _BASIC_EPSILON if basic else 1.001e-5
    x = keras.layers.BatchNormalization(axis=bn_axis, epsilon=epsilon, name="conv1_bn")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

    # Stage outputs `conv{2..5}_block{last}_out`, strides 4 to 32 (keras-hub's P2..P5).
    pyramid = {}
    for stage, (filters, blocks) in enumerate(zip(stage_filters, STAGE_BLOCKS[depth_name])):
        x = _stack(x, filters, blocks, replace, stride1=1 if stage == 0 else 2, name=f"conv{stage + 2}", basic=basic)
        pyramid[f"P{stage + 2}"] = x

    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = _common.classifier(x, classes, classifier_activation)
    else:
        x = _common.pool_features(x, pooling)
    replace.require_replacements(f"model '{name}'")
    return _common.assemble(img_input, input_tensor, x, name, weights, pyramid)


def _eff_resnet(
    depth_name,
    include_top,
    weights,
    input_tensor,
    input_shape,
    pooling,
    classes,
    classifier_activation,
    name,
    conv,
    conv_config,
):
    return build_resnet(
        depth_name,
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        lambda: ConvReplacer(conv, conv_config),
        f"Eff{depth_name.replace('resnet', 'ResNet')}",
    )


_DOC = """Instantiates {title} with efficient convolutions.

    Same arguments, layer names and behaviour as
    `keras.applications.{keras_name}`, plus `conv` and `conv_config`. With
    `conv="standard"` the network is layer for layer keras' {keras_name}
    ({standard_params} parameters with the top). Otherwise the recipe of
    `keras_effconv.applications.conv_types` replaces the 3x3 convolution of
    every bottleneck block (the 7x7 stem and the 1x1 convolutions stay
    standard). The returned `EffConvModel` has `model.pyramid_outputs`
    (`{{"P2": ..., "P5": ...}}`, strides 4 to 32) for use as a backbone.

    Args:
        include_top: whether to include the classifier (global average
            pooling + `Dense(classes)`).
        weights: `None` (random initialization) or the path to a weights file
            saved with `model.save_weights()`. There are no pretrained
            ImageNet weights; `"imagenet"` raises a `ValueError`.
        input_tensor: optional Keras tensor to use as image input.
        input_shape: optional shape tuple, only to be specified if
            `include_top` is `False` (otherwise `(224, 224, 3)` or
            `(3, 224, 224)`); at least 32x32.
        pooling: `None`, `"avg"` or `"max"`: pooling of the last feature map
            when `include_top` is `False`.
        classes: number of classes, used with `include_top=True`.
        classifier_activation: activation of the `predictions` layer, or
            `None` for logits.
        name: the model's name.
        conv: the name of a registered conv method (see
            `keras_effconv.conv_methods.conv_method_names()`; `"standard"`
            keeps keras' Conv2D).
        conv_config: dict of arguments for the efficient layer (e.g.
            `{{"part": 8}}` for HetConv), or `None` for the paper defaults.

    Returns:
        A `keras_effconv.applications.EffConvModel` (a Functional
        `keras.Model`).

    Raises:
        ValueError: for `weights="imagenet"`, a missing weights file, an
            invalid `input_shape`, `pooling` or `classifier_activation` (as
            keras does), an unknown `conv` or a bad `conv_config`.

    Example:

    >>> model = {func}(weights=None, input_shape=(64, 64, 3), include_top=False, conv="hetconv")
    >>> model.get_layer("conv2_block1_2_conv").__class__.__name__
    'HetConv2D'
    """


def EffResNet18(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="eff_resnet18",
    conv="hetconv",
    conv_config=None,
):
    return _eff_resnet(
        "resnet18",
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        conv,
        conv_config,
    )


def EffResNet34(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="eff_resnet34",
    conv="hetconv",
    conv_config=None,
):
    return _eff_resnet(
        "resnet34",
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        conv,
        conv_config,
    )


def EffResNet50(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="eff_resnet50",
    conv="hetconv",
    conv_config=None,
):
    return _eff_resnet(
        "resnet50",
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        conv,
        conv_config,
    )


def EffResNet101(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="eff_resnet101",
    conv="hetconv",
    conv_config=None,
):
    return _eff_resnet(
        "resnet101",
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        conv,
        conv_config,
    )


def EffResNet152(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="eff_resnet152",
    conv="hetconv",
    conv_config=None,
):
    return _eff_resnet(
        "resnet152",
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        conv,
        conv_config,
    )


_BASIC_DOC = """Instantiates the basic-block {title} with efficient convolutions.

    torchvision's `{tv_name}` layout (see the module docstring; keras has no
    {title}) with the interface of `keras.applications.ResNet50`, plus `conv`
    and `conv_config`. With `conv="standard"` it has {standard_params}
    parameters with the top (torchvision's count; keras' `count_params` adds
    the BN moving statistics, {bn_stats} more) and {macs} MACs at 224 px. Otherwise the
    recipe of `keras_effconv.applications.conv_types` replaces both 3x3
    convolutions of every basic block (the 7x7 stem and the 1x1 shortcuts
    stay standard). `model.pyramid_outputs` holds the stage outputs
    (`{{"P2": ..., "P5": ...}}`, strides 4 to 32).

    Args:
        include_top: whether to include the classifier (global average
            pooling + `Dense(classes)`).
        weights: `None` (random initialization) or the path to a weights file
            saved with `model.save_weights()`. There are no pretrained
            ImageNet weights; `"imagenet"` raises a `ValueError`.
        input_tensor: optional Keras tensor to use as image input.
        input_shape: optional shape tuple, only to be specified if
            `include_top` is `False` (otherwise `(224, 224, 3)` or
            `(3, 224, 224)`); at least 32x32.
        pooling: `None`, `"avg"` or `"max"`: pooling of the last feature map
            when `include_top` is `False`.
        classes: number of classes, used with `include_top=True`.
        classifier_activation: activation of the `predictions` layer, or
            `None` for logits.
        name: the model's name.
        conv: the name of a registered conv method (see
            `keras_effconv.conv_methods.conv_method_names()`; `"standard"`
            keeps keras' Conv2D).
        conv_config: dict of arguments for the efficient layer (e.g.
            `{{"part": 8}}` for HetConv), or `None` for the paper defaults.

    Returns:
        A `keras_effconv.applications.EffConvModel` (a Functional
        `keras.Model`).

    Raises:
        ValueError: for `weights="imagenet"`, a missing weights file, an
            invalid `input_shape`, `pooling` or `classifier_activation` (as
            keras does), an unknown `conv` or a bad `conv_config`.

    Example:

    >>> model = {func}(weights=None, input_shape=(64, 64, 3), include_top=False, conv="hetconv")
    >>> model.get_layer("conv2_block1_1_conv").__class__.__name__
    'HetConv2D'
    """


EffResNet18.__doc__ = _BASIC_DOC.format(
    title="ResNet-18", tv_name="resnet18", standard_params="11,689,512", bn_stats="9,600", macs="1.82 G",
    func="EffResNet18",
)
EffResNet34.__doc__ = _BASIC_DOC.format(
    title="ResNet-34", tv_name="resnet34", standard_params="21,797,672", bn_stats="17,024", macs="3.67 G",
    func="EffResNet34",
)
EffResNet50.__doc__ = _DOC.format(
    title="the ResNet50 architecture", keras_name="ResNet50", standard_params="25,636,712", func="EffResNet50"
)
EffResNet101.__doc__ = _DOC.format(
    title="the ResNet101 architecture", keras_name="ResNet101", standard_params="44,707,176", func="EffResNet101"
)
EffResNet152.__doc__ = _DOC.format(
    title="the ResNet152 architecture", keras_name="ResNet152", standard_params="60,419,944", func="EffResNet152"
)
