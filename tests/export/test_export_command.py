"""`keras-effconv export`: argument handling and the printed report."""

import argparse

import pytest

import keras

from keras_effconv.cli import export as command


def _parser():
    parser = argparse.ArgumentParser(prog="keras-effconv")
    command.register(parser.add_subparsers(dest="command", required=True))
    return parser


def _tiny(tmp_path):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, strides=2)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    path = tmp_path / "tiny.keras"
    model.save(path)
    return path


def test_arguments(tmp_path):
    args = _parser().parse_args(["export", "m.keras", "--out", "m.tflite", "--quantize", "int8",
                                 "--calibration", "fashion_mnist", "--target", "cpu",
                                 "--input-shape", "28,28,1", "--batch-size", "2", "--no-verify"])
    assert (args.quantize, args.calibration, args.target, args.input_shape, args.batch_size, args.no_verify) == (
        "int8", "fashion_mnist", "cpu", (28, 28, 1), 2, True)
    with pytest.raises(SystemExit):
        _parser().parse_args(["export", "m.keras", "--out", "x", "--quantize", "int4"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["export", "m.keras", "--out", "x", "--input-shape", "28,28"])


def test_bad_input_is_one_line_error(tmp_path):
    parser = _parser()
    args = parser.parse_args(["export", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "m.tflite")])
    with pytest.raises(OSError, match="not found"):
        args.handler(args)
    args = parser.parse_args(["export", "model.h5", "--out", "m.tflite"])
    with pytest.raises(ValueError, match=r"\.keras"):
        args.handler(args)
    path = _tiny(tmp_path)
    args = parser.parse_args(["export", str(path), "--out", str(tmp_path / "m.tflite"), "--quantize", "int8"])
    with pytest.raises(ValueError, match="--calibration"):
        args.handler(args)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="one conversion, on the TF test run")
def test_export_int8_with_fashion_mnist_calibration(tmp_path, capsys):
    path = _tiny(tmp_path)
    out = tmp_path / "m.tflite"
    args = _parser().parse_args(["export", str(path), "--out", str(out), "--quantize", "int8",
                                 "--calibration", "fashion_mnist", "--target", "cpu"])
    args.handler(args)
    printed = capsys.readouterr().out
    assert out.exists()
    assert "Flex ops: 0" in printed and "quantization=int8" in printed and "CONV_2D" in printed


@pytest.mark.parametrize(
    "out, message",
    [
        ("{tmp}", "is a directory, not a .tflite file"),
        ("{tmp}/missing/m.tflite", "directory of `--out` does not exist"),
        ("{tmp}/m.onnx", "argument `--out`: expected a .tflite file"),
    ],
)
def test_bad_out_is_one_line_before_the_model_is_loaded(out, message, tmp_path, capsys):
    from keras_effconv.cli import main

    # The model does not exist either: --out is reported first, so it was
    # checked before anything was loaded or converted.
    with pytest.raises(SystemExit) as info:
        main(["export", str(tmp_path / "missing.keras"), "--out", out.format(tmp=tmp_path)])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.startswith("keras-effconv: error: ") and message in err and err.count("\n") == 1, err


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="one conversion, on the TF test run")
def test_int8_gpu_export_checks_top1_on_test_images(tmp_path, capsys):
    from helpers import REQUIRE_GPU_RUN

    path = _tiny(tmp_path)
    out = tmp_path / "m.tflite"
    args = _parser().parse_args(["export", str(path), "--out", str(out), "--quantize", "int8",
                                 "--calibration", "fashion_mnist"])
    args.handler(args)
    printed = capsys.readouterr().out
    print(printed)
    assert out.exists() and "target=gpu" in printed
    if "GPU-only fp32 run: skipped" not in printed or REQUIRE_GPU_RUN:
        assert "top-1 agreement with the CPU interpreter" in printed and "on 200 inputs" in printed
