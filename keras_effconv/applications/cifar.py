"""CIFAR-style ResNets (He et al., 2016, Sec. 4.2) for 28-32 px images.

`6n + 2` layers: a 3x3 stem with 16 filters, three stages of `n` basic blocks
(two 3x3 convolutions each) with 16, 32 and 64 filters and strides 1, 2, 2,
global average pooling and the classifier. Batch normalization uses
momentum 0.9. Where a block changes shape the
shortcut is a 1x1 convolution + BN (the paper's option B). ResNet-20 has
0.27 M parameters and 41 M MACs at 32x32 (3 input channels).
"""

import keras

from keras_effconv.applications import _common
from keras_effconv.applications.conv_types import ConvReplacer
from keras_effconv.applications.resnet import basic_block

STAGE_FILTERS = (16, 32, 64)
# Faster-moving BN statistics than keras' 0.99: short CPU runs (a few hundred
# steps) otherwise evaluate with statistics that have not converged yet.
BN_MOMENTUM = 0.9


def build_cifar_resnet(
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
    model_label,
    stage_filters=STAGE_FILTERS,
):
    """The CIFAR ResNet-`depth` whose convolutions go through a replacer (see `resnet.build_resnet`).

    `stage_filters` are the widths of the three stages; the stem has the
    first stage's width (16 in He et al.'s networks).
    """
    _common.check_weights(weights, model_label)
    replace = make_replacer()
    img_input = _common.image_input(input_tensor, input_shape, include_top, default_size=32, min_size=8)
    replace.check_input(img_input)
    bn_axis = _common.channel_axis()
    blocks = (depth - 2) // 6

    x = replace(keras.layers.Conv2D(stage_filters[0], 3, padding="same", use_bias=False, name="conv1_conv"), img_input)
    x = keras.layers.BatchNormalization(axis=bn_axis, momentum=BN_MOMENTUM, name="conv1_bn")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    pyramid = {}  # the stage outputs `stack{1..3}_block{last}_out`
    for stage, filters in enumerate(stage_filters, start=1):
        for block in range(1, blocks + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            x = basic_block(x, filters, replace, stride, name=f"stack{stage}_block{block}",
                            bn_kwargs={"momentum": BN_MOMENTUM})
        pyramid[f"P{stage - 1}"] = x

    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = _common.classifier(x, classes, classifier_activation)
    else:
        x = _common.pool_features(x, pooling)
    replace.require_replacements(f"model '{name}'")
    return _common.assemble(img_input, input_tensor, x, name, weights, pyramid)


def _cifar_resnet(
    depth,
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
    return build_cifar_resnet(
        depth,
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        lambda: ConvReplacer(conv, conv_config),
        f"EffResNet{depth}",
    )


_DOC = """Instantiates the CIFAR-style ResNet-{depth} with efficient convolutions.

    He et al. (2016) ResNet-{depth} for 28-32 px images (see the module
    docstring), with the interface of `keras.applications.ResNet50`. The
    recipe of `keras_effconv.applications.conv_types` replaces every 3x3
    convolution of the residual blocks; the stem reads 1 or 3 channels and
    stays standard. `model.pyramid_outputs` holds the three stage outputs
    (`"P0"`, `"P1"`, `"P2"`).

    Args:
        include_top: whether to include the classifier (global average
            pooling + `Dense(classes)`).
        weights: `None` or the path to a weights file saved with
            `model.save_weights()`; `"imagenet"` raises a `ValueError`.
        input_tensor: optional Keras tensor to use as image input.
        input_shape: optional shape tuple, only to be specified if
            `include_top` is `False` (otherwise `(32, 32, 3)`); e.g.
            `(28, 28, 1)` for Fashion-MNIST; at least 8x8.
        pooling: `None`, `"avg"` or `"max"` when `include_top` is `False`.
        classes: number of classes (default 10).
        classifier_activation: activation of the `predictions` layer, or
            `None` for logits.
        name: the model's name.
        conv: the name of a registered conv method (see
            `keras_effconv.conv_methods.conv_method_names()`; `"standard"`
            keeps keras' Conv2D).
        conv_config: dict of arguments for the efficient layer, or `None`.

    Returns:
        A `keras_effconv.applications.EffConvModel` (a Functional
        `keras.Model`).

    Raises:
        ValueError: for `weights="imagenet"`, a missing weights file, an
            invalid `input_shape`, an unknown `conv` or a bad `conv_config`.

    Example:

    >>> model = EffResNet{depth}(input_shape=(28, 28, 1), include_top=False, pooling="avg", conv="igc")
    >>> tuple(model.output.shape)
    (None, 64)
    """


def EffResNet20(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=10,
    classifier_activation="softmax",
    name="eff_resnet20",
    conv="hetconv",
    conv_config=None,
):
    return _cifar_resnet(
        20,
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


def EffResNet56(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=10,
    classifier_activation="softmax",
    name="eff_resnet56",
    conv="hetconv",
    conv_config=None,
):
    return _cifar_resnet(
        56,
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


EffResNet20.__doc__ = _DOC.format(depth=20)
EffResNet56.__doc__ = _DOC.format(depth=56)
