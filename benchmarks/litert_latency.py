"""LiteRT CPU (XNNPACK) latency: every EffResNet50 conv type (or the SIC networks) vs keras ResNet50 and MobileNetV2.

Every network (224x224x3, batch 1, random weights: latency does not depend
on the values) is exported with `keras_effconv.export.export_litert` (the
inference rewrite included, outputs verified against Keras), then timed with
the `ai_edge_litert` interpreter (XNNPACK) at 1 and 2 threads, interleaved
round by round so that all models see the same machine load. Reported as
speedups over keras' ResNet50 next to the MAC reductions (1 MAC = 2 FLOPs).

    .venv/bin/python benchmarks/litert_latency.py [--rounds 15] [--target cpu] [--quick]

Writes `benchmarks/results/litert.md` (`litert_<target>.md` for a non-default
target); `--family sic` times FactorizedResNet50/101 and FactorizedVGG16
instead of the EffResNet50 conv types and writes `litert_sic.md`;
`--family shufflenet` times ShuffleNet V2 at its four widths next to
MobileNetV2 and writes `litert_shufflenet.md`. These are desktop-CPU numbers, never phone numbers.

Not named `litert.py`: TensorFlow's import tries `import litert.python...`
first, and a script directory on `sys.path` would hand it this file, run
in the middle of every benchmark's `import keras`.
"""

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time

import numpy as np

import keras

from keras_effconv import _progress
from keras_effconv import applications
from keras_effconv import profile
from keras_effconv.export import export_litert
from keras_effconv.conv_methods import conv_method_names
from keras_effconv.profiling import time_interleaved
from papers import SIC_NETWORK_CLAIMS
from results_file import save_results

SIZE = 224
BASELINE = "keras ResNet50"
THREADS = (1, 2)


# The SIC paper's networks (`--family sic`), default knobs: those the paper gives figures for.
SIC_NETWORKS = tuple(SIC_NETWORK_CLAIMS)
SHUFFLENET_WIDTHS = (0.5, 1.0, 1.5, 2.0)


def build(label):
    if label == BASELINE:
        return keras.applications.ResNet50(weights=None)
    if label == "keras MobileNetV2":
        return keras.applications.MobileNetV2(weights=None)
    if label in SIC_NETWORKS:
        return getattr(applications, label)()
    if label.startswith("ShuffleNetV2 "):
        return applications.ShuffleNetV2(float(label.split()[-1]))
    return applications.EffResNet50(conv=label.split()[-1])


def labels(quick, family="effresnet50"):
    if family == "sic":
        return [BASELINE, "keras MobileNetV2"] + list(SIC_NETWORKS[:1] if quick else SIC_NETWORKS)
    if family == "shufflenet":
        widths = SHUFFLENET_WIDTHS[1:2] if quick else SHUFFLENET_WIDTHS
        return [BASELINE, "keras MobileNetV2"] + [f"ShuffleNetV2 {w}" for w in widths]
    convs = ["hetconv", "depthwise_separable"] if quick else [c for c in conv_method_names() if c != "standard"]
    return [BASELINE, "keras MobileNetV2"] + [f"EffResNet50 {c}" for c in convs]


def interpreters(path):
    from ai_edge_litert.interpreter import Interpreter

    result = {}
    for threads in THREADS:
        interpreter = Interpreter(model_path=path, num_threads=threads)
        runner = interpreter.get_signature_runner()
        x = np.random.default_rng(0).standard_normal((1, SIZE, SIZE, 3)).astype("float32")
        result[threads] = lambda runner=runner, x=x: runner(args_0=x)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per model and thread count")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--target", choices=("cpu", "gpu"), default="cpu", help="optimize_for_inference target")
    parser.add_argument("--quick", action="store_true", help="only two conv types")
    parser.add_argument("--family", choices=("effresnet50", "sic", "shufflenet"), default="effresnet50",
                        help="EffResNet50 per conv type (default), the SIC paper's networks, or ShuffleNet V2")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    work = tempfile.mkdtemp(prefix="effconv-litert-bench-")
    macs, runs, exports = {}, {}, {}
    todo = labels(args.quick, args.family)
    # Keras' Progbar over the exports (about a minute each) when a terminal shows it; else the lines go to stderr.
    progress = _progress.Progress(f"benchmarks/litert_latency.py: exporting {len(todo)} models", len(todo), "auto", "model")
    for label in progress.iterate(todo):
        model = build(label)
        macs[label] = profile(model).total_macs
        path = os.path.join(work, label.replace(" ", "_") + ".tflite")
        start = time.time()
        report = export_litert(model, path, target=args.target, verbose=0)
        note = (f"{label}: exported in {time.time() - start:.0f} s, {sum(report.ops.values())} ops, "
                f"max diff {report.max_abs_diff:.1e}")
        if progress.verbose:
            progress.log(note)
        else:
            print(note, file=sys.stderr, flush=True)
        exports[label] = report
        runs[label] = interpreters(path)
        del model
        keras.backend.clear_session()
    progress.finish()

    median = {}
    for threads in THREADS:
        timed = time_interleaved({label: runs[label][threads] for label in runs}, args.rounds, args.warmup)
        median.update({(label, threads): t["median_ms"] for label, t in timed.items()})
    lines = [
        f"# LiteRT CPU (XNNPACK) latency, batch 1, {SIZE}x{SIZE}",
        "",
        f"Generated {datetime.date.today()} by `benchmarks/litert_latency.py` on {platform.machine()} "
        f"({os.cpu_count()} CPUs), ai-edge-litert interpreter, `optimize_for_inference(target='{args.target}')`, "
        f"{args.rounds} interleaved rounds after {args.warmup} warm-up; medians in ms. Desktop CPU, not a phone.",
        "",
        "| model | MACs | MAC reduction | 1 thread ms | 2 threads ms | speedup (2 thr.) | speedup / MAC reduction | ops | max abs diff vs Keras |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label in runs:
        reduction = macs[BASELINE] / macs[label]
        speedup = median[(BASELINE, 2)] / median[(label, 2)]
        lines.append(
            f"| {label} | {macs[label] / 1e9:.2f} G | {reduction:.2f}x | {median[(label, 1)]:.1f} | "
            f"{median[(label, 2)]:.1f} | {speedup:.2f}x | {speedup / reduction:.2f} | "
            f"{sum(exports[label].ops.values())} | {exports[label].max_abs_diff:.1e} |"
        )
    suffix = ("" if args.family == "effresnet50" else f"_{args.family}") + (
        "" if args.target == "cpu" else f"_{args.target}"
    )
    save_results("\n".join(lines) + "\n", f"litert{suffix}.md", args.out)


if __name__ == "__main__":
    main()
