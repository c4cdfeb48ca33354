"""QAT worker: rebuild a graph description as tf_keras, `quantize_model`, fine-tune, export int8.

Run by `quantization_aware_training` through `keras_effconv._subprocess.run_worker`
(`python -I -m keras_effconv.export._qat ARGS.json`, from an empty directory)
with `TF_USE_LEGACY_KERAS=1`: tensorflow-model-optimization only
accepts tf_keras (Keras 2) models and switches its process to legacy Keras,
so it never runs in the caller's process. The graph description (layer
classes, Keras 3 configs, inbound layers, weights) comes from a model that
`optimize_for_inference` made of standard layers only.
"""

import inspect
import json
import sys

import numpy as np

from keras_effconv._subprocess import worker_main

_SUPPORTED = (
    "InputLayer", "Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization", "Activation", "ReLU",
    "Add", "Concatenate", "Cropping2D", "ZeroPadding2D", "MaxPooling2D", "AveragePooling2D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Identity", "ChannelGather", "DepthToSpace",
    "Flatten", "Reshape", "Softmax", "Multiply", "Subtract", "Average", "Maximum", "Minimum", "LeakyReLU",
)


def _custom_layers(tf, tf_keras):
    class ChannelGather(tf_keras.layers.Layer):
        def __init__(self, indices, **kwargs):
            super().__init__(**kwargs)
            self.indices = list(indices)

        def call(self, inputs):
            return tf.gather(inputs, self.indices, axis=-1)

        def get_config(self):
            return dict(super().get_config(), indices=self.indices)

    class DepthToSpace(tf_keras.layers.Layer):
        def __init__(self, block_size, **kwargs):
            super().__init__(**kwargs)
            self.block_size = block_size

        def call(self, inputs):
            return tf.nn.depth_to_space(inputs, self.block_size)

        def get_config(self):
            return dict(super().get_config(), block_size=self.block_size)

    return {"ChannelGather": ChannelGather, "DepthToSpace": DepthToSpace}


def _no_op_config(tfmot):
    class NoOpQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """Permutations and reshuffles: values pass through unchanged."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    return NoOpQuantizeConfig


def _clean_config(cls, config):
    config = dict(config)
    config["dtype"] = "float32"
    allowed = set(inspect.signature(cls.__init__).parameters) | {"name", "dtype", "trainable"}
    if "kwargs" not in inspect.signature(cls.__init__).parameters:
        config = {k: v for k, v in config.items() if k in allowed}
    else:
        config = {k: v for k, v in config.items() if k in allowed or k in ("name", "dtype", "trainable")}
    if "activation" in config and isinstance(config["activation"], dict):
        config["activation"] = config["activation"].get("config", {}).get("name", "linear")
    for key in list(config):
        if key.endswith(("_initializer", "_regularizer", "_constraint")):
            config.pop(key)
    return config


def build(graph, weights, tf, tf_keras, tfmot):
    custom = _custom_layers(tf, tf_keras)
    no_op = _no_op_config(tfmot)
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    tensors = {}
    for entry in graph["layers"]:
        entry.pop("_layer", None)
        cls_name, name = entry["class"], entry["name"]
        if cls_name not in _SUPPORTED:
            raise ValueError(f"layer '{name}' ({cls_name}) has no tf_keras counterpart for quantization-aware training")
        if cls_name == "InputLayer":
            tensors[name] = tf_keras.Input(batch_shape=entry["config"]["batch_shape"], name=name)
            continue
        if cls_name in custom:
            cls = custom[cls_name]
            layer = cls(**{k: v for k, v in entry["config"].items() if k in ("indices", "block_size")}, name=name)
            layer = annotate(layer, quantize_config=no_op())
        elif cls_name == "Identity":
            layer = tf_keras.layers.Activation("linear", name=name)
        else:
            cls = getattr(tf_keras.layers, cls_name)
            layer = cls(**_clean_config(cls, entry["config"]))
        inputs = [tensors[i] for i in entry["inbound"]]
        tensors[name] = layer(inputs if len(inputs) > 1 else inputs[0])
    model = tf_keras.Model(
        [tensors[n] for n in graph["inputs"]], [tensors[n] for n in graph["outputs"]], name=graph["name"]
    )
    for entry in graph["layers"]:
        count = entry.get("weights", 0)
        if count:
            layer = model.get_layer(entry["name"])
            layer.set_weights([weights[f"{entry['name']}/{i}"] for i in range(count)])
    return model, dict(custom, NoOpQuantizeConfig=no_op)


def run(args):
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    with open(args["graph"]) as f:
        graph = json.load(f)
    weights = np.load(args["weights"])
    model, scope = build(graph, weights, tf, tf_keras, tfmot)
    data = np.load(args["data"])
    x, y = data["x"], data["y"]
    check = data["check_x"]
    float_out = model.predict(check, verbose=0)
    rebuild_diff = float(np.max(np.abs(float_out - data["check_y"])))
    with tfmot.quantization.keras.quantize_scope(scope):
        annotated = tfmot.quantization.keras.quantize_annotate_model(model)
        qat = tfmot.quantization.keras.quantize_apply(annotated)
    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=args["from_logits"])
    qat.compile(tf_keras.optimizers.Adam(args["learning_rate"]), loss, metrics=["accuracy"])
    history = qat.fit(x, y, batch_size=args["batch_size"], epochs=args["epochs"], verbose=0)
    # The trained QAT model has a dynamic batch; mobile needs a static one, so
    # the same graph is rebuilt with the export's batch and takes the weights.
    for entry in graph["layers"]:
        if entry["class"] == "InputLayer":
            entry["config"]["batch_shape"] = [args["input_shape"][0]] + list(entry["config"]["batch_shape"][1:])
    static, _ = build(graph, weights, tf, tf_keras, tfmot)
    with tfmot.quantization.keras.quantize_scope(scope):
        static = tfmot.quantization.keras.quantize_apply(tfmot.quantization.keras.quantize_annotate_model(static))
    static.set_weights(qat.get_weights())
    converter = tf.lite.TFLiteConverter.from_keras_model(static)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    tflite = converter.convert()
    with open(args["out_path"], "wb") as f:
        f.write(tflite)
    return {
        "rebuild_max_abs_diff": rebuild_diff,
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "bytes": len(tflite),
    }


if __name__ == "__main__":
    sys.exit(worker_main(run))
