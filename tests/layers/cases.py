"""One small instance of every public layer, shared by the convention tests."""

from keras_effconv import layers

INPUT_CHANNELS = 8

LAYER_CASES = {
    "hetconv": lambda **kw: layers.HetConv2D(8, 3, part=4, **kw),
    "hetconv_strided": lambda **kw: layers.HetConv2D(8, 3, strides=2, part=2, **kw),
    "hetconv_blocked": lambda **kw: layers.HetConv2D(8, 3, part=4, blocked_inputs=True, blocked_outputs=True, **kw),
    "igc": lambda **kw: layers.InterleavedGroupConv2D(8, 3, primary_groups=2, secondary_groups=4, **kw),
    "compconv": lambda **kw: layers.CompConv2D(12, 3, depth=2, strides=2, **kw),
    "factorized": lambda **kw: layers.FactorizedConv2D(8, 3, num_units=2, activation="relu", **kw),
    "factorized_topo_bottleneck": lambda **kw: layers.FactorizedConv2D(
        8, 3, topology={"grid": (2, 2), "window": (1, 2)}, spatial_bottleneck=True, **kw
    ),
    "topological": lambda **kw: layers.TopologicalProjection(8, grid=(2, 4), window=(1, 3), **kw),
    "bottleneck": lambda **kw: layers.SpatialBottleneck(8, 3, **kw),
    "separable": lambda **kw: layers.DepthwiseSeparableConv2D(8, 3, padding="same", **kw),
    "shuffle": lambda **kw: layers.ChannelShuffle(4, **kw),
    "squeeze_excite": lambda **kw: layers.SqueezeExcite(reduction=4, **kw),
    "eca": lambda **kw: layers.EfficientChannelAttention(**kw),
}

# Subclasses of a keras layer keep keras' own argument validation and have no
# `compute_macs` (the profiler counts them as the keras layer): the library's
# validation-message and `compute_macs` conventions do not apply to them.
KERAS_SUBCLASS_CASES = {"separable"}
