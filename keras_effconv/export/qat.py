"""Int8 quantization-aware training with tensorflow-model-optimization.

tfmot accepts only tf_keras (Keras 2) models and switches its process to
legacy Keras. After `optimize_for_inference` a keras_effconv model is made of
standard layers (plus two permutation layers), so it is described as a graph
(layer classes, configs, weights), rebuilt as a tf_keras model in a separate
process (`_qat.py`), passed through `quantize_model`, fine-tuned, and
converted to an int8 `.tflite` with a static batch.
"""

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np

import keras

from keras_effconv._files import atomic_path
from keras_effconv._files import existing_directory
from keras_effconv._model_graph import nodes_in_order
from keras_effconv._model_graph import producer
from keras_effconv._subprocess import WorkerError
from keras_effconv._subprocess import run_worker
from keras_effconv.export.tflite_file import inspect_tflite
from keras_effconv.export.inference import optimize_for_inference
from keras_effconv.export.verification import ExportError
from keras_effconv.export.verification import interpreter_outputs


@dataclasses.dataclass
class QatReport:
    """What `quantization_aware_training` produced.

    Attributes:
        path: the written int8 `.tflite` file.
        ops: LiteRT operator name -> count.
        flex_ops: always empty for a written file.
        file_size: bytes.
        rebuild_max_abs_diff: max |tf_keras rebuild - Keras| before QAT
            (checks the Keras 3 -> tf_keras rebuild).
        history: the fine-tuning history (loss, accuracy per epoch).
        agreement: int8 top-1 agreement with the original float Keras model
            on `validation_data` (None without it).
        float_accuracy, int8_accuracy: top-1 accuracies on
            `validation_data` when it has labels.
        samples: number of validation images.
    """

    path: str
    ops: dict
    flex_ops: list
    file_size: int
    rebuild_max_abs_diff: float
    history: dict
    agreement: object = None
    float_accuracy: object = None
    int8_accuracy: object = None
    samples: int = 0

    def to_dict(self):
        return dataclasses.asdict(self)

    def summary(self):
        lines = [
            f"wrote {self.path} ({self.file_size / 1e6:.2f} MB, int8 QAT, {sum(self.ops.values())} ops, "
            f"Flex ops: {len(self.flex_ops)})",
            f"tf_keras rebuild max |diff| = {self.rebuild_max_abs_diff:.2e}; fine-tuning: "
            + ", ".join(f"{k} {v[-1]:.4f}" for k, v in self.history.items()),
        ]
        if self.agreement is not None:
            line = f"int8 vs float top-1 agreement: {self.agreement:.4f} on {self.samples} images"
            if self.float_accuracy is not None:
                line += f" (accuracy float {self.float_accuracy:.4f}, int8 {self.int8_accuracy:.4f})"
            lines.append(line)
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def _graph(model):
    """A JSON description of a flat Functional model, topologically ordered."""
    layers, weights = [], {}
    seen = set()
    for node in nodes_in_order(model):
        op = node.operation
        if op.name in seen:
            raise ValueError(f"layer '{op.name}' is shared; quantization-aware training needs unshared layers")
        seen.add(op.name)
        entry = {
            "name": op.name,
            "class": type(op).__name__,
            "config": op.get_config(),
            "inbound": [producer(t).name for t in node.input_tensors],
        }
        values = op.get_weights()
        entry["weights"] = len(values)
        for i, value in enumerate(values):
            weights[f"{op.name}/{i}"] = value
        layers.append(entry)
    return {
        "name": model.name,
        "layers": layers,
        "inputs": [producer(t).name for t in model.inputs],
        "outputs": [producer(t).name for t in model.outputs],
    }, weights


def _ends_with_softmax(model):
    last = producer(model.outputs[0])
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") == "softmax" or isinstance(last, keras.layers.Softmax)


def quantization_aware_training(
    model,
    path,
    x,
    y,
    epochs=1,
    batch_size=64,
    learning_rate=1e-4,
    validation_data=None,
    input_shape=None,
    export_batch_size=1,
):
    """Fine-tunes `model` with int8 fake quantization and exports an int8 `.tflite`.

    The model is first rewritten by `optimize_for_inference(target="cpu")`
    (BatchNormalization folded, efficient layers lowered to standard ones),
    then rebuilt as a tf_keras model in a separate process, where
    tensorflow-model-optimization's `quantize_model` inserts fake
    quantization; it is fine-tuned on `(x, y)` with sparse categorical
    cross-entropy and converted with a static batch (TFLITE_BUILTINS only).
    Written atomically like `export_litert`. Needs
    `tensorflow-model-optimization` (the `tfmot` extra).

    Args:
        model: a built Functional/Sequential classifier (logits or softmax).
        path: where to write the `.tflite` file.
        x: training images, float32 `(N, H, W, C)` in the model's input format.
        y: integer labels `(N,)`.
        epochs: fine-tuning epochs (default 1).
        batch_size: fine-tuning batch size.
        learning_rate: Adam learning rate (small: the model is trained).
        validation_data: optional `x_val` or `(x_val, y_val)`; the report
            gives int8-vs-float top-1 agreement (and accuracies with labels).
        input_shape: per-sample shape when the model's is not fixed.
        export_batch_size: static batch of the exported file (default 1).

    Returns:
        A `QatReport`.

    Raises:
        ValueError: for bad arguments, layers without a tf_keras
            counterpart, or `ExportError` when the worker fails.
        ImportError: when tensorflow-model-optimization is not installed.

    Example:

    >>> report = quantization_aware_training(model, "m_int8.tflite", x_train, y_train,
    ...                                      validation_data=(x_test, y_test))  # doctest: +SKIP
    """
    import importlib.util

    if importlib.util.find_spec("tensorflow_model_optimization") is None:
        raise ImportError(
            "quantization-aware training needs tensorflow-model-optimization: "
            "pip install 'keras-effconv[tfmot]' (tensorflow-model-optimization==0.8.1)"
        )
    x = np.asarray(x, dtype="float32")
    y = np.asarray(y).astype("int64").reshape(-1)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"Invalid values for `x` and `y`: expected the same non-zero length. Received {len(x)} and {len(y)}.")
    path = os.fspath(path)
    existing_directory(path)
    optimized = optimize_for_inference(model, target="cpu", input_shape=input_shape, batch_size=None)
    per_sample = tuple(optimized.inputs[0].shape[1:])
    if tuple(x.shape[1:]) != per_sample:
        raise ValueError(f"Invalid value for argument `x`: samples have shape {x.shape[1:]}, the model input is {per_sample}.")
    graph, weights = _graph(optimized)
    work = tempfile.mkdtemp(prefix="effconv-qat-")
    try:
        with atomic_path(path) as tmp_path:
            with open(os.path.join(work, "graph.json"), "w") as f:
                json.dump(graph, f, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
            np.savez(os.path.join(work, "weights.npz"), **weights)
            check_x = x[:8]
            check_y = keras.ops.convert_to_numpy(optimized(check_x))
            np.savez(os.path.join(work, "data.npz"), x=x, y=y, check_x=check_x, check_y=check_y)
            args = {
                "graph": os.path.join(work, "graph.json"),
                "weights": os.path.join(work, "weights.npz"),
                "data": os.path.join(work, "data.npz"),
                "out_path": tmp_path,
                "epochs": int(epochs),
                "batch_size": int(batch_size),
                "learning_rate": float(learning_rate),
                "from_logits": not _ends_with_softmax(optimized),
                "input_shape": [int(export_batch_size)] + list(per_sample),
            }
            try:
                result = run_worker(
                    args,
                    "quantization-aware training",
                    module="keras_effconv.export._qat",
                    env={"TF_USE_LEGACY_KERAS": "1"},
                )
            except WorkerError as error:
                raise ExportError(str(error)) from None
            info = inspect_tflite(tmp_path)
            if info["flex_ops"] or info["custom_ops"]:
                raise ExportError(f"the QAT model uses Flex/custom ops {info['flex_ops'] + info['custom_ops']}")
            report = QatReport(
                path=path, ops=info["ops"], flex_ops=info["flex_ops"], file_size=os.path.getsize(tmp_path),
                rebuild_max_abs_diff=result["rebuild_max_abs_diff"], history=result["history"],
            )
            if validation_data is not None:
                _validate(report, model, tmp_path, validation_data, int(export_batch_size))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _validate(report, model, tmp_path, validation_data, batch):
    if isinstance(validation_data, (tuple, list)):
        x_val, y_val = validation_data
    else:
        x_val, y_val = validation_data, None
    x_val = np.asarray(x_val, dtype="float32")
    count = len(x_val) - len(x_val) % batch
    batches = [[x_val[i : i + batch]] for i in range(0, count, batch)]
    int8 = np.concatenate([np.argmax(out[0], axis=-1) for out in interpreter_outputs(tmp_path, batches)])
    float_ = np.argmax(keras.ops.convert_to_numpy(model.predict(x_val[:count], verbose=0)), axis=-1)
    report.samples = int(count)
    report.agreement = float(np.mean(int8 == float_))
    if y_val is not None:
        y_val = np.asarray(y_val).reshape(-1)[:count]
        report.float_accuracy = float(np.mean(float_ == y_val))
        report.int8_accuracy = float(np.mean(int8 == y_val))
