"""The training recipe behind `keras-effconv train`: plain `model.fit`, resumable.

Recipe: Keras' own augmentation layers (random horizontal flip and
translation by up to 10%) in the `tf.data` pipeline, AdamW with cosine
learning-rate decay, label smoothing 0.1, batch 128.

Every epoch ends by appending its row to `history.csv` and then writing its
`.keras` checkpoint (weights, optimizer state with its iteration counter) to a
temporary name that is moved onto `checkpoints/epoch_NNN.keras` once complete.
That checkpoint is the one record of progress: a run started again with the
same command restores the newest checkpoint that loads and whose iteration
counter matches its epoch, continues after it (`fit(initial_epoch=...)`),
drops history rows of epochs after it, and so loses at most the epoch that was
running. A run whose every epoch is checkpointed (killed after `fit()`, before
`metrics.json`) is finished without training again.

Why not `keras.callbacks.BackupAndRestore`: its backup is a second copy of the
same state written in place (a crash or full disk mid-write leaves a truncated
file that blocks every rerun with an h5py message naming no file), it is
deleted when `fit()` returns (so a run killed before `metrics.json` started
over at epoch 1 and overwrote its checkpoints), and it cannot fall back to an
older epoch. A `backup/` folder left by an earlier version is reported and
removed; the checkpoints are resumed from instead.

Nothing in the output directory is deleted or written before the whole run
is validated: the configuration, the dataset, and the network with its
`conv_config` are built first, so a bad `--conv-config` (even with
`--overwrite`) leaves `--out` as it was.

Files in the output directory:

    config.json         the `TrainConfig` of the run (written before training)
    metrics.json        test_accuracy, test_loss, macs, params, epochs, train_seconds, backend, ...;
                        written last: its presence marks a finished run
    model.keras         the trained model (written atomically)
    model.json          its metadata: input shape/layout, preprocessing (pixels / 255), class names, provenance
    labels.txt          its class names, one per line (both: keras_effconv.export.metadata)
    curves.png          loss and accuracy per epoch (train and test)
    history.csv         one row per epoch across resumed sessions, with its wall time (`seconds`)
    checkpoints/        epoch_001.keras, ... (written atomically)
    tensorboard/        TensorBoard logs
    model.tflite        with `export=True` (verified LiteRT export)

`train_seconds` is the sum of the epochs' wall time (training and validation)
over every session, as `history.csv` records it.

Checkpoints: the newest `keep_checkpoints` (2 by default) and the one with
the best test accuracy are kept; older ones are deleted once a newer one is
written.

BatchNormalization statistics are recomputed ("precise BN",
`keras_effconv/training/precise_bn.py`) before every evaluation, each
epoch's validation included, on up to `precise_bn_images` un-augmented
training images: the moving averages of a short run lag its weights so far
that it would report chance accuracy. A final test accuracy near chance
while the training accuracy is not is reported as a warning (stderr and
`metrics.json`).

Fine-tuning: `init` starts from a user's `.keras` model, `model="keras:ResNet50"`
(or another `keras_effconv.training.finetune.KERAS_APPLICATIONS` name) from a
`keras.applications` network with a local `weights` file; a classifier of the
dataset's classes replaces theirs when the number differs, `conv` converts
them (`"standard"` keeps them as they are; untouched layers keep their
weights) and `freeze` freezes the backbone or every layer but the replaced
ones (see `keras_effconv/training/finetune.py`).
"""

import csv
import dataclasses
import json
import os
import re
import shutil
import sys
import time

import keras

from keras_effconv import applications
from keras_effconv._files import atomic_path
from keras_effconv._files import remove_stale_temporaries
from keras_effconv import profile
from keras_effconv.conv_methods import conv_method_names
from keras_effconv.datasets import DATASETS
from keras_effconv.datasets import load_dataset
from keras_effconv.training import finetune
from keras_effconv.training.distribute import data_parallel_scope
from keras_effconv.training.precise_bn import PreciseBatchNormalization

# ImageNet-sized networks need at least 32x32 inputs; smaller images are resized.
_MIN_SIZE = {**{finetune.KERAS_PREFIX + name: 32 for name in finetune.KERAS_APPLICATIONS}, "eff_resnet18": 32, "eff_resnet34": 32, "eff_resnet50": 32, "eff_resnet101": 32, "eff_resnet152": 32, "eff_vgg16": 32}


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
        precise_bn_images: un-augmented training images on which the
            BatchNormalization statistics are recomputed before each
            evaluation (0: keep Keras' moving averages).
        keep_checkpoints: how many of the newest epoch checkpoints to keep
            (the best one is kept as well).
        init: optional `.keras` model to start from instead of building
            `model` (fine-tuning); `conv` other than `"standard"` converts it.
        weights: optional local weights file: for a `keras:` model, the
            `keras.applications` weights (with or without the top); for a
            `MODELS` name, passed as its `weights`.
        image_size: optional image size to resize the data to: an int
            (square) or `[height, width]`.
        freeze: None, `"backbone"` (train only the classifier) or
            `"untouched"` (train the classifier and the layers `conv`
            replaced).
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
    precise_bn_images: int = 5000
    keep_checkpoints: int = 2
    init: str = None
    weights: str = None
    image_size: object = None
    freeze: str = None

    def validate(self):
        """Raises ValueError naming the first bad field."""
        if self.model not in applications.MODELS and finetune.keras_application_name(self.model) is None:
            raise ValueError(
                f"unknown model {self.model!r}; choose one of {sorted(applications.MODELS)} or 'keras:' followed "
                f"by one of {sorted(finetune.KERAS_APPLICATIONS)}"
            )
        if self.conv not in conv_method_names():
            raise ValueError(f"unknown conv {self.conv!r}; choose one of {list(conv_method_names())}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {list(DATASETS)}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, low in (("precise_bn_images", 0), ("keep_checkpoints", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("init", "weights"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a file path (str), got {value!r}")
        if self.init is not None and not self.init.endswith(".keras"):
            raise ValueError(f"init must be a .keras file, got {self.init!r}")
        if self.init is not None and self.weights is not None:
            raise ValueError("init and weights exclude each other: a .keras model carries its weights")
        if self.freeze is not None and self.freeze not in finetune.FREEZE_CHOICES:
            raise ValueError(f"freeze must be None or one of {finetune.FREEZE_CHOICES}, got {self.freeze!r}")
        if self.image_size is not None:
            size = [self.image_size] * 2 if isinstance(self.image_size, int) else self.image_size
            if (
                not isinstance(size, (list, tuple)) or len(size) != 2
                or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in size)
            ):
                raise ValueError(f"image_size must be a positive integer or [height, width], got {self.image_size!r}")
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
    # Un-augmented training images, a fixed sample, for the BatchNormalization statistics.
    statistics = data.train.shuffle(min(data.train_size, 20000), seed=config.seed, reshuffle_each_iteration=False)
    statistics = statistics.take(config.precise_bn_images).map(lambda x, y: x).batch(config.batch_size)
    return (
        train.prefetch(tf.data.AUTOTUNE),
        test.batch(256).prefetch(tf.data.AUTOTUNE),
        statistics.prefetch(tf.data.AUTOTUNE),
    )


def build_model(config, input_shape, num_classes):
    """The network of `config` for `input_shape` and `num_classes`.

    `config.init` (a `.keras` model) or a `keras:` model name (a
    `keras.applications` network with `config.weights`) are converted with
    `config.conv` unless it is `"standard"`; `config.freeze` freezes layers
    (see `keras_effconv.training.finetune`).

    Under a mixed global dtype policy the `predictions` layer computes in
    float32, as Keras' mixed-precision guide advises: a bfloat16 softmax
    rounds probabilities to 3 significant digits and the loss with them.

    Raises:
        ValueError: if `config.init`'s model does not take `input_shape`
            (use `image_size`), or a source cannot be converted.
    """
    keras_name = finetune.keras_application_name(config.model)
    if config.init is not None or keras_name is not None:
        if config.init is not None:
            model = finetune.load_init_model(config.init, num_classes)
            expected = tuple(model.inputs[0].shape[1:])
            if None not in expected and expected != tuple(input_shape):
                raise ValueError(
                    f"init model {config.init} takes inputs of shape {expected}, the data has {tuple(input_shape)}: "
                    f"resize the data with image_size (--image-size {expected[0]},{expected[1]})"
                    + ("" if expected[-1] == input_shape[-1] else f" and use data with {expected[-1]} channels")
                )
        else:
            model = finetune.keras_application(keras_name, config.weights, tuple(input_shape), num_classes)
        replaced = []
        if config.conv != "standard":
            model, report = applications.convert(model, config.conv, config.conv_config)
            replaced = [row["name"] for row in report.replaced]
    else:
        model = applications.create(
            config.model,
            config.conv,
            config.conv_config,
            input_shape=input_shape,
            classes=num_classes,
            weights=config.weights,
        )
        replaced = [
            layer.name for layer in model.layers if isinstance(layer, tuple(m.layer for m in _efficient_methods()))
        ]
    finetune.freeze_layers(model, config.freeze, replaced)
    if keras.config.dtype_policy().compute_dtype == "float32":
        return model

    def float32_predictions(layer):
        layer_config = layer.get_config()
        if layer.name == "predictions":
            layer_config["dtype"] = "float32"
        return layer.__class__.from_config(layer_config)

    clone = keras.models.clone_model(model, clone_function=float32_predictions)
    clone.set_weights(model.get_weights())  # clone_model builds fresh weights; keep loaded ones
    return clone


def _efficient_methods():
    from keras_effconv.conv_methods import conv_methods

    return [method for method in conv_methods() if method.layer is not None]


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


def plot_curves(history_csv, path, title=None):
    """Draws loss and accuracy per epoch from a history file with matplotlib.

    Args:
        history_csv: the run's `history.csv`.
        path: the image to write (atomically).
        title: optional figure title (the recipe: model, conv and dataset).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    with open(history_csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, [float(r[metric]) for r in rows], "o-", label="train")
        if rows and f"val_{metric}" in rows[0]:
            ax.plot(epochs, [float(r[f"val_{metric}"]) for r in rows], "s-", label="test")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def config_differences(config, out_dir):
    """Names of the `TrainConfig` fields in which `out_dir`'s run differs from `config`.

    `export`, `keep_checkpoints` and `precise_bn_images` are ignored:
    they do not change the trained weights. A field missing from an earlier
    version's `config.json` has its default value. A directory without
    `config.json` differs in nothing.
    """
    path = os.path.join(out_dir, "config.json")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        previous = json.load(f)
    current = json.loads(json.dumps(dataclasses.asdict(config)))
    defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig())))
    ignored = ("export", "keep_checkpoints", "precise_bn_images")
    return sorted(
        k for k in set(previous) | set(current) if k not in ignored and previous.get(k, defaults.get(k)) != current.get(k)
    )


# What the recipe writes into --out; a fresh start removes exactly these.
_RUN_FILES = ("metrics.json", "config.json", "model.keras", "model.tflite", "curves.png", "history.csv", "model.json",
              "labels.txt")
_RUN_DIRS = ("checkpoints", "tensorboard", "backup")  # backup/: BackupAndRestore of earlier versions
_CHECKPOINT_NAME = re.compile(r"epoch_(\d{3,})\.keras")
# The names the recipe writes through `atomic_path`: the files above and the checkpoints.
_WRITTEN_NAMES = "|".join(map(re.escape, _RUN_FILES)) + r"|epoch_\d{3,}\.keras"


def run_state(out_dir):
    """What `out_dir` holds: `"finished"`, `"unfinished"` or None (no run).

    A run is finished once `metrics.json` is written (the last file) and
    unfinished from the moment its `config.json` is written (before the
    first epoch). A `backup/` folder (earlier versions' `BackupAndRestore`)
    beside `metrics.json` marks an unfinished `--overwrite` run of such a
    version.
    """
    if os.path.exists(os.path.join(out_dir, "metrics.json")) and not os.path.isdir(os.path.join(out_dir, "backup")):
        return "finished"
    if os.path.exists(os.path.join(out_dir, "config.json")):
        return "unfinished"
    return None


def _report(message):
    # One line on stderr: the run goes on, the user should still know.
    print(f"keras-effconv train: {message}", file=sys.stderr, flush=True)


def _first_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _start_afresh(out_dir):
    # metrics.json first: should this be interrupted, what remains is an
    # unfinished run, never a "finished" one mixing two runs' files.
    for name in _RUN_FILES:
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            os.remove(path)
    for name in _RUN_DIRS:
        shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)


def _read_history(path):
    """`(fieldnames, rows)` of a history file; rows whose epoch is not a number (a torn last line) are dropped."""
    if not os.path.exists(path):
        return None, []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r.get("epoch", "").isdigit() and None not in r.values()]
        return reader.fieldnames, rows


def _write_history(path, fieldnames, rows):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _history_until(path, epoch):
    """Keeps the history rows of the first `epoch` epochs (those checkpointed), one per epoch, in order.

    Rows of later epochs belong to epochs that will be trained again (a row
    is written just before its checkpoint, which may then have failed).
    """
    fieldnames, rows = _read_history(path)
    kept = {int(r["epoch"]): r for r in rows if int(r["epoch"]) < epoch}  # the last row of an epoch wins
    missing = sorted(set(range(epoch)) - set(kept))
    if missing:
        _report(f"{path} lacks epoch(s) {[e + 1 for e in missing]}; train_seconds counts only the logged epochs")
    if fieldnames is not None:
        if "seconds" not in fieldnames:  # an earlier version's CSVLogger file
            fieldnames = [*fieldnames, "seconds"]
        _write_history(path, fieldnames, [kept[e] for e in sorted(kept)])


def _history_value(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class _CommitEpoch(keras.callbacks.Callback):
    """Ends every epoch with its `history.csv` row, then its checkpoint, written to a temporary name and moved.

    The row goes first: a checkpoint never exists without its row, and a row
    without its checkpoint (a crash or full disk in between) is dropped when
    the run resumes from the previous checkpoint. The time of the epoch is
    taken before the checkpoint is written.
    """

    def __init__(self, history_path, checkpoint_dir, keep=None):
        super().__init__()
        self.history_path = history_path
        self.checkpoint_dir = checkpoint_dir
        self.keep = keep
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        row = {"epoch": epoch, **{k: _history_value(v) for k, v in (logs or {}).items()}, "seconds": f"{seconds:.3f}"}
        fieldnames, _ = _read_history(self.history_path)
        if fieldnames is None:
            fieldnames = ["epoch", *sorted(logs or {}), "seconds"]
            header = True
        else:
            header = False
        with open(self.history_path, "a", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames, restval="", extrasaction="ignore")
            if header:
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())
        with atomic_path(os.path.join(self.checkpoint_dir, f"epoch_{epoch + 1:03d}.keras")) as tmp:
            self.model.save(tmp)
        if self.keep is not None:
            prune_checkpoints(self.checkpoint_dir, self.history_path, self.keep)


def prune_checkpoints(checkpoint_dir, history_path, keep):
    """Deletes epoch checkpoints but the newest `keep` and the best one.

    The best is the epoch with the highest `val_accuracy` in `history.csv`
    (the newest without one). Only files named `epoch_NNN.keras` are touched.

    Returns:
        The deleted paths.
    """
    epochs = sorted(
        int(match.group(1))
        for match in map(_CHECKPOINT_NAME.fullmatch, os.listdir(checkpoint_dir))
        if match
    )
    _, rows = _read_history(history_path)
    accuracy = {}
    for row in rows:
        try:
            accuracy[int(row["epoch"]) + 1] = float(row.get("val_accuracy", ""))
        except ValueError:
            pass
    scored = [e for e in epochs if e in accuracy]
    kept = set(epochs[-keep:])
    if scored:
        kept.add(max(scored, key=lambda e: (accuracy[e], e)))
    deleted = []
    for epoch in epochs:
        if epoch not in kept:
            path = os.path.join(checkpoint_dir, f"epoch_{epoch:03d}.keras")
            os.remove(path)
            deleted.append(path)
    return deleted


def _iterations(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _restore_newest_checkpoint(model, checkpoint_dir, epochs, steps_per_epoch):
    """Loads the newest intact checkpoint of `checkpoint_dir` into the compiled `model`.

    A checkpoint is intact if its weights and optimizer state load and its
    iteration counter is `epoch * steps_per_epoch` (None: not checked). Each
    newer one that is not is reported by path and left in place: training
    replaces it when it reaches its epoch again.

    Returns:
        The epoch of the restored checkpoint (1-based), or 0 if there is none.

    Raises:
        ValueError: if there are checkpoints but none is intact (they are
            left as they are; `overwrite=True` starts afresh).
    """
    found = []
    for name in os.listdir(checkpoint_dir) if os.path.isdir(checkpoint_dir) else ():
        match = _CHECKPOINT_NAME.fullmatch(name)
        if match and 1 <= int(match.group(1)) <= epochs:
            found.append((int(match.group(1)), os.path.join(checkpoint_dir, name)))
    if not found:
        return 0
    if not model.optimizer.built:
        # Optimizer variables must exist to receive the saved ones (Keras
        # otherwise skips them with a warning).
        model.optimizer.build(model.trainable_variables)
    unusable = []
    for epoch, path in sorted(found, reverse=True):
        try:
            model.load_weights(path)
            iterations = _iterations(model)
            if steps_per_epoch is not None and iterations != epoch * steps_per_epoch:
                raise ValueError(
                    f"its optimizer has taken {iterations} steps, not {epoch} epochs x {steps_per_epoch} steps"
                )
        except Exception as error:  # noqa: BLE001 -- any failure to load makes the file unusable
            unusable.append((path, _first_line(error)))
            continue
        for bad, reason in unusable:
            _report(f"{bad} is unusable ({reason}); resuming from {path}")
        return epoch
    raise ValueError(
        f"no checkpoint in {checkpoint_dir} can be restored ("
        + "; ".join(f"{bad}: {reason}" for bad, reason in unusable)
        + "); use --overwrite to start afresh"
    )


def _steps_per_epoch(dataset):
    steps = int(dataset.cardinality())
    return steps if steps >= 0 else None  # unknown or infinite: not checked


def _near_chance_warnings(test_accuracy, history_rows, num_classes):
    """A warning when the test accuracy sits near chance while the training accuracy does not."""
    chance = 1.0 / num_classes
    try:
        train_accuracy = float(history_rows[-1]["accuracy"])
    except (IndexError, KeyError, ValueError):
        return []
    if test_accuracy < 1.5 * chance and train_accuracy >= 3 * chance:
        return [
            f"test accuracy {test_accuracy:.3f} is near chance ({chance:.3f}) while the training accuracy is "
            f"{train_accuracy:.3f}: the model does not generalise (too few images or epochs, a learning rate too "
            "high, or test data prepared differently from the training data)"
        ]
    return []


def train(config, out_dir, callbacks=(), overwrite=False, verbose="auto", build=None):
    """Trains `config.model` with `model.fit` and writes the run to `out_dir`.

    Args:
        config: a `TrainConfig`.
        out_dir: output directory (created if needed). If it holds an
            unfinished run (a `config.json` without `metrics.json`) of the
            same configuration, training resumes from its newest intact
            checkpoint; if every epoch is checkpointed, the run is finished
            (evaluated and saved) without training again.
        callbacks: extra Keras callbacks.
        overwrite: start from scratch even if `out_dir` holds a finished
            run or an unfinished one; the earlier run's files are removed
            once the new run is validated (configuration, data, network),
            so a bad configuration leaves them as they were. Otherwise a
            finished run is refused and nothing is touched.
        verbose: `model.fit` verbosity (Keras' progress bar by default).
        build: None, or a callable `(input_shape, num_classes) -> keras.Model`
            that builds the network to train instead of `config.model`'s
            (e.g. an expanded or a decomposed one, see
            `keras_effconv.training.separable`). It is called once per
            session, after `keras.utils.set_random_seed(config.seed)`, and
            must build the same architecture every time so that a resumed
            run can restore its checkpoints; `config.model` still names the
            standard network the MACs are compared with.

    Returns:
        The metrics dict written to `out_dir/metrics.json`.

    Raises:
        ValueError: for a bad config (including a `conv_config` the network
            cannot use), or, without `overwrite`, a finished run in
            `out_dir`, an unfinished one with another configuration, or one
            none of whose checkpoints can be restored. Nothing in `out_dir`
            is changed.
        FileNotFoundError: if the dataset is not available locally.

    Example:

    >>> config = TrainConfig(model="eff_resnet20", conv="hetconv", epochs=1, subset=2000)
    >>> metrics = train(config, "runs/quick")  # doctest: +SKIP
    """
    config.validate()
    metrics_path = os.path.join(out_dir, "metrics.json")
    history_path = os.path.join(out_dir, "history.csv")
    checkpoint_dir = os.path.join(out_dir, "checkpoints")
    state = run_state(out_dir)
    if state == "finished" and not overwrite:
        raise ValueError(f"{out_dir} already holds a finished run (metrics.json); use another --out or --overwrite")
    resume = state == "unfinished" and not overwrite
    changed = config_differences(config, out_dir) if resume else []
    if changed:
        raise ValueError(
            f"{out_dir} holds an unfinished run with another configuration ({', '.join(changed)} differ): "
            "repeat its command to resume it, or use another --out or --overwrite"
        )

    image_size = config.image_size
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    data = load_dataset(
        config.dataset,
        path=config.data_path,
        subset=config.subset,
        image_size=tuple(image_size) if image_size else None,
        seed=config.seed,
        min_size=None if config.init else _MIN_SIZE.get(config.model),
    )
    keras.utils.set_random_seed(config.seed)
    previous_policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        train_ds, test_ds, statistics_ds = _pipelines(data, config)
        steps = -(-data.train_size // config.batch_size)
        with data_parallel_scope(config.distribute):
            # Built before anything in out_dir is deleted or written: a
            # conv_config the network cannot use fails here.
            if build is None:
                model = build_model(config, data.input_shape, data.num_classes)
            else:
                model = build(data.input_shape, data.num_classes)
            compile_for_training(model, config, steps)
            if resume:
                start_epoch = _restore_newest_checkpoint(
                    model, checkpoint_dir, config.epochs, _steps_per_epoch(train_ds)
                )
                _history_until(history_path, start_epoch)
                if os.path.isdir(os.path.join(out_dir, "backup")):
                    _report(f"ignoring and removing {os.path.join(out_dir, 'backup')} (an earlier version's "
                            f"BackupAndRestore state); resuming from the checkpoints")
                    shutil.rmtree(os.path.join(out_dir, "backup"))
            else:
                start_epoch = 0
                _start_afresh(out_dir)
            os.makedirs(checkpoint_dir, exist_ok=True)
            # Left by a process killed while writing a result or a checkpoint; none of this
            # process's writes is in progress here.
            for directory in (out_dir, checkpoint_dir):
                remove_stale_temporaries(directory, _WRITTEN_NAMES, include_this_process=True)
            _atomic_write_text(os.path.join(out_dir, "config.json"), json.dumps(dataclasses.asdict(config), indent=2))
            precise_bn = [PreciseBatchNormalization(statistics_ds)] if config.precise_bn_images else []
            if start_epoch < config.epochs:
                model.fit(
                    train_ds,
                    epochs=config.epochs,
                    initial_epoch=start_epoch,
                    validation_data=test_ds,
                    callbacks=[
                        # Before _CommitEpoch: each checkpoint holds the statistics of its weights.
                        *precise_bn,
                        _CommitEpoch(history_path, checkpoint_dir, keep=config.keep_checkpoints),
                        keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard")),
                        *callbacks,
                    ],
                    shuffle=False,  # the tf.data pipeline shuffles
                    verbose=verbose,
                )
            # Validation in fit() already set the statistics of these weights; a run with no
            # epoch left to train sets them here.
            final_callbacks = precise_bn if start_epoch >= config.epochs else []
            test_loss, test_accuracy = model.evaluate(test_ds, verbose=0, callbacks=final_callbacks)
    finally:
        keras.config.set_dtype_policy(previous_policy)

    with atomic_path(os.path.join(out_dir, "model.keras")) as tmp:
        model.save(tmp)
    from keras_effconv.export.metadata import model_metadata
    from keras_effconv.export.metadata import write_metadata_files

    metadata = model_metadata(
        data.input_shape, data.class_names, data.preprocessing,
        layout="NCHW" if keras.config.image_data_format() == "channels_first" else "NHWC",
        model=config.model, conv=config.conv, conv_config=config.conv_config, dataset=config.dataset,
        test_accuracy=float(test_accuracy),
    )
    write_metadata_files(out_dir, metadata)
    source = os.path.basename(config.init) if config.init else config.model
    plot_curves(
        history_path, os.path.join(out_dir, "curves.png"), title=f"{source}, conv={config.conv}, {config.dataset}"
    )
    _, rows = _read_history(history_path)
    warnings = _near_chance_warnings(float(test_accuracy), rows, data.num_classes)
    for warning in warnings:
        _report(f"warning: {warning}")
    cost = profile(model)
    # A standard network (conv="standard", e.g. ShuffleNet V2 whose knobs are in conv_config) is its own reference.
    # A fixed design keeps its knobs: they choose its regular counterpart (IGCV1's equal-parameter ResNet).
    knobs = config.conv_config if config.model in applications.FIXED_DESIGN_METHODS else None
    standard_config = config if config.conv == "standard" else dataclasses.replace(config, conv="standard", conv_config=knobs)
    standard = profile(build_model(standard_config, data.input_shape, data.num_classes))
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
        # Every session's epochs, as history.csv records them.
        "train_seconds": round(sum(float(r.get("seconds") or 0) for r in rows), 1),
        "backend": keras.backend.backend(),
        "mixed_precision": config.mixed_precision,
        "distributed": config.distribute,
        "precise_bn_images": config.precise_bn_images,
        "init": config.init,
        "weights": config.weights,
        "freeze": config.freeze,
        "warnings": warnings,
    }
    if config.export:
        from keras_effconv.export import export_litert

        report = export_litert(
            model, os.path.join(out_dir, "model.tflite"), input_shape=data.input_shape, metadata=metadata
        )
        metrics["export"] = dict(report.to_dict(), summary=report.summary())
    _atomic_write_text(metrics_path, json.dumps(metrics, indent=2))
    return metrics
