"""The graph module: the package's only window on Keras' private graph API."""

import numpy as np
import pytest

import keras

import reference
from keras_effconv import _model_graph


def _branchy_model():
    """Input -> conv -> (shared dense twice, nested model) -> add: nodes of every kind."""
    inputs = keras.Input((6,), name="x")
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    shared = keras.layers.Dense(4, name="shared")
    left = shared(shared(hidden))
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(4, name="inner_dense")(inner_in), name="inner")
    right = inner(hidden)
    outputs = keras.layers.Add(name="add")([left, right])
    return keras.Model(inputs, outputs, name="branchy"), shared


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_is_functional_and_functional_graph():
    model, _ = _branchy_model()
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    subclassed = _Subclassed()
    assert _model_graph.is_functional(model)
    assert not _model_graph.is_functional(sequential)
    assert not _model_graph.is_functional(subclassed)
    assert not _model_graph.is_functional(keras.layers.Dense(2))
    assert _model_graph.functional_graph(model, "test") is model
    assert _model_graph.is_functional(_model_graph.functional_graph(sequential, "test"))
    with pytest.raises(ValueError, match="`purpose` needs a Functional or Sequential model"):
        _model_graph.functional_graph(subclassed, "`purpose`")
    with pytest.raises(ValueError, match="no input shape yet"):
        _model_graph.functional_graph(keras.Sequential([keras.layers.Dense(2)]), "`purpose`")


def test_all_layers_enters_nested_models():
    model, _ = _branchy_model()
    names = [layer.name for layer in _model_graph.all_layers(model)]
    assert "inner" in names and "inner_dense" in names and "shared" in names


def test_nodes_in_order_is_topological():
    model, shared = _branchy_model()
    nodes = _model_graph.nodes_in_order(model)
    assert isinstance(nodes[0].operation, keras.layers.InputLayer)
    assert nodes[0].input_tensors == ()
    assert [n.operation.name for n in nodes].count("shared") == 2
    assert [n.operation.name for n in nodes].count("inner") == 1  # a nested model is one node
    produced = set()
    for node in nodes:
        assert all(id(t) in produced for t in node.input_tensors), node.operation.name
        produced.update(id(t) for t in node.output_tensors)
    assert id(model.outputs[0]) in produced


def test_inbound_nodes_and_producer():
    model, shared = _branchy_model()
    first, second = _model_graph.inbound_nodes(shared)
    assert second.input_tensors == first.output_tensors
    assert _model_graph.producer(second.output_tensors[0]) is shared
    assert _model_graph.producer(model.outputs[0]).name == "add"
    assert isinstance(_model_graph.producer(model.inputs[0]), keras.layers.InputLayer)
    assert _model_graph.inbound_nodes(keras.layers.Dense(2)) == []
    with pytest.raises(ValueError, match="produced by a layer"):
        _model_graph.producer(np.zeros(3))


@pytest.mark.parametrize("kind", ["functional", "sequential"])
def test_run_graph_calls_every_operation(kind, rng):
    if kind == "functional":
        model, _ = _branchy_model()
        x = rng.standard_normal((2, 6)).astype("float32")
    else:
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, name="a"), keras.layers.Dense(2, name="b")])
        x = rng.standard_normal((2, 6)).astype("float32")
    called = []

    def call_fn(operation, *args, **kwargs):
        called.append(operation.name)
        return operation(*args, **kwargs)

    outputs = _model_graph.run_graph(model, keras.ops.convert_to_tensor(x), call_fn)
    np.testing.assert_allclose(reference.to_numpy(outputs), reference.to_numpy(model(x)), rtol=1e-6)
    expected = ["hidden", "shared", "shared", "inner", "add"] if kind == "functional" else ["a", "b"]
    assert sorted(called) == sorted(expected)


def test_tensor_refs_round_trip():
    model, shared = _branchy_model()
    for node in _model_graph.nodes_in_order(model):
        for tensor in node.output_tensors:
            ref = _model_graph.tensor_ref(model, tensor)
            assert _model_graph.tensor_from_ref(model, ref) is tensor
    with pytest.raises(ValueError, match="inside the graph"):
        _model_graph.tensor_ref(model, keras.Input((6,)))
    with pytest.raises(ValueError, match="has no tensor"):
        _model_graph.tensor_from_ref(model, ["shared", 5, 0])
    with pytest.raises(ValueError, match="has no tensor"):
        _model_graph.tensor_from_ref(model, ["no_such_layer", 0, 0])


def test_obtain_input_shape_is_keras_own():
    shape = _model_graph.obtain_input_shape(
        None, default_size=224, min_size=32, data_format="channels_last", require_flatten=True
    )
    assert shape == (224, 224, 3)
    with pytest.raises(ValueError, match="input_shape"):
        _model_graph.obtain_input_shape(
            (16, 16, 3), default_size=224, min_size=32, data_format="channels_last", require_flatten=False
        )