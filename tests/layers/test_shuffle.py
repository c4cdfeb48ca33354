import numpy as np
import pytest

import reference
from conftest import assert_close
from keras_effconv.layers import ChannelShuffle


@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_matches_shufflenet_definition(rng, groups):
    x = rng.standard_normal((2, 3, 4, 12)).astype("float32")
    y = reference.to_numpy(ChannelShuffle(groups)(x))
    per = 12 // groups
    for g in range(groups):
        for j in range(per):
            assert_close(y[..., j * groups + g], x[..., g * per + j], atol=0)


def test_bad_groups():
    with pytest.raises(ValueError, match=r"groups=5.*channels=12"):
        ChannelShuffle(5).build((None, 4, 4, 12))
    with pytest.raises(ValueError, match="groups"):
        ChannelShuffle(0)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("num_splits", [1, 2, 3])
def test_split_matches_numpy_slices(rng, num_splits, data_format):
    from keras_effconv.layers import ChannelSplit

    x = rng.standard_normal((2, 3, 4, 12) if data_format == "channels_last" else (2, 12, 3, 4)).astype("float32")
    layer = ChannelSplit(num_splits, data_format=data_format)
    parts = [reference.to_numpy(p) for p in layer(x)]
    axis = -1 if data_format == "channels_last" else 1
    expected = np.split(x, num_splits, axis=axis)
    assert len(parts) == num_splits
    for part, want in zip(parts, expected):
        assert_close(part, want, atol=0)
    assert [tuple(s) for s in layer.compute_output_shape(x.shape)] == [want.shape for want in expected]
    assert layer.compute_macs(x.shape) == 0
    rebuilt = ChannelSplit.from_config(layer.get_config())
    assert (rebuilt.num_splits, rebuilt.data_format) == (num_splits, data_format)


def test_split_bad_arguments():
    from keras_effconv.layers import ChannelSplit

    with pytest.raises(ValueError, match=r"num_splits=5.*channels=12"):
        ChannelSplit(5).build((None, 4, 4, 12))
    with pytest.raises(ValueError, match="num_splits"):
        ChannelSplit(0)
    with pytest.raises(ValueError, match="num_splits"):
        ChannelSplit(1.5)
