"""`preprocess_input` and `decode_predictions`, as in `keras.applications`.

The ImageNet class index ships with the package
(`imagenet_class_index.json`, the same `{"0": ["n01440764", "tench"], ...}`
content keras downloads, taken from keras-hub's Apache-2.0
`imagenet_utils.py`), so decoding never touches the network.
"""

import functools
import json
import os

import keras

_CLASS_INDEX_PATH = os.path.join(os.path.dirname(__file__), "imagenet_class_index.json")


@functools.lru_cache(maxsize=1)
def class_index():
    """Returns the ImageNet class index: `{"0": ["n01440764", "tench"], ...}`."""
    with open(_CLASS_INDEX_PATH, encoding="utf-8") as f:
        return json.load(f)


def preprocess_input(x, data_format=None):
    """Preprocesses a batch of images the way `keras.applications.resnet50` does.

    RGB -> BGR and ImageNet mean subtraction ("caffe" mode), for the ImageNet
    networks `EffResNet50/101/152` and `EffVGG16`.

    Args:
        x: float NumPy array or tensor, 3-D or 4-D, RGB values in [0, 255].
        data_format: `None` (`keras.config.image_data_format()`),
            `"channels_last"` or `"channels_first"`.

    Returns:
        The preprocessed array or tensor.

    Example:

    >>> import numpy as np
    >>> preprocess_input(np.full((1, 2, 2, 3), 128.0))[0, 0, 0].round(2).tolist()
    [24.06, 11.22, 4.32]
    """
    return keras.applications.imagenet_utils.preprocess_input(x, data_format=data_format, mode="caffe")


def decode_predictions(preds, top=5):
    """Decodes ImageNet predictions into `(class_id, name, score)` tuples.

    Same behaviour as `keras.applications.resnet50.decode_predictions`, with
    the class index shipped in the package.

    Args:
        preds: array or tensor of shape `(samples, 1000)`.
        top: number of top guesses per sample.

    Returns:
        One list of `top` tuples `(class_id, class_name, score)` per sample,
        best first.

    Raises:
        ValueError: if `preds` is not of shape `(samples, 1000)`.

    Example:

    >>> import numpy as np
    >>> preds = np.zeros((1, 1000)); preds[0, 386] = 1.0
    >>> decode_predictions(preds, top=1)[0][0][:2]
    ('n02504458', 'African_elephant')
    """
    preds = keras.ops.convert_to_numpy(preds)
    if len(preds.shape) != 2 or preds.shape[1] != 1000:
        raise ValueError(
            "`decode_predictions` expects a batch of predictions (i.e. a 2D "
            "array of shape (samples, 1000)). Received array with shape: "
            f"{preds.shape}"
        )
    index = class_index()
    results = []
    for pred in preds:
        top_indices = pred.argsort()[-top:][::-1]
        result = [tuple(index[str(i)]) + (pred[i],) for i in top_indices]
        result.sort(key=lambda item: item[2], reverse=True)
        results.append(result)
    return results
