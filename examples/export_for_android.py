"""Export a network for the Android example app (examples/android).

    python examples/export_for_android.py --conv hetconv                  # EffResNet50, 224 px, untrained
    python examples/export_for_android.py --model my_model.keras          # your trained model
    python examples/export_for_android.py --model m.keras --quantize float16

Writes `examples/android/app/src/main/assets/model.tflite` and `model.json`
(input shape and name, read by the app) and prints the export report: the
op list, Flex ops (must be 0), the max difference to Keras and the GPU check.
"""

import argparse
import json
import os

import keras

from keras_effconv import applications
from keras_effconv.export import export_litert
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
        name = os.path.basename(args.model)
    else:
        model = applications.EffResNet50(conv=args.conv)
        name = f"EffResNet50 {args.conv} (untrained)"
    os.makedirs(args.out_dir, exist_ok=True)
    report = export_litert(model, os.path.join(args.out_dir, "model.tflite"), quantization=args.quantize, target="gpu")
    print(report)
    with open(os.path.join(args.out_dir, "model.json"), "w") as f:
        json.dump({"input_shape": report.input_shapes[0], "name": name}, f)


if __name__ == "__main__":
    main()
