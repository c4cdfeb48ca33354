"""GPU-only runs of a `.tflite` on the LiteRT GPU accelerator, vs the CPU interpreter.

`check_gpu` runs it through `keras_effconv._subprocess.run_worker` as a plain
script (`python -I .../_gpu_worker.py ARGS.json`, from an empty directory),
not as a module of the package: it must not load TensorFlow (or Keras with
the TensorFlow backend), because LiteRT's WebGPU accelerator on Mesa lavapipe
crashes in a process that has TensorFlow loaded, and importing
`keras_effconv` would. Imports only numpy, ai_edge_litert (with its
flatbuffers schema) and (by path) the standard-library-only `_subprocess.py`.

Two modes (`args["mode"]`):

- `"check"`: first compiles a tiny known-good model (`_CANARY`, one 1x1
  CONV_2D) on the GPU: if that fails, the accelerator cannot start on this
  machine and the result is "skipped" with the reason; only then is the
  real model compiled GPU-only (fp32, `GpuOptions(enforce_f32=True)`),
  required to be fully accelerated, run on every input batch, and compared
  with the CPU interpreter (`compare_outputs`).
- `"locate"`: after a failed check, finds the operators the GPU computes
  differently (`_gpu_locate.py`, loaded by path).
"""

import base64
import importlib.util
import os
import sys
import tempfile

import numpy as np

# A 1x1 CONV_2D on a (1, 4, 4, 4) float32 input (identity kernel, bias 1).
_CANARY = base64.b64decode(
    "HAAAAFRGTDMUACAAHAAYABQAEAAMAAAACAAEABQAAAAcAAAAkAAAAOgAAAAIAgAAGAIAAHAEAAAD"
    "AAAAAQAAABAAAAAAAAoAEAAMAAgABAAKAAAADAAAABwAAAA8AAAADwAAAHNlcnZpbmdfZGVmYXVs"
    "dAABAAAABAAAAJj///8DAAAABAAAAAgAAABvdXRwdXRfMAAAAAABAAAABAAAAMb+//8EAAAABgAA"
    "AGFyZ3NfMAAAAgAAADQAAAAEAAAA3P///wYAAAAEAAAAEwAAAENPTlZFUlNJT05fTUVUQURBVEEA"
    "CAAMAAgABAAIAAAABQAAAAQAAAATAAAAbWluX3J1bnRpbWVfdmVyc2lvbgAHAAAAHAEAABQBAADE"
    "AAAAnAAAAJQAAAB0AAAABAAAAFb///8EAAAAYAAAABAAAAAAAAAACAAOAAgABAAIAAAAEAAAACQA"
    "AAAAAAYACAAEAAYAAAAEAAAAAAAAAAwAGAAUABAADAAEAAwAAADjnTpe9zqtfAEAAAACAAAABAAA"
    "AAYAAAAyLjIxLjAAAML///8EAAAAEAAAADEuNS4wAAAAAAAAAAAAAABQ/f//4v///wQAAAAQAAAA"
    "AACAPwAAgD8AAIA/AACAPwAABgAIAAQABgAAAAQAAABAAAAAAACAPwAAAAAAAAAAAAAAAAAAAAAA"
    "AIA/AAAAAAAAAAAAAAAAAAAAAAAAgD8AAAAAAAAAAAAAAAAAAAAAAACAP8T9///I/f//DwAAAE1M"
    "SVIgQ29udmVydGVkLgABAAAAFAAAAAAADgAYABQAEAAMAAgABAAOAAAAFAAAABwAAAB4AAAAfAAA"
    "AIAAAAAEAAAAbWFpbgAAAAABAAAAFAAAAAAADgAWAAAAEAAMAAsABAAOAAAAHAAAAAAAAAEkAAAA"
    "KAAAAAAACgAQAA8ACAAEAAoAAAABAAAAAQAAAAAAAAEBAAAAAwAAAAMAAAAAAAAAAQAAAAIAAAAB"
    "AAAAAwAAAAEAAAAAAAAABAAAAFgBAADkAAAAWAAAAAQAAADO/v//AAAAARAAAAAQAAAABAAAACgA"
    "AAC4/v//GwAAAFN0YXRlZnVsUGFydGl0aW9uZWRDYWxsXzE6MAAEAAAAAQAAAAQAAAAEAAAABAAA"
    "AB7///8AAAABEAAAABAAAAADAAAAbAAAAAj///9dAAAAc2VxdWVudGlhbF8xL2NvbnYyZF8xL0Jp"
    "YXNBZGQ7c2VxdWVudGlhbF8xL2NvbnYyZF8xL2NvbnZvbHV0aW9uO3NlcXVlbnRpYWxfMS9jb252"
    "MmRfMS9TcXVlZXplAAAAAQAAAAQAAACm////AAAAARAAAAAQAAAAAgAAADAAAACQ////IQAAAHNl"
    "cXVlbnRpYWxfMS9jb252MmRfMS9jb252b2x1dGlvbgAAAAQAAAAEAAAAAQAAAAEAAAAEAAAAAAAW"
    "ABgAFAAAABAADAAIAAAAAAAAAAcAFgAAAAAAAAEUAAAAFAAAAAEAAAAsAAAABAAEAAQAAAAYAAAA"
    "c2VydmluZ19kZWZhdWx0X2FyZ3NfMDowAAAAAAQAAAABAAAABAAAAAQAAAAEAAAAAQAAABAAAAAM"
    "AAwACwAAAAAABAAMAAAAAwAAAAAAAAM="
)


def gpu_options():
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import GpuOptions
    from ai_edge_litert.options import Options

    # GPU only (no CPU fallback): a model that is not fully accelerated fails.
    return Options(hardware_accelerators=HardwareAccelerator.GPU, gpu_options=GpuOptions(enforce_f32=True))


def run_compiled(compiled, inputs):
    signature = list(compiled.get_signature_list())[0]
    index = compiled.get_signature_index(signature)
    names = compiled.get_signature_list()[signature]
    in_buffers = compiled.create_input_buffers(index)
    out_buffers = compiled.create_output_buffers(index)
    for name, buffer in zip(names["inputs"], in_buffers):
        buffer.write(np.ascontiguousarray(inputs[name]))
    compiled.run_by_index(index, in_buffers, out_buffers)
    details = compiled.get_output_tensor_details(signature)
    outputs = {}
    for name, buffer in zip(names["outputs"], out_buffers):
        shape = details[name]["shape"]
        dtype = np.dtype(details[name]["dtype"])
        outputs[name] = buffer.read(int(np.prod(shape)), dtype).reshape(shape)
    return outputs


def cpu_runner(path):
    """The CPU interpreter as a function: input dict -> output dict."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner()
    return lambda inputs: {k: np.array(v) for k, v in runner(**inputs).items()}


def _nonfinite(runs, side):
    """One phrase per output with NaN/inf values: which output, which side, how many."""
    counts, sizes = {}, {}
    for outputs in runs:
        for name, array in outputs.items():
            array = np.asarray(array)
            if array.dtype.kind == "f":
                counts[name] = counts.get(name, 0) + int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            sizes[name] = sizes.get(name, 0) + int(np.size(array))
    return [
        f"{side} output '{name}' has {counts[name]} NaN/inf of {sizes[name]} values" for name in counts if counts[name]
    ]


def _top1_agreement(runs, reference):
    """Fraction of rows whose arg-max equals the reference's (single classifying output)."""
    labels = np.concatenate([np.argmax(np.asarray(next(iter(run.values()))), -1).ravel() for run in runs])
    expected = np.argmax(np.asarray(reference), -1).ravel()
    return float(np.mean(labels == expected)) if len(labels) == len(expected) else None


def compare_outputs(gpu_runs, cpu_runs, metric="max_abs", tolerance=1e-3, min_agreement=0.99, reference=None):
    """Compares GPU and CPU interpreter outputs of the same input batches.

    Args:
        gpu_runs: list (one per input batch) of dicts output name -> array.
        cpu_runs: the CPU interpreter's outputs, in the same form.
        metric: `"max_abs"`: pass when `max |GPU - CPU| <= tolerance` (float
            models, where both compute in fp32); `"top1"`: pass when the
            arg-max over the last axis agrees on at least `min_agreement` of
            the rows (quantized models: the two engines round differently,
            and the question is whether the GPU classifies the same).
            Outputs with a last axis of 1 have no arg-max; if no output has
            one, `"top1"` falls back to `"max_abs"`.
        tolerance: see `metric`.
        min_agreement: see `metric`.
        reference: optional float outputs of the trained model for the same
            rows (single-output models, metric `"top1"`). The two engines
            round an int8 model differently (the GPU keeps activations in
            float, the CPU requantizes every layer), so near-ties flip; with a
            reference the GPU also passes when it agrees with the float
            model at least as often as the CPU interpreter does, less one
            point: it is then as faithful to the trained model as the int8
            file the export verified on the CPU.

    Returns:
        dict with `status` ("passed"/"failed"), `reason`, `max_abs_diff`,
        `agreement` (None without a classifying output),
        `rows` (arg-max rows compared) and `metric` (the one applied). Any
        NaN/inf on either side fails, naming the output and the count.
    """
    problems = _nonfinite(gpu_runs, "GPU") + _nonfinite(cpu_runs, "CPU interpreter")
    result = {"metric": metric, "max_abs_diff": None, "agreement": None, "rows": 0}
    if problems:
        return dict(result, status="failed", reason="non-finite outputs: " + "; ".join(problems))
    diff, agree, rows = 0.0, 0, 0
    for gpu, cpu in zip(gpu_runs, cpu_runs):
        for name in cpu:
            g = np.asarray(gpu[name], "float64")
            c = np.asarray(cpu[name], "float64")
            if c.size:
                diff = max(diff, float(np.max(np.abs(g - c))))
            if c.ndim and c.shape[-1] > 1:
                agree += int(np.sum(np.argmax(g, -1) == np.argmax(c, -1)))
                rows += int(np.prod(c.shape[:-1]))
    result.update(max_abs_diff=diff, rows=rows)
    if metric == "top1" and rows:
        result["agreement"] = agree / rows
        ok = agree >= min_agreement * rows
        reason = (
            f"top-1 agreement with the CPU interpreter {agree / rows:.1%} < {min_agreement:.0%} of {rows} "
            f"(max |GPU - CPU| = {diff:.3g})"
        )
        if reference is not None and len(cpu_runs[0]) == 1:
            gpu_ref, cpu_ref = _top1_agreement(gpu_runs, reference), _top1_agreement(cpu_runs, reference)
            if gpu_ref is not None and cpu_ref is not None:
                result.update(reference_agreement=gpu_ref, cpu_reference_agreement=cpu_ref)
                ok = ok or gpu_ref >= cpu_ref - 0.01
                reason += (
                    f"; with the float model: GPU {gpu_ref:.1%}, CPU interpreter {cpu_ref:.1%} "
                    "(the GPU may be at most 1 point below)"
                )
        reason = "" if ok else reason
    else:
        result["metric"] = "max_abs"
        ok = diff <= tolerance
        reason = "" if ok else f"GPU output differs from the CPU interpreter by {diff:.3g} > {tolerance:g}"
    return dict(result, status="passed" if ok else "failed", reason=reason)


def input_batches(inputs_path, batch_sizes):
    """Input dicts of the model's static batch size from arrays of several batches."""
    arrays = dict(np.load(inputs_path))
    counts = {len(arrays[name]) // batch_sizes[name] for name in arrays}
    if len(counts) != 1:
        raise ValueError("inputs hold different numbers of batches")
    return [
        {name: array[b * batch_sizes[name] : (b + 1) * batch_sizes[name]] for name, array in arrays.items()}
        for b in range(counts.pop())
    ]


def _canary_error():
    from ai_edge_litert.compiled_model import CompiledModel

    with tempfile.NamedTemporaryFile(suffix=".tflite") as canary:
        canary.write(_CANARY)
        canary.flush()
        try:
            compiled = CompiledModel.from_file(canary.name, options=gpu_options())
            x = {"args_0": np.ones((1, 4, 4, 4), "float32")}
            out = list(run_compiled(compiled, x).values())[0]
            if not compiled.is_fully_accelerated() or not np.allclose(out, 2.0):
                raise RuntimeError("a one-op canary model was not accelerated or computed wrongly")
        except Exception as error:
            return f"{type(error).__name__}: {error}"
    return None


def check(model_path, inputs_path, tolerance, metric="max_abs", min_agreement=0.99, reference_path=None):
    """The `"check"` mode: canary, GPU-only compilation, all batches on GPU and CPU, `compare_outputs`."""
    from ai_edge_litert.compiled_model import CompiledModel

    error = _canary_error()
    if error:
        return {"status": "skipped", "reason": f"the LiteRT GPU accelerator cannot start here: {error}"}
    print("canary-ok", flush=True)
    try:
        compiled = CompiledModel.from_file(model_path, options=gpu_options())
    except Exception as error:
        return {"status": "failed", "reason": f"GPU-only compilation failed: {type(error).__name__}: {error}"}
    if not compiled.is_fully_accelerated():
        return {"status": "failed", "fully_accelerated": False, "reason": "not fully accelerated on the GPU"}
    signature = list(compiled.get_signature_list())[0]
    details = compiled.get_input_tensor_details(signature)
    batches = input_batches(inputs_path, {name: int(d["shape"][0]) for name, d in details.items()})
    gpu = [run_compiled(compiled, inputs) for inputs in batches]
    run_cpu = cpu_runner(model_path)
    cpu = [run_cpu(inputs) for inputs in batches]
    reference = np.load(reference_path) if reference_path else None
    result = compare_outputs(
        gpu, cpu, metric=metric, tolerance=tolerance, min_agreement=min_agreement, reference=reference
    )
    result.update(fully_accelerated=True, samples=sum(len(next(iter(b.values()))) for b in batches))
    return result


def run(args):
    # Vulkan (Mesa) needs a runtime directory; the working directory is the
    # worker's own temporary one, removed after the run.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        os.environ["XDG_RUNTIME_DIR"] = os.getcwd()
    if args.get("mode", "check") == "locate":
        return _load_sibling("_gpu_locate").locate(
            sys.modules[__name__],
            args["model_path"],
            args["inputs_path"],
            float(args.get("time_limit", 180.0)),
            acceleration=bool(args.get("acceleration")),
        )
    return check(
        args["model_path"],
        args["inputs_path"],
        float(args["tolerance"]),
        metric=args.get("metric", "max_abs"),
        min_agreement=float(args.get("min_agreement", 0.99)),
        reference_path=args.get("reference_path"),
    )


def _load_sibling(name, package_level=False):
    """A standard-library/numpy-only module of the package, loaded by path (no package import)."""
    folder = os.path.dirname(os.path.abspath(__file__))
    if package_level:
        folder = os.path.dirname(folder)
    spec = importlib.util.spec_from_file_location(f"_effconv{name}", os.path.join(folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(_load_sibling("_subprocess", package_level=True).worker_main(run))
