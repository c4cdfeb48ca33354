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
  differently: each operator is cut out into a one-operator model (float
  inputs, QUANTIZE/DEQUANTIZE around quantized tensors), fed the tensors the
  CPU interpreter computed for it in the whole model, and run on the GPU and
  the CPU. Isolated, a correct operator agrees to a rounding step, so the
  error that accumulates along a quantized network cannot hide the culprit.
"""

import base64
import copy
import importlib.util
import os
import sys
import tempfile
import time

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


def _cpu_runner(path):
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


def _batches(inputs_path, batch_sizes):
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
            compiled = CompiledModel.from_file(canary.name, options=_gpu_options())
            x = {"args_0": np.ones((1, 4, 4, 4), "float32")}
            out = list(_run_compiled(compiled, x).values())[0]
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
        compiled = CompiledModel.from_file(model_path, options=_gpu_options())
    except Exception as error:
        return {"status": "failed", "reason": f"GPU-only compilation failed: {type(error).__name__}: {error}"}
    if not compiled.is_fully_accelerated():
        return {"status": "failed", "fully_accelerated": False, "reason": "not fully accelerated on the GPU"}
    signature = list(compiled.get_signature_list())[0]
    details = compiled.get_input_tensor_details(signature)
    batches = _batches(inputs_path, {name: int(d["shape"][0]) for name, d in details.items()})
    gpu = [_run_compiled(compiled, inputs) for inputs in batches]
    run_cpu = _cpu_runner(model_path)
    cpu = [run_cpu(inputs) for inputs in batches]
    reference = np.load(reference_path) if reference_path else None
    result = compare_outputs(
        gpu, cpu, metric=metric, tolerance=tolerance, min_agreement=min_agreement, reference=reference
    )
    result.update(fully_accelerated=True, samples=sum(len(next(iter(b.values()))) for b in batches))
    return result


# Operators a one-operator model cannot stand for.
_NOT_ISOLATED = {"WHILE", "IF", "CALL_ONCE", "CALL", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CUSTOM"}
_QUANTIZED_TYPES = ("INT8", "UINT8", "INT16")


class _Graph:
    """The flatbuffer of a `.tflite`, read with the object API of LiteRT's schema."""

    def __init__(self, path):
        from ai_edge_litert import schema_py_generated as schema

        self.schema = schema
        with open(path, "rb") as f:
            self.raw = f.read()
        self.model_t = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(self.raw, 0))
        self.graph = self.model_t.subgraphs[0]
        self.op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        self.type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}

    def op_name(self, op):
        code = self.model_t.operatorCodes[op.opcodeIndex]
        return self.op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")

    def type_name(self, t):
        return self.type_names.get(self.graph.tensors[t].type, "?")

    def scale(self, t):
        """(scale, zero point) of a per-tensor quantized tensor, else None."""
        q = self.graph.tensors[t].quantization
        if self.type_name(t) in _QUANTIZED_TYPES and q is not None and q.scale is not None and len(q.scale) == 1:
            return float(q.scale[0]), int(q.zeroPoint[0]) if q.zeroPoint is not None else 0
        return None

    def constant(self, t):
        buffer = self.model_t.buffers[self.graph.tensors[t].buffer]
        return (buffer.data is not None and len(buffer.data) > 0) or (buffer.offset or 0) > 1

    def buffer(self, t):
        buffer = self.model_t.buffers[self.graph.tensors[t].buffer]
        if buffer.data is None and (buffer.offset or 0) > 1:  # a >2 GB model keeps buffers after the flatbuffer
            copied = self.schema.BufferT()
            copied.data = np.frombuffer(self.raw, np.uint8, buffer.size, buffer.offset)
            return copied
        return buffer

    def describe(self, k):
        """`op #31 CONV_2D 1x1 stride 2 (int8, (1, 28, 28, 16) -> (1, 14, 14, 32)) 'name'`."""
        op = self.graph.operators[k]
        name = self.op_name(op)
        shape = lambda t: tuple(int(d) for d in self.graph.tensors[t].shape)  # noqa: E731
        activations = [t for t in op.inputs if t >= 0 and not self.constant(t)]
        kind = name
        options = op.builtinOptions
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV") and len(op.inputs) >= 2:
            w = shape(op.inputs[1])
            kind += f" {w[1]}x{w[2]}"
            if name == "CONV_2D" and activations and shape(activations[0])[-1] != w[3]:
                kind += f" groups={shape(activations[0])[-1] // w[3]}"
        if options is not None and hasattr(options, "strideH"):
            stride = (options.strideH, options.strideW)
            kind += f" stride {stride[0]}" if stride[0] == stride[1] else f" stride {stride[0]}x{stride[1]}"
        dtype = self.type_name(activations[0]).lower() if activations else "const"
        shapes = ", ".join(str(shape(t)) for t in activations)
        out = op.outputs[0]
        tensor_name = (self.graph.tensors[out].name or b"").decode(errors="replace").split(";")[0]
        return f"op #{k} {kind} ({dtype}, {shapes} -> {shape(out)}) '{tensor_name}'"

    def single_op_model(self, k):
        """A model of operator `k` alone, with float inputs/outputs; None if it cannot be cut out.

        Returns:
            (flatbuffer bytes, [(input name, original tensor)], [(output name, original tensor)])
        """
        import flatbuffers

        S = self.schema
        op = self.graph.operators[k]
        if self.op_name(op) in _NOT_ISOLATED or op.intermediates is not None and len(op.intermediates):
            return None
        codes = [self.model_t.operatorCodes[op.opcodeIndex]]
        for builtin in (S.BuiltinOperator.QUANTIZE, S.BuiltinOperator.DEQUANTIZE):
            code = S.OperatorCodeT()
            code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
            codes.append(code)
        tensors, buffers, ops = [], [S.BufferT()], []
        graph_inputs, graph_outputs, feeds, fetches, mapped = [], [], [], [], {}

        def add(t, buffer=0, as_float=False):
            tensor = copy.copy(self.graph.tensors[t])
            tensor.buffer = buffer
            if as_float:
                tensor.type, tensor.quantization = S.TensorType.FLOAT32, None
                tensor.name = (tensor.name or b"") + b"/float"
            tensors.append(tensor)
            return len(tensors) - 1

        for t in op.inputs:
            if t < 0 or t in mapped:
                continue
            if self.constant(t):
                buffers.append(self.buffer(t))
                mapped[t] = add(t, buffer=len(buffers) - 1)
            elif self.type_name(t) == "FLOAT32":
                mapped[t] = add(t)
                graph_inputs.append(mapped[t])
                feeds.append((f"in_{len(feeds)}", t))
            elif self.scale(t) is not None:
                source, mapped[t] = add(t, as_float=True), add(t)
                quantize = S.OperatorT()
                quantize.opcodeIndex, quantize.inputs, quantize.outputs = 1, [source], [mapped[t]]
                ops.append(quantize)
                graph_inputs.append(source)
                feeds.append((f"in_{len(feeds)}", t))
            else:
                return None
        cut = copy.copy(op)
        cut.opcodeIndex = 0
        cut.inputs = [mapped[t] if t >= 0 else -1 for t in op.inputs]
        cut.outputs, after = [], []
        for t in op.outputs:
            if self.type_name(t) == "FLOAT32":
                mapped[t] = add(t)
                graph_outputs.append(mapped[t])
            elif self.scale(t) is not None:
                mapped[t], target = add(t), add(t, as_float=True)
                dequantize = S.OperatorT()
                dequantize.opcodeIndex, dequantize.inputs, dequantize.outputs = 2, [mapped[t]], [target]
                after.append(dequantize)
                graph_outputs.append(target)
            else:
                return None
            cut.outputs.append(mapped[t])
            fetches.append((f"out_{len(fetches)}", t))
        ops = ops + [cut] + after
        subgraph = S.SubGraphT()
        subgraph.tensors, subgraph.operators = tensors, ops
        subgraph.inputs, subgraph.outputs, subgraph.name = graph_inputs, graph_outputs, b"main"
        signature = S.SignatureDefT()
        signature.signatureKey, signature.subgraphIndex = b"serving_default", 0
        signature.inputs = [_tensor_map(S, name, index) for (name, _), index in zip(feeds, graph_inputs)]
        signature.outputs = [_tensor_map(S, name, index) for (name, _), index in zip(fetches, graph_outputs)]
        model = S.ModelT()
        model.version, model.operatorCodes, model.subgraphs = self.model_t.version, codes, [subgraph]
        model.buffers, model.signatureDefs, model.description = buffers, [signature], b"single operator"
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output()), feeds, fetches


def _tensor_map(schema, name, index):
    entry = schema.TensorMapT()
    entry.name, entry.tensorIndex = name.encode(), index
    return entry


def _isolated_error(graph, k, values, work, acceleration=False):
    """How far the GPU is from the CPU on operator `k` alone: (error, text) or None.

    The error is in quantization steps of the output (quantized outputs) or
    in units of `_FLOAT_OP_TOLERANCE` (float ones). With `acceleration`,
    an operator that does not compile or is not accelerated alone counts
    as infinitely wrong; otherwise it is left out (None).
    """
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.interpreter import Interpreter

    cut = graph.single_op_model(k)
    if cut is None:
        return None
    data, feeds, fetches = cut
    path = os.path.join(work, f"op_{k}.tflite")
    with open(path, "wb") as f:
        f.write(data)
    inputs = {name: values[t] for name, t in feeds}
    try:
        cpu = Interpreter(model_content=data).get_signature_runner()(**inputs)
    except Exception:  # an operator that cannot stand alone
        os.remove(path)
        return None
    try:
        compiled = CompiledModel.from_file(path, options=_gpu_options())
        if not compiled.is_fully_accelerated():
            return (float("inf"), "not accelerated on the GPU") if acceleration else None
        gpu = _run_compiled(compiled, inputs)
    except Exception as error:
        return (float("inf"), f"does not compile on the GPU ({type(error).__name__})") if acceleration else None
    finally:
        os.remove(path)
    if acceleration:
        return 0.0, ""
    worst, text = 0.0, ""
    for name, t in fetches:
        c, g = np.asarray(cpu[name], "float64"), np.asarray(gpu[name], "float64")
        if not np.all(np.isfinite(g) == np.isfinite(c)):
            return float("inf"), "NaN/inf where the CPU has none"
        diff = float(np.max(np.abs(g - c))) if c.size else 0.0
        quantized = graph.scale(t)
        if quantized:
            error = diff / quantized[0]
            if error > worst:
                worst, text = error, f"{error:.0f} quantization steps ({diff:.3g}) off"
        else:
            error = diff / max(1.0, float(np.max(np.abs(c))) if c.size else 1.0)
            # In units of the tolerance, so that one threshold serves both kinds.
            if error / _FLOAT_OP_TOLERANCE > worst:
                worst, text = error / _FLOAT_OP_TOLERANCE, f"max |GPU - CPU| = {diff:.3g}"
    return worst, text


# An isolated operator whose GPU result is further from the CPU's than this
# is wrong: a correct one differs by rounding (at most a step or two of the
# output's quantization, or a float error far below 1e-3 relative).
_STEPS_LIMIT = 2.0
_FLOAT_OP_TOLERANCE = 1e-3 / _STEPS_LIMIT


def locate(model_path, inputs_path, time_limit=180.0, acceleration=False):
    """The `"locate"` mode: the operators the GPU computes differently, in graph order.

    With `acceleration` (after a model failed to compile or was not fully
    accelerated), the operators that do not compile or run on the GPU alone
    instead.

    Returns:
        dict with `suspects` (descriptions with the error), `examined`
        (operators compared), `operators` (in the model) and `complete`
        (False if `time_limit` seconds stopped the search).
    """
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.interpreter import OpResolverType

    start = time.monotonic()
    graph = _Graph(model_path)
    # Reference kernels without the XNNPACK delegate, which would keep its
    # partitions' intermediate tensors to itself.
    interpreter = Interpreter(
        model_path=model_path,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()
    first = _batches(inputs_path, {name: int(d["shape"][0]) for name, d in details.items()})[0]
    runner(**first)
    values = {}
    for t in range(len(graph.graph.tensors)):
        try:
            array = np.asarray(interpreter.get_tensor(t))
        except ValueError:
            continue
        quantized = graph.scale(t)
        if quantized:
            array = ((array.astype("float32") - quantized[1]) * quantized[0]).astype("float32")
        values[t] = array
    suspects, examined, complete = [], 0, True
    operators = graph.graph.operators
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as work:
        for k in range(len(operators)):
            if time.monotonic() - start > time_limit:
                complete = False
                break
            if any(t >= 0 and not graph.constant(t) and t not in values for t in operators[k].inputs):
                continue
            measured = _isolated_error(graph, k, values, work, acceleration)
            if measured is None:
                continue
            examined += 1
            if measured[0] > _STEPS_LIMIT:
                suspects.append(f"{graph.describe(k)}: {measured[1]}")
    return {"suspects": suspects, "examined": examined, "operators": len(operators), "complete": complete}


def run(args):
    # Vulkan (Mesa) needs a runtime directory; the working directory is the
    # worker's own temporary one, removed after the run.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        os.environ["XDG_RUNTIME_DIR"] = os.getcwd()
    if args.get("mode", "check") == "locate":
        return locate(
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


def _load_subprocess_module():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_subprocess.py")
    spec = importlib.util.spec_from_file_location("_effconv_subprocess", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(_load_subprocess_module().worker_main(run))
