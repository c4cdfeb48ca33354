"""Reading the layer graph of Functional and Sequential models (shared by
`convert`, `profile` and the export rewrite)."""

import keras


def all_layers(model):
    """Every layer of `model`, nested models' layers included (depth first)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def functional_graph(model, purpose):
    """The Functional graph that runs `model`.

    Args:
        model: a `keras.Model`.
        purpose: what needs the graph, for the error messages (e.g.
            "`profile`").

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
    if not hasattr(model, "_run_through_graph"):
        raise ValueError(
            f"{purpose} needs a Functional or Sequential model, whose graph of layers "
            f"it can read. Received a subclassed model '{model.name}' ({type(model).__name__})."
        )
    return model
