"""Model surgery for the decompositions: rebuild and run layer by layer (MACs via the profiler).

A Functional or Sequential model (nested ones included, at any depth) is
rebuilt leaf layer by leaf layer: every leaf layer gets a fresh copy made
from its config, then its weights are copied over, so the input model is
never touched (not even a new graph node is added to it). A selected layer
can instead be replaced by a chain of new layers. Nested models stay nested.

Eager execution "layer by layer" (`run_graph`) lets the decompositions read
the input of any layer, also inside nested models, without building probe
models: Keras 3's own graph executor (the routine `Functional.call` and
`keras.models.clone_model` use, reached through
`keras_effconv._model_graph.run_graph`) is driven with a custom call
function.
"""


import numpy as np

import keras
from keras import ops
from keras import tree

from keras_effconv import _model_graph
from keras_effconv import _validation


class _Stop(Exception):
    """Raised by a call hook to end a layer-by-layer run early."""


def is_sequential(layer):
    return isinstance(layer, keras.Sequential)


def is_functional(layer):
    return _model_graph.is_functional(layer)


def is_container(layer):
    return is_sequential(layer) or is_functional(layer)


def check_model(model):
    if not is_container(model):
        raise _validation.invalid_value(
            "model",
            "expected a built Functional or Sequential `keras.Model` (subclassed models have no graph to rebuild)",
            received=f"model={model!r} of type {type(model).__name__}",
        )
    if not model.built or not model.inputs:
        raise _validation.invalid_value(
            "model",
            "the model must be built with a known input (e.g. start a Sequential model with `keras.Input`)",
            received=f"the unbuilt model '{model.name}'",
        )


def leaf_layers(model):
    """All distinct non-container layers, depth first in `model.layers` order."""
    seen, result = set(), []

    def visit(container):
        for layer in container.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if is_container(layer):
                visit(layer)
            else:
                result.append(layer)

    visit(model)
    return result


def all_layer_names(model):
    names = set()

    def visit(container):
        names.add(container.name)
        for layer in container.layers:
            names.add(layer.name)
            if is_container(layer):
                visit(layer)

    visit(model)
    return names


def run_graph(model, inputs, call):
    """Runs `model` on `inputs`, computing every leaf layer with `call(layer, args, kwargs)`.

    Works with real tensors (eager) and with `KerasTensor`s (symbolic).
    Nested containers are entered, not called, so `call` sees every leaf.
    """
    if is_sequential(model):
        x = inputs
        for layer in model.layers:
            x = run_graph(layer, x, call) if is_container(layer) else call(layer, (x,), {})
        return x

    def call_fn(op, *args, **kwargs):
        if is_container(op):
            return run_graph(op, args[0], call)
        return call(op, args, kwargs)

    return _model_graph.run_graph(model, inputs, call_fn)


def input_structure(model):
    """The model's input KerasTensors in the structure `model(...)` expects."""
    if is_sequential(model):
        return model.inputs[0]
    return model.input


def model_inputs(model, x):
    """Converts a batch (array or structure of arrays) to the model's input dtypes."""
    flat = tree.flatten(x)
    specs = model.inputs
    converted = [ops.convert_to_tensor(v, dtype=s.dtype) for v, s in zip(flat, specs)]
    return converted[0] if len(converted) == 1 else converted


def capture_inputs(model, x, targets):
    """Runs `model` eagerly on `x` and returns `{id(layer): [input per call]}`.

    `targets` maps `id(layer)` to the number of calls to wait for; the run
    stops as soon as every target has been called that often.
    """
    pending = dict(targets)
    captured = {key: [] for key in targets}

    def call(layer, args, kwargs):
        key = id(layer)
        if key in pending:
            captured[key].append(args[0])
            pending[key] -= 1
            if pending[key] == 0:
                del pending[key]
            if not pending:
                raise _Stop
        return layer(*args, **kwargs)

    try:
        run_graph(model, model_inputs(model, x), call)
    except _Stop:
        pass
    return captured


class Replacement:
    """A chain of new layers standing for one original layer in a rebuilt model."""

    def __init__(self, layers):
        self.layers = list(layers)

    def __call__(self, x, **kwargs):
        # Keras passes `mask` (and may pass `training`) to every call in a graph; the
        # replacement layers take neither from their predecessor's node.
        for layer in self.layers:
            x = layer(x)
        return x


class PlaceholderZeros(keras.initializers.Initializer):
    """Zeros as a NumPy array: no backend op, so no XLA compilation per shape on JAX.

    Only used for weights that are overwritten right after the build.
    """

    def __call__(self, shape, dtype=None):
        try:
            return np.zeros(shape, dtype=dtype or keras.backend.floatx())
        except TypeError:  # a dtype NumPy does not know (e.g. bfloat16 without ml_dtypes)
            return ops.zeros(shape, dtype=dtype)


def _initializer_keys(layer, config):
    """Config keys of initializers that mirror an attribute of the same name."""
    keys = [k for k, v in config.items() if k.endswith("_initializer") and v is not None]
    for key in keys:
        value = getattr(layer, key, None)
        if value is None or keras.initializers.serialize(value) != config[key]:
            return None  # unusual layer: no shortcut
    return keys


def clone_layer(layer, purpose, model):
    """A fresh copy of `layer` from its config, built without random initialisation.

    Its weights are overwritten right after the build, so drawing random
    initial values is wasted work (on JAX every new shape compiles a random
    kernel: seconds for a ResNet). The copy is created with "zeros"
    initializers and gets the original initializers back afterwards
    (`restore_initializers`), so its config equals the original's.
    `purpose` and `model` name the operation and the model in the error
    for a Lambda layer Keras will not re-create (`_model_graph.copy_layer`).
    """
    config = layer.get_config()
    keys = _initializer_keys(layer, config)
    if not keys:
        return _model_graph.copy_layer(layer, config, purpose, model), ()
    fast = dict(config, **{key: PlaceholderZeros() for key in keys})
    return _model_graph.copy_layer(layer, fast, purpose, model), tuple((key, config[key]) for key in keys)


def restore_initializers(layer, initializers):
    for key, value in initializers:
        setattr(layer, key, keras.initializers.get(value))


def rebuild(model, replace, purpose):
    """Rebuilds `model` with fresh layers, replacing some of them.

    Args:
        model: a built Functional or Sequential model.
        replace: callable `layer -> list of new layers or None`; `None`
            clones the layer and copies its weights, a list replaces it by
            that chain (their weights are the caller's job).
        purpose: the public function rebuilding it, for error messages
            (e.g. "`depthwise_decompose`").

    Returns:
        `(new_model, chains, order, calls)`: `chains` maps `id(old layer)` to
        its replacement chain, `order` lists the replaced layers in
        topological order of their first call, `calls` maps `id(old layer)`
        to its number of calls in one forward pass.
    """
    memo = {}
    copies = []
    chains = {}
    order = []
    calls = {}

    def convert(layer):
        key = id(layer)
        if key not in memo:
            if is_container(layer):
                memo[key] = rebuild_container(layer)
            else:
                chain = replace(layer)
                if chain is None:
                    new, initializers = clone_layer(layer, purpose, model)
                    copies.append((layer, new, initializers))
                    memo[key] = new
                else:
                    chains[key] = list(chain)
                    memo[key] = Replacement(chain)
        return memo[key]

    def note_call(layer):
        key = id(layer)
        if key in chains:
            if key not in calls:
                order.append(layer)
            calls[key] = calls.get(key, 0) + 1

    def rebuild_container(container):
        if is_sequential(container):
            reference = container.inputs[0]
            new_layers = []
            for layer in container.layers:
                new = convert(layer)
                if not is_container(layer):
                    note_call(layer)
                new_layers.extend(new.layers if isinstance(new, Replacement) else [new])
            new_model = keras.Sequential(
                [keras.Input(batch_shape=reference.shape, dtype=reference.dtype)] + new_layers,
                name=container.name,
            )
        else:
            new_inputs = tree.map_structure(
                lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name),
                container.input,
            )

            def call_fn(op, *args, **kwargs):
                new = convert(op)
                if not is_container(op):
                    note_call(op)
                return new(*args, **kwargs)

            outputs = _model_graph.run_graph(container, new_inputs, call_fn)
            new_model = keras.Model(new_inputs, outputs, name=container.name)
        new_model.trainable = container.trainable
        return new_model

    new_model = rebuild_container(model)
    for old, new, initializers in copies:
        new.set_weights(old.get_weights())
        restore_initializers(new, initializers)
    return new_model, chains, order, calls


def unique_name(base, taken):
    name, i = base, 1
    while name in taken:
        name = f"{base}_{i}"
        i += 1
    taken.add(name)
    return name


def call_shapes(model):
    """`[(leaf layer, input shape, output shape)]` for every call, from a symbolic walk.

    Uses `compute_output_spec`, which creates no graph nodes, so the model is
    left untouched.
    """
    records = []

    def call(layer, args, kwargs):
        out = layer.compute_output_spec(*args, **kwargs)
        first_in = tree.flatten(args[0])[0] if args else None
        first_out = tree.flatten(out)[0]
        records.append(
            (layer, None if first_in is None else tuple(first_in.shape), tuple(first_out.shape))
        )
        return out

    inputs = tree.map_structure(
        lambda t: keras.KerasTensor(t.shape, dtype=t.dtype), input_structure(model)
    )
    run_graph(model, inputs, call)
    return records


def model_macs(model):
    """Analytic MACs for one sample (`keras_effconv.profile`), or None.

    None when a spatial size is unknown or a layer with weights has no MAC
    rule, so callers never compare partial counts.
    """
    from keras_effconv.profiling import profile

    try:
        result = profile(model)
    except ValueError:
        return None
    return None if result.uncounted else result.total_macs
