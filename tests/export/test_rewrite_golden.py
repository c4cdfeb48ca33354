"""The rule-based rewriter emits the same layers and numbers as the rewriter it replaced."""

import collections

import numpy as np
import pytest

from rewrite_golden import GOLDEN_PATH
from rewrite_golden import cases
from rewrite_golden import rewrite

GOLDEN = np.load(GOLDEN_PATH)
# The targets differ only where a grouped conv has channels per group not a multiple of 4 (the zoo).
CASES = [(name, "gpu") for name in cases()] + [("zoo", "cpu")]


@pytest.mark.parametrize("name,target", CASES)
def test_rewrite_matches_golden(name, target):
    output, expected, kinds = rewrite(name, target)
    # Since the golden was recorded, the GPU target subsamples before every strided 1x1
    # convolution (the GPU delegate computes int8 strided 1x1 convs as stride 1): those
    # SpatialSubsample layers are the only difference allowed (they deepen the graph, which
    # can change where Keras lists a layer, so the GPU target compares layer counts).
    golden_kinds = GOLDEN[f"{name}/{target}/layers"].tolist()
    if target == "gpu":
        kinds = [k for k in kinds if k != "SpatialSubsample"]
        assert collections.Counter(kinds) == collections.Counter(golden_kinds)
    else:
        assert kinds == golden_kinds
    golden = GOLDEN[f"{name}/{target}/output"]
    scale = max(1.0, float(np.abs(golden).max()))
    assert float(np.abs(output - golden).max()) / scale <= 1e-5
    assert float(np.abs(expected - golden).max()) / scale <= 1e-4
