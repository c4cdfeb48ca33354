"""GPU-only run of a `.tflite` on the LiteRT GPU accelerator, vs the CPU interpreter.

`check_gpu` runs it through `keras_effconv._subprocess.run_worker` as a plain
script (`python -I .../_gpu_worker.py ARGS.json`, from an empty directory),
not as a module of the package: it must not load TensorFlow (or Keras with
the TensorFlow backend), because LiteRT's WebGPU accelerator on Mesa lavapipe
crashes in a process that has TensorFlow loaded, and importing
`keras_effconv` would. Imports only numpy, ai_edge_litert and (by path) the
standard-library-only `_subprocess.py`.

It first compiles a tiny known-good model (`_CANARY`, one 1x1 CONV_2D) on the
GPU: if that fails, the accelerator cannot start on this machine and the
result is "skipped" with the reason; only then is the real model compiled
GPU-only (fp32, `GpuOptions(enforce_f32=True)`), required to be fully
accelerated, run, and compared with the CPU interpreter.
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


def _gpu_options():
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import GpuOptions
    from ai_edge_litert.options import Options

    # GPU only (no CPU fallback): a model that is not fully accelerated fails.
    return Options(hardware_accelerators=HardwareAccelerator.GPU, gpu_options=GpuOptions(enforce_f32=True))


def _run_compiled(compiled, inputs):
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


def _run_cpu(path, inputs):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner()
    return {k: np.asarray(v) for k, v in runner(**inputs).items()}


def check(model_path, inputs_path, tolerance):
    from ai_edge_litert.compiled_model import CompiledModel

    with tempfile.NamedTemporaryFile(suffix=".tflite") as canary:
        canary.write(_CANARY)
        canary.flush()
        try:
            compiled = CompiledModel.from_file(canary.name, options=_gpu_options())
            x = {"args_0": np.ones((1, 4, 4, 4), "float32")}
            out = list(_run_compiled(compiled, x).values())[0]
            if not compiled.is_fully_accelerated() or not np.allclose(out, 2.0):
                raise RuntimeError("a one-op canary model was not accelerated or computed wrongly")
        except Exception as error:
            return {"status": "skipped", "reason": f"the LiteRT GPU accelerator cannot start here: {type(error).__name__}: {error}"}
    print("canary-ok", flush=True)
    inputs = dict(np.load(inputs_path))
    try:
        compiled = CompiledModel.from_file(model_path, options=_gpu_options())
    except Exception as error:
        return {"status": "failed", "reason": f"GPU-only compilation failed: {type(error).__name__}: {error}"}
    fully = bool(compiled.is_fully_accelerated())
    if not fully:
        return {"status": "failed", "fully_accelerated": False, "reason": "not fully accelerated on the GPU"}
    gpu = _run_compiled(compiled, inputs)
    cpu = _run_cpu(model_path, inputs)
    diff = max(float(np.max(np.abs(gpu[k].astype("float64") - cpu[k].astype("float64")))) for k in cpu)
    ok = diff <= tolerance
    return {
        "status": "passed" if ok else "failed",
        "fully_accelerated": True,
        "max_abs_diff": diff,
        "reason": "" if ok else f"GPU output differs from the CPU interpreter by {diff:.3g} > {tolerance:g}",
    }


def run(args):
    # Vulkan (Mesa) needs a runtime directory; the working directory is the
    # worker's own temporary one, removed after the run.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        os.environ["XDG_RUNTIME_DIR"] = os.getcwd()
    return check(args["model_path"], args["inputs_path"], float(args["tolerance"]))


def _load_subprocess_module():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_subprocess.py")
    spec = importlib.util.spec_from_file_location("_effconv_subprocess", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(_load_subprocess_module().worker_main(run))
