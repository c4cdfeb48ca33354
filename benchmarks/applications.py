"""Whole-network latency: every EffResNet50 conv type (or the SIC networks) vs keras ResNet50 and MobileNetV2.

Batch 1 and 8 at 224x224 on the current Keras backend, all models timed
interleaved in one run (`keras_effconv.profiling.measure_latency`), reported
as ratios against keras' ResNet50 next to the MAC ratios. Inference only:
TensorFlow `tf.function` without XLA (XLA:CPU is slow for grouped and
depthwise convolutions), JAX `jax.jit`, torch eager under `no_grad`.

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/applications.py [--repeats 10] [--quick]

Writes `benchmarks/results/applications_<backend>.md`; with `--family sic` (FactorizedResNet50/101 and
FactorizedVGG16 instead of the EffResNet50 conv types) `applications_sic_<backend>.md`.

`--training` times one training step instead (`train_on_batch`: forward, backward and SGD update;
`keras_effconv.profiling.measure_training_speed`, all models interleaved) for every conv type against
the standard network: CIFAR-style EffResNet20 at 28x28x1, batch 128 (the main job's network), and
EffResNet50 against keras ResNet50 at 224x224, batch 8; `model.compile` defaults (no XLA on a CPU-only
TensorFlow, `jax.jit`, torch eager). Writes `applications_training_<backend>.md`.
"""

import argparse
import datetime
import os
import platform
import sys

import numpy as np

import keras

import keras_effconv
from keras_effconv import _progress
from keras_effconv import applications
from keras_effconv import profile
from keras_effconv.profiling import measure_latency
from keras_effconv.profiling import measure_training_speed
from keras_effconv.conv_methods import conv_method_names
from papers import SIC_NETWORK_CLAIMS
from results_file import save_results

SIZE = 224
BASELINE = "keras ResNet50"


# The SIC paper's networks (`--family sic`), default knobs: those the paper gives figures for.
SIC_NETWORKS = tuple(SIC_NETWORK_CLAIMS)


def per_conv_type(network, **kwargs):
    """`{"<network> <conv>": network(conv=conv)}` for every registered conv type but the standard one."""
    return {
        f"{network.__name__} {conv}": network(conv=conv, **kwargs)
        for conv in conv_method_names()
        if conv != "standard"
    }


def build_models(family="effresnet50"):
    models = {
        BASELINE: keras.applications.ResNet50(weights=None),
        "keras MobileNetV2": keras.applications.MobileNetV2(weights=None),
    }
    if family == "sic":
        for name in SIC_NETWORKS:
            models[name] = getattr(applications, name)()
        return models
    return {**models, **per_conv_type(applications.EffResNet50)}


def ratio_table(title, times, macs, base_label, macs_unit=1e9, time_header="median ms"):
    """Markdown lines: one row per model, speedup and MAC reduction against `base_label`.

    `times[label]` holds "median_ms" and "min_ms"; `macs_unit` 1e9 prints G, 1e6 prints M.
    """
    base_ms = times[base_label]["median_ms"]
    base_min_ms = times[base_label]["min_ms"]
    unit = "G" if macs_unit == 1e9 else "M"
    lines = [
        title,
        "",
        f"| model | MACs | MAC reduction | {time_header} | min ms | speedup | speedup / MAC reduction "
        "| speedup by minima |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label in times:
        reduction = macs[base_label] / macs[label]
        speedup = base_ms / times[label]["median_ms"]
        lines.append(
            f"| {label} | {macs[label] / macs_unit:.{2 if unit == 'G' else 1}f} {unit} | {reduction:.2f}x | "
            f"{times[label]['median_ms']:.1f} | {times[label]['min_ms']:.1f} | {speedup:.2f}x | "
            f"{speedup / reduction:.2f} | {base_min_ms / times[label]['min_ms']:.2f}x |"
        )
    return lines


def table(models, macs, batch, repeats, warmup, progress):
    message = f"timing batch {batch} ({repeats} rounds, {warmup} warm-up) ..."
    if progress.verbose:
        progress.log(message)
    else:
        print(message, file=sys.stderr, flush=True)
    latency = measure_latency(models, (SIZE, SIZE, 3), batch_size=batch, repeats=repeats, warmup=warmup)
    return ratio_table(f"### batch {batch}", latency, macs, BASELINE)


def training_models(scale):
    """`{label: model}` for one training-step table: the standard network first, then every conv type."""
    if scale == "resnet20":
        kwargs = dict(input_shape=(28, 28, 1), classes=10)
        standard = {"EffResNet20 standard": applications.EffResNet20(conv="standard", **kwargs)}
        return {**standard, **per_conv_type(applications.EffResNet20, **kwargs)}
    return {BASELINE: keras.applications.ResNet50(weights=None), **per_conv_type(applications.EffResNet50)}


def training_table(scale, batch, repeats, warmup):
    models = training_models(scale)
    macs = {label: profile(model).total_macs for label, model in models.items()}
    for model in models.values():
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy")
    shape = tuple(next(iter(models.values())).input_shape[1:])
    classes = next(iter(models.values())).output_shape[-1]
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (batch,) + shape).astype("float32")
    y = np.eye(classes, dtype="float32")[rng.integers(0, classes, batch)]
    print(f"timing {scale} training steps, batch {batch} ({repeats} rounds) ...", file=sys.stderr, flush=True)
    speed = measure_training_speed(models, x, y, repeats=repeats, warmup=warmup)
    base_label = next(iter(models))
    title = f"### {scale}: {'x'.join(map(str, shape))}, batch {batch}, against {base_label}"
    return ratio_table(title, speed, macs, base_label, macs_unit=1e6, time_header="step ms (median)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds at batch 1 (half at batch 8)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 rounds, for a smoke run")
    parser.add_argument("--family", choices=("effresnet50", "sic"), default="effresnet50",
                        help="EffResNet50 per conv type (default), or the SIC paper's networks")
    parser.add_argument("--training", action="store_true",
                        help="time training steps (EffResNet20 at batch 128, EffResNet50 at batch 8) instead")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    repeats = 3 if args.quick else args.repeats
    backend = keras.backend.backend()
    suffix = "" if args.family == "effresnet50" else f"_{args.family}"
    if args.training:
        suffix = "_training"
    name = f"applications{suffix}_{backend}.md"
    if args.training:
        lines = [
            f"# Training-step time on {backend}",
            "",
            f"Generated {datetime.date.today()} by `benchmarks/applications.py --training`; keras_effconv "
            f"{keras_effconv.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPU cores. One "
            f"`train_on_batch` (forward, backward, SGD-momentum update) per model per round, all models "
            f"of a table interleaved; speedup = median step time of the table's first (standard) model / "
            f"the model's (> 1 is faster); MAC reduction = forward MACs of the standard model / the model's. "
            f"Speedup by minima = the same ratio of the fastest rounds (torch's steps are bimodal on this "
            f"machine: some rounds of every model run ~15% slower, which moves medians more than minima).",
            "",
        ]
        lines += training_table("resnet20", 128, repeats, args.warmup) + [""]
        lines += training_table("resnet50", 8, max(3, repeats // 2), args.warmup) + [""]
        save_results("\n".join(lines), name, args.out)
        return

    models = build_models(args.family)
    macs = {label: profile(model).total_macs for label, model in models.items()}
    # Keras' Progbar over the two timed tables (minutes each) when a terminal shows it.
    progress = _progress.Progress(
        f"benchmarks/applications.py [{backend}]: timing {len(models)} models at batch 1 and 8", 2, "auto", "table"
    )
    lines = [
        f"# Whole-network latency on {backend} (224x224, inference)",
        "",
        f"Generated {datetime.date.today()} by `benchmarks/applications.py`; keras_effconv "
        f"{keras_effconv.__version__}, Keras {keras.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores. All models timed interleaved in one run; speedup = "
        f"median latency of keras ResNet50 / median latency of the model (> 1 is faster); "
        f"MAC reduction = ResNet50 MACs / model MACs. A speedup / MAC reduction of 1 means "
        f"the saved MACs turn fully into time. Speedup by minima = the same ratio of the fastest rounds.",
        "",
    ]
    lines += table(models, macs, 1, repeats, args.warmup, progress) + [""]
    progress.advance()
    lines += table(models, macs, 8, max(3, repeats // 2), args.warmup, progress) + [""]
    progress.finish()
    save_results("\n".join(lines), name, args.out)


if __name__ == "__main__":
    main()
