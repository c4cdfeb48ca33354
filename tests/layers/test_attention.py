import numpy as np
import pytest

import reference
from conftest import assert_close, randomize
from keras_effconv.layers import EfficientChannelAttention
from keras_effconv.layers import SqueezeExcite
from keras_effconv.layers.attention import eca_kernel_size


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def test_squeeze_excite_matches_numpy(rng):
    layer = SqueezeExcite(reduction=4)
    x = rng.standard_normal((2, 5, 6, 16)).astype("float32")
    layer.build(x.shape)
    randomize(layer, rng)
    w = {v.path.split("/")[-1]: reference.to_numpy(v) for v in layer.weights}
    s = x.mean(axis=(1, 2))
    s = np.maximum(s @ w["reduce_kernel"] + w["reduce_bias"], 0)
    gate = sigmoid(s @ w["expand_kernel"] + w["expand_bias"])
    assert_close(reference.to_numpy(layer(x)), x * gate[:, None, None, :])
    assert layer.compute_macs((5, 6, 16)) == 2 * 16 * 4


@pytest.mark.parametrize("channels, k", [(64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)])
def test_eca_adaptive_kernel(channels, k):
    # ECA-Net: k = |log2(C)/gamma + b/gamma|_odd with gamma=2, b=1.
    assert eca_kernel_size(channels) == k


def test_eca_matches_numpy(rng):
    layer = EfficientChannelAttention()
    x = rng.standard_normal((2, 4, 5, 64)).astype("float32")
    layer.build(x.shape)
    randomize(layer, rng)
    kernel = reference.to_numpy(layer.kernel)[:, 0, 0]
    k = kernel.shape[0]
    s = np.pad(x.mean(axis=(1, 2)), [(0, 0), (k // 2, k // 2)])
    conv = np.stack([s[:, c : c + k] @ kernel for c in range(64)], axis=1)
    assert_close(reference.to_numpy(layer(x)), x * sigmoid(conv)[:, None, None, :])


def test_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        SqueezeExcite(reduction=0)
    with pytest.raises(ValueError, match="kernel_size=4"):
        EfficientChannelAttention(kernel_size=4)
    with pytest.raises(ValueError, match="gamma"):
        EfficientChannelAttention(gamma=0)
