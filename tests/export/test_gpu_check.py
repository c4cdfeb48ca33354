"""check_gpu: static rules from the flatbuffer, and the GPU-only run."""

import numpy as np
import pytest

import keras

from helpers import REQUIRE_GPU_RUN
from keras_effconv.export import check_gpu
from keras_effconv.export import export_litert
from keras_effconv.export import inspect_tflite


def _grouped_model():
    inputs = keras.Input((16, 16, 8))
    x = keras.layers.Conv2D(8, 3, padding="same", groups=4, name="g2")(inputs)  # 2 channels per group
    return keras.Model(inputs, keras.layers.Conv2D(8, 1)(x))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="one conversion, on the TF test run")
def test_grouped_conv_with_two_channels_per_group_is_flagged(tmp_path):
    # target="cpu" keeps the native grouped conv (fine on XNNPACK, wrong on GPUs).
    export_litert(_grouped_model(), tmp_path / "cpu.tflite", target="cpu")
    report = check_gpu(tmp_path / "cpu.tflite")
    assert not report.static_ok and not report.passed
    assert any("2 input / 2 output channels per group" in v for v in report.violations)
    print("GPU run of the flagged model:", report.run_status, report.max_abs_diff, report.run_reason)
    if REQUIRE_GPU_RUN:
        assert report.run_status in ("passed", "failed")
    # The GPU target splits it per group: clean, and right on the GPU.
    gpu = export_litert(_grouped_model(), tmp_path / "gpu.tflite", target="gpu")
    assert gpu.gpu_check.static_ok
    assert gpu.gpu_check.run_status in (("passed",) if REQUIRE_GPU_RUN else ("passed", "skipped"))


def test_not_a_tflite_file(tmp_path):
    path = tmp_path / "x.tflite"
    path.write_bytes(b"definitely not a flatbuffer")
    with pytest.raises(ValueError, match="not a TFLite"):
        inspect_tflite(path)
    with pytest.raises(OSError):
        check_gpu(tmp_path / "missing.tflite")


def test_run_never_is_reported_as_skipped(tmp_path):
    from keras_effconv.export import _gpu_worker

    path = tmp_path / "canary.tflite"
    path.write_bytes(_gpu_worker._CANARY)
    report = check_gpu(path, run="never")
    assert report.static_ok and report.run_status == "skipped" and "never" in report.run_reason
    assert report.ops == {"CONV_2D": 1}
    with pytest.raises(ValueError, match="`run`"):
        check_gpu(path, run="sometimes")
    with pytest.raises(ValueError, match="`inputs`"):
        check_gpu(path, inputs=[np.zeros((1, 2, 2, 4))])


def test_canary_runs_on_the_gpu(tmp_path):
    from keras_effconv.export import _gpu_worker

    path = tmp_path / "canary.tflite"
    path.write_bytes(_gpu_worker._CANARY)
    report = check_gpu(path, inputs=[np.ones((1, 4, 4, 4), "float32")])
    if report.run_status == "skipped":
        assert report.run_reason and not REQUIRE_GPU_RUN, report.run_reason
    else:
        assert report.run_status == "passed" and report.fully_accelerated, report.run_reason


@pytest.mark.parametrize("started, status", [(False, "skipped"), (True, "failed")])
def test_a_killed_gpu_worker_is_reported_by_signal(started, status, tmp_path, monkeypatch):
    from keras_effconv.export import _gpu_worker
    from keras_effconv.export import gpu_check

    path = tmp_path / "canary.tflite"
    path.write_bytes(_gpu_worker._CANARY)
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import os, signal\n"
        + ("print('canary-ok', flush=True)\n" if started else "")
        + "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    monkeypatch.setattr(gpu_check, "_WORKER", str(worker))
    report = check_gpu(path)
    assert report.run_status == status and "killed by signal SIGKILL" in report.run_reason
    assert ("while starting" in report.run_reason) != started
