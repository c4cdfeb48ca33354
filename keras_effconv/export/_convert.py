"""Conversion worker: `.keras` file -> `.tflite`, run in its own process.

`export_litert` runs this module through `keras_effconv._subprocess.run_worker`
(`python -I -m keras_effconv.export._convert ARGS.json`, from an empty
directory) with `KERAS_BACKEND=tensorflow`, so the export works from any
backend and the converter's per-call memory leak dies with the process.
The result (or `{"error": ...}`) is written as JSON.

The conversion follows Keras' own `model.export(format="litert")` path
(ExportArchive -> SavedModel -> `TFLiteConverter.from_saved_model`) but with
a static input signature and TFLITE_BUILTINS only (Keras also allows Flex
ops, which never run on a mobile GPU).
"""

import csv
import functools
import sys
import tempfile

from keras_effconv._files import load_keras_model
from keras_effconv._subprocess import worker_main


def _representative(calibration, count=None):
    import numpy as np

    data = np.load(calibration)

    def generator():
        for i in range(len(data) if count is None else min(count, len(data))):
            yield [data[i : i + 1].astype("float32")]

    return generator


def _layer_report(converter, calibration, limit):
    """Per-layer int8 error from TensorFlow's QuantizationDebugger."""
    import numpy as np
    import tensorflow as tf

    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=_representative(calibration, count=limit)
    )
    debugger.run()
    with tempfile.NamedTemporaryFile("w+", suffix=".csv") as f:
        debugger.layer_statistics_dump(f)
        f.flush()
        f.seek(0)
        rows = list(csv.DictReader(f))
    report = []
    for row in rows:
        scale = float(row.get("scale") or 0) or 1.0
        mse = float(row.get("mean_squared_error") or 0)
        report.append(
            {
                "op": row.get("op_name"),
                "tensor": row.get("tensor_name"),
                "rmse_over_scale": float(np.sqrt(mse) / scale),
                "max_abs_error": float(row.get("max_abs_error") or 0),
                "scale": scale,
            }
        )
    return report


def convert(args):
    import tensorflow as tf

    import keras

    import keras_effconv  # noqa: F401  (registers the custom layers)
    import keras_effconv.export  # noqa: F401

    model = load_keras_model(args["keras_path"], argument="keras_path")
    specs = [tf.TensorSpec(shape, tf.float32) for shape in args["input_shapes"]]
    signature = specs if len(specs) == 1 else [specs]
    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve", functools.partial(model.__call__, training=False), input_signature=signature
        )
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        quantization = args["quantization"]
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            converter.representative_dataset = _representative(args["calibration"])
        data = converter.convert()
        layer_report = None
        if quantization == "int8" and args.get("layer_report"):
            try:
                layer_report = _layer_report(converter, args["calibration"], args.get("layer_report_samples", 32))
            except Exception as error:  # the report is diagnostic only
                layer_report = {"error": f"{type(error).__name__}: {error}"}
    with open(args["out_path"], "wb") as f:
        f.write(data)
    return {"bytes": len(data), "layer_report": layer_report}


if __name__ == "__main__":
    sys.exit(worker_main(convert))
