"""compute_macs against XLA's own operation count (JAX backend only).

XLA does not count taps that fall on "same" padding, and counts elementwise
bias/residual/activation work; at 128x128 both stay below about 1%.
SpatialBottleneck is left out: its per-channel upsampling is a multiply
without accumulation (1 FLOP, counted as 1 MAC by the profiler convention).
HetConv2D and InterleavedGroupConv2D run their MAC-exact forms here
(`"per_class"`, `"contraction"`): `"auto"` may pick a faster form that
executes structural zeros too.
"""

import pytest

import keras

from conftest import BACKEND
from keras_effconv import layers

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="XLA cost_analysis() is read on JAX")

CASES = {
    "hetconv_p4": (lambda: layers.HetConv2D(32, 3, part=4, use_bias=False, execution="per_class"), (1, 128, 128, 32)),
    "hetconv_p2_strided": (lambda: layers.HetConv2D(32, 3, strides=2, part=2, use_bias=False, execution="per_class"), (1, 128, 128, 16)),
    "igc_l4": (lambda: layers.InterleavedGroupConv2D(32, 3, primary_groups=4, use_bias=False, execution="contraction"), (1, 128, 128, 32)),
    "igc_l16_m2": (
        lambda: layers.InterleavedGroupConv2D(
            32, 3, primary_groups=16, secondary_groups=2, use_bias=False, execution="contraction"
        ),
        (1, 128, 128, 32),
    ),
    "compconv_d2": (lambda: layers.CompConv2D(48, 3, depth=2, use_bias=False), (1, 128, 128, 32)),
    "factorized": (lambda: layers.FactorizedConv2D(32, 3, num_units=2, use_bias=False), (1, 128, 128, 32)),
}


def xla_flops(layer, shape):
    import jax
    import numpy as np

    layer.build(shape)
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def forward(trainable, x):
        return layer.stateless_call(trainable, non_trainable, x)[0]

    x = np.ones(shape, "float32")
    analysis = jax.jit(forward).lower(trainable, x).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return analysis["flops"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_macs_agree_with_xla(name):
    factory, shape = CASES[name]
    layer = factory()
    macs = layer.compute_macs(shape)
    flops = xla_flops(layer, shape)
    assert flops / 2 == pytest.approx(macs, rel=0.02), (flops / 2, macs)


def test_xla_counts_standard_conv_as_two_flops_per_mac():
    # XLA skips the taps that fall on "same" padding: per axis 3*128 - 2 of 3*128.
    conv = keras.layers.Conv2D(32, 3, padding="same", use_bias=False)
    valid_taps = (3 * 128 - 2) ** 2 * 32 * 32
    assert xla_flops(conv, (1, 128, 128, 32)) / 2 == pytest.approx(valid_taps, rel=1e-6)
