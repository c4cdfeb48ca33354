"""Networks to fine-tune: a user's `.keras` model, or a `keras.applications` model with local weights.

Both take the training recipe's input (images in [0, 1], the dataset's
channels) and get a classifier for the dataset's classes; `conv` converts
them with `keras_effconv.applications.convert` (untouched layers keep their
weights bit for bit; replaced convolutions start from fresh weights).

`keras_application(name, ...)` builds a `keras.applications` network the
way its weights expect its input, inside the model, so that the model (and
its export) still takes [0, 1] images like every other network of the
recipe:

- ResNet50/101/152, VGG16/19 ("caffe" mode of `preprocess_input`): a
  `Normalization` layer computes `255 x - mean` per channel in RGB order,
  and the first convolution's kernel has its input channels reversed,
  which is exactly keras' BGR input (`conv(bgr - mean_bgr, K)` =
  `conv(rgb - mean_rgb, K reversed)`). That first kernel is therefore not
  the file's kernel but its channel-reversed copy.
- MobileNetV2 ("tf" mode): `2 x - 1`.
- DenseNet121 ("torch" mode): ImageNet mean and standard deviation.

Gray images are repeated to three channels (a `Concatenate` layer). A file
with or without the 1000-class top loads; the top's `predictions` layer is
replaced by a new one when the dataset has another number of classes (VGG
keeps its `fc1`/`fc2`).
"""

import os

import numpy as np

import keras

from keras_effconv._model_graph import all_layers
from keras_effconv._model_graph import producer
from keras_effconv._model_graph import run_graph

# keras.applications constructor -> preprocess_input mode of its weights.
KERAS_APPLICATIONS = {
    "ResNet50": "caffe",
    "ResNet101": "caffe",
    "ResNet152": "caffe",
    "VGG16": "caffe",
    "VGG19": "caffe",
    "MobileNetV2": "tf",
    "DenseNet121": "torch",
}
KERAS_PREFIX = "keras:"
FREEZE_CHOICES = ("untouched", "backbone")

_CAFFE_MEAN_RGB = np.array([123.68, 116.779, 103.939])
_TORCH_MEAN = np.array([0.485, 0.456, 0.406])
_TORCH_STD = np.array([0.229, 0.224, 0.225])


def keras_application_name(model):
    """`"ResNet50"` for `model="keras:ResNet50"`, None for any other name.

    Raises:
        ValueError: for a `keras:` name that is not supported, listing those that are.
    """
    if not isinstance(model, str) or not model.startswith(KERAS_PREFIX):
        return None
    name = model[len(KERAS_PREFIX):]
    if name not in KERAS_APPLICATIONS:
        raise ValueError(
            f"Invalid value for argument `model`: expected 'keras:' followed by one of {sorted(KERAS_APPLICATIONS)}. "
            f"Received: model={model!r}"
        )
    return name


def _normalization(mode):
    if mode == "caffe":
        return _CAFFE_MEAN_RGB / 255.0, np.full(3, (1 / 255.0) ** 2)
    if mode == "tf":
        return np.full(3, 0.5), np.full(3, 0.25)
    return _TORCH_MEAN, _TORCH_STD**2


def _load_backbone(name, weights, input_shape):
    constructor = getattr(keras.applications, name)
    errors = []
    for include_top in (True, False):
        try:
            return constructor(
                include_top=include_top,
                weights=weights,
                input_shape=input_shape,
                pooling=None if include_top else "avg",
                classes=1000,
            )
        except (ValueError, KeyError) as error:  # the file holds the other variant (with or without top)
            errors.append(f"include_top={include_top}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
            if weights is None:
                raise
    raise ValueError(f"`weights` file {weights!r} does not fit keras.applications.{name}: " + "; ".join(errors))


def replace_classifier(model, num_classes):
    """`model` with a new `Dense(num_classes)` classifier if its output has another size.

    The new layer, named `predictions`, reads what the model's output layer
    reads and keeps its activation; every other layer is shared with
    `model`.

    Args:
        model: a Functional model with one output.
        num_classes: the number of classes wanted.

    Returns:
        `model` itself if it already has `num_classes` outputs, else the new model.

    Raises:
        ValueError: if the model's output layer is not a `Dense` layer.
    """
    if model.outputs[0].shape[-1] == num_classes:
        return model
    last = producer(model.outputs[0])
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(
            f"cannot give model '{model.name}' {num_classes} classes: its output layer '{last.name}' is a "
            f"{type(last).__name__}, not a Dense classifier"
        )
    head = keras.layers.Dense(num_classes, activation=last.activation, name="predictions")

    def call(operation, *args, **kwargs):
        return head(*args) if operation is last else operation(*args, **kwargs)

    inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype)
    return keras.Model(inputs, run_graph(model, inputs, call), name=model.name)


def keras_application(name, weights, input_shape, num_classes):
    """A `keras.applications` network with local weights, for [0, 1] images of `input_shape`.

    Args:
        name: a key of `KERAS_APPLICATIONS` (e.g. `"ResNet50"`).
        weights: path of a local weights file for that network (with or
            without its top), or None for random weights. Never downloads.
        input_shape: `(H, W, C)` of the training images, C 1 or 3
            (channels_last).
        num_classes: classes of the new classifier.

    Returns:
        A Functional model: input `input_shape` in [0, 1], preprocessing
        layers, the network, a classifier of `num_classes`.

    Raises:
        ValueError: for an unknown `name`, a `weights` file that fits the
            network neither with nor without its top, or C not 1 or 3.
        FileNotFoundError: if `weights` does not exist.
    """
    if name not in KERAS_APPLICATIONS:
        raise ValueError(f"Invalid value for argument `name`: expected one of {sorted(KERAS_APPLICATIONS)}. Received: {name!r}")
    if weights is not None and not os.path.isfile(weights):
        raise FileNotFoundError(f"weights file not found: {weights}")
    height, width, channels = input_shape
    if channels not in (1, 3):
        raise ValueError(f"keras.applications.{name} takes gray (1) or RGB (3) images; the data has {channels} channels")
    backbone = _load_backbone(name, weights, (height, width, 3))
    mode = KERAS_APPLICATIONS[name]
    if mode == "caffe":
        first = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D))
        kernel, *rest = first.get_weights()
        first.set_weights([kernel[:, :, ::-1, :], *rest])  # RGB input instead of keras' BGR
    inputs = keras.Input(input_shape)
    x = inputs
    if channels == 1:
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    mean, variance = _normalization(mode)
    x = keras.layers.Normalization(mean=mean, variance=variance, name="keras_preprocessing")(x)
    # One flat graph (no nested model): keras' layer names stay top-level and
    # the classifier is the model's last layer.
    outputs = run_graph(backbone, x, lambda operation, *args, **kwargs: operation(*args, **kwargs))
    if not isinstance(producer(outputs), keras.layers.Dense):  # a file without the top: pooled features
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(outputs)
    return replace_classifier(keras.Model(inputs, outputs, name=name.lower()), num_classes)


def load_init_model(path, num_classes):
    """A user's `.keras` model to go on training, with a classifier of `num_classes`.

    Raises:
        ValueError: if the file is not a valid `.keras` model, or its
            classifier cannot be replaced (see `replace_classifier`).
        FileNotFoundError: if `path` does not exist.
    """
    from keras_effconv._files import load_keras_model

    model = load_keras_model(path, argument="init")
    return replace_classifier(model, num_classes)


def freeze_layers(model, mode, trained_names=()):
    """Marks layers of `model` not trainable for fine-tuning.

    Frozen `BatchNormalization` layers run in inference mode (Keras) and
    keep their statistics.

    Args:
        model: the model to fine-tune.
        mode: None (train everything), `"backbone"` (train only the
            `predictions` classifier) or `"untouched"` (also train the
            layers named in `trained_names`, e.g. the convolutions a
            conversion replaced).
        trained_names: layer names that stay trainable with `"untouched"`.

    Returns:
        The names of the frozen layers that have weights.

    Raises:
        ValueError: for an unknown `mode`.
    """
    if mode is None:
        return []
    if mode not in FREEZE_CHOICES:
        raise ValueError(f"Invalid value for argument `freeze`: expected None or one of {FREEZE_CHOICES}. Received: {mode!r}")
    keep = {"predictions", *(trained_names if mode == "untouched" else ())}
    frozen = []
    for layer in all_layers(model):
        if isinstance(layer, keras.Model) or layer.name in keep:
            continue
        if layer.weights:
            layer.trainable = False
            frozen.append(layer.name)
    return frozen
