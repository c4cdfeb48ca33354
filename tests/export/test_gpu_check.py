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


@pytest.fixture
def canary(tmp_path):
    """The GPU worker's one-op canary model as a .tflite file."""
    from keras_effconv.export import _gpu_worker

    path = tmp_path / "canary.tflite"
    path.write_bytes(_gpu_worker._CANARY)
    return path


def test_run_never_is_reported_as_skipped(canary):
    path = canary
    report = check_gpu(path, run="never")
    assert report.static_ok and report.run_status == "skipped" and "never" in report.run_reason
    assert report.ops == {"CONV_2D": 1}
    with pytest.raises(ValueError, match="`run`"):
        check_gpu(path, run="sometimes")
    with pytest.raises(ValueError, match="`inputs`"):
        check_gpu(path, inputs=[np.zeros((1, 2, 2, 4))])


def test_canary_runs_on_the_gpu(canary):
    path = canary
    report = check_gpu(path, inputs=[np.ones((1, 4, 4, 4), "float32")])
    if report.run_status == "skipped":
        assert report.run_reason and not REQUIRE_GPU_RUN, report.run_reason
    else:
        assert report.run_status == "passed" and report.fully_accelerated, report.run_reason


@pytest.mark.parametrize("started, status", [(False, "skipped"), (True, "failed")])
def test_a_killed_gpu_worker_is_reported_by_signal(started, status, canary, tmp_path, monkeypatch):
    from keras_effconv.export import gpu_check

    path = canary
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


def test_compare_outputs_nan_inf_and_metrics():
    from keras_effconv.export._gpu_worker import compare_outputs

    cpu = [{"output_0": np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], "float32")}] * 2
    close = [{"output_0": cpu[0]["output_0"] + 1e-5}] * 2
    assert compare_outputs(close, cpu, tolerance=1e-3)["status"] == "passed"
    # max(x, nan) == x: a NaN must fail by itself, named with side and count.
    nan = [{"output_0": cpu[0]["output_0"].copy()}, cpu[1]]
    nan[0]["output_0"][0, 0] = np.nan
    for gpu_runs, cpu_runs, side in [(nan, cpu, "GPU"), (cpu, nan, "CPU interpreter")]:
        result = compare_outputs(gpu_runs, cpu_runs, tolerance=1e-3)
        assert result["status"] == "failed"
        assert result["reason"] == f"non-finite outputs: {side} output 'output_0' has 1 NaN/inf of 12 values"
        assert compare_outputs(gpu_runs, cpu_runs, metric="top1")["status"] == "failed"
    inf = [{"output_0": np.full((2, 3), np.inf, "float32")}] * 2
    assert "GPU output 'output_0' has 12 NaN/inf of 12" in compare_outputs(inf, cpu)["reason"]
    # Quantized models: the top-1 class decides, not a float tolerance.
    rounded = [{"output_0": cpu[0]["output_0"] + np.float32(0.02)}] * 2
    result = compare_outputs(rounded, cpu, metric="top1", tolerance=1e-3, min_agreement=0.99)
    assert result["status"] == "passed" and result["agreement"] == 1.0 and result["rows"] == 4
    swapped = [{"output_0": cpu[0]["output_0"][:, ::-1].copy()}, cpu[1]]
    result = compare_outputs(swapped, cpu, metric="top1", min_agreement=0.99)
    assert result["status"] == "failed" and result["agreement"] == 0.75  # one of the 4 rows changed class
    assert result["reason"].startswith("top-1 agreement with the CPU interpreter 75.0% < 99% of 4")
    # No output to take an arg-max of: the tolerance applies.
    scalar = [{"output_0": np.array([[1.0]], "float32")}]
    result = compare_outputs([{"output_0": np.array([[1.04]], "float32")}], scalar, metric="top1", tolerance=0.05)
    assert result["status"] == "passed" and result["metric"] == "max_abs" and result["agreement"] is None


def test_several_batches_of_inputs(canary):
    path = canary
    report = check_gpu(path, inputs=[np.ones((3, 4, 4, 4), "float32")])
    if report.run_status == "skipped":
        assert report.run_reason and not REQUIRE_GPU_RUN, report.run_reason
    else:
        assert report.run_status == "passed" and report.samples == 3 and report.metric == "max_abs"
    with pytest.raises(ValueError, match="multiple of its batch size"):
        check_gpu(path, inputs=[np.ones((0, 4, 4, 4), "float32")])
    with pytest.raises(ValueError, match="`metric`"):
        check_gpu(path, metric="rmse")


def _int8_model(kernel):
    inputs = keras.Input((16, 16, 8))
    x = keras.layers.Conv2D(16, kernel, strides=2, padding="same", name="reduce")(inputs)
    x = keras.layers.ReLU()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="three conversions, on the TF test run")
def test_int8_strided_1x1_conv_is_named_and_avoided_on_the_gpu_target(tmp_path):
    data = np.random.default_rng(0).uniform(0, 1, (200, 16, 16, 8)).astype("float32")
    # LiteRT's GPU accelerator computes an int8 1x1 CONV_2D with stride 2 as
    # if its stride were 1 (DESIGN.md §5). The CPU target keeps that op: the
    # GPU check of such a file fails and names it.
    cpu_path = tmp_path / "cpu.tflite"
    export_litert(_int8_model(1), cpu_path, quantization="int8", representative_data=data, target="cpu")
    check = check_gpu(cpu_path, inputs=[data])
    if check.run_status == "skipped":
        assert check.run_reason and not REQUIRE_GPU_RUN, check.run_reason
    else:
        message = check.failure()
        print("\n" + message)
        assert check.run_status == "failed" and check.metric == "top1"
        assert message.startswith("top-1 agreement with the CPU interpreter")
        assert "op #1 CONV_2D 1x1 stride 2 (int8, (1, 16, 16, 8) -> (1, 8, 8, 16)) " in message
        assert "quantization steps" in message
    # The GPU target subsamples first (a STRIDED_SLICE), so the same model passes there.
    path = tmp_path / "m.tflite"
    report = export_litert(_int8_model(1), path, quantization="int8", representative_data=data)
    assert report.ops.get("STRIDED_SLICE") and path.exists()
    if report.gpu_check.run_status != "skipped" or REQUIRE_GPU_RUN:
        assert report.gpu_check.run_status == "passed", report.gpu_check.summary()
        assert report.gpu_check.agreement >= 0.99
    # A 3x3 stride-2 convolution is right on the GPU: top-1 agreement passes
    # where a 1e-3 tolerance would refuse the rounding steps of int8.
    report = export_litert(_int8_model(3), path, quantization="int8", representative_data=data)
    check = report.gpu_check
    print(check.summary())
    assert check.metric == "top1" and path.exists()
    if check.run_status != "skipped" or REQUIRE_GPU_RUN:
        assert check.run_status == "passed" and check.agreement >= 0.99 and check.samples == 200
        assert "top-1 agreement" in check.summary()
