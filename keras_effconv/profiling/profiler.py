"""`profile()`: per-layer MACs and parameters of a Keras model."""

import dataclasses

import keras
from keras import tree

from keras_effconv import _validation
from keras_effconv._model_graph import functional_graph
from keras_effconv._model_graph import run_graph
from keras_effconv.profiling.macs import layer_macs


@dataclasses.dataclass
class LayerCost:
    """One call of one layer: `name` (nested models as `outer/inner`), `type`,
    `output_shape`, `params` (counted at the layer's first call only) and
    `macs` (None when no rule covers the layer)."""

    name: str
    type: str
    output_shape: tuple
    params: int
    macs: object


def format_count(value):
    """`3_868_000_000 -> "3.87 G"`, `25_636_712 -> "25.64 M"`."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {suffix}"
    return str(value)


class Profile:
    """The result of `profile()`.

    Attributes:
        model_name: name of the profiled model.
        input_shape: the per-sample input shape(s) used.
        rows: list of `LayerCost`, in execution order.
        total_macs: multiply-accumulates for one sample (1 MAC = 2 FLOPs).
        total_flops: `2 * total_macs`.
        total_params: all parameters (`model.count_params()`).
        trainable_params: trainable parameters.
        uncounted: names of layers with weights that no MAC rule covers
            (their MACs are left out of `total_macs`).
    """

    def __init__(self, model, input_shape, rows):
        self.model_name = model.name
        self.input_shape = input_shape
        self.rows = rows
        self.total_macs = sum(row.macs or 0 for row in rows)
        self.total_flops = 2 * self.total_macs
        self.total_params = int(model.count_params())
        self.trainable_params = int(sum(keras.ops.size(w) for w in model.trainable_weights))
        self.uncounted = [row.name for row in rows if row.macs is None]

    def to_dict(self):
        """Totals and rows as plain Python values (JSON-serialisable)."""
        return {
            "model": self.model_name,
            "input_shape": self.input_shape,
            "total_macs": self.total_macs,
            "total_flops": self.total_flops,
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "uncounted": list(self.uncounted),
            "layers": [dataclasses.asdict(row) for row in self.rows],
        }

    def summary(self):
        text = (
            f"{self.model_name}: {format_count(self.total_macs)} MACs "
            f"({format_count(self.total_flops)} FLOPs; 1 MAC = 2 FLOPs), "
            f"{format_count(self.total_params)} params, input {self.input_shape}"
        )
        if self.uncounted:
            text += f"; MACs of {len(self.uncounted)} layer(s) not counted: {self.uncounted}"
        return text

    def to_markdown(self, only_costly=False):
        """A markdown table of the layers followed by the totals.

        Args:
            only_costly: if True, list only layers with parameters or MACs.
        """
        lines = [
            "| layer | type | output shape | params | MACs |",
            "|---|---|---|---:|---:|",
        ]
        for row in self.rows:
            if only_costly and not row.params and not row.macs:
                continue
            macs = "?" if row.macs is None else f"{row.macs:,}"
            lines.append(f"| {row.name} | {row.type} | {row.output_shape} | {row.params:,} | {macs} |")
        lines.append(
            f"| **total** | | | **{self.total_params:,}** | **{self.total_macs:,}** "
            f"({format_count(self.total_macs)} MACs = {format_count(self.total_flops)} FLOPs) |"
        )
        return "\n".join(lines)

    def __str__(self):
        return self.summary()

    def __repr__(self):
        return f"<Profile {self.summary()}>"


def _is_shape(value):
    return isinstance(value, (tuple, list)) and all(
        d is None or (_validation.is_int(d) and d > 0) for d in value
    )


def _shape(spec):
    return tuple(tree.flatten(spec)[0].shape)


def _nested_graph(operation):
    """The graph of a nested Functional/Sequential model, else None (a leaf)."""
    if not isinstance(operation, keras.Model):
        return None
    try:
        return functional_graph(operation, "`profile`")
    except ValueError:
        return None


def _spec_problem(operation, args):
    """How the shapes of `args` break `operation.input_spec` (rank, fixed axes), or None.

    `compute_output_spec` does not check the input spec (a layer call does),
    so a `Conv2D` built for 16 channels would be counted on 3.
    """
    specs = getattr(operation, "input_spec", None)
    if specs is None:
        return None
    specs = list(specs) if isinstance(specs, (list, tuple)) else [specs]
    tensors = [t for t in tree.flatten(args) if hasattr(t, "shape")]
    for spec, tensor in zip(specs, tensors):
        if not isinstance(spec, keras.layers.InputSpec):
            continue
        shape = tuple(tensor.shape)
        if spec.ndim is not None and not spec.allow_last_axis_squeeze and len(shape) != spec.ndim:
            return f"expects rank-{spec.ndim} inputs (batch included) but would get shape {shape}"
        if spec.min_ndim is not None and len(shape) < spec.min_ndim:
            return f"expects inputs of rank >= {spec.min_ndim} but would get shape {shape}"
        for axis, value in (spec.axes or {}).items():
            if value is not None and -len(shape) <= axis < len(shape):
                if shape[axis] is not None and shape[axis] != value:
                    return f"expects axis {axis} of its input to be {value} but would get shape {shape}"
        if spec.shape is not None and len(spec.shape) == len(shape):
            for axis, (value, dim) in enumerate(zip(spec.shape, shape)):
                if value is not None and dim is not None and value != dim:
                    return f"expects axis {axis} of its input to be {value} but would get shape {shape}"
    return None


def _input_shape_error(model, input_shape, what):
    """The error for an `input_shape` that does not fit `model`."""
    model_shapes = [tuple(t.shape[1:]) for t in tree.flatten(model.inputs)]
    model_shape = model_shapes[0] if len(model_shapes) == 1 else model_shapes
    return _validation.invalid_value(
        "input_shape",
        f"model '{model.name}' has the per-sample input shape {model_shape} (None = any size), and {what}",
        input_shape,
    )


def _walk(graph, inputs, prefix, rows, seen, check):
    def call(operation, /, *args, **kwargs):
        nested = _nested_graph(operation)
        if nested is not None:
            return _walk(
                nested, args[0] if len(args) == 1 else args, f"{prefix}{operation.name}/", rows, seen, check
            )
        problem = _spec_problem(operation, args)
        if problem is not None:
            check(f"its layer '{prefix}{operation.name}' ({type(operation).__name__}) {problem}", None)
        try:
            outputs = operation.compute_output_spec(*args, **kwargs)
        except ValueError as error:
            check(
                f"its layer '{prefix}{operation.name}' ({type(operation).__name__}) cannot take the "
                f"shape {_shape(args)} it would get: {error}",
                error,
            )
            raise
        first_call = id(operation) not in seen
        seen.add(id(operation))
        params = int(operation.count_params()) if first_call and hasattr(operation, "count_params") else 0
        rows.append(
            LayerCost(
                name=prefix + operation.name,
                type=type(operation).__name__,
                output_shape=_shape(outputs),
                params=params,
                macs=layer_macs(operation, _shape(args), _shape(outputs)),
            )
        )
        return outputs

    return run_graph(graph, inputs, call)


def profile(model, input_shape=None):
    """Counts the MACs and parameters of every layer of a Keras model.

    Covers Keras' built-in layers (`Conv1D/2D/3D` including `groups`,
    `DepthwiseConv1D/2D`, `SeparableConv1D/2D`, `Conv*Transpose`, `Dense`,
    `EinsumDense`, normalization, pooling, activations, merging and reshaping
    layers), every keras_effconv layer (through its `compute_macs`), and
    nested Functional/Sequential models. Counts are for ONE sample; every
    kernel tap counts, also taps on `"same"` padding; bias, activation,
    normalization and pooling count 0 MACs (see `profiling.macs`). A layer
    with weights that no rule covers is listed in `uncounted` and shown as
    `?`, never silently added as 0.

    Args:
        model: a built Functional or Sequential `keras.Model`.
        input_shape: optional per-sample input shape (without the batch
            dimension), or a list of them for several inputs; defaults to the
            model's own input shapes, which must then have known spatial
            sizes.

    Returns:
        A `Profile` (`total_macs`, `total_flops`, `total_params`, `rows`,
        `to_dict()`, `to_markdown()`).

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: for a subclassed model, a wrong number of input shapes,
            an input shape whose rank or fixed sizes (e.g. the channels a
            layer was built for) do not fit the model, or unknown spatial
            sizes where a MAC count needs them.

    Example:

    >>> model = keras.applications.ResNet50(weights=None)
    >>> result = profile(model)
    >>> round(result.total_macs / 1e9, 2), result.total_params
    (3.86, 25636712)
    """
    _validation.check_type(model, "model", keras.Model, "a keras.Model")
    graph = functional_graph(model, "`profile`")
    model_inputs = tree.flatten(graph.inputs)
    if input_shape is None:
        specs = model_inputs
    else:
        shapes = [input_shape] if len(model_inputs) == 1 else list(input_shape)
        if len(shapes) != len(model_inputs) or not all(_is_shape(s) for s in shapes):
            raise _validation.invalid_value(
                "input_shape",
                f"model '{model.name}' has {len(model_inputs)} input(s); pass one per-sample shape tuple per "
                "input (without the batch dimension)",
                input_shape,
            )
        for shape, model_input in zip(shapes, model_inputs):
            if len(shape) != len(model_input.shape) - 1:
                raise _input_shape_error(
                    model,
                    input_shape,
                    f"input_shape must have the same rank ({len(model_input.shape) - 1}, without the batch "
                    f"dimension), not {len(shape)}",
                )
        specs = [
            keras.KerasTensor((None,) + tuple(None if d is None else int(d) for d in s), dtype=i.dtype)
            for s, i in zip(shapes, model_inputs)
        ]

    def check(what, error):
        # Shapes given by the caller that the model cannot take are the caller's input_shape;
        # the model's own shapes that fail are a problem of the model: its error stays as it is.
        if input_shape is not None:
            raise _input_shape_error(model, input_shape, what) from error

    rows = []
    _walk(graph, specs, "", rows, set(), check)
    used = [tuple(spec.shape[1:]) for spec in specs]
    return Profile(model, used[0] if len(used) == 1 else used, rows)
