"""The parts every application shares: weights, input, the model class and assembly.

Mirrors the flow of `keras.applications` (same validation order and
messages, same use of `obtain_input_shape`), except that `weights` is `None`
or a local file: these networks have no pretrained ImageNet weights and
nothing is ever downloaded.
"""

import os

import keras

from keras_effconv import _model_graph


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
    input_shape = _model_graph.obtain_input_shape(
        input_shape,
        default_size=default_size,
        min_size=min_size,
        data_format=keras.config.image_data_format(),
        require_flatten=include_top,
    )
    if input_tensor is None:
        return keras.layers.Input(shape=input_shape)
    if not keras.backend.is_keras_tensor(input_tensor):
        return keras.layers.Input(tensor=input_tensor, shape=input_shape)
    return input_tensor


def channel_axis():
    return 3 if keras.config.image_data_format() == "channels_last" else 1


def classifier(x, classes, classifier_activation):
    """The `predictions` layer.

    keras' own `validate_activation` only restricts the activation with
    pretrained weights, which never exist here; an unknown activation is
    rejected by `Dense` with keras' message.
    """
    return keras.layers.Dense(classes, activation=classifier_activation, name="predictions")(x)


def pool_features(x, pooling, names=("avg_pool", "max_pool")):
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name=names[0])(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name=names[1])(x)
    return x


@keras.saving.register_keras_serializable(package="keras_effconv")
class EffConvModel(keras.Model):
    """A Functional model that also names its multi-scale features.

    What every keras_effconv application returns: a Functional model (called,
    trained, saved and exported like any `keras.Model(inputs, outputs)`)
    with `pyramid_outputs`, a dict from level name to an intermediate
    feature map of the graph, as keras-hub backbones have:
    `keras.Model(model.inputs, model.pyramid_outputs)` is a multi-scale
    feature extractor (e.g. for a detection neck). Level `"P{i}"` has stride
    `2**i`.

    `pyramid_outputs` is part of the config (stored as references to layer
    outputs), so it survives `get_config()`/`from_config()` and `.keras`
    files. `keras.models.clone_model` returns an `EffConvModel` with the
    same graph but empty `pyramid_outputs`: Keras rebuilds a Functional
    subclass from its inputs, outputs and name only. Clone through the
    config (`EffConvModel.from_config(model.get_config())`) to keep them.

    Args:
        inputs: the input tensor(s), as for `keras.Model`.
        outputs: the output tensor(s), as for `keras.Model`.
        name: the model's name.
        pyramid_outputs: optional dict `{level name: KerasTensor}` of
            tensors computed inside the graph from `inputs`.
        **kwargs: other `keras.Model` arguments (e.g. `trainable`).

    Raises:
        ValueError: if a level name is not a string or a pyramid tensor is
            not part of the graph from `inputs` to `outputs`.

    Example:

    >>> inputs = keras.Input((32, 32, 3))
    >>> p1 = keras.layers.Conv2D(8, 3, strides=2, name="p1")(inputs)
    >>> p2 = keras.layers.Conv2D(16, 3, strides=2, name="p2")(p1)
    >>> outputs = keras.layers.GlobalAveragePooling2D()(p2)
    >>> model = EffConvModel(inputs, outputs, pyramid_outputs={"P1": p1, "P2": p2})
    >>> features = keras.Model(model.inputs, model.pyramid_outputs)
    >>> sorted(features.output)
    ['P1', 'P2']
    """

    def __init__(self, inputs, outputs, name=None, *, pyramid_outputs=None, **kwargs):
        # `pyramid_outputs` is keyword-only so that the positional arguments
        # stay Functional's: Keras then treats this class as Functional-like
        # (full graph config, revival from it, `clone_model`).
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        pyramid_outputs = dict(pyramid_outputs or {})
        for level, tensor in pyramid_outputs.items():
            if not isinstance(level, str):
                raise ValueError(
                    "Invalid value for argument `pyramid_outputs`: level names must be "
                    f"strings. Received: level={level!r}"
                )
            _model_graph.tensor_ref(self, tensor)  # raises if not in the graph
        self.pyramid_outputs = pyramid_outputs

    def get_config(self):
        config = super().get_config()
        config["pyramid_outputs"] = {
            level: _model_graph.tensor_ref(self, tensor) for level, tensor in self.pyramid_outputs.items()
        }
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        refs = config.pop("pyramid_outputs", None) or {}
        model = super().from_config(config, custom_objects=custom_objects)
        # The tensors exist only once Keras has rebuilt the graph.
        model.pyramid_outputs = {level: _model_graph.tensor_from_ref(model, ref) for level, ref in refs.items()}
        return model


def assemble(img_input, input_tensor, outputs, name, weights, pyramid_outputs):
    """Creates the `EffConvModel` and loads `weights`.

    `pyramid_outputs` (`{"P2": tensor, ...}`, level = log2 of the stride)
    follows keras-hub backbones: `keras.Model(model.inputs,
    model.pyramid_outputs)` is a multi-scale feature extractor.
    """
    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    else:
        inputs = img_input
    model = EffConvModel(inputs, outputs, name=name, pyramid_outputs=pyramid_outputs)
    if weights is not None:
        model.load_weights(weights)
    return model
