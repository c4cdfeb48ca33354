"""`export_onnx` and `keras-effconv export --format onnx`: every conv type, verified with ONNX Runtime.

Each backend's default run exports one representative EffResNet-20 (torch:
HetConv, whose gathers hit torchlib's Squeeze; TensorFlow: IGC, whose grouped
convolutions Keras nests in XLA functions; JAX: HetConv through the
TensorFlow worker); every conv type is `slow`. The tests compare ONNX
Runtime with Keras themselves, on their own inputs, independently of the
report.
"""

import argparse
import os

import numpy as np
import pytest

import keras

from helpers import max_rel_diff
from helpers import randomize_statistics
from keras_effconv.applications import EffResNet20
from keras_effconv.conv_methods import conv_method_names
from keras_effconv.export import ExportError
from keras_effconv.export import OnnxExportReport
from keras_effconv.export import export_onnx
from keras_effconv.export import onnx as onnx_export

pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'keras-effconv[onnx]'")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install 'keras-effconv[onnx]'")

BACKEND = keras.backend.backend()
TOLERANCE = 1e-4
# The route each backend takes needs these (JAX: the TensorFlow route in a worker).
_CONVERTERS = {"torch": ("onnxscript",), "tensorflow": ("tf2onnx",), "jax": ("tensorflow", "tf2onnx")}
_missing = [m for m in _CONVERTERS.get(BACKEND, ()) if __import__("importlib").util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(
    BACKEND not in _CONVERTERS or bool(_missing),
    reason=f"ONNX export runs on torch, TensorFlow and JAX; backend {BACKEND!r} lacks {_missing or 'support'}",
)
# On JAX every conversion starts a TensorFlow worker (~10 s): there only the representative runs by default.
slow_on_jax = pytest.mark.slow if BACKEND == "jax" else (lambda test: test)
REPRESENTATIVE = {"torch": "hetconv", "tensorflow": "igc", "jax": "hetconv"}.get(BACKEND, "hetconv")


def _network(conv):
    keras.utils.set_random_seed(0)
    model = EffResNet20(conv=conv, input_shape=(28, 28, 1), classes=10, weights=None, classifier_activation=None)
    return randomize_statistics(model)


def _onnxruntime(path, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _check_network(conv, tmp_path, optimize=True):
    model = _network(conv)
    path = tmp_path / f"{conv}.onnx"
    report = export_onnx(model, path, optimize=optimize)
    assert isinstance(report, OnnxExportReport)
    assert report.path == str(path) and path.exists() and report.file_size == path.stat().st_size
    assert report.backend == BACKEND and report.opset == onnx_export.DEFAULT_OPSET
    assert report.input_shapes == [[1, 28, 28, 1]]
    assert report.ops.get("Conv", 0) >= 19, report.ops
    # Our own check, on inputs the export never saw: ONNX Runtime against Keras.
    x = np.random.default_rng(7).standard_normal((1, 28, 28, 1)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    actual = _onnxruntime(path, x)
    assert actual.shape == expected.shape == (1, 10)
    assert np.all(np.isfinite(actual))
    diff = max_rel_diff(expected, actual)
    assert diff <= TOLERANCE, f"{conv}: ONNX Runtime differs from Keras by {diff:.3g}"
    assert report.max_abs_diff is not None and report.max_abs_diff <= TOLERANCE * max(1.0, report.output_scale)
    assert float(np.abs(expected).max()) > 0.1  # a network computing ~0 would match anything
    return report, diff


def test_representative_network_exports_and_matches_keras(tmp_path):
    report, diff = _check_network(REPRESENTATIVE, tmp_path)
    assert report.optimized
    # The lowered form: plain (grouped) convolutions, BN folded away.
    assert "BatchNormalization" not in report.ops and "StatefulPartitionedCall" not in report.ops
    assert str(tmp_path) in report.summary() and "max |ONNX Runtime - Keras|" in report.summary()
    assert report.to_dict()["ops"] == report.ops


@pytest.mark.slow
@pytest.mark.parametrize("conv", conv_method_names())
def test_every_conv_type_lowered(conv, tmp_path):
    _check_network(conv, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("conv", conv_method_names())
def test_every_conv_type_as_it_runs_in_keras(conv, tmp_path):
    report, _ = _check_network(conv, tmp_path, optimize=False)
    assert not report.optimized


# --- arguments, atomic writes -------------------------------------------------


def _tiny():
    from keras_effconv import layers as eff

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 4))
    x = eff.HetConv2D(8, 3, part=2, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return randomize_statistics(keras.Model(inputs, keras.layers.Dense(3)(x)))


@pytest.fixture
def no_conversion(monkeypatch):
    """Any conversion fails the test: the arguments must be refused before one starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("a conversion started")

    for name in ("_convert_torch", "_convert_tensorflow", "_convert_in_worker"):
        monkeypatch.setattr(onnx_export, name, refuse)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"path": "{tmp}/m.tflite"}, ValueError, "argument `path`: expected a .onnx file"),
        ({"path": "{tmp}"}, ValueError, "is a directory"),
        ({"path": "{tmp}/missing/m.onnx"}, OSError, "directory of `path` does not exist"),
        ({"opset": 12}, ValueError, "`opset`"),
        ({"opset": 19}, ValueError, "`opset`"),
        ({"opset": "18"}, ValueError, "`opset`"),
        ({"opset": 17} if BACKEND == "torch" else {"opset": 19}, ValueError, "`opset`"),
        ({"batch_size": 0}, ValueError, "`batch_size`"),
        ({"batch_size": None}, ValueError, "`batch_size`"),
        ({"optimize": "yes"}, TypeError, "`optimize`"),
        ({"verify": 1}, TypeError, "`verify`"),
        ({"input_shape": (8, 8)}, ValueError, "`input_shape`"),
        ({"input_shape": (9, 9, 4)}, ValueError, "`input_shape`"),
        ({"verification_data": np.zeros((4, 8, 8, 3), "float32")}, ValueError, "`verification_data`"),
        ({"model": "model.h5"}, ValueError, r"\.keras"),
        ({"model": 3}, TypeError, "`model`"),
    ],
)
def test_bad_arguments_fail_before_anything_is_written(kwargs, error, message, tmp_path, no_conversion):
    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"previous")
    call = {"model": _tiny(), "path": str(existing)}
    call.update({k: v.format(tmp=tmp_path) if isinstance(v, str) and "{tmp}" in v else v for k, v in kwargs.items()})
    with pytest.raises(error, match=message):
        export_onnx(**call)
    assert existing.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_nan_weights_are_refused_by_name(tmp_path, no_conversion):
    model = _tiny()
    model.layers[-1].kernel.assign(np.full(model.layers[-1].kernel.shape, np.nan, "float32"))
    with pytest.raises(ExportError, match="NaN/inf weights"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


@slow_on_jax
def test_failed_verification_leaves_the_existing_file_untouched(tmp_path, monkeypatch):
    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"previous")
    real = onnx_export.onnxruntime_outputs

    def off_by_one(path, batches):
        assert os.path.exists(path) and path != str(existing)  # the real conversion wrote its temporary file
        return [[o + 1.0 for o in outputs] for outputs in real(path, batches)]

    monkeypatch.setattr(onnx_export, "onnxruntime_outputs", off_by_one)
    with pytest.raises(ExportError, match="differs from Keras"):
        export_onnx(_tiny(), existing)
    assert existing.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]  # no temporary file left


@slow_on_jax
@pytest.mark.skipif(BACKEND == "torch", reason="torch's exporter writes opset 18 only (refused above)")
def test_older_opset(tmp_path):
    report = export_onnx(_tiny(), tmp_path / "m.onnx", opset=13)
    assert report.opset == 13 and report.max_abs_diff <= TOLERANCE


@slow_on_jax
def test_tiny_model_with_verification_data_and_batch(tmp_path):
    model = _tiny()
    data = np.random.default_rng(3).uniform(0, 1, (6, 8, 8, 4)).astype("float32")
    report = export_onnx(model, tmp_path / "m.onnx", batch_size=2, verification_data=data)
    assert report.input_shapes == [[2, 8, 8, 4]] and report.samples == 3
    actual = _onnxruntime(tmp_path / "m.onnx", data[:2])
    assert max_rel_diff(keras.ops.convert_to_numpy(model(data[:2], training=False)), actual) <= TOLERANCE
    quiet = export_onnx(model, tmp_path / "quiet.onnx", verify=False)
    assert quiet.max_abs_diff is None and "not verified" in quiet.summary()


# --- the command line -------------------------------------------------------------


def _parser():
    from keras_effconv.cli import export as command

    parser = argparse.ArgumentParser(prog="keras-effconv")
    command.register(parser.add_subparsers(dest="command", required=True))
    return parser


@slow_on_jax
def test_cli_writes_a_verified_onnx_file(tmp_path, capsys):
    model = _tiny()
    keras_path = tmp_path / "tiny.keras"
    model.save(keras_path)
    out = tmp_path / "tiny.onnx"
    args = _parser().parse_args(["export", str(keras_path), "--format", "onnx", "--out", str(out)])
    args.handler(args)
    printed = capsys.readouterr().out
    assert out.exists() and "max |ONNX Runtime - Keras|" in printed and "Conv x" in printed
    x = np.random.default_rng(5).standard_normal((1, 8, 8, 4)).astype("float32")
    assert max_rel_diff(keras.ops.convert_to_numpy(model(x, training=False)), _onnxruntime(out, x)) <= TOLERANCE


@pytest.mark.parametrize(
    "options, message",
    [
        (["--out", "{tmp}/m.tflite"], "argument `--out`: expected a .onnx file"),
        (["--out", "{tmp}/missing/m.onnx"], "directory of `--out` does not exist"),
        (["--out", "{tmp}/m.onnx", "--quantize", "int8"], "--quantize is a LiteRT option"),
        (["--out", "{tmp}/m.onnx", "--target", "gpu"], "--target is a LiteRT option"),
        (["--out", "{tmp}/m.onnx", "--target", "cpu", "--quantize", "float16"], "--quantize, --target are LiteRT options"),
        (["--out", "{tmp}/m.onnx", "--labels", "labels.txt"], "--labels is a LiteRT option"),
    ],
)
def test_cli_bad_arguments_fail_before_the_model_is_loaded(options, message, tmp_path, capsys):
    from keras_effconv.cli import main

    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"previous")
    # The model does not exist: the options are reported first, so they were checked before loading.
    argv = ["export", str(tmp_path / "missing.keras"), "--format", "onnx"]
    argv += [o.format(tmp=tmp_path) for o in options]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert existing.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_cli_litert_stays_the_default():
    args = _parser().parse_args(["export", "m.keras", "--out", "m.tflite"])
    assert args.format == "litert" and args.target is None
