"""A new conv method is one layer + one lowering rule + one registration, all in this file.

Nothing else in the project is edited, yet the method works in the
applications, `convert()`, `profile()`, `optimize_for_inference`,
`export_litert` (builtin ops only) and the CLI's `--conv` choices.
"""

import numpy as np
import pytest

import keras

from keras_effconv import applications
from keras_effconv import cli
from keras_effconv import profile
from keras_effconv.conv_methods import conv_method_names
from keras_effconv.conv_methods import register_conv_method
from keras_effconv.conv_methods import unregister_conv_method
from keras_effconv.export import Term
from keras_effconv.export import lowering_rule
from keras_effconv.export import optimize_for_inference
from keras_effconv.export import unregister_lowering_rule
from keras_effconv.layers.base import EfficientConv2D

ON_TF = keras.backend.backend() == "tensorflow"


@keras.saving.register_keras_serializable(package="keras_effconv_tests")
class HalvedConv2D(EfficientConv2D):
    """Toy method: a dense k x k convolution whose output is scaled by `scale` (not foldable by Keras)."""

    def __init__(self, filters, kernel_size=3, scale=0.5, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self.scale = float(scale)

    def _build_kernels(self, input_channels):
        self.kernel = self._add_kernel("kernel", self.kernel_size + (input_channels, self.filters))

    def _convolve(self, inputs):
        return keras.ops.conv(inputs, self.kernel, **self._conv_kwargs()) * self.scale

    def _macs_for(self, input_channels, output_spatial, input_shape):
        kh, kw = self.kernel_size
        return output_spatial[0] * output_spatial[1] * kh * kw * input_channels * self.filters

    def inference_form(self):
        return self._numpy(self.kernel) * self.scale, self._numpy(self.bias)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def lower_halved(rewriter, call):
    layer = call.layer
    kernel, bias = layer.inference_form()
    bias = np.zeros(layer.filters, "float32") if bias is None else bias
    x = rewriter.materialize(call.value)
    geometry = dict(strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate)
    out = rewriter.linear([Term("conv", x, kernel, bias, layer.name, **geometry)])
    return rewriter.activation(out, layer.activation, layer.name)


@pytest.fixture
def halved():
    lowering_rule(HalvedConv2D)(lower_halved)
    register_conv_method("halved", HalvedConv2D, {"scale": 0.5}, summary="toy: a convolution scaled by 1/2")
    yield "halved"
    unregister_conv_method("halved")
    unregister_lowering_rule(HalvedConv2D)


def _randomized(model):
    rng = np.random.default_rng(0)
    for v in model.weights:
        if "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
        elif len(v.shape) <= 1:
            v.assign((0.1 * rng.standard_normal(v.shape)).astype("float32"))
    return model


def test_registered_method_works_everywhere(halved, tmp_path, capsys):
    assert halved in conv_method_names()

    # Applications and profile().
    model = applications.EffResNet50(input_shape=(64, 64, 3), classes=10, conv=halved, classifier_activation=None)
    replaced = [l for l in model.layers if isinstance(l, HalvedConv2D)]
    assert len(replaced) == 16  # every 3x3 convolution of ResNet-50
    standard = applications.EffResNet50(input_shape=(64, 64, 3), classes=10, conv="standard")
    cost, reference = profile(model), profile(standard)
    assert not cost.uncounted
    assert cost.total_macs == reference.total_macs  # same MACs as the dense convolutions it replaces
    assert cost.total_params == reference.total_params

    # convert() of a plain Keras model.
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", name="body")(x)
    plain = keras.Model(inputs, keras.layers.BatchNormalization()(x))
    converted, report = applications.convert(plain, conv=halved)
    assert [row["name"] for row in report.replaced] == ["body"]
    assert isinstance(converted.get_layer("body"), HalvedConv2D)

    # optimize_for_inference: same function, no HalvedConv2D left, its BN folded.
    small = _randomized(applications.EffResNet20(input_shape=(16, 16, 3), classes=10, conv=halved,
                                                 classifier_activation=None))
    x = np.random.default_rng(1).standard_normal((1, 16, 16, 3)).astype("float32")
    fast = optimize_for_inference(small)
    expected = keras.ops.convert_to_numpy(small(x))
    actual = keras.ops.convert_to_numpy(fast(x))
    assert np.abs(actual - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    assert not any(isinstance(l, (HalvedConv2D, keras.layers.BatchNormalization)) for l in fast.layers)

    # The CLI offers it.
    assert cli.main(["profile", "eff_resnet20", "--conv", halved]) == 0
    assert "MACs" in capsys.readouterr().out


@pytest.mark.skipif(not ON_TF, reason="one LiteRT conversion is enough; it runs in a TensorFlow subprocess anyway")
def test_registered_method_exports_builtin_only(halved, tmp_path):
    from keras_effconv.export import export_litert

    model = _randomized(applications.EffResNet20(input_shape=(16, 16, 3), classes=10, conv=halved,
                                                 classifier_activation=None))
    report = export_litert(model, str(tmp_path / "halved.tflite"), target="cpu")
    assert not report.flex_ops
    assert report.max_abs_diff <= 1e-4 * max(1.0, report.output_scale)
    assert "CONV_2D" in report.ops
