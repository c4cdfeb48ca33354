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
