"""Data-parallel training on several local devices with the backends' own engines.

- JAX: `keras.distribution.DataParallel` over `keras.distribution.list_devices()`.
- TensorFlow: `tf.distribute.MirroredStrategy`.

Beyond one machine (not driven by this module, documented in the README):
TensorFlow's `MultiWorkerMirroredStrategy` with `TF_CONFIG` on every worker,
and JAX multi-process (`jax.distributed.initialize()` on every process, then
`keras.distribution.DataParallel` over all global devices).
"""

import contextlib

import keras


def local_device_count():
    """Number of devices data parallelism would use on this backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        return len(keras.distribution.list_devices())
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return len(gpus) or len(tf.config.list_logical_devices("CPU"))
    return 1


@contextlib.contextmanager
def data_parallel_scope(enabled=True, devices=None):
    """Builds, compiles and fits models inside this scope to train data-parallel.

    Args:
        enabled: when False the scope does nothing (single device).
        devices: optional device list (JAX: `"cpu:0"`-style names from
            `keras.distribution.list_devices()`; TensorFlow: `"/cpu:0"`-style
            names). Defaults to all local devices (TF: all GPUs, else CPU).

    Yields:
        The TensorFlow strategy, the JAX distribution, or None.

    Raises:
        ValueError: on the torch backend, which Keras cannot distribute; run
            torch's own DDP around a Keras model instead.

    Example:

    >>> with data_parallel_scope(enabled=False):
    ...     model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    """
    if not enabled:
        yield None
        return
    backend = keras.backend.backend()
    if backend == "jax":
        distribution = keras.distribution.DataParallel(devices=devices or keras.distribution.list_devices())
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(distribution)
        try:
            yield distribution
        finally:
            keras.distribution.set_distribution(previous)
    elif backend == "tensorflow":
        import tensorflow as tf

        if devices is None and not tf.config.list_logical_devices("GPU"):
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        with strategy.scope():
            yield strategy
    else:
        raise ValueError(
            f"Data-parallel training (--distribute) needs the jax or tensorflow backend; "
            f"the {backend} backend has no Keras distribution API."
        )
