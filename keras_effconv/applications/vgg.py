"""EffVGG16: `keras.applications.VGG16` with efficient convolutions.

`style="imagenet"` is layer for layer keras' VGG16. `style="cifar"` is the
VGG-16 for 32x32 images used by the HetConv paper's CIFAR-10 experiments (Li
et al., "Pruning Filters for Efficient ConvNets", 2017): the same 13 3x3
convolutions, each followed by batch normalization and ReLU, max pooling with
`"same"` padding (so 28x28 inputs work too), and a top of `Dense(512)` ->
BN -> ReLU -> `Dense(classes)` (BN momentum 0.9); 313.5 M MACs at 32x32.
"""

import keras

from keras_effconv import _validation
from keras_effconv.applications import _common
from keras_effconv.applications.conv_types import ConvReplacer

BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
STYLES = ("imagenet", "cifar")


def EffVGG16(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="eff_vgg16",
    conv="hetconv",
    conv_config=None,
    style="imagenet",
):
    """Instantiates the VGG16 architecture with efficient convolutions.

    Same arguments, layer names and behaviour as `keras.applications.VGG16`,
    plus `conv`, `conv_config` and `style`. The recipe of
    `keras_effconv.applications.conv_types` replaces every 3x3 convolution
    except `block1_conv1`, which reads the image. `model.pyramid_outputs`
    holds the five block outputs (`"P1"` .. `"P5"`, strides 2 to 32); with
    `conv="hetconv"` their channels are in HetConv's blocked order
    (`HetConv2D(blocked_outputs=True)`, a relabelling the next convolution
    absorbs), except the network's output without `include_top`.

    Args:
        include_top: whether to include the classifier (`style="imagenet"`:
            flatten + fc1 + fc2 + predictions as in keras; `"cifar"`: flatten
            + `Dense(512)` + BN + ReLU + predictions).
        weights: `None` (random initialization) or the path to a weights file
            saved with `model.save_weights()`; `"imagenet"` raises a
            `ValueError` (no pretrained weights exist).
        input_tensor: optional Keras tensor to use as image input.
        input_shape: optional shape tuple, only to be specified if
            `include_top` is `False` (otherwise `(224, 224, 3)`, or
            `(32, 32, 3)` for `style="cifar"`); at least 32x32 (`"imagenet"`)
            or 8x8 (`"cifar"`). Any number of channels.
        pooling: `None`, `"avg"` or `"max"` when `include_top` is `False`.
        classes: number of classes, used with `include_top=True`.
        classifier_activation: activation of the `predictions` layer, or
            `None` for logits.
        name: the model's name.
        conv: the name of a registered conv method (see
            `keras_effconv.conv_methods.conv_method_names()`; `"standard"`
            keeps keras' Conv2D).
        conv_config: dict of arguments for the efficient layer, or `None`.
        style: `"imagenet"` (keras' VGG16) or `"cifar"` (see the module
            docstring).

    Returns:
        A `keras_effconv.applications.EffConvModel` (a Functional
        `keras.Model`).

    Raises:
        ValueError: for `weights="imagenet"`, a missing weights file, an
            invalid `input_shape`, an unknown `conv` or `style`, or a bad
            `conv_config`.

    Example:

    >>> model = EffVGG16(input_shape=(32, 32, 3), classes=10, style="cifar",
    ...                  conv="hetconv", conv_config={"part": 4})
    >>> model.get_layer("block2_conv1").__class__.__name__
    'HetConv2D'
    """
    return build_vgg16(
        include_top,
        weights,
        input_tensor,
        input_shape,
        pooling,
        classes,
        classifier_activation,
        name,
        style,
        lambda: ConvReplacer(conv, conv_config),
        "EffVGG16",
    )


def build_vgg16(
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
    model_label,
):
    """keras' VGG16 (or the CIFAR style) whose convolutions go through a replacer (see `resnet.build_resnet`)."""
    _common.check_weights(weights, model_label)
    style = _validation.check_choice(style, "style", STYLES)
    replace = make_replacer()
    cifar = style == "cifar"
    img_input = _common.image_input(
        input_tensor,
        input_shape,
        include_top,
        default_size=32 if cifar else 224,
        min_size=8 if cifar else 32,
    )
    replace.check_input(img_input)
    bn_axis = _common.channel_axis()

    x = img_input
    pyramid = {}  # the block outputs `block{1..5}_pool`, strides 2 to 32
    for block, (filters, convs) in enumerate(BLOCKS, start=1):
        for i in range(1, convs + 1):
            # Between two convolutions (through batch norm, ReLU and pooling) the channel order is free;
            # the image and, without the classifier's Dense, the network's output keep theirs.
            orders = dict(
                free_input_order=(block, i) != (1, 1),
                free_output_order=include_top or (block, i) != (len(BLOCKS), convs),
            )
            if cifar:
                x = replace(keras.layers.Conv2D(filters, (3, 3), padding="same", name=f"block{block}_conv{i}"), x,
                            **orders)
                x = keras.layers.BatchNormalization(axis=bn_axis, momentum=0.9, name=f"block{block}_bn{i}")(x)
                x = keras.layers.Activation("relu", name=f"block{block}_relu{i}")(x)
            else:
                conv_layer = keras.layers.Conv2D(
                    filters, (3, 3), activation="relu", padding="same", name=f"block{block}_conv{i}"
                )
                x = replace(conv_layer, x, **orders)
        pool_padding = "same" if cifar else "valid"
        x = keras.layers.MaxPooling2D((2, 2), strides=(2, 2), padding=pool_padding, name=f"block{block}_pool")(x)
        pyramid[f"P{block}"] = x

    if include_top:
        x = keras.layers.Flatten(name="flatten")(x)
        if cifar:
            x = keras.layers.Dense(512, name="fc1")(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name="fc1_bn")(x)
            x = keras.layers.Activation("relu", name="fc1_relu")(x)
        else:
            x = keras.layers.Dense(4096, activation="relu", name="fc1")(x)
            x = keras.layers.Dense(4096, activation="relu", name="fc2")(x)
        x = _common.classifier(x, classes, classifier_activation)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D()(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D()(x)
    replace.require_replacements(f"model '{name}'")
    return _common.assemble(img_input, input_tensor, x, name, weights, pyramid)
