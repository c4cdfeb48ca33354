import numpy as np
import pytest

import keras

import reference
from conftest import assert_close
from keras_effconv.decompose import _graph
from keras_effconv.decompose import _stats
from keras_effconv.decompose import depthwise as depthwise_module
from keras_effconv.decompose import depthwise_decompose


@pytest.mark.parametrize(
    "strides, padding, dilation",
    [((1, 1), "same", (1, 1)), ((2, 2), "same", (1, 1)), ((2, 1), "valid", (1, 1)), ((1, 1), "same", (2, 3))],
)
def test_patches_times_kernel_matrix_is_the_convolution(rng, strides, padding, dilation):
    x = rng.standard_normal((2, 9, 11, 3))
    kernel = rng.standard_normal((3, 3, 3, 5))
    p = _stats.patches(x, (3, 3), strides, padding, dilation)
    expected = reference.conv2d(x, kernel, strides, padding, dilation)
    assert p.shape[:3] == expected.shape[:3]
    assert_close(p @ _stats.kernel_matrix(kernel), expected, rtol=1e-12)


def test_block_descent_never_increases_the_objective(rng):
    m, k2, n, r = 4, 9, 6, 1
    w = rng.standard_normal((m, k2, n))
    a = rng.standard_normal((m * k2, m * k2))
    sigma = a @ a.T / (m * k2)
    target_w = w.reshape(m * k2, n) + 0.3 * rng.standard_normal((m * k2, n))
    g = sigma @ target_w
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    d0, p0 = u[:, :, :r], np.transpose(vt[:, :r], (0, 2, 1)) * s[:, None, :r]

    def objective(d, p):
        w_hat = np.einsum("mkr,mnr->mkn", d, p).reshape(m * k2, n)
        return np.sum(w_hat * (sigma @ w_hat)) - 2 * np.sum(w_hat * g)

    values = [objective(d0, p0)]
    for iterations in (1, 2, 5, 20):
        d, p = depthwise_module._block_descent(w, sigma, g, d0, p0, iterations)
        assert np.allclose(np.linalg.norm(d, axis=1), 1.0)
        values.append(objective(d, p))
    # The ridge (1% of the mean variance) is small: the data term drops, monotonically.
    assert all(b <= a + 1e-9 * abs(a) for a, b in zip(values, values[1:])), values
    assert values[-1] < values[0]


def test_rebuild_keeps_multi_input_multi_output_models(rng):
    a = keras.Input((6, 6, 2), name="a")
    b = keras.Input((6, 6, 2), name="b")
    conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")
    merged = keras.layers.Concatenate(name="cat")([conv(a), conv(b)])
    model = keras.Model({"a": a, "b": b}, {"out": keras.layers.Conv2D(2, 3, name="head")(merged), "aux": merged})
    new_model, report = depthwise_decompose(model, rank=9)
    xa = rng.standard_normal((2, 6, 6, 2)).astype("float32")
    xb = rng.standard_normal((2, 6, 6, 2)).astype("float32")
    old = model({"a": xa, "b": xb})
    new = new_model({"a": xa, "b": xb})
    assert sorted(new) == ["aux", "out"]
    for key in old:
        assert_close(reference.to_numpy(new[key]), reference.to_numpy(old[key]), rtol=1e-5)
    assert [r.name for r in report.layers] == ["conv", "head"]
    # The original graph got no new nodes: single-node properties still work.
    assert model.get_layer("head").output.shape == (None, 4, 4, 2)
    with pytest.raises(ValueError, match="single-input"):
        depthwise_decompose(model, method="data", data=[xa])


def test_functional_inside_sequential_inside_functional(rng):
    inner_in = keras.Input((6, 6, 4))
    inner = keras.Model(inner_in, keras.layers.Conv2D(4, 3, padding="same", name="deep")(inner_in), name="inner")
    seq = keras.Sequential([keras.Input((6, 6, 4)), inner, keras.layers.ReLU(name="relu")], name="seq")
    inputs = keras.Input((6, 6, 4))
    model = keras.Model(inputs, seq(inputs))
    new_model, report = depthwise_decompose(model, rank=9)
    assert [r.name for r in report.layers] == ["deep"]
    new_inner = new_model.get_layer("seq").get_layer("inner")
    assert [l.name for l in new_inner.layers[1:]] == ["deep_dw", "deep_pw"]
    x = rng.standard_normal((2, 6, 6, 4)).astype("float32")
    assert_close(reference.to_numpy(new_model(x)), reference.to_numpy(model(x)), rtol=1e-5)


def test_unique_names_when_suffix_is_taken():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(2, 3, padding="same", name="c")(inputs)
    x = keras.layers.ReLU(name="c_dw")(x)
    model = keras.Model(inputs, x)
    new_model, report = depthwise_decompose(model)
    assert report.layers[0].new_layers == ("c_dw_1", "c_pw")
    assert new_model.get_layer("c_dw").__class__ is keras.layers.ReLU


def test_model_macs_counts_every_call():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same")
    x = conv(keras.layers.Conv2D(3, 1)(inputs))
    y = conv(inputs)
    model = keras.Model(inputs, keras.layers.Add()([x, y]))
    assert _graph.model_macs(model) == 64 * 3 * 3 + 2 * 64 * 9 * 3 * 4


def test_batches_from_pydataset(rng):
    class Data(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.x = rng.standard_normal((10, 5, 5, 1)).astype("float32")

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return self.x[i * 4 : (i + 1) * 4], np.zeros(len(self.x[i * 4 : (i + 1) * 4]))

    inputs = keras.Input((5, 5, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    batches = list(_stats.Batches(Data(), model))
    assert [b.shape[0] for b in batches] == [4, 4, 2]


def test_copies_and_replacements_keep_initializer_configs():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, kernel_initializer="he_normal", bias_initializer="ones", name="c")(inputs)
    x = keras.layers.BatchNormalization(gamma_initializer="ones", moving_variance_initializer="ones", name="bn")(x)
    x = keras.layers.Conv2D(2, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.3, seed=4), name="p")(x)
    model = keras.Model(inputs, x)
    new_model, _ = depthwise_decompose(model)
    for name in ("bn", "p"):
        assert new_model.get_layer(name).get_config() == model.get_layer(name).get_config()
    dw, pw = new_model.get_layer("c_dw"), new_model.get_layer("c_pw")
    original = model.get_layer("c").get_config()
    assert dw.get_config()["depthwise_initializer"] == original["kernel_initializer"]
    assert pw.get_config()["kernel_initializer"] == original["kernel_initializer"]
    assert pw.get_config()["bias_initializer"] == original["bias_initializer"]
