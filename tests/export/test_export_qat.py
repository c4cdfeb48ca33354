"""Quantization-aware training: tf_keras rebuild + tfmot in its own process, int8 export."""

import importlib.util

import pytest

import keras

from helpers import trained_fashion_mnist
from keras_effconv.export.qat import quantization_aware_training

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("tensorflow_model_optimization") is None,
                       reason="tensorflow-model-optimization (the tfmot extra) is not installed"),
    pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="one QAT run, on the TF test run"),
]


def test_qat_int8_on_real_fashion_mnist(tmp_path, monkeypatch):
    model, x_train, y_train, x_test, y_test = trained_fashion_mnist()
    # Run from a folder holding a hostile csv.py/json.py: the QAT worker must not import them.
    marker = tmp_path / "hostile-code-ran"
    for name in ("csv", "json"):
        (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    report = quantization_aware_training(
        model, tmp_path / "qat.tflite", x_train[30000:35000], y_train[30000:35000],
        epochs=1, validation_data=(x_test[:1000], y_test[:1000]),
    )
    print(report)
    assert not marker.exists()
    assert report.flex_ops == [] and (tmp_path / "qat.tflite").exists()
    assert report.rebuild_max_abs_diff <= 1e-4 * max(1.0, 10.0)
    # QAT fine-tunes the weights, so it is judged on accuracy, not on agreement.
    assert report.int8_accuracy >= report.float_accuracy - 0.03

