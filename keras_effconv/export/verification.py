"""Verification of a converted `.tflite` against its Keras model (used by `export_litert`).

Every check treats NaN/inf as a failure before any `max()` (where a NaN would
vanish): the weights, the Keras outputs and the interpreter's outputs. A
float32 file must match Keras to `FLOAT32_TOLERANCE` of the output scale; on
the GPU target `gpu_check.check_gpu` then runs the file GPU-only (float
models within `GPU_TOLERANCE`, quantized ones by top-1 agreement on up to
`GPU_SAMPLES` real inputs).
"""

import numpy as np

import keras

from keras_effconv.export import gpu_check

FLOAT32_TOLERANCE = 1e-4
GPU_TOLERANCE = 1e-3
# Quantized models on the GPU: the top-1 class must agree with the CPU
# interpreter on this fraction of up to GPU_SAMPLES inputs (one rounding step
# apart is normal there; a wrong operator changes classes), or agree with the
# float model at most one point less often than the CPU interpreter does. The
# tolerance is used only when the model has no output to take a top-1 of.
GPU_MIN_AGREEMENT = 0.99
GPU_SAMPLES = 200
QUANTIZED_GPU_TOLERANCE = 0.05
VERIFY_BATCHES = 4


class ExportError(ValueError):
    """A conversion or verification failure; no file was written."""


def interpreter_outputs(path, batches):
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


def _nonfinite(array):
    array = np.asarray(array)
    return int(array.size - np.count_nonzero(np.isfinite(array))) if array.dtype.kind in "fc" else 0


def check_finite_weights(model):
    """NaN/inf weights make every output NaN: refuse them by name, before converting."""
    bad = []
    for variable in model.weights:
        count = _nonfinite(keras.ops.convert_to_numpy(variable))
        if count:
            bad.append(f"'{variable.path}' ({count} of {int(np.prod(variable.shape))} values)")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ExportError(f"the model has NaN/inf weights: {', '.join(bad[:3])}{more}")


def _verification_batches(data, input_shapes):
    """Up to `VERIFY_BATCHES` input batches: from `data` (repeated to fill one batch if short) or random."""
    batch = input_shapes[0][0]
    if data is None:
        rng = np.random.default_rng(0)
        return [[rng.standard_normal(s).astype("float32") for s in input_shapes] for _ in range(VERIFY_BATCHES)]
    if len(data) < batch:
        data = np.resize(data, (batch,) + data.shape[1:])
    count = min(VERIFY_BATCHES, len(data) // batch)
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


def verify(report, model, tmp_path, input_shapes, data, quantization):
    batches = _verification_batches(data, input_shapes)
    litert = interpreter_outputs(tmp_path, batches)
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
