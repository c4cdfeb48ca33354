"""Whole-network latency: every EffResNet50 conv type (or the SIC networks) vs keras ResNet50 and MobileNetV2.

Batch 1 and 8 at 224x224 on the current Keras backend, all models timed
interleaved in one run (`keras_effconv.profiling.measure_latency`), reported
as ratios against keras' ResNet50 next to the MAC ratios. Inference only:
TensorFlow `tf.function` without XLA (XLA:CPU is slow for grouped and
depthwise convolutions), JAX `jax.jit`, torch eager under `no_grad`.

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/applications.py [--repeats 10] [--quick]

Writes `benchmarks/results/applications_<backend>.md`; with `--family sic` (FactorizedResNet50/101 and
FactorizedVGG16 instead of the EffResNet50 conv types) `applications_sic_<backend>.md`.
"""

import argparse
import datetime
import os
import platform
import sys

import keras

import keras_effconv
from keras_effconv import applications
from keras_effconv import profile
from keras_effconv.profiling import measure_latency
from keras_effconv.conv_methods import conv_method_names
from papers import SIC_NETWORK_CLAIMS

SIZE = 224
BASELINE = "keras ResNet50"


# The SIC paper's networks (`--family sic`), default knobs: those the paper gives figures for.
SIC_NETWORKS = tuple(SIC_NETWORK_CLAIMS)


def build_models(family="effresnet50"):
    models = {
        BASELINE: keras.applications.ResNet50(weights=None),
        "keras MobileNetV2": keras.applications.MobileNetV2(weights=None),
    }
    if family == "sic":
        for name in SIC_NETWORKS:
            models[name] = getattr(applications, name)()
        return models
    for conv in conv_method_names():
        if conv != "standard":
            models[f"EffResNet50 {conv}"] = applications.EffResNet50(conv=conv)
    return models


def table(models, macs, batch, repeats, warmup):
    print(f"timing batch {batch} ({repeats} rounds, {warmup} warm-up) ...", file=sys.stderr, flush=True)
    latency = measure_latency(models, (SIZE, SIZE, 3), batch_size=batch, repeats=repeats, warmup=warmup)
    base_ms = latency[BASELINE]["median_ms"]
    lines = [
        f"### batch {batch}",
        "",
        "| model | MACs | MAC reduction | median ms | min ms | speedup | speedup / MAC reduction |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label in models:
        reduction = macs[BASELINE] / macs[label]
        median = latency[label]["median_ms"]
        speedup = base_ms / median
        lines.append(
            f"| {label} | {macs[label] / 1e9:.2f} G | {reduction:.2f}x | {median:.1f} | "
            f"{latency[label]['min_ms']:.1f} | {speedup:.2f}x | {speedup / reduction:.2f} |"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds at batch 1 (half at batch 8)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 rounds, for a smoke run")
    parser.add_argument("--family", choices=("effresnet50", "sic"), default="effresnet50",
                        help="EffResNet50 per conv type (default), or the SIC paper's networks")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    backend = keras.backend.backend()
    suffix = "" if args.family == "effresnet50" else f"_{args.family}"
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"applications{suffix}_{backend}.md")

    models = build_models(args.family)
    macs = {label: profile(model).total_macs for label, model in models.items()}
    lines = [
        f"# Whole-network latency on {backend} (224x224, inference)",
        "",
        f"Generated {datetime.date.today()} by `benchmarks/applications.py`; keras_effconv "
        f"{keras_effconv.__version__}, Keras {keras.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores. All models timed interleaved in one run; speedup = "
        f"median latency of keras ResNet50 / median latency of the model (> 1 is faster); "
        f"MAC reduction = ResNet50 MACs / model MACs. A speedup / MAC reduction of 1 means "
        f"the saved MACs turn fully into time.",
        "",
    ]
    lines += table(models, macs, 1, repeats, args.warmup) + [""]
    lines += table(models, macs, 8, max(3, repeats // 2), args.warmup) + [""]
    text = "\n".join(lines)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
