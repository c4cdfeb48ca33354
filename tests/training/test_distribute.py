"""One data-parallel step on 2 virtual CPU devices equals a single-device step."""

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import BACKEND

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    backend = os.environ["KERAS_BACKEND"]
    if backend == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
        )
    import keras
    from keras_effconv.training import data_parallel_scope
    from keras_effconv.training.distribute import local_device_count

    assert local_device_count() == 2, local_device_count()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 12, 12, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 4, 8), 4)

    def make():
        inputs = keras.Input((12, 12, 3))
        h = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
        h = keras.layers.GlobalAveragePooling2D()(h)
        model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(h))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
        return model

    keras.utils.set_random_seed(1)
    single = make()
    initial = single.get_weights()
    single_loss = single.train_on_batch(x, y)
    with data_parallel_scope(True):
        parallel = make()
        parallel.set_weights(initial)
        parallel_loss = parallel.train_on_batch(x, y)
    np.testing.assert_allclose(parallel_loss, single_loss, rtol=1e-5)
    for a, b in zip(parallel.get_weights(), single.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    changed = max(np.abs(a - b).max() for a, b in zip(single.get_weights(), initial))
    assert changed > 1e-4, changed
    print("OK", float(single_loss), float(parallel_loss))
    """
)


@pytest.mark.skipif(BACKEND == "torch", reason="Keras has no distribution API on torch")
def test_data_parallel_step_equals_single_device_step():
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="2")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "OK" in result.stdout


def test_torch_distribution_is_refused_with_a_clear_error():
    import keras

    from keras_effconv.training import data_parallel_scope

    if keras.backend.backend() != "torch":
        pytest.skip("torch-only check")
    with pytest.raises(ValueError, match="jax or tensorflow"):
        with data_parallel_scope(True):
            pass
