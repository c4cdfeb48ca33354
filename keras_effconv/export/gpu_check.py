"""`check_gpu`: will this `.tflite` really run, and run right, on a mobile GPU?

Two parts (DESIGN.md §5):

(a) static rules read from the flatbuffer (`tflite_file.inspect_tflite`),
    needing nothing but the `ai_edge_litert` schema: no Flex or custom ops, no tensor above 4-D,
    grouped CONV_2D only with input and output channels per group multiples
    of 4 (the GPU delegate computes other grouped convs WRONGLY while
    reporting them accelerated), a static batch wherever TRANSPOSE_CONV
    appears, no RESHAPE+TILE (nearest UpSampling2D) pattern.
(b) where the LiteRT GPU accelerator can start (a real GPU, or Mesa lavapipe
    from bookworm-backports: `scripts/install_mesa.sh`), a GPU-only fp32
    compilation that must be fully accelerated, with outputs compared to the
    CPU interpreter: float models to a tolerance, quantized ones by top-1
    agreement (see `check_gpu`). It runs in a separate process
    (`_gpu_worker.py`) that never loads TensorFlow. Where the accelerator
    cannot start, (b) is "skipped" with the reason, never silently passed.
    When it fails, each operator is run alone on the GPU and the CPU to name
    the ones the GPU gets wrong.

Measured on LiteRT 2.3's GPU accelerator (WebGPU, Mesa lavapipe 25.0): it
runs int8 models with their quantization emulated exactly (isolated
operators agree with the CPU interpreter to a rounding step), except an int8
1x1 CONV_2D with stride 2, which it computes as if the stride were 1 (the
top-left corner of the stride-1 result), off by dozens of quantization
steps; the same convolution in float32, and int8 1x1 stride 1, 2x2 and 3x3
stride 2, are right.

`tf.lite.experimental.Analyzer(gpu_compatibility=True)` is no substitute: it
reports everything as compatible.
"""

import dataclasses
import importlib.util
import os

import numpy as np

from keras_effconv._files import temporary_directory
from keras_effconv._subprocess import WorkerError
from keras_effconv._subprocess import run_worker
from keras_effconv.export.tflite_file import inspect_tflite

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_gpu_worker.py")
RUN_MODES = ("auto", "never")
METRICS = ("auto", "max_abs", "top1")
_LOCATE_SECONDS = 180


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
        tolerance: the allowed `max_abs_diff` (metric `"max_abs"`).
        metric: `"max_abs"` or `"top1"`, the comparison applied.
        agreement: fraction of arg-max rows on which GPU and CPU agree, or
            None.
        min_agreement: the required `agreement` (metric `"top1"`).
        reference_agreement, cpu_reference_agreement: top-1 agreement of the
            GPU and of the CPU interpreter with the float model's outputs,
            when `check_gpu` got a `reference`; else None.
        samples: number of input samples run on both.
        suspects: after a failed run, the operators that the GPU computes
            differently from the CPU (or, when the model did not compile or
            was not fully accelerated, that fail on the GPU) when run alone,
            one description each.
        locate_note: why `suspects` may be incomplete ("" when the search
            ran through).
    """

    path: str
    violations: list
    ops: dict
    run_status: str
    run_reason: str = ""
    fully_accelerated: object = None
    max_abs_diff: object = None
    tolerance: float = 1e-3
    metric: str = "max_abs"
    agreement: object = None
    min_agreement: float = 0.99
    reference_agreement: object = None
    cpu_reference_agreement: object = None
    samples: int = 0
    suspects: list = dataclasses.field(default_factory=list)
    locate_note: str = ""

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

    def failure(self):
        """One line: why the GPU run failed and which operators are to blame."""
        text = self.run_reason
        if self.suspects:
            shown = "; ".join(self.suspects[:3])
            more = f" and {len(self.suspects) - 3} more" if len(self.suspects) > 3 else ""
            text += f"; the GPU computes these operators wrongly: {shown}{more}"
        elif self.locate_note:
            text += f"; {self.locate_note}"
        return text

    def summary(self):
        static = "static rules: ok" if self.static_ok else "static rules: FAILED (" + "; ".join(self.violations) + ")"
        if self.run_status == "passed":
            if self.metric == "top1":
                measure = (
                    f"top-1 agreement with the CPU interpreter {self.agreement:.1%} on {self.samples} inputs, "
                    f"max |GPU - CPU| = {self.max_abs_diff:.3g}"
                )
                if self.reference_agreement is not None:
                    measure += (
                        f"; with the float model: GPU {self.reference_agreement:.1%}, "
                        f"CPU interpreter {self.cpu_reference_agreement:.1%}"
                    )
            else:
                measure = f"max |GPU - CPU| = {self.max_abs_diff:.2e} <= {self.tolerance:g} on {self.samples} inputs"
            run = f"GPU-only fp32 run: passed (fully accelerated, {measure})"
        elif self.run_status == "failed":
            run = f"GPU-only fp32 run: FAILED ({self.failure()})"
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


def _feed(inputs, info):
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if len(inputs) != len(info["inputs"]):
        raise ValueError(
            f"Invalid value for argument `inputs`: the model has {len(info['inputs'])} inputs, "
            f"received {len(inputs)} arrays."
        )
    feed, counts = {}, set()
    for i, (array, spec) in enumerate(zip(inputs, info["inputs"])):
        array = np.asarray(array, dtype="float32")
        batch = spec["shape"][0] if spec["shape"] else 0
        if (
            array.ndim != len(spec["shape"])
            or list(array.shape[1:]) != spec["shape"][1:]
            or batch < 1
            or len(array) == 0
            or len(array) % batch
        ):
            raise ValueError(
                f"Invalid value for argument `inputs`: input {i} has shape {array.shape}, "
                f"the model expects {tuple(spec['shape'])} (or a multiple of its batch size along the first axis)."
            )
        counts.add(len(array) // batch)
        feed[f"args_{i}"] = array
    if len(counts) > 1:
        raise ValueError("Invalid value for argument `inputs`: the arrays hold different numbers of batches.")
    return feed


def check_gpu(
    path, inputs=None, run="auto", tolerance=1e-3, timeout=600, metric="auto", min_agreement=0.99, reference=None
):
    """Checks that a `.tflite` file runs fully and correctly on a mobile GPU.

    The GPU-only run compiles the model for the GPU alone (no CPU
    fallback), in fp32, and compares it with the CPU interpreter on the same
    inputs. How depends on `metric`: a float model must match to
    `tolerance`; a quantized one (int8 weights or activations) must give the
    same top-1 class (arg-max over the last axis) on `min_agreement` of the
    inputs, because the GPU computes quantized operators in float and may
    round a value one step apart from the CPU's integer kernels, which a
    tolerance made for fp32 mistakes for an error (while real errors, such
    as a wrong operator, change classes). When the run fails, every operator
    is run alone on both, from the CPU's own intermediate tensors, and the
    ones that differ are named in `report.suspects`.

    Args:
        path: path to a `.tflite` file.
        inputs: optional list of arrays, one per model input, with the
            model's static shape or any multiple of its batch size along
            the first axis (run batch by batch): real samples make the
            comparison meaningful for quantized models. Random normal inputs
            (one batch) by default.
        run: `"auto"` (run part (b) where the GPU accelerator can start,
            otherwise report it skipped with the reason) or `"never"`.
        tolerance: largest allowed `max |GPU - CPU|` (metric `"max_abs"`).
        timeout: seconds allowed for the GPU run (compilation on a software
            GPU can take minutes for big networks).
        metric: `"auto"` (`"top1"` for quantized models, else `"max_abs"`),
            `"max_abs"` or `"top1"`. `"top1"` falls back to `"max_abs"` for
            models without an output to take the arg-max of.
        min_agreement: the fraction of inputs whose top-1 class must agree
            (metric `"top1"`).
        reference: optional outputs of the float (Keras) model for `inputs`,
            one array for a single-output classifier (metric `"top1"`): the
            GPU then also passes when its top-1 agreement with them is at most
            one point below the CPU interpreter's (int8 near-ties flip
            differently on the two engines; see `_gpu_worker.compare_outputs`).

    Returns:
        A `GpuCheckReport`; `report.passed` is True when the static rules
        pass and the GPU run passed or was skipped (see `run_status`). NaN or
        inf in the GPU's or the CPU interpreter's outputs fails the run.

    Raises:
        ValueError: for an unknown `run` or `metric`, a file that is not a
            TFLite model, or `inputs` that do not match the model.
        OSError: if `path` cannot be read.

    Example:

    >>> report = check_gpu("model.tflite")  # doctest: +SKIP
    >>> report.passed, report.run_status  # doctest: +SKIP
    (True, 'passed')
    """
    if run not in RUN_MODES:
        raise ValueError(f"Invalid value for argument `run`: expected one of {RUN_MODES}. Received: run={run!r}")
    if metric not in METRICS:
        raise ValueError(
            f"Invalid value for argument `metric`: expected one of {METRICS}. Received: metric={metric!r}"
        )
    path = os.fspath(path)
    info = inspect_tflite(path)
    if metric == "auto":
        metric = "top1" if info["quantized"] else "max_abs"
    report = GpuCheckReport(
        path=path,
        violations=info["violations"],
        ops=info["ops"],
        run_status="skipped",
        tolerance=tolerance,
        metric=metric,
        min_agreement=min_agreement,
    )
    if run == "never":
        report.run_reason = "not requested (run='never')"
        return report
    if any(spec["dtype"] != "float32" for spec in info["inputs"] + info["outputs"]):
        report.run_reason = "model inputs/outputs are not float32"
        return report
    feed = _default_inputs(info) if inputs is None else _feed(inputs, info)
    if importlib.util.find_spec("ai_edge_litert") is None:
        report.run_reason = "ai-edge-litert is not installed (pip install ai-edge-litert)"
        return report
    with temporary_directory("gpu") as tmp:
        inputs_path = os.path.join(tmp, "inputs.npz")
        np.savez(inputs_path, **feed)
        reference_path = None
        if reference is not None:
            reference_path = os.path.join(tmp, "reference.npy")
            np.save(reference_path, np.asarray(reference, "float32"))
        args = {
            "mode": "check",
            "model_path": os.path.abspath(path),
            "inputs_path": inputs_path,
            "tolerance": float(tolerance),
            "metric": metric,
            "min_agreement": float(min_agreement),
            "reference_path": reference_path,
        }
        result = _run_worker(args, timeout)
        report.run_status = result["status"]
        report.run_reason = result.get("reason", "")
        report.fully_accelerated = result.get("fully_accelerated")
        report.max_abs_diff = result.get("max_abs_diff")
        report.agreement = result.get("agreement")
        report.reference_agreement = result.get("reference_agreement")
        report.cpu_reference_agreement = result.get("cpu_reference_agreement")
        report.metric = result.get("metric", metric)
        report.samples = result.get("samples", 0)
        if report.run_status == "failed" and not result.get("crashed"):
            _locate(report, dict(args, mode="locate", acceleration=not report.fully_accelerated), timeout)
    return report


def _locate(report, args, timeout):
    """Fills `report.suspects` from the worker's `"locate"` mode."""
    try:
        found = run_worker(
            dict(args, time_limit=_LOCATE_SECONDS), "GPU operator search", script=_WORKER,
            timeout=min(timeout, 2 * _LOCATE_SECONDS), keras_backend=None,
        )
    except WorkerError as error:
        report.locate_note = f"the search for the failing operator failed: {error.detail}"
        return
    report.suspects = list(found["suspects"])
    if not found["complete"]:
        report.locate_note = (
            f"the search for the failing operator stopped after {found['examined']} of "
            f"{found['operators']} operators ({_LOCATE_SECONDS} s)"
        )
    elif not report.suspects:
        report.locate_note = (
            f"each of the {found['examined']} operators that can run alone agrees with the CPU when run "
            "alone: the difference comes from their combination"
        )


def _run_worker(args, timeout):
    try:
        return run_worker(args, "GPU run", script=_WORKER, timeout=timeout, keras_backend=None)
    except WorkerError as error:
        # The worker prints "canary-ok" once the accelerator has started:
        # a crash or hang before that means no usable GPU here, after it
        # a failure of this model.
        started = "canary-ok" in error.stdout
        if error.kind == "error":
            return {"status": "failed", "reason": error.detail, "crashed": True}
        if error.kind == "timeout":
            return {"status": "failed" if started else "skipped", "reason": str(error), "crashed": True}
        if not started:
            return {
                "status": "skipped",
                "reason": f"the LiteRT GPU accelerator crashed while starting ({error.detail})",
                "crashed": True,
            }
        return {"status": "failed", "reason": f"the GPU run crashed ({error.detail})", "crashed": True}
