"""The `"locate"` mode of the GPU worker: which operators the GPU computes differently.

After a failed check, each operator is cut out into a one-operator model
(float inputs, QUANTIZE/DEQUANTIZE around quantized tensors), fed the tensors
the CPU interpreter computed for it in the whole model, and run on the GPU and
the CPU. Isolated, a correct operator agrees to a rounding step, so the error
that accumulates along a quantized network cannot hide the culprit.

Loaded by path from `_gpu_worker.py` (like it, it must not import the package,
which would load TensorFlow); `runtime` is that worker module, whose
`gpu_options`, `run_compiled`, `cpu_runner` and `input_batches` it uses.
"""

import copy
import os
import tempfile
import time

import numpy as np

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


def _isolated_error(runtime, graph, k, values, work, acceleration=False):
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
        compiled = CompiledModel.from_file(path, options=runtime.gpu_options())
        if not compiled.is_fully_accelerated():
            return (float("inf"), "not accelerated on the GPU") if acceleration else None
        gpu = runtime.run_compiled(compiled, inputs)
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


def locate(runtime, model_path, inputs_path, time_limit=180.0, acceleration=False):
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
    first = runtime.input_batches(inputs_path, {name: int(d["shape"][0]) for name, d in details.items()})[0]
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
            measured = _isolated_error(runtime, graph, k, values, work, acceleration)
            if measured is None:
                continue
            examined += 1
            if measured[0] > _STEPS_LIMIT:
                suspects.append(f"{graph.describe(k)}: {measured[1]}")
    return {"suspects": suspects, "examined": examined, "operators": len(operators), "complete": complete}
