"""Measured inference latency and training speed on the current Keras backend."""

import functools
import statistics
import time

import numpy as np

import keras

from keras_effconv import _validation


def inference_function(model, jit_compile=False):
    """Returns `run(x)`: one synchronised inference call of `model` on `x`.

    TensorFlow: `tf.function` (with XLA when `jit_compile=True`); JAX:
    `jax.jit` over `stateless_call` (JAX always compiles with XLA); torch:
    eager under `torch.no_grad()`. These are the fastest plain ways to run a
    Keras model on each backend on a CPU (`model.predict` adds per-call
    overhead that dominates small models).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        # A named function, not a lambda: AutoGraph cannot find the source of
        # a lambda that shares its line with others and warns about it.
        def call(x):
            return model(x, training=False)

        forward = tf.function(call, jit_compile=bool(jit_compile))
        return lambda x: forward(x).numpy()
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        forward = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
        return lambda x: jax.block_until_ready(forward(trainable, non_trainable, x))
    if backend == "torch":
        import torch

        def run(x):
            with torch.no_grad():
                return model(x, training=False)

        return run
    return lambda x: keras.ops.convert_to_numpy(model(x, training=False))


def time_interleaved(runners, repeats=20, warmup=3):
    """Times callables round-robin: one call of each per round, so machine drifts hit them alike.

    The one timing loop of the project: `measure_latency`,
    `measure_training_speed` and the benchmarks' LiteRT timers all run
    through it. Compare the results by their ratios within one call.

    Args:
        runners: dict `{label: fn}`; `fn()` runs one synchronised call.
        repeats: timed rounds.
        warmup: untimed rounds first (compilation, caches).

    Returns:
        `{label: {"median_ms": float, "min_ms": float, "times_ms": list}}`.

    Raises:
        ValueError: if `repeats` is not positive or `warmup` is negative.

    Example:

    >>> result = time_interleaved({"noop": lambda: None}, repeats=3, warmup=0)
    >>> len(result["noop"]["times_ms"])
    3
    """
    repeats = _validation.check_positive_int(repeats, "repeats")
    warmup = _validation.check_int(warmup, "warmup", minimum=0)
    for _ in range(warmup):
        for run in runners.values():
            run()
    times = {label: [] for label in runners}
    for _ in range(repeats):
        for label, run in runners.items():
            start = time.perf_counter()
            run()
            times[label].append(1000.0 * (time.perf_counter() - start))
    return {
        label: {"median_ms": statistics.median(t), "min_ms": min(t), "times_ms": t} for label, t in times.items()
    }


def measure_latency(models, input_shape, batch_size=1, repeats=20, warmup=3, jit_compile=False, seed=0):
    """Median inference latency of one or more models, measured interleaved.

    The models run round-robin (one call each per round) so that slow drifts
    of the machine affect all of them alike: compare them by the ratios of
    one call of this function.

    Args:
        models: a `keras.Model` or a dict `{label: model}`.
        input_shape: per-sample input shape, e.g. `(224, 224, 3)`.
        batch_size: batch size of the timed calls.
        repeats: timed rounds.
        warmup: untimed rounds first (compilation, caches).
        jit_compile: TensorFlow only: compile with XLA.
        seed: seed of the random input.

    Returns:
        `{label: {"median_ms": float, "min_ms": float, "times_ms": list}}`
        (label `"model"` when a single model is passed).

    Raises:
        ValueError: if `repeats` or `batch_size` is not positive.

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
    >>> result = measure_latency(model, (8, 8, 3), repeats=2, warmup=1)
    >>> result["model"]["median_ms"] > 0
    True
    """
    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    repeats = _validation.check_positive_int(repeats, "repeats")
    if isinstance(models, keras.Model):
        models = {"model": models}
    rng = np.random.default_rng(seed)
    x = keras.ops.convert_to_tensor(rng.standard_normal((batch_size,) + tuple(input_shape)).astype("float32"))
    runners = {
        label: functools.partial(inference_function(model, jit_compile), x) for label, model in models.items()
    }
    return time_interleaved(runners, repeats, warmup)


def measure_training_speed(models, x, y, repeats=10, warmup=2):
    """Median time of one training step of compiled models, measured interleaved.

    Each round calls `train_on_batch(x, y)` once per model, round-robin, so
    that drifts of the machine affect all models alike (compare the ratios of
    one call). The models are trained by this: pass copies if their weights
    matter.

    Args:
        models: a compiled `keras.Model` or a dict `{label: model}`.
        x: one batch of inputs.
        y: the matching targets, in the form the models' losses expect.
        repeats: timed rounds.
        warmup: untimed rounds first (tracing, compilation, optimizer build).

    Returns:
        `{label: {"median_ms": float, "min_ms": float, "images_per_second":
        float, "times_ms": list}}` (label `"model"` for a single model);
        `images_per_second` is the batch size over the median step time.

    Raises:
        ValueError: if `repeats` is not a positive integer, `warmup` is
            negative, or a model is not compiled.

    Example:

    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    >>> model.compile("sgd", "mse")
    >>> speed = measure_training_speed(model, np.zeros((4, 8, 8, 3)), np.zeros((4, 2)), repeats=2)
    >>> speed["model"]["images_per_second"] > 0
    True
    """
    repeats = _validation.check_positive_int(repeats, "repeats")
    warmup = _validation.check_int(warmup, "warmup", minimum=0)
    if isinstance(models, keras.Model):
        models = {"model": models}
    for label, model in models.items():
        if not getattr(model, "compiled", False):
            raise _validation.invalid_value(
                "models",
                "every model must be compiled: call `model.compile(...)` before timing training steps",
                received=f"model {label!r}, which is not compiled",
            )

    def step(model):
        # The loss read back to the host ends the step (a synchronisation point on every backend).
        keras.ops.convert_to_numpy(model.train_on_batch(x, y, return_dict=True)["loss"])

    runners = {label: functools.partial(step, model) for label, model in models.items()}
    result = time_interleaved(runners, repeats, warmup)
    for timing in result.values():
        timing["images_per_second"] = 1000.0 * len(x) / timing["median_ms"]
    return result
