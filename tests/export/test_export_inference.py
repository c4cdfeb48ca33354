"""optimize_for_inference: same function, mobile-friendly ops, every backend."""

import numpy as np
import pytest

import keras

from helpers import max_rel_diff
from helpers import randomize_statistics
from rewrite_golden import every_layer_kind
from keras_effconv.conv_methods import conv_method_names
from keras_effconv.applications import EffResNet20
from keras_effconv.applications import EffResNet50
from keras_effconv.export import ChannelGather
from keras_effconv.export import optimize_for_inference

# Every case runs on TensorFlow; the other backends (slower eagerly) get a representative subset.
ON_TF = keras.backend.backend() == "tensorflow"
TF_ONLY = pytest.mark.skipif(not ON_TF, reason="covered on the TensorFlow run; a subset runs on this backend")


def _grouped_convs(model):
    return [l for l in model.layers if isinstance(l, keras.layers.Conv2D) and l.groups > 1]


@pytest.mark.parametrize("conv", conv_method_names())
def test_effresnet20_every_conv_type(conv):
    model = randomize_statistics(EffResNet20(input_shape=(28, 28, 1), conv=conv, classifier_activation=None))
    x = np.random.default_rng(1).standard_normal((1, 28, 28, 1)).astype("float32")
    expected = model(x)
    for target in ("gpu", "cpu") if ON_TF else ("gpu",):
        fast = optimize_for_inference(model, target=target)
        assert tuple(fast.input.shape) == (1, 28, 28, 1)
        assert max_rel_diff(expected, fast(x)) <= 1e-4
        if conv in ("standard", "hetconv", "igc", "depthwise_separable"):
            assert not any(isinstance(l, keras.layers.BatchNormalization) for l in fast.layers)
        if target == "gpu":
            for layer in _grouped_convs(fast):
                groups = layer.groups
                assert layer.kernel.shape[2] % 4 == 0 and (layer.filters // groups) % 4 == 0, layer.name


@pytest.mark.parametrize("conv", ["hetconv", pytest.param("compconv", marks=TF_ONLY)])
def test_effresnet50_64px(conv):
    model = randomize_statistics(EffResNet50(input_shape=(64, 64, 3), conv=conv, classifier_activation=None))
    x = np.random.default_rng(2).standard_normal((1, 64, 64, 3)).astype("float32")
    fast = optimize_for_inference(model, target="gpu")
    assert max_rel_diff(model(x), fast(x)) <= 1e-4
    if conv == "hetconv":
        # Residue-class permutations are folded into the neighbouring 1x1 convolutions.
        assert not any(isinstance(l, ChannelGather) for l in fast.layers)
        assert not any(isinstance(l, keras.layers.BatchNormalization) for l in fast.layers)


def test_every_layer_kind():
    model = randomize_statistics(every_layer_kind())
    x = np.random.default_rng(3).standard_normal((2, 15, 16, 8)).astype("float32")
    fast = optimize_for_inference(model, target="gpu", batch_size=2)
    assert max_rel_diff(model(x), fast(x)) <= 1e-4
    assert not _grouped_convs(fast)  # 2 channels per group: split for the GPU
    assert not any(isinstance(l, keras.layers.UpSampling2D) for l in fast.layers)
    if not ON_TF:
        return
    cpu = optimize_for_inference(model, target="cpu", batch_size=2)
    assert max_rel_diff(model(x), cpu(x)) <= 1e-4
    assert _grouped_convs(cpu)


def test_saved_and_reloaded(tmp_path):
    model = randomize_statistics(EffResNet20(input_shape=(28, 28, 1), conv="hetconv"))
    fast = optimize_for_inference(model)
    fast.save(tmp_path / "fast.keras")
    again = keras.saving.load_model(tmp_path / "fast.keras")
    x = np.random.default_rng(4).standard_normal((1, 28, 28, 1)).astype("float32")
    assert max_rel_diff(fast(x), again(x)) <= 1e-6


def test_lambda_is_named():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2, name="my_lambda")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(x))
    with pytest.raises(ValueError, match="my_lambda.*Lambda"):
        optimize_for_inference(model)


def test_bad_arguments():
    model = EffResNet20(input_shape=(28, 28, 1), conv="igc")
    with pytest.raises(ValueError, match="`target`.*'tpu'"):
        optimize_for_inference(model, target="tpu")
    with pytest.raises(ValueError, match="`batch_size`"):
        optimize_for_inference(model, batch_size=0)
    with pytest.raises(ValueError, match="`input_shape`"):
        optimize_for_inference(model, input_shape=(32, 32, 1))
    free = EffResNet20(input_shape=(None, None, 1), include_top=False, conv="igc")
    with pytest.raises(ValueError, match="input_shape"):
        optimize_for_inference(free)
    fixed = optimize_for_inference(free, input_shape=(20, 24, 1), batch_size=3)
    assert tuple(fixed.input.shape) == (3, 20, 24, 1)


def test_subclassed_model_rejected():
    class Net(keras.Model):
        def call(self, x):
            return x

    net = Net()
    net(np.zeros((1, 4, 4, 1), "float32"))
    with pytest.raises(ValueError, match="subclassed"):
        optimize_for_inference(net)


def _topological_model():
    from keras_effconv import layers as eff

    ring = {"grid": (1, 8), "window": (1, 2)}
    inputs = keras.Input((6, 5, 256))
    x = eff.TopologicalProjection(256, name="ring", **ring)(inputs)  # auto: rolled at 6x5
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = eff.TopologicalProjection(512, grid=(2, 4), window=(2, 2), strides=2, execution="rolled_groups",
                                  name="torus_s2")(x)
    x = eff.FactorizedConv2D(512, 3, num_units=1, topology=ring, spatial_bottleneck=True, name="sic_ring")(x)
    x = eff.FactorizedConv2D(256, 3, topology=ring, activation="relu", name="sic")(x)
    x = eff.TopologicalProjection(64, name="small_groups", **ring)(x)  # auto: 8x8 groups run masked dense
    return keras.Model(inputs, x)


def test_topological_projections_keep_their_executed_form():
    model = randomize_statistics(_topological_model())
    x = np.random.default_rng(4).standard_normal((1, 6, 5, 256)).astype("float32")
    expected = model(x)
    for target in ("gpu", "cpu") if ON_TF else ("gpu",):
        fast = optimize_for_inference(model, target=target)
        assert max_rel_diff(expected, fast(x)) <= 1e-4
        # One grouped conv (8 cells = 8 groups) per window offset: 2 per rolled ring projection
        # (4 of them), 4 on the torus, none for the masked one; BN folded into them.
        assert [l.groups for l in _grouped_convs(fast)] == [8] * 12
        assert not any(isinstance(l, keras.layers.BatchNormalization) for l in fast.layers)
        # The rolled views are slices + a concatenation, never a GATHER.
        gathers = [l for l in fast.layers if isinstance(l, ChannelGather)]
        assert gathers and all(len(l.indices) == l.input.shape[-1] for l in gathers)
        assert all(keras.ops.convert_to_numpy(l(np.arange(l.input.shape[-1], dtype="float32").reshape(1, 1, 1, -1)))
                   .ravel().tolist() == l.indices for l in gathers)
