"""`export_litert`: one call from a Keras model to a verified, GPU-ready `.tflite`."""

import dataclasses
import os
import time

import numpy as np

import keras

from keras_effconv import _progress
from keras_effconv._files import atomic_path
from keras_effconv._files import check_output_path
from keras_effconv._files import interruptible
from keras_effconv._files import load_keras_model
from keras_effconv._files import temporary_directory
from keras_effconv._subprocess import WorkerError
from keras_effconv._subprocess import run_worker
from keras_effconv.export import verification
from keras_effconv.export.verification import ExportError
from keras_effconv.export.inference import _check_target
from keras_effconv.export.tflite_file import inspect_tflite
from keras_effconv.export.inference import optimize_for_inference
from keras_effconv.export.metadata import check_metadata
from keras_effconv.export.metadata import embed_metadata

QUANTIZATIONS = (None, "float16", "dynamic_int8", "int8")
_MAX_CALIBRATION = 500


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


@_progress.closes_bars
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
    metadata=None,
    verbose="auto",
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
        metadata: optional metadata dict (`keras_effconv.export.metadata`:
            input normalisation, layout, class names, provenance), embedded
            in the file as its `"keras_effconv"` metadata entry with
            `input.shape`, `input.batch_size` and `input.dtype` set to the
            written file's input; read it back with `read_metadata(path)`.
        verbose: 0 (silent), 1 (a progress bar over the stages, each named
            when it starts: rewrite, convert in the TensorFlow worker,
            verify and GPU check), 2 (the stage lines and one summary line)
            or `"auto"` (1 when standard output is a terminal or a
            notebook, else 0), as in `model.fit`.

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
    verbose = _progress.check_verbose(verbose)
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "Invalid value for argument `representative_data`: quantization='int8' needs "
            "calibration samples in the model's input format (e.g. 200 training images)."
        )
    if metadata is not None:
        check_metadata(metadata)
    model = _load(model)
    verification.check_finite_weights(model)
    stages = ["rewrite into built-in layers (optimize_for_inference)", "convert in a TensorFlow worker process"]
    if verify:
        stages.append("verify against Keras" + (" and run the GPU check" if target == "gpu" else ""))
    progress = _progress.Progress(
        f"export_litert: {model.name!r} -> {path} (target={target!r}, quantization={quantization or 'none'})",
        len(stages), verbose, "stage",
    )
    progress.log(f"stage 1/{len(stages)}: {stages[0]}")
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
        limit = max(verification.GPU_SAMPLES, verification.VERIFY_BATCHES * batch_size)
        checks = _as_batches(verification_data, per_sample, "verification_data", limit)

    progress.advance()
    progress.log(f"stage 2/{len(stages)}: {stages[1]}")
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
        if metadata is not None:
            # Before the checks and the move: they verify the final bytes, and a failure writes nothing.
            embed_metadata(tmp_path, _with_file_input(metadata, tmp_path))
        info = inspect_tflite(tmp_path)
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
        progress.advance()
        if verify:
            progress.log(f"stage 3/{len(stages)}: {stages[2]}")
            verification.verify(report, model, tmp_path, input_shapes, checks, quantization)
            progress.advance()
    progress.finish()
    report.seconds = time.time() - start
    if report.gpu_check is not None:
        report.gpu_check.path = path
    return report


def _with_file_input(metadata, tflite_path):
    """`metadata` with `input` describing the converted file's (first) input tensor."""
    first = inspect_tflite(tflite_path)["inputs"][0]
    shape = [None if int(d) < 0 else int(d) for d in first["shape"]]
    metadata = dict(metadata, input=dict(metadata["input"], batch_size=shape[0], dtype=first["dtype"]))
    metadata["input"]["shape"] = shape[1:]
    return check_metadata(metadata)


def _sorted_layer_errors(layer_report):
    if isinstance(layer_report, list):
        return sorted(layer_report, key=lambda r: -r["rmse_over_scale"])
    return layer_report
