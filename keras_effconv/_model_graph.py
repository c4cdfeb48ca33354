"""The one module that reads Keras' private graph API.

Keras 3 has no public API for the graph of layers inside a Functional model
(which operation made a tensor, the calls of a layer, running the graph with
a custom call). Everything in keras_effconv that needs it (`convert`,
`profile`, the decompositions, the export rewrite, quantization-aware
training, the serializable application model) goes through the small
functions below, so a Keras upgrade that changes those internals is fixed
here, in one place. `tests/test_architecture.py` checks that no other module
touches `keras.src` or the private graph attributes.

Graph nodes are handed out as `GraphNode` tuples (`operation`,
`input_tensors`, `output_tensors`), never as Keras' own `Node` objects.
"""

import collections

import keras
from keras.src.applications import imagenet_utils as _imagenet_utils
from keras.src.ops.function import make_node_key as _make_node_key

GraphNode = collections.namedtuple("GraphNode", ["operation", "input_tensors", "output_tensors"])
GraphNode.__doc__ = """One call of an operation in a graph of layers.

Attributes:
    operation: the layer (or operation) that was called.
    input_tensors: tuple of the `KerasTensor`s it was called on (empty for
        the node of an `InputLayer`).
    output_tensors: tuple of the `KerasTensor`s the call produced.
"""


def _graph_node(node):
    return GraphNode(node.operation, tuple(node.input_tensors), tuple(node.output_tensors))


def all_layers(model):
    """Every layer of `model`, nested models' layers included (depth first)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def is_functional(layer):
    """Whether `layer` is a Functional model (a model with a graph of layers).

    Sequential models are not (use `functional_graph` to get theirs);
    subclassed models are not either (their graph is not visible).
    """
    # `Functional` is not exported by Keras: recognise it by its graph bookkeeping.
    return (
        isinstance(layer, keras.Model)
        and not isinstance(layer, keras.Sequential)
        and getattr(layer, "_nodes_by_depth", None) is not None
        and hasattr(layer, "_run_through_graph")
    )


def functional_graph(model, purpose):
    """The Functional graph that runs `model`.

    Args:
        model: a `keras.Model`.
        purpose: what needs the graph, for the error messages (e.g.
            "`profile`").

    Returns:
        `model` itself for a Functional model, the Functional model Keras
        keeps inside a built Sequential model.

    Raises:
        ValueError: for a Sequential model without an input shape, or a
            subclassed model (whose graph of layers is not visible).
    """
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise ValueError(
                f"{purpose}: Sequential model '{model.name}' has no input shape yet; "
                "start it with `keras.Input(shape)` (or build it) first."
            )
        return functional
    if not is_functional(model):
        raise ValueError(
            f"{purpose} needs a Functional or Sequential model, whose graph of layers "
            f"it can read. Received a subclassed model '{model.name}' ({type(model).__name__})."
        )
    return model


def nodes_in_order(model):
    """Every node of a Functional graph, in topological order.

    Inputs come first (their `InputLayer` nodes), each node after all nodes
    that produce its inputs; nested models appear as one node (their
    operation is the nested model). This is the order Keras itself runs the
    graph in.

    Args:
        model: a Functional model (see `functional_graph`).

    Returns:
        A list of `GraphNode`.
    """
    by_depth = model._nodes_by_depth
    return [_graph_node(node) for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def inbound_nodes(layer):
    """One `GraphNode` per call of `layer` on symbolic tensors, oldest first.

    A layer shared by several models (or cloned with
    `clone_function=lambda layer: layer`) lists the calls of all of them.
    """
    return [_graph_node(node) for node in getattr(layer, "_inbound_nodes", [])]


def producer(tensor):
    """The operation (layer) whose call produced the `KerasTensor` `tensor`.

    For a model input this is its `InputLayer`.

    Raises:
        ValueError: if `tensor` was not produced by a layer call.
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        raise ValueError(f"Expected a KerasTensor produced by a layer. Received: tensor={tensor!r}")
    return history.operation


def run_graph(model, inputs, call_fn):
    """Runs the graph of `model` on `inputs`, calling every operation with `call_fn`.

    The same executor `Functional.call` and `keras.models.clone_model` use:
    each node's arguments are filled in from the values computed so far and
    `call_fn(operation, *args, **kwargs)` computes its outputs. Nested models
    are single operations: `call_fn` decides whether to call or enter them.
    Works with real tensors (eager) and with `KerasTensor`s (symbolic).

    Args:
        model: a Functional or built Sequential model.
        inputs: values for `model.inputs` (any structure, flattened in
            order).
        call_fn: `(operation, *args, **kwargs) -> outputs`.

    Returns:
        The values of the model's outputs, in the structure of
        `model.outputs`.
    """
    graph = functional_graph(model, "run_graph")
    return graph._run_through_graph(inputs, operation_fn=lambda op: op, call_fn=call_fn)


def tensor_ref(model, tensor):
    """Where `tensor` lives in the graph of `model`, as JSON-friendly data.

    The reference has the format of the tensors in a Functional model's
    config (`[layer name, node index, tensor index]`, node indices counted
    among the nodes of `model` only), so it survives `get_config` /
    `from_config` and `.keras` files. Inverse of `tensor_from_ref`.

    Raises:
        ValueError: if `tensor` is not a tensor of the graph of `model`.
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None or _make_node_key(history.operation, history.node_index) not in model._nodes:
        raise ValueError(
            f"Expected a tensor computed inside the graph of model '{model.name}' "
            f"(from its inputs). Received: tensor={tensor!r}"
        )
    operation = history.operation
    # A nested Functional model keeps one node of its own (input -> output)
    # before its calls; Functional configs count it.
    index = 1 if is_functional(operation) else 0
    for i in range(history.node_index):
        if _make_node_key(operation, i) in model._nodes:
            index += 1
    return [operation.name, index, history.tensor_index]


def tensor_from_ref(model, ref):
    """The tensor of the graph of `model` that `tensor_ref` described.

    Raises:
        ValueError: if `model` has no such layer, node or tensor.
    """
    name, index, tensor_index = ref
    try:
        operation = model.get_layer(name)
        if is_functional(operation):
            index -= 1
        own = [node for i, node in enumerate(operation._inbound_nodes) if _make_node_key(operation, i) in model._nodes]
        return own[index].output_tensors[tensor_index]
    except (ValueError, IndexError, TypeError) as error:
        raise ValueError(f"Model '{model.name}' has no tensor {ref!r}: {error}") from None


def obtain_input_shape(input_shape, default_size, min_size, data_format, require_flatten):
    """`keras.applications`' own validation of `input_shape` (same messages).

    Returns:
        The full per-sample input shape.

    Raises:
        ValueError: for an invalid `input_shape`, as keras' applications do.
    """
    return _imagenet_utils.obtain_input_shape(
        input_shape,
        default_size=default_size,
        min_size=min_size,
        data_format=data_format,
        require_flatten=require_flatten,
        weights=None,
    )


def copy_layer(layer, config, purpose, model):
    """`layer.__class__.from_config(config)`, saying what to do when Keras refuses a Lambda layer.

    Keras re-creates a `Lambda` layer whose function is Python code (a
    `lambda` or a local function) only with unsafe deserialization enabled,
    and its message then advises passing `safe_mode=False` "to the loading
    function", which does not apply to a copy made in memory. This names the
    layer and says how to make the model copyable instead.

    Args:
        layer: the layer to copy.
        config: the config to create the copy from (usually
            `layer.get_config()`, possibly edited).
        purpose: what copies the model, for the message (e.g. "`convert`").
        model: the model being copied, for the message.

    Returns:
        The new layer.

    Raises:
        ValueError: for a Lambda layer that Keras will not re-create.
    """
    try:
        return layer.__class__.from_config(config)
    except Exception:  # noqa: BLE001 - re-raised as is unless it is the Lambda refusal
        if not isinstance(layer, keras.layers.Lambda):
            raise
    raise ValueError(
        f"{purpose} rebuilds model '{model.name}' layer by layer from their configs, and Keras "
        f"does not re-create its Lambda layer '{layer.name}' from its config: the layer's function is "
        "Python code (a lambda or a local function), which Keras refuses to deserialize in safe mode. "
        f"Replace '{layer.name}' by a built-in Keras layer, or by a small layer class registered with "
        "`keras.saving.register_keras_serializable()` whose `call` does the same with `keras.ops`, "
        f"then call {purpose} again."
    ) from None
