"""Shrink trained networks: depthwise (SVD / data-driven GSVD) and channel decomposition.

- `depthwise_decompose(model, rank=1, energy=None, method="svd" | "data", data=None,
  layers=None)`: every selected k x k `Conv2D` becomes `DepthwiseConv2D` +
  `1 x 1` `Conv2D` (He et al., arXiv 1910.09455).
- `expand_separable(model, layers=None)`: every depthwise + pointwise pair
  becomes one regular k x k `Conv2D` with the same function (the structure
  the paper trains before decomposing back with `insert_batchnorm=True`).
- `channel_decompose(model, ratio=None, macs=None, data=None, layers=None)`:
  k x k conv to d' channels + `1 x 1` conv (Zhang et al. 2015), the baseline.

The decompositions return `(new_model, report)`, the report being a `DecompositionReport`
(`.to_markdown()`, `.to_dict()`). All three take `verbose=` (0 silent, 1 a progress bar per
stage, 2 one line per stage, `"auto"`, the default: 1 when standard output is a terminal or a
notebook, else 0).
"""

from keras_effconv.decompose.channel import channel_decompose
from keras_effconv.decompose.depthwise import depthwise_decompose
from keras_effconv.decompose.expand import SeparablePair
from keras_effconv.decompose.expand import expand_separable
from keras_effconv.decompose.report import DecompositionReport
from keras_effconv.decompose.report import LayerReport

__all__ = [
    "DecompositionReport",
    "LayerReport",
    "SeparablePair",
    "channel_decompose",
    "depthwise_decompose",
    "expand_separable",
]
