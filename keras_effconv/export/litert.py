"""`export_litert`: one call from a Keras model to a verified, GPU-ready `.tflite`."""

import dataclasses
import os
import time

import numpy as np

import keras

from keras_effconv._files import atomic_path
from keras_effconv._files import check_output_path
from keras_effconv._files import interruptible
from keras_effconv._files import load_keras_model
from keras_effconv._files import temporary_directory
from keras_effconv._subprocess import WorkerError
from keras_effconv._subprocess import run_worker
from keras_effconv.export import gpu_check
from keras_effconv.export.inference import _check_target
from keras_effconv.export.inference import optimize_for_inference

QUANTIZATIONS = (None, "float16", "dynamic_int8", "int8")
FLOAT32_TOLERANCE = 1e-4
GPU_TOLERANCE = 1e-3
# Quantized models on the GPU: the top-1 class must agree with the CPU
# interpreter on this fraction of up to GPU_SAMPLES inputs (one rounding step
# apart is normal there; a wrong operator changes classes). The tolerance is
# used only when the model has no output to take a top-1 of.
GPU_MIN_AGREEMENT = 0.99
GPU_SAMPLES = 200
QUANTIZED_GPU_TOLERANCE = 0.05
_MAX_CALIBRATION = 500
_VERIFY_BATCHES = 4


class ExportError(ValueError):
    """A conversion or verification failure; no file was written."""


@dataclasses.dataclass
class ExportReport:
    """What `export_litert` produced and how it was verified.

    Attributes:
        path: the written `.tflite` file.
        target: `"gpu"` or `"cpu"`.
        quantization: None, `"float16"`, `"dynamic_int8"` or `"int8"`.
        input_shapes: static input shapes, batch included.
        ops: LiteRT operator name -> count.
        flex_ops: Flex (SELECT_TF_OPS) operators; always empty for a
            written file.
        file_size: bytes.
        max_abs_diff: max |LiteRT interpreter - Keras| on the sample inputs
            (None when `verify=False`).
        output_scale: max |Keras output| on the same inputs, for scale.
        samples: number of verification batches.
        gpu_check: a `GpuCheckReport` (target "gpu" with `verify=True`),
            else None.
        layer_errors: for int8, the per-layer quantization error from
            TensorFlow's QuantizationDebugger (largest RMSE/scale first).
        seconds: wall time of the export.
    """

    path: str
    target: str
    quantization: object
    input_shapes: list
    ops: dict
    flex_ops: list
    file_size: int
    max_abs_diff: object = None
    output_scale: object = None
    samples: int = 0
    gpu_check: object = None
    layer_errors: object = None
    seconds: float = 0.0

    def to_dict(self):
        data = dataclasses.asdict(self)
        data["gpu_check"] = self.gpu_check.to_dict() if self.gpu_check is not None else None
        return data

    def summary(self):
        shapes = ", ".join(str(tuple(s)) for s in self.input_shapes)
        lines = [
            f"wrote {self.path} ({self.file_size / 1e6:.2f} MB, input {shapes}, target={self.target}, "
            f"quantization={self.quantization or 'none'}, {self.seconds:.1f} s)",
            f"ops: {sum(self.ops.values())} ({', '.join(f'{k} x{v}' for k, v in self.ops.items())})",
            f"Flex ops: {len(self.flex_ops)}" + (f" ({', '.join(self.flex_ops)})" if self.flex_ops else ""),
        ]
        if self.max_abs_diff is not None:
            lines.append(
                f"max |LiteRT - Keras| = {self.max_abs_diff:.2e} on {self.samples} sample batch(es) "
                f"(outputs up to {self.output_scale:.3g})"
            )
        else:
            lines.append("outputs not verified (verify=False)")
        if self.gpu_check is not None:
            lines.append(f"GPU check: {self.gpu_check.summary()}")
        if isinstance(self.layer_errors, list) and self.layer_errors:
            worst = ", ".join(
                f"{row['op']} {row['tensor']} ({row['rmse_over_scale']:.2f})" for row in self.layer_errors[:3]
            )
            lines.append(f"int8 per-layer error, RMSE/scale, worst: {worst}")
        elif isinstance(self.layer_errors, dict):
            lines.append(f"int8 per-layer error report unavailable: {self.layer_errors.get('error')}")
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def _check_quantization(quantization):
    if quantization == "none":
        quantization = None
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            "Invalid value for argument `quantization`: expected one of "
            f"{QUANTIZATIONS} (or 'none'). Received: quantization={quantization!r}"
        )
    return quantization


def _as_batches(data, shape, name, limit):
    """Per-sample float32 array `(N,) + shape` from an array, list or generator function."""
    if callable(data):
        data = data()
    if isinstance(data, np.ndarray) or hasattr(data, "__array__"):
        array = np.asarray(data, dtype="float32")
    else:
        chunks, total = [], 0
        for item in data:
            if isinstance(item, (list, tuple)):
                item = item[0]
            item = np.asarray(item, dtype="float32")
            chunks.append(item if item.ndim == len(shape) + 1 else item[None])
            total += len(chunks[-1])
            if total >= limit:
                break
        if not chunks:
            raise ValueError(f"Invalid value for argument `{name}`: it yielded no samples.")
        array = np.concatenate(chunks)
    if array.ndim == len(shape):
        array = array[None]
    if tuple(array.shape[1:]) != tuple(shape):
        raise ValueError(
            f"Invalid value for argument `{name}`: samples have shape {tuple(array.shape[1:])}, "
            f"the model input is {tuple(shape)}."
        )
    return array[:limit]


def _load(model):
    if isinstance(model, keras.Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_keras_model(model, argument="model")
    raise TypeError(f"`model` must be a keras.Model or a .keras path. Received: model={model!r}")


def _run_converter(args, timeout):
    try:
        return run_worker(args, "LiteRT conversion", module="keras_effconv.export._convert", timeout=timeout)
    except WorkerError as error:
        raise ExportError(str(error)) from None


def _interpreter_outputs(path, batches):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner()
    names = list(runner.get_input_details())
    outputs = []
    for batch in batches:
        result = runner(**dict(zip(names, batch)))
        outputs.append([np.asarray(result[k]) for k in sorted(result, key=_output_index)])
    return outputs


def _output_index(name):
    digits = name.rsplit("_", 1)[-1]
    return int(digits) if digits.isdigit() else 0


def export_litert(
    model,
    path,
    input_shape=None,
    batch_size=1,
    quantization=None,
    representative_data=None,
    target="gpu",
    verify=True,
    verification_data=None,
):
    """Exports a Keras model to a verified LiteRT (`.tflite`) file.

    Steps: `optimize_for_inference(model, target, input_shape, batch_size)`
    (any backend), save it as `.keras`, convert it in a TensorFlow-backend
    subprocess with TFLITE_BUILTINS only and a static input signature
    `(batch_size, H, W, C)`, then verify the result: no Flex or custom ops,
    the LiteRT interpreter's outputs against the ORIGINAL Keras model on
    sample inputs (no NaN/inf on either side; float32: max abs difference
    <= 1e-4, scaled by the output size when outputs exceed 1), and for
    `target="gpu"` `check_gpu` (static rules, and the GPU-only fp32 run
    where the GPU accelerator can start: float models within 1e-3 of the
    CPU interpreter, quantized ones with the same top-1 class on >= 99% of
    up to 200 verification samples), which must pass.
    The file is written atomically: a temporary file in the same directory
    is renamed to `path` only after every check passed, so a failed export
    leaves no file and never overwrites an existing one. `path` is checked
    before any work starts. Temporary files are removed on failure and on
    SIGTERM/SIGINT (the signal is delivered again afterwards), and those a
    killed export left behind are removed by the next one.

    Args:
        model: a built Functional/Sequential `keras.Model`, or the path of a
            `.keras` file.
        path: where to write the `.tflite` file; its directory must exist
            and be writable.
        input_shape: per-sample input shape `(H, W, C)`, needed when the
            model's spatial sizes are unknown.
        batch_size: int, the static batch size (default 1).
        quantization: None / `"none"` (float32), `"float16"` (float16
            weights), `"dynamic_int8"` (int8 weights, float activations) or
            `"int8"` (post-training full-integer quantization with float
            input/output; needs `representative_data`).
        representative_data: samples in the model's input format (array
            `(N, H, W, C)`, a list of arrays, or a function returning an
            iterable of them): calibration for `"int8"` (up to 500 used),
            and the verification inputs when `verification_data` is None.
        target: `"gpu"` or `"cpu"` (see `optimize_for_inference`).
        verify: whether to run the interpreter / GPU checks.
        verification_data: samples in the same format for verification
            (ideally real held-out data): the first `batch_size * 4` against
            Keras, and up to 200 for the GPU check of a quantized model.
            Defaults to `representative_data`, else random normal inputs.

    Returns:
        An `ExportReport` (printable).

    Raises:
        ValueError: for bad arguments (naming the argument; `path` a
            directory or not a `.tflite` file), an unsupported layer (naming
            the layer), or `ExportError` (a `ValueError`) when the model has
            NaN/inf weights, or the conversion or a check fails (naming the
            output, side and count of NaN/inf values; for the GPU check the
            operators the GPU computes wrongly); nothing is written then.
        OSError: if the model file or the directory of `path` does not
            exist, or the directory is not writable.

    Example:

    >>> from keras_effconv.applications import EffResNet20
    >>> model = EffResNet20(input_shape=(28, 28, 1), conv="igc")
    >>> report = export_litert(model, "/tmp/effresnet20_igc.tflite")  # doctest: +SKIP
    >>> report.flex_ops, report.gpu_check.passed  # doctest: +SKIP
    ([], True)
    """
    start = time.time()
    path = check_output_path(path, ".tflite")
    quantization = _check_quantization(quantization)
    _check_target(target)
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "Invalid value for argument `representative_data`: quantization='int8' needs "
            "calibration samples in the model's input format (e.g. 200 training images)."
        )
    model = _load(model)
    _check_finite_weights(model)
    optimized = optimize_for_inference(model, target=target, input_shape=input_shape, batch_size=batch_size)
    input_shapes = [tuple(int(d) for d in t.shape) for t in optimized.inputs]
    per_sample = input_shapes[0][1:]
    if len(input_shapes) != 1 and (representative_data is not None or verification_data is not None):
        raise ValueError("`representative_data` and `verification_data` are supported for single-input models only.")
    data = None
    if representative_data is not None:
        data = _as_batches(representative_data, per_sample, "representative_data", _MAX_CALIBRATION)
    checks = data
    if verification_data is not None:
        limit = max(GPU_SAMPLES, _VERIFY_BATCHES * batch_size)
        checks = _as_batches(verification_data, per_sample, "verification_data", limit)

    with interruptible(), temporary_directory("export") as work, atomic_path(path) as tmp_path:
        keras_path = os.path.join(work, "model.keras")
        optimized.save(keras_path)
        args = {
            "keras_path": keras_path,
            "out_path": tmp_path,
            "input_shapes": [list(s) for s in input_shapes],
            "quantization": quantization,
            "layer_report": True,
        }
        if quantization == "int8":
            args["calibration"] = os.path.join(work, "calibration.npy")
            np.save(args["calibration"], data)
        result = _run_converter(args, timeout=3600)
        info = gpu_check.inspect_tflite(tmp_path)
        if info["flex_ops"] or info["custom_ops"]:
            raise ExportError(
                f"the converted model uses Flex/custom ops {info['flex_ops'] + info['custom_ops']}, "
                "which never run on a mobile GPU"
            )
        report = ExportReport(
            path=path,
            target=target,
            quantization=quantization,
            input_shapes=[list(s) for s in input_shapes],
            ops=info["ops"],
            flex_ops=info["flex_ops"],
            file_size=os.path.getsize(tmp_path),
            layer_errors=_sorted_layer_errors(result.get("layer_report")),
        )
        if verify:
            _verify(report, model, tmp_path, input_shapes, checks, quantization)
    report.seconds = time.time() - start
    if report.gpu_check is not None:
        report.gpu_check.path = path
    return report


def _nonfinite(array):
    array = np.asarray(array)
    return int(array.size - np.count_nonzero(np.isfinite(array))) if array.dtype.kind in "fc" else 0


def _check_finite_weights(model):
    """NaN/inf weights make every output NaN: refuse them by name, before converting."""
    bad = []
    for variable in model.weights:
        count = _nonfinite(keras.ops.convert_to_numpy(variable))
        if count:
            bad.append(f"'{variable.path}' ({count} of {int(np.prod(variable.shape))} values)")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ExportError(f"the model has NaN/inf weights: {', '.join(bad[:3])}{more}")


def _sorted_layer_errors(layer_report):
    if isinstance(layer_report, list):
        return sorted(layer_report, key=lambda r: -r["rmse_over_scale"])
    return layer_report


def _verification_batches(data, input_shapes):
    """Up to `_VERIFY_BATCHES` input batches: from `data` (repeated to fill one batch if short) or random."""
    batch = input_shapes[0][0]
    if data is None:
        rng = np.random.default_rng(0)
        return [[rng.standard_normal(s).astype("float32") for s in input_shapes] for _ in range(_VERIFY_BATCHES)]
    if len(data) < batch:
        data = np.resize(data, (batch,) + data.shape[1:])
    count = min(_VERIFY_BATCHES, len(data) // batch)
    return [[data[b * batch : (b + 1) * batch]] for b in range(count)]


def _finite_or_raise(outputs, side):
    """ExportError naming each output of `side` with NaN/inf values, and how many."""
    counts, sizes = {}, {}
    for batch in outputs:
        for index, array in enumerate(batch):
            counts[index] = counts.get(index, 0) + _nonfinite(array)
            sizes[index] = sizes.get(index, 0) + int(np.size(array))
    bad = [f"output {i} has {counts[i]} NaN/inf of {sizes[i]} values" for i in counts if counts[i]]
    if bad:
        raise ExportError(f"{side}: {'; '.join(bad)} on the {len(outputs)} verification batch(es)")


def _verify(report, model, tmp_path, input_shapes, data, quantization):
    batches = _verification_batches(data, input_shapes)
    litert = _interpreter_outputs(tmp_path, batches)
    expected = []
    for inputs in batches:
        result = model(inputs[0] if len(inputs) == 1 else inputs, training=False)
        expected.append([np.asarray(keras.ops.convert_to_numpy(e)) for e in keras.tree.flatten(result)])
    # Before any max(): max(x, nan) is x, so a NaN would pass as agreement.
    _finite_or_raise(expected, "the Keras model's outputs are not finite (check the weights and the inputs)")
    _finite_or_raise(litert, "the LiteRT interpreter's outputs are not finite")
    diff, scale = 0.0, 0.0
    for keras_outputs, litert_outputs in zip(expected, litert):
        for e, o in zip(keras_outputs, litert_outputs):
            diff = max(diff, float(np.max(np.abs(e.astype("float64") - o.astype("float64")))))
            scale = max(scale, float(np.max(np.abs(e))))
    report.max_abs_diff, report.output_scale, report.samples = diff, scale, len(batches)
    if quantization is None and diff > FLOAT32_TOLERANCE * max(1.0, scale):
        raise ExportError(
            f"LiteRT output differs from Keras by {diff:.3g} > {FLOAT32_TOLERANCE:g} x max(1, |output| = {scale:.3g})"
        )
    if report.target == "gpu":
        quantized = quantization in ("int8", "dynamic_int8")
        if quantized and data is not None:
            # Many real samples: top-1 agreement over 4 would mean nothing.
            batch = input_shapes[0][0]
            count = max(1, min(GPU_SAMPLES, len(data)) // batch) * batch
            inputs = [np.resize(data, (count,) + data.shape[1:])]
        else:
            inputs = [np.concatenate(parts) for parts in zip(*batches)]
        tolerance = (QUANTIZED_GPU_TOLERANCE if quantized else GPU_TOLERANCE) * max(1.0, scale)
        reference = None
        if quantized and len(expected[0]) == 1:
            reference = keras.ops.convert_to_numpy(model.predict(inputs[0], batch_size=input_shapes[0][0], verbose=0))
        check = gpu_check.check_gpu(
            tmp_path,
            inputs=inputs,
            tolerance=tolerance,
            metric="top1" if quantized else "max_abs",
            min_agreement=GPU_MIN_AGREEMENT,
            reference=reference,
        )
        report.gpu_check = check
        if not check.static_ok:
            raise ExportError("the model breaks mobile GPU rules: " + "; ".join(check.violations))
        if check.run_status == "failed":
            raise ExportError(f"GPU check failed: {check.failure()}")
