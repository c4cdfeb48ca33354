"""Self-describing models: what a model's input is, how to make it from pixels, what its outputs mean.

One JSON document (schema `keras_effconv/model-metadata`, version 1) travels
with a model: as `model.json` (+ `labels.txt`) beside a `.keras` or
`.tflite` file, and embedded in the `.tflite` file itself. Example (an
EffResNet-20 trained by the recipe on Fashion-MNIST, exported with batch 1):

    {
      "schema": "keras_effconv/model-metadata",
      "version": 1,
      "input": {"shape": [28, 28, 1], "batch_size": 1, "layout": "NHWC", "dtype": "float32"},
      "preprocessing": {
        "mode": "unit_scale",
        "channel_order": "gray",
        "scale": 0.00392156862745098,
        "mean": [0.0],
        "std": [1.0],
        "resize": "bilinear",
        "formula": "input[..., c] = (pixel[..., c] * scale - mean[c]) / std[c]; ..."
      },
      "class_names": ["T-shirt/top", "Trouser", ...],
      "provenance": {"model": "eff_resnet20", "conv": "hetconv", "dataset": "fashion_mnist",
                     "keras_effconv_version": "0.1.0"}
    }

Fields:

- `schema`, `version`: identify the document; a reader refuses a newer
  version than it knows.
- `input.shape`: the per-sample input shape in `layout` order (`[H, W, C]`
  for `"NHWC"`, `[C, H, W]` for `"NCHW"`); an entry is `null` where the
  model accepts any size. `input.batch_size`: the static batch of a
  `.tflite` file (`null`: any batch, as in a `.keras` model).
  `input.dtype`: the input tensor's type (`"float32"`; int8 exports keep
  float input and output).
- `preprocessing` (or `null` when unknown): how to get the float input from
  8-bit pixels. Take the image's channels in `channel_order` (`"RGB"`,
  `"BGR"`, or `"gray"`: one channel), resize it to the input's height and
  width with `resize` (`"bilinear"`), then per channel
  `input[..., c] = (pixel[..., c] * scale - mean[c]) / std[c]`. `mean` and
  `std` have one entry per input channel, in `channel_order`. `mode` names
  the convention: `"unit_scale"` (pixels / 255 in [0, 1], the training
  recipe and `keras_effconv.datasets`) or `"caffe"` (RGB -> BGR and the
  ImageNet mean subtracted from 0-255 values, `applications.preprocess_input`
  for the ImageNet networks).
- `class_names` (or `null`): output index -> name; `labels.txt` holds the
  same names, one per line.
- `provenance`: free JSON about where the model came from; the package
  writes `model`, `conv`, `dataset` (and the recipe `conv_config`,
  `test_accuracy`) and always `keras_effconv_version`.

In a `.tflite` file the document is the entry named `"keras_effconv"` of the
flatbuffer's `Model.metadata` vector (`Metadata{name, buffer}`: the buffer
holds the JSON as UTF-8), written by `embed_metadata` and read by
`read_metadata`; the model's `description` gets a one-line summary, which is
what Netron shows (it shows custom metadata entries only when they are under
256 characters). LiteRT's standard `TFLITE_METADATA` entry (the
`tflite_support` metadata writers, which Android Studio's model binding
reads) is not written: `tflite-support` pins a protobuf that conflicts with
the one TensorFlow and ai-edge-litert need here.
"""

import json
import math
import os

import numpy as np

from keras_effconv._files import atomic_path
from keras_effconv.version import __version__

SCHEMA = "keras_effconv/model-metadata"
SCHEMA_VERSION = 1
METADATA_NAME = "keras_effconv"
MODEL_JSON = "model.json"
LABELS_TXT = "labels.txt"
LAYOUTS = ("NHWC", "NCHW")
CHANNEL_ORDERS = ("RGB", "BGR", "gray")
FORMULA = (
    "input[..., c] = (pixel[..., c] * scale - mean[c]) / std[c]; pixel: the 8-bit value (0-255) of channel c "
    "in channel_order, after resizing the image to the input's height and width"
)
# keras.applications.imagenet_utils' "caffe" mode, in BGR order.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def unit_scale_preprocessing(channels):
    """The training recipe's preprocessing: pixels / 255, so inputs are in [0, 1].

    This is what `keras_effconv.datasets.load_dataset` (and so
    `keras-effconv train`) feeds a model: gray images stay one channel,
    colour images are RGB, smaller images are resized bilinearly.

    Args:
        channels: 1 (gray) or 3 (RGB).

    Returns:
        The `preprocessing` dict of the metadata.
    """
    if channels not in (1, 3):
        raise ValueError(f"Invalid value for argument `channels`: expected 1 or 3. Received: channels={channels!r}")
    return {
        "mode": "unit_scale",
        "channel_order": "gray" if channels == 1 else "RGB",
        "scale": 1.0 / 255.0,
        "mean": [0.0] * channels,
        "std": [1.0] * channels,
        "resize": "bilinear",
        "formula": FORMULA,
    }


def caffe_preprocessing():
    """`keras_effconv.applications.preprocess_input`'s preprocessing ("caffe" mode of keras.applications).

    RGB -> BGR, then the ImageNet channel means subtracted from 0-255
    values, no scaling: for ImageNet-style training of `EffResNet50/101/152`
    and `EffVGG16` (the training recipe uses `unit_scale_preprocessing`).

    Returns:
        The `preprocessing` dict of the metadata.
    """
    return {
        "mode": "caffe",
        "channel_order": "BGR",
        "scale": 1.0,
        "mean": list(CAFFE_MEAN_BGR),
        "std": [1.0, 1.0, 1.0],
        "resize": "bilinear",
        "formula": FORMULA,
    }


def model_metadata(
    input_shape,
    class_names=None,
    preprocessing=None,
    layout="NHWC",
    batch_size=None,
    dtype="float32",
    **provenance,
):
    """Builds (and checks) a model's metadata document.

    Args:
        input_shape: per-sample input shape in `layout` order, e.g.
            `(28, 28, 1)`; `None` entries for sizes the model leaves open.
        class_names: optional list of output class names (index order).
        preprocessing: optional dict from `unit_scale_preprocessing`,
            `caffe_preprocessing` or `TrainingData.preprocessing` (or your
            own with the same keys), None when unknown.
        layout: `"NHWC"` (channels_last, the default) or `"NCHW"`.
        batch_size: the static batch size, or None (any).
        dtype: the input tensor's dtype.
        **provenance: JSON-serializable facts about the model, e.g.
            `model="eff_resnet20", conv="hetconv", dataset="fashion_mnist"`;
            `keras_effconv_version` is added.

    Returns:
        The metadata dict (see the module docstring for the schema).

    Raises:
        ValueError: naming the first bad field.

    Example:

    >>> meta = model_metadata((28, 28, 1), ["a", "b"], unit_scale_preprocessing(1), model="eff_resnet20")
    >>> meta["input"], meta["preprocessing"]["channel_order"]
    ({'shape': [28, 28, 1], 'batch_size': None, 'layout': 'NHWC', 'dtype': 'float32'}, 'gray')
    """
    metadata = {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "input": {
            "shape": [None if d is None else int(d) for d in input_shape],
            "batch_size": None if batch_size is None else int(batch_size),
            "layout": layout,
            "dtype": str(dtype),
        },
        "preprocessing": None if preprocessing is None else dict(preprocessing),
        "class_names": None if class_names is None else [str(name) for name in class_names],
        "provenance": dict(provenance, keras_effconv_version=__version__),
    }
    return check_metadata(metadata)


def _fail(argument, message):
    raise ValueError(f"Invalid value for argument `{argument}`: {message}")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_metadata(metadata, argument="metadata"):
    """Checks a metadata document against the schema (version 1).

    Args:
        metadata: the dict.
        argument: the argument or file the document came from, for messages.

    Returns:
        `metadata`, unchanged.

    Raises:
        ValueError: naming `argument` and the first bad field.
    """
    if not isinstance(metadata, dict):
        _fail(argument, f"expected a metadata dict. Received: {type(metadata).__name__}")
    if metadata.get("schema") != SCHEMA:
        schema = metadata.get("schema")
        _fail(argument, f"not a keras_effconv metadata document (schema {schema!r}, expected {SCHEMA!r})")
    version = metadata.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        _fail(argument, f"`version` must be a positive integer. Received: {version!r}")
    if version > SCHEMA_VERSION:
        _fail(argument, f"metadata version {version} is newer than this keras_effconv reads ({SCHEMA_VERSION})")
    spec = metadata.get("input")
    if not isinstance(spec, dict):
        _fail(argument, "`input` must be a dict with shape, batch_size, layout and dtype")
    shape = spec.get("shape")
    if not isinstance(shape, list) or len(shape) != 3 or not all(
        d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape
    ):
        _fail(argument, f"`input.shape` must be 3 positive sizes (or null), batch excluded. Received: {shape!r}")
    batch = spec.get("batch_size")
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        _fail(argument, f"`input.batch_size` must be a positive integer or null. Received: {batch!r}")
    if spec.get("layout") not in LAYOUTS:
        _fail(argument, f"`input.layout` must be one of {LAYOUTS}. Received: {spec.get('layout')!r}")
    if not isinstance(spec.get("dtype"), str):
        _fail(argument, f"`input.dtype` must be a string. Received: {spec.get('dtype')!r}")
    channels = shape[2] if spec["layout"] == "NHWC" else shape[0]
    pre = metadata.get("preprocessing")
    if pre is not None:
        if not isinstance(pre, dict):
            _fail(argument, "`preprocessing` must be a dict or null")
        order = pre.get("channel_order")
        if order not in CHANNEL_ORDERS:
            _fail(argument, f"`preprocessing.channel_order` must be one of {CHANNEL_ORDERS}. Received: {order!r}")
        expected = 1 if order == "gray" else 3
        if not _number(pre.get("scale")) or pre["scale"] <= 0:
            _fail(argument, f"`preprocessing.scale` must be a positive number. Received: {pre.get('scale')!r}")
        for key in ("mean", "std"):
            values = pre.get(key)
            if not isinstance(values, list) or len(values) != expected or not all(_number(v) for v in values):
                _fail(argument, f"`preprocessing.{key}` must be {expected} number(s) for {order}. Received: {values!r}")
        if not all(v > 0 for v in pre["std"]):
            _fail(argument, f"`preprocessing.std` must be positive. Received: {pre['std']!r}")
        if pre.get("resize", "bilinear") != "bilinear":
            _fail(argument, f"`preprocessing.resize` must be 'bilinear'. Received: {pre.get('resize')!r}")
        if channels is not None and channels != expected:
            _fail(argument, f"`preprocessing.channel_order` {order!r} gives {expected} channel(s); "
                  f"the input has {channels}")
    names = metadata.get("class_names")
    if names is not None:
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            _fail(argument, "`class_names` must be a non-empty list of strings or null")
        bad = [n for n in names if not n.strip() or "\n" in n or "\r" in n]
        if bad:
            _fail(argument, f"class names must be non-blank single lines (labels.txt). Received: {bad[0]!r}")
    if not isinstance(metadata.get("provenance", {}), dict):
        _fail(argument, "`provenance` must be a dict")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as error:
        _fail(argument, f"not JSON-serializable ({error})")
    return metadata


def to_json(metadata, indent=2):
    """The document as JSON text (ASCII, no NaN), after `check_metadata`."""
    check_metadata(metadata)
    return json.dumps(metadata, indent=indent, ensure_ascii=True, allow_nan=False)


def summary(metadata):
    """One printable line (< 256 characters) describing the model, for Netron and logs."""
    spec, pre, names = metadata["input"], metadata.get("preprocessing"), metadata.get("class_names")
    prov = metadata.get("provenance") or {}
    shape = "x".join("?" if d is None else str(d) for d in [spec.get("batch_size")] + spec["shape"])
    parts = [" ".join(str(prov[k]) for k in ("model", "conv", "dataset") if prov.get(k))]
    parts.append(f"input {shape} {spec['layout']} {spec['dtype']}")
    if pre is None:
        parts.append("preprocessing unknown")
    else:
        parts.append(f"{pre.get('mode', 'custom')} {pre['channel_order']} (pixel*{pre['scale']:.6g}-mean)/std")
    parts.append(f"{len(names)} classes" if names else "no class names")
    text = f"keras_effconv: {'; '.join(p for p in parts if p)} (full JSON in metadata '{METADATA_NAME}')"
    text = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return text if len(text) < 256 else text[:252] + "..."


def _metadata_paths(directory_or_paths):
    if isinstance(directory_or_paths, (tuple, list)):
        if len(directory_or_paths) != 2:
            _fail("directory_or_paths", "expected a directory or (model_json_path, labels_txt_path)")
        return tuple(os.fspath(p) for p in directory_or_paths)
    directory = os.fspath(directory_or_paths)
    if not os.path.isdir(directory):
        raise OSError(f"directory for {MODEL_JSON} does not exist: {directory}")
    return os.path.join(directory, MODEL_JSON), os.path.join(directory, LABELS_TXT)


def write_metadata_files(directory_or_paths, metadata):
    """Writes `model.json` (the metadata) and `labels.txt` (class names, one per line), each atomically.

    Without class names no `labels.txt` is written, and one already there
    (describing another model) is removed.

    Args:
        directory_or_paths: a directory (files `model.json` and `labels.txt`
            in it) or a pair `(model_json_path, labels_txt_path)`.
        metadata: the metadata dict (checked first: nothing is written when
            it is invalid).

    Returns:
        The list of written paths.

    Raises:
        ValueError: for invalid metadata.
        OSError: if the directory does not exist or cannot be written.
    """
    text = to_json(metadata)
    json_path, labels_path = _metadata_paths(directory_or_paths)
    written = []
    with atomic_path(json_path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    written.append(json_path)
    names = metadata.get("class_names")
    if names:
        with atomic_path(labels_path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("".join(f"{name}\n" for name in names))
        written.append(labels_path)
    elif os.path.isfile(labels_path):
        os.remove(labels_path)
    return written


def read_labels(path):
    """Class names from a `labels.txt` (one per line; blank lines at the end ignored)."""
    with open(path, encoding="utf-8") as f:
        names = f.read().splitlines()
    while names and not names[-1].strip():
        names.pop()
    if not names:
        raise ValueError(f"{path} holds no class names (expected one per line)")
    return names


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _read_flatbuffer(path):
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError(f"{path} is not a TFLite/LiteRT flatbuffer (no 'TFL3' identifier)")
    return buf


def _entries(model):
    """(name, buffer index) of a flatbuffer `Model`'s metadata entries."""
    entries = []
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        name = entry.Name()
        entries.append((name.decode("utf-8", "replace") if name else "", entry.Buffer()))
    return entries


def read_metadata(path):
    """Reads a model's metadata from a `.tflite` file (its embedded entry) or a `model.json`.

    Args:
        path: a `.tflite` file written with metadata (`export_litert(...,
            metadata=...)` or `keras-effconv export`), or a `model.json`.

    Returns:
        The metadata dict (see this module's docstring for the schema).

    Raises:
        ValueError: if the `.tflite` file has no `"keras_effconv"` metadata
            entry (the message lists the entries it has), or the document is
            not valid metadata (e.g. a newer schema version).
        OSError: if the file cannot be read.

    Example:

    >>> meta = read_metadata("model.tflite")  # doctest: +SKIP
    >>> meta["class_names"][0], meta["preprocessing"]["scale"]  # doctest: +SKIP
    ('T-shirt/top', 0.00392156862745098)
    """
    path = os.fspath(path)
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            try:
                document = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not valid JSON ({error})") from None
        return check_metadata(document, argument=path)
    buf = _read_flatbuffer(path)
    schema = _schema()
    model = schema.Model.GetRootAsModel(buf, 0)
    entries = _entries(model)
    for name, index in entries:
        if name == METADATA_NAME:
            if not 0 <= index < model.BuffersLength():
                raise ValueError(f"{path}: metadata entry {METADATA_NAME!r} points to a missing buffer {index}")
            data = model.Buffers(index).DataAsNumpy()
            raw = data.tobytes() if isinstance(data, np.ndarray) else b""
            try:
                document = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ValueError(f"{path}: metadata entry {METADATA_NAME!r} is not JSON ({error})") from None
            return check_metadata(document, argument=path)
    names = ", ".join(name for name, _ in entries) or "none"
    raise ValueError(
        f"{path} has no {METADATA_NAME!r} metadata (its metadata entries: {names}); export it with "
        "`keras-effconv export` or `export_litert(..., metadata=...)`, or read the model.json beside it"
    )


def _aligned_buffer_class(schema):
    class AlignedBufferT(schema.BufferT):
        """A `BufferT` whose data starts on a 16-byte boundary (the schema's `force_align: 16`).

        The generated Python `Pack` ignores `force_align`; the converter and
        the C++ builder honour it, and aligned weights are what LiteRT can
        use in place.
        """

        def Pack(self, builder):
            if self.data is not None and len(self.data):
                # Aligns the end of the length prefix, i.e. the data's start, to 16 bytes.
                builder.Prep(16, len(self.data))
            return super().Pack(builder)

    return AlignedBufferT


def _repack(model_t, schema):
    import flatbuffers

    aligned = _aligned_buffer_class(schema)
    buffers = []
    for buffer in model_t.buffers or []:
        copy = aligned()
        copy.__dict__.update(buffer.__dict__)
        buffers.append(copy)
    model_t.buffers = buffers
    builder = flatbuffers.Builder(1024 + sum(len(b.data) for b in buffers if b.data is not None))
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def embed_metadata(tflite_path, metadata):
    """Adds (or replaces) the `"keras_effconv"` metadata entry of a `.tflite` file, atomically.

    The flatbuffer is unpacked with the object API of
    `ai_edge_litert.schema_py_generated` (`ModelT.InitFromPackedBuf`), the
    JSON document is appended as a buffer referenced by a
    `Metadata{name="keras_effconv", buffer}` entry of `Model.metadata`
    (the converter's own entries, e.g. `min_runtime_version`, are kept),
    and the model is packed again with `flatbuffers` (weights 16-byte
    aligned, as the converter writes them). The `description` becomes a
    one-line summary, which Netron shows. Operators, tensors, weights and
    signatures are unchanged, so the interpreter computes the same outputs.

    This is not LiteRT's standard `TFLITE_METADATA` (written by
    `tflite_support`'s metadata writers): `tflite-support` needs a protobuf
    that conflicts with ours, so this package reads and writes its own
    entry; `read_metadata` reads it back.

    Args:
        tflite_path: the `.tflite` file, rewritten in place (through a
            temporary file: on failure it is left as it was).
        metadata: the metadata dict (checked first).

    Raises:
        ValueError: for invalid metadata, a file that is not a flatbuffer,
            or a model whose weights are stored outside the flatbuffer
            (models over 2 GB).
        OSError: if the file cannot be read or written.
    """
    tflite_path = os.fspath(tflite_path)
    text = to_json(metadata, indent=None)
    buf = _read_flatbuffer(tflite_path)
    schema = _schema()
    model_t = schema.ModelT.InitFromPackedBuf(buf, 0)
    if any(getattr(b, "offset", 0) > 1 for b in model_t.buffers or []):
        raise ValueError(
            f"{tflite_path}: its weights are stored after the flatbuffer (a model over 2 GB); "
            "embed_metadata cannot rewrite it"
        )
    payload = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    entries = [m for m in (model_t.metadata or []) if (m.name or b"") not in (METADATA_NAME, METADATA_NAME.encode())]
    old = [m for m in (model_t.metadata or []) if m not in entries]
    buffer = schema.BufferT()
    buffer.data = payload
    if old and old[0].buffer > 0 and old[0].buffer < len(model_t.buffers):
        # Replace our previous entry's buffer rather than leave it orphaned.
        index = old[0].buffer
        model_t.buffers[index] = buffer
    else:
        index = len(model_t.buffers)
        model_t.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = index
    model_t.metadata = entries + [entry]
    model_t.description = summary(metadata)
    data = _repack(model_t, schema)
    with atomic_path(tflite_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def _resize_bilinear(images, size):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(keras.ops.image.resize(images, size, interpolation="bilinear")))


def preprocess_images(images, metadata):
    """Turns 8-bit images into the model's input, using only the metadata.

    Args:
        images: uint8 (or 0-255 float) array `(N, H, W)` / `(N, H, W, 1)`
            (gray) or `(N, H, W, 3)` (RGB), any size.
        metadata: a metadata dict with `preprocessing` (None: the training
            recipe's [0, 1] scaling is assumed) and `input`.

    Returns:
        float32 array `(N,) + input.shape` in the input's layout. Gray
        images feeding an RGB/BGR model are repeated over three channels;
        RGB images feeding a gray model become their luma
        (0.299 R + 0.587 G + 0.114 B).

    Raises:
        ValueError: if the images are not gray or RGB.
    """
    images = np.asarray(images, dtype="float32")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected gray or RGB images (N, H, W[, 1 or 3]). Received shape {images.shape}")
    spec = metadata["input"]
    shape = spec["shape"] if spec["layout"] == "NHWC" else [spec["shape"][1], spec["shape"][2], spec["shape"][0]]
    height, width, channels = shape
    pre = metadata.get("preprocessing") or unit_scale_preprocessing(channels or images.shape[-1])
    wanted = 1 if pre["channel_order"] == "gray" else 3
    if images.shape[-1] == 1 and wanted == 3:
        images = np.repeat(images, 3, axis=-1)
    elif images.shape[-1] == 3 and wanted == 1:
        images = images @ np.asarray([[0.299], [0.587], [0.114]], dtype="float32")
    if pre["channel_order"] == "BGR":
        images = images[..., ::-1]
    size = (height or images.shape[1], width or images.shape[2])
    if tuple(size) != images.shape[1:3]:
        images = _resize_bilinear(images, size)
    mean = np.asarray(pre["mean"], dtype="float32")
    std = np.asarray(pre["std"], dtype="float32")
    x = (images * np.float32(pre["scale"]) - mean) / std
    if spec["layout"] == "NCHW":
        x = np.moveaxis(x, -1, 1)
    return np.ascontiguousarray(x, dtype="float32")
