"""`check_gpu`: will this `.tflite` really run, and run right, on a mobile GPU?

Two parts (DESIGN.md §5):

(a) static rules read from the flatbuffer, needing nothing but the
    `ai_edge_litert` schema: no Flex or custom ops, no tensor above 4-D,
    grouped CONV_2D only with input and output channels per group multiples
    of 4 (the GPU delegate computes other grouped convs WRONGLY while
    reporting them accelerated), a static batch wherever TRANSPOSE_CONV
    appears, no RESHAPE+TILE (nearest UpSampling2D) pattern.
(b) where the LiteRT GPU accelerator can start (a real GPU, or Mesa lavapipe
    from bookworm-backports: `scripts/install_mesa.sh`), a GPU-only fp32
    compilation that must be fully accelerated, with outputs compared to the
    CPU interpreter. It runs in a separate process (`_gpu_worker.py`) that
    never loads TensorFlow. Where the accelerator cannot start, (b) is
    "skipped" with the reason, never silently passed.

`tf.lite.experimental.Analyzer(gpu_compatibility=True)` is no substitute: it
reports everything as compatible.
"""

import collections
import dataclasses
import importlib.util
import os
import tempfile

import numpy as np

from keras_effconv._subprocess import WorkerError
from keras_effconv._subprocess import run_worker

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_gpu_worker.py")
RUN_MODES = ("auto", "never")


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
        dimensions) and `violations` (static GPU rule violations, one
        sentence each).

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
        "violations": list(dict.fromkeys(violations)),
    }


@dataclasses.dataclass
class GpuCheckReport:
    """Result of `check_gpu`.

    Attributes:
        path: the checked file.
        violations: static rule violations (empty when the rules pass).
        ops: operator name -> count.
        run_status: `"passed"`, `"failed"`, `"skipped"` (the GPU
            accelerator cannot start here, or the run was not asked for).
        run_reason: why the run failed or was skipped ("" when passed).
        fully_accelerated: from the GPU-only compilation, or None.
        max_abs_diff: GPU vs CPU interpreter, or None.
        tolerance: the allowed `max_abs_diff`.
    """

    path: str
    violations: list
    ops: dict
    run_status: str
    run_reason: str = ""
    fully_accelerated: object = None
    max_abs_diff: object = None
    tolerance: float = 1e-3

    @property
    def static_ok(self):
        return not self.violations

    @property
    def passed(self):
        """True when the static rules pass and the GPU run did not fail."""
        return self.static_ok and self.run_status != "failed"

    def to_dict(self):
        data = dataclasses.asdict(self)
        data.update(static_ok=self.static_ok, passed=self.passed)
        return data

    def summary(self):
        static = "static rules: ok" if self.static_ok else "static rules: FAILED (" + "; ".join(self.violations) + ")"
        if self.run_status == "passed":
            run = (
                f"GPU-only fp32 run: passed (fully accelerated, max |GPU - CPU| = {self.max_abs_diff:.2e} "
                f"<= {self.tolerance:g})"
            )
        elif self.run_status == "failed":
            run = f"GPU-only fp32 run: FAILED ({self.run_reason})"
        else:
            run = f"GPU-only fp32 run: skipped ({self.run_reason})"
        return f"{static}; {run}"

    def __str__(self):
        return self.summary()


def _default_inputs(info, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {}
    for i, spec in enumerate(info["inputs"]):
        if any(d < 1 for d in spec["shape"]):
            raise ValueError(
                f"input '{spec['name']}' has a dynamic shape {spec['shape']}; pass `inputs` or export with a static shape"
            )
        inputs[f"args_{i}"] = rng.standard_normal(spec["shape"]).astype("float32")
    return inputs


def check_gpu(path, inputs=None, run="auto", tolerance=1e-3, timeout=600):
    """Checks that a `.tflite` file runs fully and correctly on a mobile GPU.

    Args:
        path: path to a `.tflite` file.
        inputs: optional list of arrays (one per model input, with the
            model's static shapes) for the GPU-vs-CPU comparison; random
            normal inputs by default.
        run: `"auto"` (run part (b) where the GPU accelerator can start,
            otherwise report it skipped with the reason) or `"never"`.
        tolerance: largest allowed `max |GPU - CPU|` in the fp32 run.
        timeout: seconds allowed for the GPU run (compilation on a software
            GPU can take minutes for big networks).

    Returns:
        A `GpuCheckReport`; `report.passed` is True when the static rules
        pass and the GPU run passed or was skipped (see `run_status`).

    Raises:
        ValueError: for an unknown `run`, a file that is not a TFLite model,
            or `inputs` that do not match the model.
        OSError: if `path` cannot be read.

    Example:

    >>> report = check_gpu("model.tflite")  # doctest: +SKIP
    >>> report.passed, report.run_status  # doctest: +SKIP
    (True, 'passed')
    """
    if run not in RUN_MODES:
        raise ValueError(f"Invalid value for argument `run`: expected one of {RUN_MODES}. Received: run={run!r}")
    path = os.fspath(path)
    info = inspect_tflite(path)
    report = GpuCheckReport(
        path=path, violations=info["violations"], ops=info["ops"], run_status="skipped", tolerance=tolerance
    )
    if run == "never":
        report.run_reason = "not requested (run='never')"
        return report
    if any(spec["dtype"] != "float32" for spec in info["inputs"] + info["outputs"]):
        report.run_reason = "model inputs/outputs are not float32"
        return report
    if inputs is None:
        feed = _default_inputs(info)
    else:
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(inputs) != len(info["inputs"]):
            raise ValueError(
                f"Invalid value for argument `inputs`: the model has {len(info['inputs'])} inputs, "
                f"received {len(inputs)} arrays."
            )
        feed = {}
        for i, (array, spec) in enumerate(zip(inputs, info["inputs"])):
            array = np.asarray(array, dtype="float32")
            if list(array.shape) != spec["shape"]:
                raise ValueError(
                    f"Invalid value for argument `inputs`: input {i} has shape {array.shape}, "
                    f"the model expects {tuple(spec['shape'])}."
                )
            feed[f"args_{i}"] = array
    if importlib.util.find_spec("ai_edge_litert") is None:
        report.run_reason = "ai-edge-litert is not installed (pip install ai-edge-litert)"
        return report
    result = _run_worker(path, feed, tolerance, timeout)
    report.run_status = result["status"]
    report.run_reason = result.get("reason", "")
    report.fully_accelerated = result.get("fully_accelerated")
    report.max_abs_diff = result.get("max_abs_diff")
    return report


def _run_worker(path, feed, tolerance, timeout):
    with tempfile.TemporaryDirectory(prefix="effconv-gpu-") as tmp:
        inputs_path = os.path.join(tmp, "inputs.npz")
        np.savez(inputs_path, **feed)
        args = {"model_path": os.path.abspath(path), "inputs_path": inputs_path, "tolerance": float(tolerance)}
        try:
            return run_worker(args, "GPU run", script=_WORKER, timeout=timeout, keras_backend=None)
        except WorkerError as error:
            # The worker prints "canary-ok" once the accelerator has started:
            # a crash or hang before that means no usable GPU here, after it
            # a failure of this model.
            started = "canary-ok" in error.stdout
            if error.kind == "error":
                return {"status": "failed", "reason": error.detail}
            if error.kind == "timeout":
                return {"status": "failed" if started else "skipped", "reason": str(error)}
            if not started:
                return {
                    "status": "skipped",
                    "reason": f"the LiteRT GPU accelerator crashed while starting ({error.detail})",
                }
            return {"status": "failed", "reason": f"the GPU run crashed ({error.detail})"}
