"""Reading a `.tflite` flatbuffer: operators, tensors and the static mobile-GPU rules.

Needs nothing but the `ai_edge_litert` flatbuffer schema (no interpreter, no
TensorFlow). `check_gpu` and `export_litert` report what it finds.
"""

import collections

import numpy as np

_QUANTIZED_TYPES = ("int8", "uint8", "int16")


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _op_names(schema):
    return {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_") and isinstance(value, int)
    }


def inspect_tflite(path):
    """Reads the operators and tensor shapes of a `.tflite` file.

    Args:
        path: path to a `.tflite` file.

    Returns:
        dict with `ops` (operator name -> count, Flex and custom ops under
        their custom code), `flex_ops`, `custom_ops`, `inputs` and `outputs`
        (lists of `{"name", "shape", "dtype"}`, shapes with -1 for dynamic
        dimensions), `quantized` (whether any tensor is int8/uint8/int16:
        full-integer or dynamic-range quantization) and `violations` (static
        GPU rule violations, one sentence each).

    Raises:
        OSError: if the file cannot be read.
        ValueError: if it is not a TFLite flatbuffer.
    """
    schema = _schema()
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError(f"{path} is not a TFLite/LiteRT flatbuffer (no 'TFL3' identifier).")
    model = schema.Model.GetRootAsModel(buf, 0)
    names = _op_names(schema)
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.CustomCode()
            codes.append(custom.decode() if custom else "CUSTOM")
        else:
            codes.append(names.get(builtin, f"BUILTIN_{builtin}"))
    ops = collections.Counter()
    violations = []
    custom_ops, flex_ops = set(), set()
    inputs, outputs = [], []
    quantized = False
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)

        def shape(t):
            tensor = graph.Tensors(t)
            sig = tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else tensor.ShapeAsNumpy()
            return [int(d) for d in np.atleast_1d(sig)] if tensor.ShapeLength() or tensor.ShapeSignatureLength() else []

        def describe(t):
            tensor = graph.Tensors(t)
            return {"name": tensor.Name().decode(), "shape": shape(t), "dtype": type_names.get(tensor.Type(), "?")}

        if s == 0:
            inputs = [describe(graph.Inputs(i)) for i in range(graph.InputsLength())]
            outputs = [describe(graph.Outputs(i)) for i in range(graph.OutputsLength())]
        producer = {}
        op_list = []
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            name = codes[op.OpcodeIndex()]
            op_list.append((name, op))
            ops[name] += 1
            for k in range(op.OutputsLength()):
                producer[op.Outputs(k)] = name
        for name in ops:
            if name.startswith("Flex"):
                flex_ops.add(name)
            elif name not in names.values() and not name.startswith("BUILTIN_"):
                custom_ops.add(name)
        for t in range(graph.TensorsLength()):
            quantized = quantized or type_names.get(graph.Tensors(t).Type()) in _QUANTIZED_TYPES
            rank = len(shape(t))
            if rank > 4:
                violations.append(
                    f"tensor '{graph.Tensors(t).Name().decode()}' has rank {rank} > 4 "
                    "(5-D reshapes/transposes are not accelerated; use a 4-D formulation)"
                )
        dynamic_batch = any(i["shape"] and i["shape"][0] == -1 for i in inputs)
        for name, op in op_list:
            if name == "CONV_2D" and op.InputsLength() >= 2:
                x, w = shape(op.Inputs(0)), shape(op.Inputs(1))
                if len(x) == 4 and len(w) == 4 and x[3] > 0 and w[3] > 0 and x[3] != w[3]:
                    groups = x[3] // w[3]
                    in_pg, out_pg = w[3], w[0] // groups
                    if in_pg % 4 or out_pg % 4:
                        violations.append(
                            f"grouped CONV_2D with {in_pg} input / {out_pg} output channels per group "
                            f"({groups} groups): GPU delegates compute it wrongly unless both are "
                            "multiples of 4 (optimize_for_inference(target='gpu') avoids it)"
                        )
            if name == "TRANSPOSE_CONV" and dynamic_batch:
                violations.append(
                    "TRANSPOSE_CONV with a dynamic batch dimension: GPU compilation fails; export with a static batch"
                )
            if name == "TILE" and producer.get(op.Inputs(0)) == "RESHAPE":
                violations.append(
                    "RESHAPE+TILE (nearest UpSampling2D) is not accelerated on GPUs; use a nearest "
                    "resize or depth_to_space (optimize_for_inference(target='gpu') does)"
                )
    for name in sorted(flex_ops):
        violations.insert(0, f"Flex (SELECT_TF_OPS) op {name}: never runs on a mobile GPU")
    for name in sorted(custom_ops):
        violations.insert(0, f"custom op {name}: not supported by GPU delegates")
    return {
        "ops": dict(sorted(ops.items())),
        "flex_ops": sorted(flex_ops),
        "custom_ops": sorted(custom_ops),
        "inputs": inputs,
        "outputs": outputs,
        "quantized": quantized,
        "violations": list(dict.fromkeys(violations)),
    }
