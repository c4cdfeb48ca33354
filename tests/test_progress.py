"""`verbose=`: Keras' Progbar on the long operations, silent at 0 and under capture with "auto"."""

import numpy as np
import pytest

import keras

from conftest import BACKEND
from keras_effconv import _progress
from keras_effconv.decompose import channel_decompose
from keras_effconv.decompose import depthwise_decompose
from keras_effconv.decompose import expand_separable


def plain(text):
    """Captured progress output without colours and with every redraw on its own line."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).replace("\b", "").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


@pytest.mark.parametrize("value, expected", [(0, 0), (1, 1), (2, 2), (True, 1), (False, 0), (np.int64(2), 2)])
def test_check_verbose(value, expected):
    assert _progress.check_verbose(value) == expected


@pytest.mark.parametrize("value", [3, -1, "yes", 1.0, None])
def test_check_verbose_refuses(value):
    with pytest.raises(ValueError, match=r"argument `verbose`.*'auto'"):
        _progress.check_verbose(value)


def test_auto_is_one_only_when_someone_watches(monkeypatch, capsys):
    assert not _progress.interactive()  # capsys replaced standard output by a capture
    assert _progress.check_verbose("auto") == 0
    monkeypatch.setattr(_progress, "interactive", lambda: True)
    assert _progress.check_verbose("auto") == 1


def test_progress_lines(capsys):
    with _progress.Progress("stage one", 3, verbose=1, unit_name="layer") as progress:
        for _ in progress.iterate(range(3)):
            progress.log("a sub-step")
    out = plain(capsys.readouterr().out)
    assert out.startswith("stage one\n0/3")
    assert out.count("a sub-step") == 3 and "3/3" in out and "/layer" in out
    with _progress.Progress("stage two", None, verbose=2, unit_name="batch") as progress:
        for _ in progress.iterate(range(4)):
            pass
    lines = plain(capsys.readouterr().out).splitlines()
    assert lines[0] == "stage two" and lines[1].startswith("4/4 - ") and len(lines) == 2
    with _progress.Progress("silent", 2, verbose=0) as progress:
        list(progress.iterate(range(2)))
    assert capsys.readouterr().out == ""


def test_a_failure_ends_the_bar_line(capsys):
    @_progress.closes_bars
    def fails():
        progress = _progress.Progress("doomed", 2, verbose=1)
        progress.advance()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fails()
    out = capsys.readouterr().out
    assert "doomed" in out and out.endswith("\n") and not _progress._OPEN


def _tiny_cnn():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(8, 3, padding="same")(x))


def test_depthwise_decompose_progress(capsys):
    model = _tiny_cnn()
    data = np.random.default_rng(0).standard_normal((16, 8, 8, 4)).astype("float32")
    depthwise_decompose(model, method="data", data=data, batch_size=8, verbose=0)
    depthwise_decompose(model, method="data", data=data, batch_size=8)  # "auto": captured, so silent
    assert capsys.readouterr().out == ""
    depthwise_decompose(model, method="data", data=data, batch_size=8, insert_batchnorm=True, verbose=1)
    out = plain(capsys.readouterr().out)
    assert "depthwise_decompose: factorizing 2 layers (SVD)\n0/2" in out
    # the slow part, per layer and batch: 2 layers x 2 batches
    assert "depthwise_decompose: fitting 2 layers on data (method='data', 2 batches per layer)\n0/4" in out
    assert "4/4" in out and "calibrating 2 BatchNormalization layers" in out and "measuring the output errors" in out


def test_channel_decompose_and_expand_progress(capsys):
    model = _tiny_cnn()
    data = np.random.default_rng(0).standard_normal((16, 8, 8, 4)).astype("float32")
    channel_decompose(model, ratio=0.5, data=data, batch_size=8, verbose=2)
    lines = plain(capsys.readouterr().out).splitlines()
    assert lines[0] == "channel_decompose: collecting the responses of 2 layers on data"
    assert lines[1].startswith("2/2 - ") and lines[2] == "channel_decompose: factorizing 2 layers (PCA)"
    decomposed, _ = depthwise_decompose(model, insert_batchnorm=True, verbose=0)
    expand_separable(decomposed, verbose=0)
    assert capsys.readouterr().out == ""
    expand_separable(decomposed, verbose=1)
    assert "expand_separable: composing 2 depthwise/pointwise pairs\n0/2" in plain(capsys.readouterr().out)
    with pytest.raises(ValueError, match="argument `verbose`"):
        expand_separable(decomposed, verbose="loud")


def test_export_failure_prints_nothing_at_zero_and_ends_the_line_at_one(tmp_path, capsys):
    from keras_effconv.export import export_litert

    inputs = keras.Input((8, 8, 3))
    bad = keras.Model(inputs, keras.layers.Lambda(lambda t: t + 1, name="offset")(inputs))
    with pytest.raises(ValueError, match="offset"):
        export_litert(bad, tmp_path / "m.tflite", verbose=0)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="offset"):
        export_litert(bad, tmp_path / "m.tflite", verbose=1)
    out = capsys.readouterr().out
    assert "stage 1/3: rewrite" in plain(out) and out.endswith("\n")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="one conversion is enough; it runs in a TF worker from any backend")
def test_export_progress_names_the_stages(tmp_path, capsys):
    from keras_effconv.export import export_litert

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs), name="tiny")
    export_litert(model, tmp_path / "m.tflite", target="cpu", verbose=2)
    lines = plain(capsys.readouterr().out).splitlines()
    assert lines[0].startswith("export_litert: 'tiny' -> ") and "target='cpu'" in lines[0]
    assert [line.split(":")[0] for line in lines[1:4]] == ["stage 1/3", "stage 2/3", "stage 3/3"]
    assert lines[4].startswith("3/3 - ") and len(lines) == 5


@pytest.mark.skipif(BACKEND == "jax", reason="XLA train-step compilations; the logic is backend independent")
def test_compare_convs_progress(tmp_path, capsys):
    from keras_effconv.training import TrainConfig
    from keras_effconv.training.compare import compare_convs

    config = TrainConfig(epochs=1, subset=32, batch_size=32, max_test_images=32)
    compare_convs(["standard"], config, str(tmp_path), train_steps=2, verbose=0)
    assert capsys.readouterr().out == ""
    compare_convs(["standard"], config, str(tmp_path), train_steps=2, verbose=1)  # the finished run is reused
    out = plain(capsys.readouterr().out)
    assert f"compare_convs: 1 run under {tmp_path}" in out
    assert "run 1/1: standard, seed 0 -> " in out and "(finished: reused)" in out
    assert "compare_convs: timing inference and training of 1 model (interleaved)\n0/2" in out
