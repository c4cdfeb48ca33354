"""The registry of export lowering rules: how each layer class is rewritten.

A lowering rule turns one call of a layer into mobile-friendly Keras layers
through the rewriter's emission helpers (`keras_effconv.export.rewriter`).
Each conv method registers the rule for its layer in
`keras_effconv/export/lowering/<method>.py`; Keras' own layers get theirs the
same way (`lowering/keras_layers.py`). A rule reads only public, documented
accessors of its layer (`inference_form()`, `dense_kernel()`, weights).

Example (a layer that is a plain convolution with a doubled kernel):

>>> import keras
>>> from keras_effconv.export import Term, lowering_rule
>>> class DoubledConv2D(keras.layers.Conv2D):
...     def call(self, x):
...         return super().call(x) * 2.0
>>> @lowering_rule(DoubledConv2D)
... def lower_doubled(rewriter, call):
...     layer, value = call.layer, call.value
...     kernel = 2.0 * rewriter.numpy(layer.kernel)
...     bias = 2.0 * rewriter.numpy(layer.bias)
...     return rewriter.linear([Term("conv", rewriter.materialize(value), kernel, bias, layer.name)])
>>> unregister_lowering_rule(DoubledConv2D)
"""

import collections

from keras_effconv import _validation

LoweringCall = collections.namedtuple("LoweringCall", ["layer", "inputs", "args", "kwargs"])
LoweringCall.__doc__ = """One call of a layer, as a lowering rule receives it.

Attributes:
    layer: the original layer.
    inputs: the rewritten inputs, one `Value` per input tensor.
    args, kwargs: the call's arguments, with the rewritten tensors in place
        of the original ones (for rules that call a clone of the layer).
"""
LoweringCall.value = property(lambda self: self.inputs[0], doc="The first (usually only) input `Value`.")

_RULES = {}


def lowering_rule(*layer_classes):
    """Decorator registering `rule(rewriter, call) -> Value | list[Value]` for layer classes.

    The rule applies to the classes and their subclasses (the nearest
    registered class in the method resolution order wins).

    Args:
        *layer_classes: one or more `keras.layers.Layer` subclasses.

    Returns:
        The decorator; it returns the rule unchanged.

    Raises:
        ValueError: if no class is given or an argument is not a class.
    """
    if not layer_classes or not all(isinstance(c, type) for c in layer_classes):
        raise _validation.invalid_value("layer_classes", "expected one or more layer classes", layer_classes)

    def register(rule):
        for layer_class in layer_classes:
            _RULES[layer_class] = rule
        return rule

    return register


def unregister_lowering_rule(layer_class):
    """Removes the rule registered for exactly `layer_class` (no error if none)."""
    _RULES.pop(layer_class, None)


def rule_for(layer):
    """The rule for `layer`'s class or its nearest registered base class, or None."""
    for cls in type(layer).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return None
