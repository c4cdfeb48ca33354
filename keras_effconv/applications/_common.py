"""The parts every application shares: weights, input and model assembly.

Mirrors the flow of `keras.applications` (same validation order and
messages, same use of `obtain_input_shape`), except that `weights` is `None`
or a local file: these networks have no pretrained ImageNet weights and
nothing is ever downloaded.
"""

import os

import keras
from keras.src.applications import imagenet_utils


def check_weights(weights, model_name):
    """Validates `weights` before anything is built (as keras does first)."""
    if isinstance(weights, str) and weights == "imagenet":
        raise ValueError(
            f"No pretrained ImageNet weights exist for {model_name}, and "
            "keras_effconv never downloads weights. Pass `weights=None` and "
            "train the network (e.g. `keras-effconv train` or `model.fit`), or "
            "pass the path of a weights file you saved with "
            "`model.save_weights(...)`. To start from a pretrained standard "
            "network, load it from `keras.applications` with your own "
            "weights and use `keras_effconv.convert()` or "
            "`keras_effconv.decompose.depthwise_decompose()`."
        )
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)) or not os.path.exists(weights):
        raise ValueError(
            "The `weights` argument should be either `None` (random "
            "initialization) or the path to an existing weights file to be "
            f"loaded. Received: weights={weights!r}"
        )


def image_input(input_tensor, input_shape, include_top, default_size, min_size):
    """Returns the image input tensor, validating `input_shape` like keras."""
    input_shape = imagenet_utils.obtain_input_shape(
        input_shape,
        default_size=default_size,
        min_size=min_size,
        data_format=keras.config.image_data_format(),
        require_flatten=include_top,
        weights=None,
    )
    if input_tensor is None:
        return keras.layers.Input(shape=input_shape)
    if not keras.backend.is_keras_tensor(input_tensor):
        return keras.layers.Input(tensor=input_tensor, shape=input_shape)
    return input_tensor


def channel_axis():
    return 3 if keras.config.image_data_format() == "channels_last" else 1


def classifier(x, classes, classifier_activation):
    """The `predictions` layer; validates the activation as keras does."""
    imagenet_utils.validate_activation(classifier_activation, None)
    return keras.layers.Dense(classes, activation=classifier_activation, name="predictions")(x)


def pool_features(x, pooling, names=("avg_pool", "max_pool")):
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name=names[0])(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name=names[1])(x)
    return x


def assemble(img_input, input_tensor, outputs, name, weights, pyramid_layers):
    """Creates the Functional model, attaches `pyramid_outputs`, loads weights.

    `model.pyramid_outputs` (`{"P2": tensor, ...}`, level = log2 of the
    stride, built from the layer names in `pyramid_layers`) follows keras-hub
    backbones: `keras.Model(model.inputs, model.pyramid_outputs)` is a
    multi-scale feature extractor.
    """
    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    else:
        inputs = img_input
    model = keras.Model(inputs, outputs, name=name)
    model.pyramid_outputs = {
        level: model.get_layer(layer_name).output for level, layer_name in pyramid_layers.items()
    }
    if weights is not None:
        model.load_weights(weights)
    return model
