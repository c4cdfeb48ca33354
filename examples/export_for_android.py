"""Export a network for the Android example app (examples/android).

    python examples/export_for_android.py --conv hetconv                  # EffResNet50, 224 px, untrained
    python examples/export_for_android.py --model my_model.keras          # your trained model
    python examples/export_for_android.py --model m.keras --quantize float16

Writes `examples/android/app/src/main/assets/model.tflite` with its metadata
embedded, `model.json` + `labels.txt` (input shape, preprocessing, class names:
`keras_effconv.export.metadata`, read by the app) and prints the export report:
the op list, Flex ops (must be 0), the max difference to Keras and the GPU check.
A trained model takes its metadata from the `model.json` beside it (written by
`keras-effconv train`); the untrained EffResNet50 gets ImageNet's
(`applications.preprocess_input`, the 1000 class names). Real test images for
the app: `python examples/android/make_assets.py`.
"""

import argparse
import os

import keras

from keras_effconv import applications
from keras_effconv.export import export_litert
from keras_effconv.export import model_metadata
from keras_effconv.export import read_metadata
from keras_effconv.export.metadata import caffe_preprocessing
from keras_effconv.export.metadata import write_metadata_files
from keras_effconv.conv_methods import conv_method_names

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "android", "app", "src", "main", "assets")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a trained .keras file (default: an untrained EffResNet50)")
    parser.add_argument("--conv", default="hetconv", choices=conv_method_names())
    parser.add_argument("--quantize", default="none", choices=("none", "float16", "dynamic_int8"))
    parser.add_argument("--out-dir", default=ASSETS)
    args = parser.parse_args()

    if args.model:
        model = keras.saving.load_model(args.model, compile=False)
        beside = os.path.join(os.path.dirname(os.path.abspath(args.model)), "model.json")
        if os.path.exists(beside):
            metadata = read_metadata(beside)
        else:
            print(f"no metadata: no {beside}; recording the input shape only")
            metadata = model_metadata(model.inputs[0].shape[1:], model=os.path.basename(args.model))
    else:
        model = applications.EffResNet50(conv=args.conv)
        names = [name for _, name in (applications.imagenet.class_index()[str(i)] for i in range(1000))]
        metadata = model_metadata((224, 224, 3), names, caffe_preprocessing(), model="eff_resnet50 (untrained)",
                                  conv=args.conv, dataset="imagenet")
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "model.tflite")
    report = export_litert(model, path, quantization=args.quantize, target="gpu", metadata=metadata)
    print(report)
    write_metadata_files(args.out_dir, read_metadata(path))


if __name__ == "__main__":
    main()
