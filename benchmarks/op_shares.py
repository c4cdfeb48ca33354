"""Where keras ResNet50's time goes on TensorFlow, and what that leaves for any conv replacement.

Profiles keras ResNet50 (224x224, batch 8) for one inference call and one
training step (`train_on_batch`, SGD with momentum) with TensorFlow's own
profiler (`tf.profiler.experimental`), sums the op times by op type, and
splits them into convolutions (Conv2D, its gradients, depthwise, MatMul)
and everything else (batch normalization's element-wise ops, ReLU, adds,
pooling, the optimizer's updates). An EffResNet50 conv type replaces only
convolutions, so even if its convolutions ran exactly in proportion to its
MACs, its speedup over ResNet50 could not exceed

    1 / (other share + convolution share / MAC reduction)

and its "speedup / MAC reduction" (the figure `benchmarks/applications.py`
reports) could not exceed that divided by the MAC reduction. This script
prints that ceiling for every registered conv type next to its MAC reduction.
The shares come from op times summed over TensorFlow's threads (2 cores
here), so they are shares of CPU time, not of wall time.

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/op_shares.py [--steps 2]

Writes `benchmarks/results/op_shares_tensorflow.md`.
"""

import argparse
import collections
import datetime
import glob
import os
import platform
import sys
import tempfile

import numpy as np

import keras

import keras_effconv
from keras_effconv import applications
from keras_effconv import profile
from keras_effconv.conv_methods import conv_method_names
from results_file import save_results

BATCH = 8
SIZE = 224
# Profiler events that wrap other ops (a function call, the executor's run), not ops themselves.
WRAPPERS = ("Process", "Run")


def is_convolution(op_type):
    return any(word in op_type for word in ("Conv2D", "DepthwiseConv", "MatMul", "Einsum"))


def op_times(step, steps):
    """`{op type: CPU ms}` summed over `steps` profiled calls of `step` (TensorFlow's profiler)."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            step()
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
    times = collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" not in name:
                    continue
                op_type = name.rsplit(":", 1)[-1].strip()
                if op_type in WRAPPERS or op_type.startswith("__inference"):
                    continue
                times[op_type] += event.duration_ps / 1e9 / steps
    return times


def share_table(title, times):
    total = sum(times.values())
    conv = sum(t for op, t in times.items() if is_convolution(op))
    lines = [title, "", "| op type | CPU ms per call | share | counted as |", "|---|---:|---:|---|"]
    for op, t in times.most_common():
        if t / total < 0.005:
            break
        kind = "convolution" if is_convolution(op) else "other"
        lines.append(f"| {op} | {t:.1f} | {100 * t / total:.1f}% | {kind} |")
    lines += ["", f"Convolutions: **{100 * conv / total:.1f}%** of {total:.0f} CPU ms; everything else "
              f"{100 * (1 - conv / total):.1f}%.", ""]
    return lines, conv / total


def ceiling_table(conv_shares, reductions):
    lines = [
        "### Ceiling for a conv replacement whose convolutions scale exactly with its MACs",
        "",
        "| model | MAC reduction | inference: max speedup | max speedup / MAC reduction "
        "| training: max speedup | max speedup / MAC reduction |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, reduction in reductions.items():
        cells = []
        for mode in ("inference", "training"):
            share = conv_shares[mode]
            speedup = 1.0 / ((1.0 - share) + share / reduction)
            cells += [f"{speedup:.2f}x", f"{speedup / reduction:.2f}"]
        lines.append(f"| {label} | {reduction:.2f}x | " + " | ".join(cells) + " |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2, help="profiled calls per mode (after 3 warm-up calls)")
    parser.add_argument("--out", default=None, help="results file (default benchmarks/results/op_shares_tensorflow.md)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if keras.backend.backend() != "tensorflow":
        sys.exit("op_shares.py profiles with TensorFlow's profiler: run it with KERAS_BACKEND=tensorflow")

    model = keras.applications.ResNet50(weights=None)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (BATCH, SIZE, SIZE, 3)).astype("float32")
    y = np.eye(1000, dtype="float32")[rng.integers(0, 1000, BATCH)]
    steps = {
        "inference": lambda: model.predict_on_batch(x),
        "training": lambda: model.train_on_batch(x, y),
    }
    lines = [
        "# keras ResNet50 on TensorFlow: convolutions' share of the op time, and the ceiling it sets",
        "",
        f"Generated {datetime.date.today().isoformat()} by `benchmarks/op_shares.py`; keras_effconv "
        f"{keras_effconv.__version__}, Keras {keras.__version__}, {platform.machine()}, {os.cpu_count()} CPU "
        f"cores. {SIZE}x{SIZE}, batch {BATCH}; op times from TensorFlow's profiler, summed over threads and "
        f"averaged over {args.steps} profiled calls after 3 warm-up calls (tf.function without XLA, as "
        "`benchmarks/applications.py` runs).",
        "",
    ]
    conv_shares = {}
    for mode, step in steps.items():
        print(f"profiling ResNet50 {mode} ...", file=sys.stderr, flush=True)
        for _ in range(3):
            step()
        table, conv_shares[mode] = share_table(f"### ResNet50 {mode}, batch {BATCH}", op_times(step, args.steps))
        lines += table
    base_macs = profile(model).total_macs
    reductions = {}
    for conv in conv_method_names():
        if conv != "standard":
            network = applications.EffResNet50(conv=conv)
            reductions[f"EffResNet50 {conv}"] = base_macs / profile(network).total_macs
    lines += ceiling_table(conv_shares, reductions)
    lines += [
        "",
        "The ceiling assumes every convolution of the replacement runs at ResNet50's convolution rate per MAC "
        "and its other ops cost what ResNet50's do; measured speedups are in `applications_tensorflow.md` and "
        "`applications_training_tensorflow.md`.",
    ]
    save_results("\n".join(lines) + "\n", "op_shares_tensorflow.md", args.out)


if __name__ == "__main__":
    main()
