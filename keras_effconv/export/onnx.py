"""`export_onnx`: a Keras model to a verified ONNX file, from the torch, TensorFlow or JAX backend.

The model is first lowered by `optimize_for_inference(model, target="cpu")`
(every keras_effconv layer becomes plain convolutions, BN folded, grouped
convolutions kept native: ONNX `Conv` has a `group` attribute), then
converted by the running backend's exporter:

- torch: `torch.onnx.export(..., dynamo=True)` (the `onnxscript` exporter),
  called directly rather than through `model.export(format="onnx")`, which
  falls back to the TorchScript exporter on any dynamo failure (where the
  weight gathers of HetConv/IGC fail on `aten::ravel`). One translation is
  replaced: torchlib (onnxscript 0.7) turns `aten::squeeze.dim` into an ONNX
  `Squeeze` even when the dimension is not 1, where torch's squeeze is a
  no-op and ONNX's is an error (Keras' `ops.take` on torch, used by
  `ChannelGather` and the layers' weight gathers, squeezes every time).
- TensorFlow: Keras' `model.export(format="onnx")` (tf2onnx). Keras runs
  every grouped `Conv2D` on TensorFlow inside a nested XLA function, which
  tf2onnx cannot convert (`StatefulPartitionedCall`); those layers are
  re-expressed, weights shared, with the library's `tf.nn.convolution`
  grouped form, which tf2onnx turns into one grouped `Conv`.
- JAX: the lowered model is saved as `.keras` and converted by the
  TensorFlow route in a worker process (`python -m
  keras_effconv.export.onnx`), as `export_litert` does; TensorFlow and
  tf2onnx must be installed.

Every file is checked with `onnx.checker.check_model(full_check=True)`
(unconverted operators and impossible shapes fail here) and, with
`verify=True`, run by ONNX Runtime against the ORIGINAL Keras model on the
backend in use.
"""

import dataclasses
import importlib.util
import os
import sys
import time
import warnings

import numpy as np

import keras

from keras_effconv import _model_graph
from keras_effconv import _validation
from keras_effconv._files import atomic_path
from keras_effconv._files import check_output_path
from keras_effconv._files import interruptible
from keras_effconv._files import load_keras_model
from keras_effconv._files import temporary_directory
from keras_effconv._subprocess import WorkerError
from keras_effconv._subprocess import run_worker
from keras_effconv._subprocess import worker_main
from keras_effconv.export import verification
from keras_effconv.export.inference import _static_inputs
from keras_effconv.export.inference import optimize_for_inference
from keras_effconv.export.litert import _as_batches
from keras_effconv.export.litert import _load
from keras_effconv.export.verification import ExportError
from keras_effconv.layers import _core

BACKENDS = ("torch", "tensorflow", "jax")
# The opset both routes produce natively: torch's exporter builds opset 18
# (torchlib) and converts to others; tf2onnx 1.17 supports at most 18.
DEFAULT_OPSET = 18
MIN_OPSET = 13
_INSTALL_HINT = "pip install 'keras-effconv[onnx]' (pinned versions: constraints.txt)"


@dataclasses.dataclass
class OnnxExportReport:
    """What `export_onnx` produced and how it was verified.

    Attributes:
        path: the written `.onnx` file.
        backend: the Keras backend the model was exported from.
        converter: `"torch.onnx (dynamo)"` or `"tf2onnx"` (JAX: tf2onnx in
            a TensorFlow worker process).
        opset: the file's ONNX opset (default domain).
        optimized: whether the model was lowered by
            `optimize_for_inference(target="cpu")` first.
        input_shapes: static input shapes, batch included.
        ops: ONNX operator type -> count (`domain::Op` outside the default
            domain).
        file_size: bytes.
        max_abs_diff: max |ONNX Runtime - Keras| on the sample inputs (None
            when `verify=False`).
        output_scale: max |Keras output| on the same inputs, for scale.
        samples: number of verification batches.
        seconds: wall time of the export.
    """

    path: str
    backend: str
    converter: str
    opset: int
    optimized: bool
    input_shapes: list
    ops: dict
    file_size: int
    max_abs_diff: object = None
    output_scale: object = None
    samples: int = 0
    seconds: float = 0.0

    def to_dict(self):
        return dataclasses.asdict(self)

    def summary(self):
        shapes = ", ".join(str(tuple(s)) for s in self.input_shapes)
        lines = [
            f"wrote {self.path} ({self.file_size / 1e6:.2f} MB, input {shapes}, opset {self.opset}, "
            f"{self.converter} from {self.backend}, {'lowered' if self.optimized else 'not lowered'}, "
            f"{self.seconds:.1f} s)",
            f"ops: {sum(self.ops.values())} ({', '.join(f'{k} x{v}' for k, v in self.ops.items())})",
        ]
        if self.max_abs_diff is not None:
            lines.append(
                f"max |ONNX Runtime - Keras| = {self.max_abs_diff:.2e} on {self.samples} sample batch(es) "
                f"(outputs up to {self.output_scale:.3g})"
            )
        else:
            lines.append("outputs not verified (verify=False)")
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def _check_backend():
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        raise ValueError(
            f"export_onnx supports the Keras backends {BACKENDS}; this process runs {backend!r}. "
            "Set KERAS_BACKEND to one of them."
        )
    return backend


def _check_opset(opset, backend):
    opset = _validation.check_int(opset, "opset", minimum=MIN_OPSET, allow_none=True)
    if opset is None:
        return DEFAULT_OPSET
    if opset > DEFAULT_OPSET:
        raise _validation.invalid_value(
            "opset", f"expected an ONNX opset from {MIN_OPSET} to {DEFAULT_OPSET} (tf2onnx converts up to {DEFAULT_OPSET})",
            opset,
        )
    if backend == "torch" and opset != DEFAULT_OPSET:
        # Measured (torch 2.13): asked for 13 or 17, it writes 18 all the same.
        raise _validation.invalid_value(
            "opset", f"expected {DEFAULT_OPSET} on the torch backend (its exporter writes opset {DEFAULT_OPSET} only; "
            f"opsets {MIN_OPSET}-{DEFAULT_OPSET} are available from TensorFlow and JAX)",
            opset,
        )
    return opset


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise _validation.invalid_value(
            name, "expected True or False", received=f"{name}={value!r} of type {type(value).__name__}",
            error=TypeError,
        )
    return bool(value)


def _required_modules(backend, verify):
    modules = ["onnx"]
    modules += ["onnxscript"] if backend == "torch" else ["tensorflow", "tf2onnx"]
    if verify:
        modules.append("onnxruntime")
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"export_onnx on the {backend} backend needs {', '.join(missing)}: {_INSTALL_HINT}")


def export_onnx(
    model,
    path,
    input_shape=None,
    batch_size=1,
    opset=None,
    optimize=True,
    verify=True,
    verification_data=None,
):
    """Exports a Keras model to a verified ONNX (`.onnx`) file.

    Steps: `optimize_for_inference(model, target="cpu", input_shape,
    batch_size)` (with `optimize=True`), conversion with a static input
    shape `(batch_size, H, W, C)` by the running backend's exporter (torch:
    `torch.onnx.export(dynamo=True)`; TensorFlow: Keras' tf2onnx export;
    JAX: the TensorFlow route in a worker process), `onnx.checker` with
    full shape inference, then (`verify=True`) ONNX Runtime's outputs
    against the ORIGINAL Keras model on sample inputs: no NaN/inf on either
    side and max abs difference <= 1e-4, scaled by the output size when
    outputs exceed 1 (as `export_litert`).
    The file is written atomically: a temporary file in the same directory
    is renamed to `path` only after every check passed, so a failed export
    leaves no file and never overwrites an existing one. Every argument and
    `path` are checked before any conversion starts.

    Args:
        model: a built Functional/Sequential `keras.Model`, or the path of a
            `.keras` file.
        path: where to write the `.onnx` file; its directory must exist and
            be writable.
        input_shape: per-sample input shape `(H, W, C)`, needed when the
            model's spatial sizes are unknown.
        batch_size: int, the static batch size (default 1).
        opset: the ONNX opset (default None: 18, what both converters
            produce natively): 18 on torch (its exporter writes no other),
            13 to 18 on TensorFlow and JAX.
        optimize: lower the model with `optimize_for_inference(target="cpu")`
            first (default True: BN folded, efficient layers as grouped /
            depthwise / 1x1 convolutions). False converts the model as it
            runs in Keras (the layers' own execution forms, e.g. HetConv's
            dense kernel gathered from its free weights in the graph).
        verify: whether to run the ONNX Runtime check.
        verification_data: samples in the model's input format (array
            `(N, H, W, C)`, a list of arrays, or a function returning an
            iterable of them); the first `batch_size * 4` are compared.
            Default: random normal inputs.

    Returns:
        An `OnnxExportReport` (printable).

    Raises:
        ValueError: for bad arguments (naming the argument; `path` a
            directory or not a `.onnx` file), an unsupported layer (naming
            it), a backend other than torch, TensorFlow or JAX, or
            `ExportError` (a `ValueError`) when the model has NaN/inf
            weights, or the conversion, the ONNX checker or the ONNX Runtime
            comparison fails; nothing is written then.
        TypeError: if `model` is not a `keras.Model` or a path, or
            `optimize`/`verify` are not booleans.
        ImportError: if onnx, onnxruntime or the backend's converter
            (onnxscript for torch; tensorflow and tf2onnx otherwise) is not
            installed (`pip install 'keras-effconv[onnx]'`).
        OSError: if the model file or the directory of `path` does not
            exist, or the directory is not writable.

    Example:

    >>> from keras_effconv.applications import EffResNet20
    >>> model = EffResNet20(input_shape=(28, 28, 1), conv="hetconv")
    >>> report = export_onnx(model, "/tmp/effresnet20_hetconv.onnx")  # doctest: +SKIP
    >>> report.max_abs_diff < 1e-4  # doctest: +SKIP
    True
    """
    start = time.time()
    path = check_output_path(path, ".onnx")
    backend = _check_backend()
    opset = _check_opset(opset, backend)
    optimize = _check_bool(optimize, "optimize")
    verify = _check_bool(verify, "verify")
    batch_size = _validation.check_int(batch_size, "batch_size", hint="ONNX export uses a static batch")
    _required_modules(backend, verify)
    model = _load(model)
    verification.check_finite_weights(model)
    if optimize:
        exported = optimize_for_inference(model, target="cpu", input_shape=input_shape, batch_size=batch_size)
        input_shapes = [tuple(int(d) for d in t.shape) for t in exported.inputs]
    else:
        exported = model
        input_shapes = [tuple(int(d) for d in t.shape) for t in _static_inputs(model, input_shape, batch_size)]
    checks = None
    if verification_data is not None:
        if len(input_shapes) != 1:
            raise ValueError("`verification_data` is supported for single-input models only.")
        limit = verification.VERIFY_BATCHES * batch_size
        checks = _as_batches(verification_data, input_shapes[0][1:], "verification_data", limit)

    with interruptible(), atomic_path(path) as tmp_path:
        if backend == "torch":
            converter = _convert_torch(exported, tmp_path, input_shapes, opset)
        elif backend == "tensorflow":
            converter = _convert_tensorflow(exported, tmp_path, input_shapes, opset)
        else:
            converter = _convert_in_worker(exported, tmp_path, input_shapes, opset)
        info = inspect_onnx(tmp_path)
        if info["opset"] != opset:
            raise ExportError(f"asked for ONNX opset {opset}, the {converter} converter wrote opset {info['opset']}")
        report = OnnxExportReport(
            path=path,
            backend=backend,
            converter=converter,
            opset=info["opset"],
            optimized=optimize,
            input_shapes=[list(s) for s in input_shapes],
            ops=info["ops"],
            file_size=os.path.getsize(tmp_path),
        )
        if verify:
            _verify(report, model, tmp_path, input_shapes, checks)
    report.seconds = time.time() - start
    return report


def inspect_onnx(path):
    """Checks an ONNX file (`onnx.checker`, full shape inference) and counts its operators.

    Args:
        path: the `.onnx` file.

    Returns:
        dict with `"opset"` (the default domain's opset) and `"ops"`
        (operator type -> count, in order of first use; `domain::Op`
        outside the default domain).

    Raises:
        ExportError: if the checker refuses the file (an operator the
            converter could not translate, inconsistent shapes).
    """
    import onnx

    proto = onnx.load(path)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        more = f" (and {len(lines) - 2} more lines)" if len(lines) > 2 else ""
        raise ExportError(f"the ONNX checker refuses the converted model: {' '.join(lines[:2])}{more}") from None
    ops = {}
    for node in proto.graph.node:
        name = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        ops[name] = ops.get(name, 0) + 1
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset, "ops": ops}


def _input_specs(input_shapes):
    return [keras.InputSpec(shape=tuple(shape), dtype="float32") for shape in input_shapes]


def _signature(input_shapes):
    specs = _input_specs(input_shapes)
    return specs if len(specs) == 1 else [specs]


def _conversion_failed(backend, error):
    text = " ".join(str(error).split())
    if len(text) > 500:
        text = text[:500] + " ..."
    return ExportError(f"ONNX conversion on the {backend} backend failed: {type(error).__name__}: {text}")


# --- torch ------------------------------------------------------------------


def _squeeze_dim(self, dim: int):
    """`aten::squeeze.dim` as torch defines it: a no-op unless the dimension is 1."""
    from onnxscript import opset18 as op

    shape = self.shape
    if shape is not None and shape.rank():
        size = shape[dim % shape.rank()]
        if isinstance(size, int) and size != 1:
            return op.Identity(self)
    return op.Squeeze(self, op.Constant(value_ints=[dim]))


def _convert_torch(model, tmp_path, input_shapes, opset):
    import torch

    class Forward(torch.nn.Module):
        def __init__(self, wrapped):
            super().__init__()
            self.wrapped = wrapped

        def forward(self, *inputs):
            outputs = self.wrapped(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
            return tuple(keras.tree.flatten(outputs))

    import logging

    # "torchvision is not installed. Skipping torchvision::nms" and the like, on every export.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    rng = np.random.default_rng(0)
    samples = tuple(keras.ops.convert_to_tensor(rng.standard_normal(s).astype("float32")) for s in input_shapes)
    try:
        with warnings.catch_warnings(), temporary_directory("export") as work:
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                Forward(model).eval(),
                samples,
                dynamo=True,
                opset_version=opset,
                input_names=[f"input_{i}" for i in range(len(samples))] if len(samples) > 1 else ["input"],
                custom_translation_table={torch.ops.aten.squeeze.dim: _squeeze_dim},
                optimize=True,
                verbose=False,
                report=False,
                artifacts_dir=work,
            )
            program.save(tmp_path, external_data=False)
    except Exception as error:
        raise _conversion_failed("torch", error) from error
    finally:
        registration.setLevel(level)
    return "torch.onnx (dynamo)"


# --- TensorFlow ---------------------------------------------------------------


def _grouped_conv_class():
    class TensorFlowGroupedConv2D(keras.layers.Conv2D):
        """A grouped `Conv2D` run as one `tf.nn.convolution` (Keras nests it in an XLA function)."""

        def convolution_op(self, inputs, kernel):
            return _core.grouped_conv(
                inputs, kernel, self.groups, self.strides, self.padding, self.dilation_rate, self.data_format,
                form="tf_nn",
            )

    return TensorFlowGroupedConv2D


def _without_xla_grouped_convs(model):
    """`model` with every grouped `keras.layers.Conv2D` re-expressed for tf2onnx (weights copied)."""
    if not any(_is_grouped_conv(layer) for layer in _model_graph.all_layers(model)):
        return model
    grouped = _grouped_conv_class()

    def clone(layer):
        if not _is_grouped_conv(layer):
            return layer
        new = grouped.from_config(layer.get_config())
        new.build((None, None, None, layer.kernel.shape[2] * layer.groups))
        new.set_weights(layer.get_weights())
        return new

    return keras.models.clone_model(model, clone_function=clone, recursive=True)


def _is_grouped_conv(layer):
    return type(layer) is keras.layers.Conv2D and layer.groups > 1 and layer.data_format == "channels_last"


def _convert_tensorflow(model, tmp_path, input_shapes, opset):
    import logging

    model = _without_xla_grouped_convs(model)
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.export(tmp_path, format="onnx", input_signature=_signature(input_shapes), opset_version=opset,
                         verbose=False)
    except Exception as error:
        raise _conversion_failed("tensorflow", error) from error
    finally:
        logger.setLevel(level)
    return "tf2onnx"


# --- JAX: the TensorFlow route in a worker process ------------------------------


def _convert_in_worker(model, tmp_path, input_shapes, opset):
    with temporary_directory("export") as work:
        keras_path = os.path.join(work, "model.keras")
        model.save(keras_path)
        args = {
            "keras_path": keras_path,
            "out_path": tmp_path,
            "input_shapes": [list(s) for s in input_shapes],
            "opset": opset,
        }
        try:
            result = run_worker(args, "ONNX conversion", module="keras_effconv.export.onnx", timeout=3600)
        except WorkerError as error:
            raise ExportError(str(error)) from None
    return f"{result['converter']} (TensorFlow worker)"


def _worker(args):
    # What a saved model may name: the layers, the networks and the lowering's own layers.
    import keras_effconv.applications  # noqa: F401
    import keras_effconv.export._layers  # noqa: F401
    import keras_effconv.layers  # noqa: F401

    model = load_keras_model(args["keras_path"], argument="keras_path")
    converter = _convert_tensorflow(model, args["out_path"], [tuple(s) for s in args["input_shapes"]], args["opset"])
    return {"converter": converter}


# --- verification ---------------------------------------------------------------


def onnxruntime_outputs(path, batches):
    """Runs an ONNX file with ONNX Runtime (CPU) on input batches.

    Args:
        path: the `.onnx` file.
        batches: a list of batches, each a list of arrays (one per model
            input, in order).

    Returns:
        Per batch, the list of output arrays in the model's output order.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return [[np.asarray(o) for o in session.run(None, dict(zip(names, batch)))] for batch in batches]


def _verify(report, model, tmp_path, input_shapes, data):
    batches = verification._verification_batches(data, input_shapes)
    onnx_outputs = onnxruntime_outputs(tmp_path, batches)
    expected = []
    for inputs in batches:
        result = model(inputs[0] if len(inputs) == 1 else inputs, training=False)
        expected.append([np.asarray(keras.ops.convert_to_numpy(e)) for e in keras.tree.flatten(result)])
    verification._finite_or_raise(expected, "the Keras model's outputs are not finite (check the weights and the inputs)")
    verification._finite_or_raise(onnx_outputs, "ONNX Runtime's outputs are not finite")
    diff, scale = 0.0, 0.0
    for keras_outputs, runtime_outputs in zip(expected, onnx_outputs):
        if len(keras_outputs) != len(runtime_outputs):
            raise ExportError(f"the ONNX model has {len(runtime_outputs)} outputs, the Keras model {len(keras_outputs)}")
        for e, o in zip(keras_outputs, runtime_outputs):
            if e.shape != o.shape:
                raise ExportError(f"an ONNX output has shape {o.shape}, Keras' {e.shape}")
            diff = max(diff, float(np.max(np.abs(e.astype("float64") - o.astype("float64")))))
            scale = max(scale, float(np.max(np.abs(e))))
    report.max_abs_diff, report.output_scale, report.samples = diff, scale, len(batches)
    tolerance = verification.FLOAT32_TOLERANCE
    if diff > tolerance * max(1.0, scale):
        raise ExportError(
            f"ONNX Runtime output differs from Keras by {diff:.3g} > {tolerance:g} x max(1, |output| = {scale:.3g})"
        )


if __name__ == "__main__":
    sys.exit(worker_main(_worker))
