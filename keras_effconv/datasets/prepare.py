"""Datasets made ready for a model: channels, size, scale, layout and one-hot labels."""

import dataclasses

import numpy as np

import keras

from keras_effconv.datasets.cifar10 import cifar10
from keras_effconv.datasets.fashion_mnist import fashion_mnist
from keras_effconv.datasets.image_folder import image_folder
from keras_effconv.export.metadata import unit_scale_preprocessing

DATASETS = ("fashion_mnist", "cifar10", "image_folder")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclasses.dataclass
class TrainingData:
    """Train/test splits ready for `model.fit`.

    `train` and `test` are `tf.data.Dataset`s of unbatched
    `(image, one_hot_label)` pairs: float32 images scaled to [0, 1] in the
    layout of `keras.config.image_data_format()`. They feed `model.fit` on
    every backend. `class_names` are the label names (index order);
    `preprocessing` says how the images were made from 8-bit pixels (the
    `preprocessing` dict of `keras_effconv.export.metadata`: pixels / 255,
    gray or RGB, resized bilinearly to `input_shape`).
    """

    name: str
    train: object
    test: object
    train_size: int
    test_size: int
    input_shape: tuple
    num_classes: int
    class_names: list
    preprocessing: dict = None


def _arrays_to_dataset(images, labels, num_classes):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((images, keras.utils.to_categorical(labels.reshape(-1), num_classes)))


def _to_layout(images):
    if keras.config.image_data_format() == "channels_first":
        return np.ascontiguousarray(np.moveaxis(images, -1, 1))
    return images


def _check_subset(subset, available):
    if subset is None:
        return available
    if isinstance(subset, bool) or not isinstance(subset, int) or subset < 1:
        raise ValueError(f"Invalid value for argument `subset`: expected a positive integer. Received: {subset!r}")
    return min(subset, available)


def load_dataset(name, path=None, subset=None, image_size=None, seed=0, min_size=None):
    """Loads a dataset by name and prepares it for training.

    Args:
        name: `"fashion_mnist"` (offline, Debian package), `"cifar10"` (local
            copy or Keras cache) or `"image_folder"` (needs `path`).
        path: optional data location (required for `"image_folder"`).
        subset: use only the first `subset` training images (a fixed random
            sample, `seed`); the test split is always complete.
        image_size: optional `(H, W)` to resize to (default: the dataset's own
            size; 32x32 for image folders).
        seed: seed of the subset sample.
        min_size: optional smallest height/width the model accepts; smaller
            images are resized up to it (e.g. 32 for the ImageNet networks).

    Returns:
        A `TrainingData`.

    Raises:
        ValueError: for an unknown `name` or a bad `subset`.
        FileNotFoundError: if the data is not available locally.

    Example:

    >>> data = load_dataset("fashion_mnist", subset=1000)  # doctest: +SKIP
    >>> data.input_shape, data.num_classes  # doctest: +SKIP
    ((28, 28, 1), 10)
    """
    import tensorflow as tf

    if name not in DATASETS:
        raise ValueError(f"Invalid value for argument `name`: expected one of {DATASETS}. Received: {name!r}")
    if name == "image_folder":
        if path is None:
            raise ValueError("`path` is required for name='image_folder'")
        size = tuple(image_size or (32, 32))
        if min_size:
            size = tuple(max(d, min_size) for d in size)
        train, test, class_names = image_folder(path, image_size=size, seed=seed)
        num_classes = len(class_names)
        train_size = int(train.cardinality())
        limit = _check_subset(subset, train_size)

        def prepare(image, label):
            image = tf.cast(image, "float32") / 255.0
            if keras.config.image_data_format() == "channels_first":
                image = tf.transpose(image, (2, 0, 1))
            return image, tf.one_hot(label, num_classes)

        train = train.take(limit).map(prepare)
        test = test.map(prepare)
        input_shape = tuple(train.element_spec[0].shape)
        return TrainingData(name, train, test, limit, int(test.cardinality()), input_shape, num_classes, class_names,
                            unit_scale_preprocessing(3))

    if name == "fashion_mnist":
        (x_train, y_train), (x_test, y_test) = fashion_mnist(path)
        x_train, x_test = x_train[..., None], x_test[..., None]
        class_names = FASHION_MNIST_CLASSES
    else:
        (x_train, y_train), (x_test, y_test) = cifar10(path)
        class_names = CIFAR10_CLASSES
    limit = _check_subset(subset, len(x_train))
    if limit < len(x_train):
        keep = np.random.default_rng(seed).permutation(len(x_train))[:limit]
        x_train, y_train = x_train[keep], y_train[keep]
    x_train = x_train.astype("float32") / 255.0
    x_test = x_test.astype("float32") / 255.0
    if image_size is None and min_size and min(x_train.shape[1:3]) < min_size:
        image_size = tuple(max(d, min_size) for d in x_train.shape[1:3])
    if image_size is not None and tuple(image_size) != x_train.shape[1:3]:
        x_train = tf.image.resize(x_train, image_size).numpy()
        x_test = tf.image.resize(x_test, image_size).numpy()
    x_train, x_test = _to_layout(x_train), _to_layout(x_test)
    num_classes = len(class_names)
    return TrainingData(
        name,
        _arrays_to_dataset(x_train, y_train, num_classes),
        _arrays_to_dataset(x_test, y_test, num_classes),
        len(x_train),
        len(x_test),
        tuple(x_train.shape[1:]),
        num_classes,
        list(class_names),
        unit_scale_preprocessing(x_train.shape[-1 if keras.config.image_data_format() == "channels_last" else 1]),
    )
