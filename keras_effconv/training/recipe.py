"""The training recipe behind `keras-effconv train`: plain `model.fit`, resumable.

Recipe: Keras' own augmentation layers (random horizontal flip and
translation by up to 10%) in the `tf.data` pipeline, AdamW with cosine
learning-rate decay, label smoothing 0.1, batch 128. Every epoch writes a
`.keras` checkpoint and a `BackupAndRestore` backup, so an interrupted run
started again with the same command continues after the last completed epoch
with the same weights, optimizer state and epoch counter.

Files in the output directory:

    metrics.json        test_accuracy, test_loss, macs, params, epochs, train_seconds, backend, ...
    model.keras         the trained model (written atomically)
    curves.png          loss and accuracy per epoch (train and test)
    history.csv         CSVLogger log (appended across resumed sessions)
    checkpoints/        epoch_001.keras, ...
    tensorboard/        TensorBoard logs
    backup/             BackupAndRestore state while a run is unfinished
    model.tflite        with `export=True` (verified LiteRT export)
"""

import dataclasses
import json
import os
import shutil
import time

import keras

from keras_effconv import applications
from keras_effconv._files import atomic_path
from keras_effconv import profile
from keras_effconv.conv_methods import conv_method_names
from keras_effconv.datasets import DATASETS
from keras_effconv.datasets import load_dataset
from keras_effconv.training.distribute import data_parallel_scope

# ImageNet-sized networks need at least 32x32 inputs; smaller images are resized.
_MIN_SIZE = {"eff_resnet50": 32, "eff_resnet101": 32, "eff_resnet152": 32, "eff_vgg16": 32}


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (the CLI's arguments).

    Attributes:
        model: a name from `keras_effconv.applications.MODELS`.
        conv: a registered conv method (`keras_effconv.conv_methods.conv_method_names()`).
        conv_config: optional method arguments.
        dataset: `"fashion_mnist"`, `"cifar10"` or `"image_folder"`.
        data_path: optional data location (required for image folders).
        epochs: number of epochs.
        batch_size: global batch size.
        subset: optional number of training images to use.
        learning_rate: peak learning rate of the cosine schedule.
        weight_decay: AdamW weight decay.
        label_smoothing: label smoothing of the cross-entropy.
        augment: random flip and translation during training.
        mixed_precision: train under `"mixed_bfloat16"` (CPU-friendly).
        jit_compile: compile the train step with XLA (always on for JAX,
            whose non-jitted training is impractically slow).
        distribute: data-parallel over all local devices.
        export: write a verified `model.tflite` at the end.
        seed: seed of weights, subset and shuffling.
        max_test_images: optional cap on the test split (quick checks only).
    """

    model: str = "eff_resnet20"
    conv: str = "hetconv"
    conv_config: dict = None
    dataset: str = "fashion_mnist"
    data_path: str = None
    epochs: int = 10
    batch_size: int = 128
    subset: int = None
    learning_rate: float = 2e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    augment: bool = True
    mixed_precision: bool = False
    jit_compile: bool = False
    distribute: bool = False
    export: bool = False
    seed: int = 0
    max_test_images: int = None

    def validate(self):
        """Raises ValueError naming the first bad field."""
        if self.model not in applications.MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(applications.MODELS)}")
        if self.conv not in conv_method_names():
            raise ValueError(f"unknown conv {self.conv!r}; choose one of {list(conv_method_names())}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {list(DATASETS)}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("subset", "max_test_images"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")


def _atomic_write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def augmentation_layers(data_format=None):
    """Keras' own augmentation layers used by the recipe (train split only)."""
    return [
        keras.layers.RandomFlip("horizontal", data_format=data_format),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", data_format=data_format),
    ]


def _pipelines(data, config):
    import tensorflow as tf

    train = data.train.shuffle(min(data.train_size, 20000), seed=config.seed, reshuffle_each_iteration=True)
    train = train.batch(config.batch_size, drop_remainder=config.distribute)
    if config.augment:
        # Called one by one (not wrapped in a Sequential) so that each layer
        # notices it runs inside tf.data and computes with TensorFlow on
        # every Keras backend.
        layers = augmentation_layers()

        def augment(x, y):
            for layer in layers:
                x = layer(x, training=True)
            return x, y

        train = train.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    test = data.test
    if config.max_test_images:
        test = test.take(config.max_test_images)
    return train.prefetch(tf.data.AUTOTUNE), test.batch(256).prefetch(tf.data.AUTOTUNE)


def build_model(config, input_shape, num_classes):
    """The network of `config` for `input_shape` and `num_classes`.

    Under a mixed global dtype policy the `predictions` layer computes in
    float32, as Keras' mixed-precision guide advises: a bfloat16 softmax
    rounds probabilities to 3 significant digits and the loss with them.
    """
    model = applications.MODELS[config.model](
        input_shape=input_shape,
        classes=num_classes,
        conv=config.conv,
        conv_config=config.conv_config,
        weights=None,
    )
    if keras.config.dtype_policy().compute_dtype == "float32":
        return model

    def float32_predictions(layer):
        layer_config = layer.get_config()
        if layer.name == "predictions":
            layer_config["dtype"] = "float32"
        return layer.__class__.from_config(layer_config)

    return keras.models.clone_model(model, clone_function=float32_predictions)


def compile_for_training(model, config, steps_per_epoch):
    """Compiles `model` with the recipe of `config`.

    AdamW with cosine decay over `config.epochs * steps_per_epoch` steps,
    categorical cross-entropy with label smoothing, accuracy; XLA on JAX
    (its only mode) and where `config.jit_compile` asks for it.
    """
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch)
    )
    jit = True if keras.backend.backend() == "jax" else bool(config.jit_compile)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        jit_compile=jit,
    )


def plot_curves(history_csv, path):
    """Draws loss and accuracy per epoch from a CSVLogger file with matplotlib."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, [float(r[metric]) for r in rows], "o-", label="train")
        if rows and f"val_{metric}" in rows[0]:
            ax.plot(epochs, [float(r[f"val_{metric}"]) for r in rows], "s-", label="test")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def config_differences(config, out_dir):
    """Names of the `TrainConfig` fields in which `out_dir`'s run differs from `config`.

    `export` is ignored: it does not change the training. A directory
    without `config.json` differs in nothing.
    """
    path = os.path.join(out_dir, "config.json")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        previous = json.load(f)
    current = json.loads(json.dumps(dataclasses.asdict(config)))
    return sorted(k for k in set(previous) | set(current) if k != "export" and previous.get(k) != current.get(k))


def train(config, out_dir, callbacks=(), overwrite=False, verbose="auto"):
    """Trains `config.model` with `model.fit` and writes the run to `out_dir`.

    Args:
        config: a `TrainConfig`.
        out_dir: output directory (created if needed). If it holds an
            unfinished run (a `backup/` folder) of the same configuration,
            training resumes from it.
        callbacks: extra Keras callbacks.
        overwrite: start from scratch even if `out_dir` holds a finished
            run (its results are replaced) or an unfinished one (its backup
            is discarded); otherwise a finished run is refused and nothing
            is touched.
        verbose: `model.fit` verbosity (Keras' progress bar by default).

    Returns:
        The metrics dict written to `out_dir/metrics.json`.

    Raises:
        ValueError: for a bad config, or, without `overwrite`, a finished
            run in `out_dir` or an unfinished one with another configuration.
        FileNotFoundError: if the dataset is not available locally.

    Example:

    >>> config = TrainConfig(model="eff_resnet20", conv="hetconv", epochs=1, subset=2000)
    >>> metrics = train(config, "runs/quick")  # doctest: +SKIP
    """
    config.validate()
    metrics_path = os.path.join(out_dir, "metrics.json")
    backup_dir = os.path.join(out_dir, "backup")
    resume = os.path.isdir(backup_dir) and not overwrite
    if os.path.exists(metrics_path) and not os.path.exists(backup_dir) and not overwrite:
        raise ValueError(f"{out_dir} already holds a finished run (metrics.json); use another --out or --overwrite")
    changed = config_differences(config, out_dir) if resume else []
    if changed:
        raise ValueError(
            f"{out_dir} holds an unfinished run with another configuration ({', '.join(changed)} differ): "
            "repeat its command to resume it, or use another --out or --overwrite"
        )

    data = load_dataset(
        config.dataset,
        path=config.data_path,
        subset=config.subset,
        seed=config.seed,
        min_size=_MIN_SIZE.get(config.model),
    )
    if not resume:
        # A fresh start: no backup to restore, and logs and checkpoints that
        # start empty (CSVLogger appends, so that resumed runs keep their
        # earlier epochs). A finished run's metrics.json and model.keras stay
        # until the new ones replace them, so a failed --overwrite run still
        # leaves a complete result.
        for stale in ("backup", "checkpoints", "tensorboard"):
            shutil.rmtree(os.path.join(out_dir, stale), ignore_errors=True)
        if os.path.exists(os.path.join(out_dir, "history.csv")):
            os.remove(os.path.join(out_dir, "history.csv"))
    os.makedirs(os.path.join(out_dir, "checkpoints"), exist_ok=True)
    _atomic_write_text(os.path.join(out_dir, "config.json"), json.dumps(dataclasses.asdict(config), indent=2))

    keras.utils.set_random_seed(config.seed)
    previous_policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        train_ds, test_ds = _pipelines(data, config)
        steps = -(-data.train_size // config.batch_size)
        with data_parallel_scope(config.distribute):
            model = build_model(config, data.input_shape, data.num_classes)
            compile_for_training(model, config, steps)
            fit_callbacks = [
                keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=True),
                keras.callbacks.ModelCheckpoint(os.path.join(out_dir, "checkpoints", "epoch_{epoch:03d}.keras")),
                keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"), append=True),
                keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard")),
                *callbacks,
            ]
            start = time.perf_counter()
            model.fit(
                train_ds,
                epochs=config.epochs,
                validation_data=test_ds,
                callbacks=fit_callbacks,
                shuffle=False,  # the tf.data pipeline shuffles
                verbose=verbose,
            )
            train_seconds = time.perf_counter() - start
            test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)
    finally:
        keras.config.set_dtype_policy(previous_policy)

    with atomic_path(os.path.join(out_dir, "model.keras")) as tmp:
        model.save(tmp)
    plot_curves(os.path.join(out_dir, "history.csv"), os.path.join(out_dir, "curves.png"))
    cost = profile(model)
    standard = profile(build_model(dataclasses.replace(config, conv="standard", conv_config=None), data.input_shape, data.num_classes))
    metrics = {
        "model": config.model,
        "conv": config.conv,
        "conv_config": config.conv_config,
        "dataset": config.dataset,
        "train_images": data.train_size,
        "test_images": config.max_test_images or data.test_size,
        "input_shape": list(data.input_shape),
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "macs": cost.total_macs,
        "params": cost.total_params,
        "standard_macs": standard.total_macs,
        "standard_params": standard.total_params,
        "epochs": config.epochs,
        "train_seconds": round(train_seconds, 1),
        "backend": keras.backend.backend(),
        "mixed_precision": config.mixed_precision,
        "distributed": config.distribute,
    }
    if config.export:
        from keras_effconv.export import export_litert

        report = export_litert(model, os.path.join(out_dir, "model.tflite"), input_shape=data.input_shape)
        metrics["export"] = dict(report.to_dict(), summary=report.summary())
    _atomic_write_text(metrics_path, json.dumps(metrics, indent=2))
    return metrics
