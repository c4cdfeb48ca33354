"""Images in class sub-folders, through `keras.utils.image_dataset_from_directory`."""

import os

import keras


def image_folder(path, image_size=(32, 32), color_mode="rgb", validation_split=0.2, seed=0, batch_size=None):
    """Loads `path/<class_name>/*.jpg|png|...` as train and test `tf.data` datasets.

    Args:
        path: directory with one sub-directory per class.
        image_size: `(height, width)` the images are resized to.
        color_mode: `"rgb"` or `"grayscale"`.
        validation_split: share of the images held out as the test split.
        seed: seed of the split (the same seed gives the same split).
        batch_size: `None` for unbatched datasets (the training recipe
            batches them itself), or an int.

    Returns:
        `(train, test, class_names)`: datasets of `(image, label)` with float
        images in [0, 255] `(H, W, C)` and integer labels.

    Raises:
        FileNotFoundError: if `path` is not a directory.
        ValueError: for a `validation_split` outside (0, 1).

    Example:

    >>> train, test, names = image_folder("photos/", image_size=(64, 64))  # doctest: +SKIP
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"image folder not found: {path!r} (expected one sub-directory per class)")
    if not 0 < validation_split < 1:
        raise ValueError(
            f"Invalid value for argument `validation_split`: expected a number in (0, 1). Received: {validation_split!r}"
        )
    common = dict(
        image_size=tuple(image_size),
        color_mode=color_mode,
        validation_split=validation_split,
        seed=seed,
        batch_size=batch_size,
        label_mode="int",
        shuffle=True,
    )
    train = keras.utils.image_dataset_from_directory(path, subset="training", **common)
    test = keras.utils.image_dataset_from_directory(path, subset="validation", **common)
    return train, test, list(train.class_names)
