"""Self-describing models: the metadata document, its files, its `.tflite` entry, and the export command.

The acceptance test trains EffResNet-20 (HetConv) for a few steps on real
Fashion-MNIST with the training recipe, exports it with `keras-effconv export`
and checks that the `.tflite` file alone (its metadata: shape, scale, mean,
std, class names) is enough to classify raw 8-bit test images as Keras does.
The conversion runs in a TensorFlow subprocess, so it runs on every backend.
"""

import json
import os

import numpy as np
import pytest

import keras

from keras_effconv.datasets import fashion_mnist
from keras_effconv.datasets.prepare import FASHION_MNIST_CLASSES
from keras_effconv.export import metadata as meta_module
from keras_effconv.export.metadata import caffe_preprocessing
from keras_effconv.export.metadata import embed_metadata
from keras_effconv.export.metadata import model_metadata
from keras_effconv.export.metadata import preprocess_images
from keras_effconv.export.metadata import read_metadata
from keras_effconv.export.metadata import unit_scale_preprocessing
from keras_effconv.export.metadata import write_metadata_files

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
needs_fashion_mnist = pytest.mark.skipif(
    not os.path.isdir(FASHION_MNIST), reason="needs the Debian package dataset-fashion-mnist"
)
TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="a second conversion, on the TF test run only"
)


def _minimal_tflite(path):
    """A valid, op-less `.tflite` flatbuffer with the converter's kind of metadata entry (no TensorFlow needed)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    model.description = "MLIR Converted."
    empty, runtime = schema.BufferT(), schema.BufferT()
    runtime.data = np.frombuffer(b"1.5.0\0", dtype=np.uint8)
    model.buffers = [empty, runtime]
    entry = schema.MetadataT()
    entry.name, entry.buffer = "min_runtime_version", 1
    model.metadata = [entry]
    model.subgraphs = [schema.SubGraphT()]
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def _metadata(**changes):
    base = dict(
        input_shape=(28, 28, 1),
        class_names=FASHION_MNIST_CLASSES,
        preprocessing=unit_scale_preprocessing(1),
        model="eff_resnet20",
        conv="hetconv",
        dataset="fashion_mnist",
    )
    base.update(changes)
    return model_metadata(**base)


def test_embed_read_round_trip_keeps_other_entries(tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    path = _minimal_tflite(tmp_path / "m.tflite")
    no_entry = r"has no 'keras_effconv' metadata \(its metadata entries: min_runtime_version\)"
    with pytest.raises(ValueError, match=no_entry):
        read_metadata(path)
    meta = _metadata()
    embed_metadata(path, meta)
    assert read_metadata(path) == meta
    again = dict(meta, class_names=[f"class {i}" for i in range(10)])
    embed_metadata(path, again)  # replaces our entry, keeps the converter's
    assert read_metadata(path) == again
    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    names = [model.Metadata(i).Name() for i in range(model.MetadataLength())]
    assert names == [b"min_runtime_version", b"keras_effconv"] and model.BuffersLength() == 3
    assert model.Buffers(1).DataAsNumpy().tobytes() == b"1.5.0\0"
    assert model.Description().startswith(b"keras_effconv: eff_resnet20 hetconv fashion_mnist")
    assert len(model.Description()) < 256  # Netron shows it
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temporary left


def test_bad_files_and_documents_are_clear_errors(tmp_path):
    (tmp_path / "x.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ValueError, match="not a TFLite/LiteRT flatbuffer"):
        read_metadata(tmp_path / "x.tflite")
    newer = dict(_metadata(), version=meta_module.SCHEMA_VERSION + 1)
    (tmp_path / "model.json").write_text(json.dumps(newer))
    with pytest.raises(ValueError, match="newer than this keras_effconv reads"):
        read_metadata(tmp_path / "model.json")
    with pytest.raises(ValueError, match="channel_order.*gives 3 channel"):
        model_metadata((28, 28, 1), preprocessing=caffe_preprocessing())
    with pytest.raises(ValueError, match="single lines"):
        model_metadata((28, 28, 1), class_names=["a\nb"])
    path = _minimal_tflite(tmp_path / "m.tflite")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="input.layout"):
        embed_metadata(path, _metadata(layout="NWHC"))
    assert path.read_bytes() == before


def test_files_hold_the_document_and_the_labels(tmp_path):
    meta = _metadata()
    written = write_metadata_files(tmp_path, meta)
    assert written == [str(tmp_path / "model.json"), str(tmp_path / "labels.txt")]
    assert read_metadata(tmp_path / "model.json") == meta
    assert (tmp_path / "labels.txt").read_text().splitlines() == FASHION_MNIST_CLASSES
    # Without class names a stale labels.txt (another model's) is removed.
    write_metadata_files(tmp_path, _metadata(class_names=None))
    assert not (tmp_path / "labels.txt").exists()


def test_preprocessing_descriptions_match_the_code_they_describe():
    from keras_effconv.applications import preprocess_input

    rgb = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3)).astype("uint8")
    caffe = model_metadata((5, 7, 3), preprocessing=caffe_preprocessing())
    np.testing.assert_allclose(preprocess_images(rgb, caffe), preprocess_input(rgb.astype("float32")), atol=1e-4)
    gray = rgb[..., 0]
    unit = model_metadata((5, 7, 1), preprocessing=unit_scale_preprocessing(1))
    np.testing.assert_allclose(preprocess_images(gray, unit), gray[..., None] / 255.0, rtol=1e-6)
    # A 3-channel model fed gray images: the gray value in every channel.
    np.testing.assert_allclose(
        preprocess_images(gray, model_metadata((5, 7, 3), preprocessing=unit_scale_preprocessing(3))),
        np.repeat(gray[..., None], 3, axis=-1) / 255.0, rtol=1e-6)


@needs_fashion_mnist
def test_datasets_know_their_class_names_and_preprocessing():
    from keras_effconv.datasets import load_dataset

    data = load_dataset("fashion_mnist", subset=8, min_size=32)  # resized like the ImageNet networks' runs
    assert data.class_names == FASHION_MNIST_CLASSES and data.input_shape == (32, 32, 1)
    assert data.preprocessing == unit_scale_preprocessing(1)
    (_, _), (x_test, _) = fashion_mnist()
    meta = model_metadata(data.input_shape, data.class_names, data.preprocessing)
    recipe = np.stack([image for image, _ in data.test.take(4).as_numpy_iterator()])
    np.testing.assert_allclose(preprocess_images(x_test[:4], meta), recipe, atol=2e-6)


def test_calibration_from_an_image_folder_uses_the_metadata(tmp_path):
    from keras_effconv.cli.export import calibration_images

    rng = np.random.default_rng(0)
    images = {}
    for label in ("cat", "dog"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(3):
            image = rng.integers(0, 256, (6, 6, 3)).astype("uint8")
            path = tmp_path / "photos" / label / f"{i}.png"
            keras.utils.save_img(path, image, data_format="channels_last", scale=False)
            images[f"{label}/{i}"] = image
    caffe = model_metadata((6, 6, 3), ["cat", "dog"], caffe_preprocessing())
    x = calibration_images(str(tmp_path / "photos"), caffe, count=10)
    assert x.shape == (4, 6, 6, 3)  # the training 80% of 6 images
    expected = np.stack([caffe_image(v) for v in images.values()])
    for row in x:  # each one of the folder's images, in the caffe convention
        assert np.abs(expected - row).max(axis=(1, 2, 3)).min() < 1e-3
    same = calibration_images("image_folder", caffe, split="test", path=str(tmp_path / "photos"))
    assert same.shape == (2, 6, 6, 3)
    with pytest.raises(ValueError, match="needs --calibration-path"):
        calibration_images("image_folder", caffe)
    with pytest.raises(ValueError, match="expected one of"):
        calibration_images("imagenet", caffe)


def caffe_image(rgb):
    return rgb[..., ::-1].astype("float32") - np.asarray(meta_module.CAFFE_MEAN_BGR, "float32")


def _nan_model(tmp_path):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, strides=2)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    model.layers[1].kernel.assign(np.full(model.layers[1].kernel.shape, np.nan, "float32"))
    path = tmp_path / "in" / "model.keras"
    path.parent.mkdir()
    model.save(path)
    return path


def test_failed_export_leaves_existing_outputs_untouched(tmp_path, capsys):
    from keras_effconv.cli import main

    model = _nan_model(tmp_path)
    write_metadata_files(model.parent, _metadata())
    out = tmp_path / "out"
    out.mkdir()
    files = {out / "model.tflite": b"previous export", out / "model.json": b"{}", out / "labels.txt": b"a\n"}
    for path, content in files.items():
        path.write_bytes(content)
    with pytest.raises(SystemExit) as info:
        main(["export", str(model), "--out", str(out / "model.tflite"), "--target", "cpu"])
    assert info.value.code == 2 and "NaN/inf weights" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in files} == files and sorted(os.listdir(out)) == sorted(p.name for p in files)
    # Class names that do not match the outputs are refused before any conversion.
    (tmp_path / "labels.txt").write_text("one\ntwo\n")
    with pytest.raises(SystemExit):
        main(["export", str(model), "--out", str(out / "model.tflite"), "--labels", str(tmp_path / "labels.txt")])
    assert "2 class names" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in files} == files


@TF_ONLY
def test_failed_embedding_writes_nothing(tmp_path, monkeypatch):
    from keras_effconv.export import litert

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    out = tmp_path / "m.tflite"
    out.write_bytes(b"previous export")

    def fail(path, metadata):
        with open(path, "ab") as f:
            f.write(b"half-written")
        raise OSError("disk full")

    monkeypatch.setattr(litert, "embed_metadata", fail)
    with pytest.raises(OSError, match="disk full"):
        litert.export_litert(model, out, target="cpu", verify=False,
                             metadata=model_metadata((8, 8, 1), ["a", "b", "c"]))
    assert out.read_bytes() == b"previous export" and os.listdir(tmp_path) == ["m.tflite"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """EffResNet-20 HetConv trained by the recipe for 4 steps on 256 real Fashion-MNIST images, exported."""
    from keras_effconv.training import TrainConfig
    from keras_effconv.training import train

    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(model="eff_resnet20", conv="hetconv", subset=256, batch_size=64, epochs=1,
                         max_test_images=64, augment=False, learning_rate=3e-3, export=True)
    train(config, str(out), verbose=0)
    return out


def _litert_top1(tflite_path, meta, raw):
    """Top-1 class names of the LiteRT model, preprocessing raw uint8 images with the metadata's numbers only."""
    from ai_edge_litert.interpreter import Interpreter

    spec, pre = meta["input"], meta["preprocessing"]
    height, width, channels = spec["shape"]
    assert spec["layout"] == "NHWC" and raw.shape[1:] == (height, width)  # 28 px in, 28 px model
    pixels = raw.astype("float32")[..., None]
    x = (pixels * pre["scale"] - np.asarray(pre["mean"], "float32")) / np.asarray(pre["std"], "float32")
    interpreter = Interpreter(str(tflite_path))
    interpreter.allocate_tensors()
    (given,), (taken,) = interpreter.get_input_details(), interpreter.get_output_details()
    batch = spec["batch_size"]
    scores = []
    for start in range(0, len(x), batch):
        interpreter.set_tensor(given["index"], x[start : start + batch].astype(spec["dtype"]))
        interpreter.invoke()
        scores.append(interpreter.get_tensor(taken["index"]).copy())
    return [meta["class_names"][i] for i in np.concatenate(scores).argmax(-1)]


@needs_fashion_mnist
def test_export_is_self_describing_and_agrees_with_keras_on_real_images(trained_run, capsys):
    from keras_effconv.cli import main

    # The recipe wrote the metadata beside model.keras.
    trained = read_metadata(trained_run / "model.json")
    assert trained["input"] == {"shape": [28, 28, 1], "batch_size": None, "layout": "NHWC", "dtype": "float32"}
    assert trained["preprocessing"] == unit_scale_preprocessing(1)
    assert trained["provenance"]["model"] == "eff_resnet20" and trained["provenance"]["conv"] == "hetconv"
    assert (trained_run / "labels.txt").read_text().splitlines() == FASHION_MNIST_CLASSES
    # ... and embedded it in the .tflite of `train --export`.
    embedded = read_metadata(trained_run / "model.tflite")
    assert embedded["class_names"] == FASHION_MNIST_CLASSES
    assert embedded["preprocessing"] == unit_scale_preprocessing(1)
    assert embedded["input"]["batch_size"] == 1 and embedded["provenance"] == trained["provenance"]

    out = trained_run / "export"
    out.mkdir()
    tflite = out / "model.tflite"
    assert main(["export", str(trained_run / "model.keras"), "--out", str(tflite), "--target", "cpu",
                 "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "Flex ops: 0" in printed and "metadata: embedded" in printed and "no metadata" not in printed

    meta = read_metadata(tflite)
    assert meta["class_names"] == FASHION_MNIST_CLASSES
    assert meta["preprocessing"]["scale"] == pytest.approx(1 / 255)
    assert meta["preprocessing"]["mean"] == [0.0] and meta["preprocessing"]["std"] == [1.0]
    assert meta["input"]["batch_size"] == 4 and meta["input"]["shape"] == [28, 28, 1]
    assert meta["provenance"] == trained["provenance"]
    assert read_metadata(out / "model.json") == meta
    assert (out / "labels.txt").read_text().splitlines() == FASHION_MNIST_CLASSES

    (_, _), (x_test, _) = fashion_mnist()
    raw = x_test[:100]
    model = keras.saving.load_model(trained_run / "model.keras", compile=False)
    scores = keras.ops.convert_to_numpy(model.predict(raw[..., None].astype("float32") / 255.0, verbose=0))
    expected = [FASHION_MNIST_CLASSES[i] for i in scores.argmax(-1)]
    got = _litert_top1(tflite, meta, raw)
    top2 = np.sort(scores, axis=-1)[:, -2:]
    differ = [i for i in range(len(raw)) if got[i] != expected[i]]
    # float32 export: only an exact tie could flip a label.
    assert all(top2[i, 1] - top2[i, 0] < 1e-5 for i in differ), (differ, top2[differ])
    assert len(set(expected)) > 1  # a trained-ish model, not one constant answer


def test_export_without_metadata_says_so_and_records_the_input(tmp_path):
    from keras_effconv.cli import make_parser
    from keras_effconv.cli.export import _model_metadata

    bare = _nan_model(tmp_path)  # no model.json beside it
    model = keras.saving.load_model(bare, compile=False)
    args = make_parser().parse_args(["export", str(bare), "--out", str(tmp_path / "m.tflite")])
    meta, note = _model_metadata(args, model, (28, 28, 1))
    assert note.startswith("no metadata: no model.json beside")
    assert meta["input"]["shape"] == [28, 28, 1] and meta["input"]["layout"] == "NHWC"
    assert meta["preprocessing"] is None and meta["class_names"] is None
    write_metadata_files(tmp_path, _metadata())
    args = make_parser().parse_args(["export", str(bare), "--out", str(tmp_path / "m.tflite"),
                                     "--metadata", str(tmp_path / "model.json")])
    meta, note = _model_metadata(args, model, (28, 28, 1))
    assert note is None and meta["class_names"] == FASHION_MNIST_CLASSES
