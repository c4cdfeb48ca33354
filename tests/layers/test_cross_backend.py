"""A .keras file saved under TensorFlow loads under JAX and torch with the same outputs."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras

from cases import INPUT_CHANNELS, LAYER_CASES
from conftest import BACKEND

pytestmark = [
    pytest.mark.crossbackend,
    pytest.mark.skipif(BACKEND != "tensorflow", reason="saves under TensorFlow, loads elsewhere"),
]

LOADER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    import keras_effconv  # registers the layers
    model = keras.saving.load_model(sys.argv[1])
    data = np.load(sys.argv[2])
    outputs = model.predict(data["x"], verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    worst = max(
        float(np.abs(o - data[f"y{i}"]).max() / max(np.abs(data[f"y{i}"]).max(), 1e-12))
        for i, o in enumerate(outputs)
    )
    print("BACKEND", keras.backend.backend(), "WORST", worst)
    """
)


def _check_other_backends(model, x, tmp_path):
    """Saves `model` and its outputs on `x`; JAX and torch must load it and match within 1e-5."""
    expected = model.predict(x, verbose=0)
    expected = expected if isinstance(expected, list) else [expected]
    model_path = tmp_path / "model.keras"
    model.save(model_path)
    data_path = tmp_path / "data.npz"
    np.savez(data_path, x=x, **{f"y{i}": y for i, y in enumerate(expected)})
    script = tmp_path / "load.py"
    script.write_text(LOADER)
    for backend in ("jax", "torch"):
        env = dict(os.environ, KERAS_BACKEND=backend)
        result = subprocess.run(
            [sys.executable, str(script), str(model_path), str(data_path)],
            env=env, capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        line = [l for l in result.stdout.splitlines() if l.startswith("BACKEND")][-1]
        _, name, _, worst = line.split()
        assert name == backend
        assert float(worst) < 1e-5, f"{backend}: relative error {worst}"


def test_saved_under_tensorflow_loads_under_jax_and_torch(tmp_path, rng):
    inputs = keras.Input((None, None, INPUT_CHANNELS))
    outputs = [LAYER_CASES[name](name=name)(inputs) for name in sorted(LAYER_CASES)]
    model = keras.Model(inputs, outputs)
    for v in model.weights:
        v.assign((0.3 * rng.standard_normal(v.shape)).astype("float32"))
    x = rng.standard_normal((2, 9, 10, INPUT_CHANNELS)).astype("float32")
    _check_other_backends(model, x, tmp_path)


def test_sic_network_saved_under_tensorflow_loads_under_jax_and_torch(tmp_path, rng):
    # Both execution forms of its projections (masked at 16x16, rolled at 2x2) and the EffConvModel class.
    from keras_effconv import applications

    model = applications.FactorizedResNet50(input_shape=(64, 64, 3), include_top=False, pooling="avg")
    for v in model.weights:
        if "moving_variance" not in v.path:
            v.assign((0.1 * rng.standard_normal(v.shape)).astype("float32"))
    x = rng.standard_normal((2, 64, 64, 3)).astype("float32")
    _check_other_backends(model, x, tmp_path)
