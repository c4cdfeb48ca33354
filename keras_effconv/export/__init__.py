"""Export to LiteRT (TFLite) that really runs on mobile GPUs.

- `optimize_for_inference(model, target)`: an equivalent model made of
  mobile-friendly builtin ops (BN folded, efficient layers lowered).
- `export_litert(model, path, ...)`: converts in a TensorFlow subprocess,
  verifies (no Flex ops, outputs vs Keras, GPU check) and writes atomically.
- `export_onnx(model, path, ...)`: lowers, converts with the running
  backend's exporter (torch, TensorFlow; JAX through a TensorFlow worker),
  verifies with ONNX Runtime against Keras and writes atomically.
- `check_gpu(path)`: static GPU rules + a GPU-only fp32 run on the LiteRT
  GPU accelerator where one can start (e.g. Mesa lavapipe).
- `lowering_rule(LayerClass)`: registers how a layer is lowered (see
  `keras_effconv/export/rules.py`; one module per method in `lowering/`).
- `model_metadata(...)`, `read_metadata(path)`: the JSON document that makes
  a model self-describing (input shape/layout, normalisation from 8-bit
  pixels, class names, provenance), embedded in `.tflite` files and written
  as `model.json` + `labels.txt` (see `keras_effconv/export/metadata.py`).
- `quantization_aware_training(model, path, x, y)`: int8 QAT with
  tensorflow-model-optimization in its own process (post-training int8 is
  `export_litert(..., quantization="int8")`).
"""

from keras_effconv.export._layers import ChannelGather
from keras_effconv.export._layers import DepthToSpace
from keras_effconv.export.gpu_check import GpuCheckReport
from keras_effconv.export.gpu_check import check_gpu
from keras_effconv.export.inference import TARGETS
from keras_effconv.export.inference import optimize_for_inference
from keras_effconv.export.litert import QUANTIZATIONS
from keras_effconv.export.litert import ExportReport
from keras_effconv.export.litert import export_litert
from keras_effconv.export.onnx import OnnxExportReport
from keras_effconv.export.onnx import export_onnx
from keras_effconv.export.metadata import model_metadata
from keras_effconv.export.metadata import preprocess_images
from keras_effconv.export.metadata import read_metadata
from keras_effconv.export.qat import QatReport
from keras_effconv.export.qat import quantization_aware_training
from keras_effconv.export.tflite_file import inspect_tflite
from keras_effconv.export.verification import ExportError
from keras_effconv.export.rewriter import Term
from keras_effconv.export.rewriter import Value
from keras_effconv.export.rules import LoweringCall
from keras_effconv.export.rules import lowering_rule
from keras_effconv.export.rules import unregister_lowering_rule

__all__ = [
    "ChannelGather",
    "DepthToSpace",
    "ExportError",
    "ExportReport",
    "GpuCheckReport",
    "LoweringCall",
    "OnnxExportReport",
    "QUANTIZATIONS",
    "TARGETS",
    "Term",
    "Value",
    "check_gpu",
    "export_litert",
    "export_onnx",
    "inspect_tflite",
    "lowering_rule",
    "model_metadata",
    "optimize_for_inference",
    "preprocess_images",
    "QatReport",
    "quantization_aware_training",
    "read_metadata",
    "unregister_lowering_rule",
]
