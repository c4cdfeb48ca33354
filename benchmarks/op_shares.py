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

Convolutions do not run at one rate per MAC, so the script also times
TensorFlow's own kernels at the shapes of ResNet50's 3x3 convolutions (all
stride 1: keras' ResNet50 strides its 1x1s) — the dense 3x3, the grouped 3x3
(4 groups), the 1x1 and the depthwise 3x3, forward and forward + both
gradients — and the 3x3 layers' share of ResNet50's op time. A conv type that
replaces only those layers in EffResNet50 (the script checks which layers
each one changes) could make ResNet50 at most

    1 / (1 - s + s / R)     (s: the 3x3 layers' share, R: its MAC reduction there)

times faster if its layers ran in proportion to their MACs, and 1 / (1 - s)
if they took no time at all; the last table divides both by the conv type's
MAC reduction. These are bounds on op time; the last table measures the
wall-time one directly: keras ResNet50 with its 3x3 convolutions removed
(identities), timed interleaved with ResNet50 and every EffResNet50 whose
conv type replaces only those layers, in inference and training steps.

With `--layers` it profiles the layer grid of `benchmarks/layers.py` instead
(every shape, Conv2D and every registered method's layers, forward and the
forward + backward step that benchmark times, TensorFlow without XLA): each
layer's op time next to Conv2D's and its op types by share, i.e. which ops
cost the time where a layer is slower than the convolution it replaces.

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/op_shares.py [--steps 2]
    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/op_shares.py --layers

Writes `benchmarks/results/op_shares_tensorflow.md` (`op_shares_layers_tensorflow.md`
with `--layers`).
"""

import argparse
import collections
import datetime
import glob
import os
import platform
import re
import sys
import tempfile
import time

import numpy as np

import keras

import keras_effconv
from keras_effconv import applications
from keras_effconv import profile
from keras_effconv.profiling import measure_latency
from keras_effconv.profiling import measure_training_speed
from keras_effconv.conv_methods import conv_method_names
from results_file import save_results

BATCH = 8
SIZE = 224
# Profiler events that wrap other ops (a function call, the executor's run), not ops themselves.
WRAPPERS = ("Process", "Run")


def is_convolution(op_type):
    return any(word in op_type for word in ("Conv2D", "DepthwiseConv", "MatMul", "Einsum"))


# Unprofiled calls before the profiled ones: tracing, oneDNN's first-call setup.
WARMUP_CALLS = 3


def op_times(step, steps, scopes=()):
    """Profiles `steps` calls of `step` with TensorFlow's profiler, after `WARMUP_CALLS` unprofiled ones.

    Returns `({op type: CPU ms}, CPU ms of the ops named inside any of the
    layer `scopes`)`, both per call.
    """
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    for _ in range(WARMUP_CALLS):
        step()
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            step()
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
    # An op's name holds its layer's scope ("resnet50_1/conv2_block1_2_conv_1/BiasAdd", gradients too).
    in_scope = re.compile("/(" + "|".join(map(re.escape, scopes)) + r")(_\d+)?/") if scopes else None
    times = collections.Counter()
    scoped = 0.0
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
                if in_scope is not None and in_scope.search(name):
                    scoped += event.duration_ps / 1e9 / steps
    return times, scoped


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


# Groups of the grouped 3x3 kernel timed: the grouped forms of the registered methods use 4 by default.
KERNEL_GROUPS = 4


def kernel_times(height, channels, rounds):
    """Median wall ms of TensorFlow's kernels at one of ResNet50's 3x3 layers (stride 1, "same").

    Returns `{kernel: {"inference": ms, "training": ms}}`, training being the
    forward call plus the gradients with respect to the input and the kernel
    (what a training step runs for a layer inside a network). Inputs and
    kernels are variables, as in a model; the kernels run interleaved, round by
    round.
    """
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def variable(*shape):
        return tf.Variable(rng.standard_normal(shape).astype("float32"))

    x = variable(BATCH, height, height, channels)
    upstream = variable(BATCH, height, height, channels)
    filters = {
        "dense 3x3": variable(3, 3, channels, channels),
        f"grouped 3x3 ({KERNEL_GROUPS} groups)": variable(3, 3, channels // KERNEL_GROUPS, channels),
        "1x1": variable(1, 1, channels, channels),
        "depthwise 3x3": variable(3, 3, channels, 1),
    }

    def runners(name, kernel):
        depthwise = name.startswith("depthwise")
        forward = tf.nn.depthwise_conv2d if depthwise else tf.nn.conv2d
        strides = [1, 1, 1, 1]

        def infer():
            return tf.reshape(forward(x, kernel, strides, "SAME"), [-1])[0]

        def train():
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = forward(x, kernel, strides, "SAME")
            grads = tape.gradient(y, [x, kernel], output_gradients=upstream)
            return sum(tf.reshape(g, [-1])[0] for g in grads)

        return {"inference": tf.function(infer), "training": tf.function(train)}

    calls = {name: runners(name, kernel) for name, kernel in filters.items()}
    samples = {name: {mode: [] for mode in modes} for name, modes in calls.items()}
    for round_ in range(rounds + 2):  # two warm-up rounds: tracing, oneDNN's first-call setup
        for name, modes in calls.items():
            for mode, fn in modes.items():
                start = time.perf_counter()
                fn().numpy()
                if round_ >= 2:
                    samples[name][mode].append(1e3 * (time.perf_counter() - start))
    return {name: {mode: float(np.median(t)) for mode, t in modes.items()} for name, modes in samples.items()}


def kernel_tables(layer_shapes, shares, rounds):
    """Markdown lines: TensorFlow's kernel times at ResNet50's 3x3 shapes, then the 3x3 layers' `shares`."""
    counts = collections.Counter(layer_shapes)
    per_shape = {}
    for height, channels in counts:
        print(f"timing TensorFlow's kernels at {height}x{height}x{channels} ...", file=sys.stderr, flush=True)
        per_shape[(height, channels)] = kernel_times(height, channels, rounds)
    kernels = list(next(iter(per_shape.values())))
    lines = [
        f"### TensorFlow's kernels at ResNet50's 3x3 layers, batch {BATCH} (wall ms, median of {rounds} rounds)",
        "",
        "training = forward + gradient w.r.t. input + gradient w.r.t. kernel; in brackets: time / dense 3x3's.",
        "",
        "| HxWxC (layers) | " + " | ".join(f"{k} inference | {k} training" for k in kernels) + " |",
        "|---|" + "---:|" * (2 * len(kernels)),
    ]
    for (height, channels), times in per_shape.items():
        dense = times["dense 3x3"]
        cells = [
            f"{times[k][mode]:.2f} ({times[k][mode] / dense[mode]:.2f})"
            for k in kernels
            for mode in ("inference", "training")
        ]
        lines.append(f"| {height}x{height}x{channels} ({counts[(height, channels)]}) | " + " | ".join(cells) + " |")

    lines += [
        "",
        f"ResNet50's 3x3 layers (their convolutions, biases and gradients) take **{100 * shares['inference']:.1f}%** "
        f"of its inference op time and **{100 * shares['training']:.1f}%** of its training step's.",
        "",
    ]
    return lines


def three_by_three_table(shares, reductions, reductions_3x3):
    """Markdown lines: per conv type, two bounds from the 3x3 layers' measured share of the op time.

    `reductions_3x3[label]` is the MAC reduction within ResNet50's 3x3 layers,
    or None for a conv type that changes other layers too (no bound then).
    """
    lines = [
        "### Bounds for a conv type that replaces only the 3x3 layers, from their measured share",
        "",
        "Speedup / MAC reduction if the replaced 3x3 layers ran in proportion to their MACs "
        "(`1 / (1 - s + s / 3x3 MAC reduction)`), and if they took no time at all (`1 / (1 - s)`).",
        "",
        "| model | MAC reduction | in the 3x3 layers | inference: MAC-proportional | no time "
        "| training: MAC-proportional | no time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, reduction in reductions.items():
        reduction_3x3 = reductions_3x3[label]
        if reduction_3x3 is None:
            lines.append(f"| {label} | {reduction:.2f}x | replaces other layers too | | | | |")
            continue
        cells = []
        for mode in ("inference", "training"):
            share = shares[mode]
            proportional = 1.0 / (1.0 - share + share / reduction_3x3)
            free = 1.0 / (1.0 - share)
            cells += [f"{proportional / reduction:.2f}", f"{free / reduction:.2f}"]
        lines.append(f"| {label} | {reduction:.2f}x | {reduction_3x3:.2f}x | " + " | ".join(cells) + " |")
    return lines


def without_3x3(model, names_3x3):
    """A copy of `model` whose layers named in `names_3x3` are identities (shape-preserving 3x3 convs)."""

    def clone(layer):
        if layer.name in names_3x3:
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


def wall_time_table(base, networks, reductions, names_3x3, x, y, rounds):
    """Markdown lines: wall-time speedups of `networks` and of ResNet50 without its 3x3 layers, in one run.

    `base` is the compiled keras ResNet50; `networks` maps labels to
    EffResNet50 models (compiled here). ResNet50 with its 3x3 convolutions
    removed is what no conv type that replaces only those layers can beat,
    measured interleaved with them.
    """
    base_label, removed_label = "keras ResNet50", "ResNet50 with its 3x3 convolutions removed"
    models = {base_label: base, removed_label: without_3x3(base, names_3x3), **networks}
    for label, model in models.items():
        if label != base_label:
            model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy")
    print(f"timing {len(models)} networks, inference and training ({rounds} rounds) ...", file=sys.stderr, flush=True)
    times = {
        "inference": measure_latency(models, (SIZE, SIZE, 3), batch_size=BATCH, repeats=rounds, warmup=2),
        "training": measure_training_speed(models, x, y, repeats=rounds, warmup=2),
    }
    speedups = {
        mode: {label: t[base_label]["median_ms"] / t[label]["median_ms"] for label in models}
        for mode, t in times.items()
    }
    lines = [
        f"### Wall time, batch {BATCH}, one interleaved run ({rounds} rounds): speedup over keras ResNet50",
        "",
        f"{removed_label}: inference **{speedups['inference'][removed_label]:.2f}x**, training step "
        f"**{speedups['training'][removed_label]:.2f}x** (median ms: inference "
        f"{times['inference'][base_label]['median_ms']:.0f} -> {times['inference'][removed_label]['median_ms']:.0f}, "
        f"training {times['training'][base_label]['median_ms']:.0f} -> "
        f"{times['training'][removed_label]['median_ms']:.0f}). The bound columns divide these by each conv "
        "type's MAC reduction.",
        "",
        "| model | MAC reduction | inference speedup | / MAC reduction | bound / MAC reduction "
        "| training speedup | / MAC reduction | bound / MAC reduction |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label in networks:
        reduction = reductions[label]
        cells = []
        for mode in ("inference", "training"):
            cells += [
                f"{speedups[mode][label]:.2f}x",
                f"{speedups[mode][label] / reduction:.2f}",
                f"{speedups[mode][removed_label] / reduction:.2f}",
            ]
        lines.append(f"| {label} | {reduction:.2f}x | " + " | ".join(cells) + " |")
    return lines


# Op types to name per layer: the largest, down to this share of the layer's op time.
LAYER_OPS_SHOWN = 8
LAYER_OP_MIN_SHARE = 0.03


def _short_op(op_type):
    # oneDNN's kernels carry a prefix that says nothing about the work ("_MklNativeFusedConv2D").
    for prefix in ("_MklNative", "_Mkl"):
        if op_type.startswith(prefix):
            return op_type[len(prefix):]
    return op_type


def layer_tables(steps):
    """Markdown lines: op time and op shares of every layer in `benchmarks/layers.py`'s grid."""
    # The grid's shapes, layers and TensorFlow runners, so that both scripts profile the same calls.
    import layers as layer_grid

    lines = [
        f"| input x batch | layer | step | CPU ms per call | / {layer_grid.BASELINE} | op types (share of the layer's op time) |",
        "|---|---|---|---:|---:|---|",
    ]
    specs = layer_grid.layer_specs()
    rng = np.random.default_rng(0)
    for (h, w, c), batch in layer_grid.CONFIGS:
        x = keras.ops.convert_to_tensor(rng.standard_normal((batch, h, w, c)).astype("float32"))
        baseline = {}
        for label, factory, _ in specs:
            print(f"profiling {label} at {h}x{w}x{c} ...", file=sys.stderr, flush=True)
            keras.utils.set_random_seed(0)
            layer = factory(c)
            layer(x)
            runners = layer_grid._tensorflow_runners(layer, x)["non_xla"]
            for kind, name in (("fwd", "fwd"), ("fwd_bwd", "fwd+bwd")):
                times, _ = op_times(runners[kind], steps)
                total = sum(times.values())
                baseline.setdefault(kind, total)
                shown = [
                    f"{_short_op(op)} {100 * t / total:.0f}%"
                    for op, t in times.most_common(LAYER_OPS_SHOWN)
                    if t / total >= LAYER_OP_MIN_SHARE
                ]
                lines.append(
                    f"| {h}x{w}x{c} x{batch} | {label} | {name} | {total:.2f} | {total / baseline[kind]:.2f} | "
                    + ", ".join(shown) + " |"
                )
    return lines


def main_layers(args):
    lines = [
        "# The layer grid on TensorFlow: where each layer's op time goes",
        "",
        f"Generated {datetime.date.today().isoformat()} by `benchmarks/op_shares.py --layers`; keras_effconv "
        f"{keras_effconv.__version__}, Keras {keras.__version__}, {platform.machine()}, {os.cpu_count()} CPU "
        f"cores. The calls of `benchmarks/layers.py` (tf.function without XLA; fwd+bwd = forward with "
        "`training=True` + gradient of sum(output^2) w.r.t. the layer's weights); op times from TensorFlow's "
        f"profiler, summed over threads and averaged over {args.steps} profiled calls after {WARMUP_CALLS} warm-up "
        "calls. "
        f"Op types from {100 * LAYER_OP_MIN_SHARE:.0f}% of the layer's op time up, oneDNN's `_Mkl`/`_MklNative` "
        "prefixes left out. Op time sums both cores' work, so a layer whose ops keep the cores less busy "
        "loses more wall time than this column shows (wall-time speedups: `layers_tensorflow.md`).",
        "",
    ]
    lines += layer_tables(args.steps)
    save_results("\n".join(lines) + "\n", "op_shares_layers_tensorflow.md", args.out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2, help=f"profiled calls per mode (after {WARMUP_CALLS} warm-up calls)")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per kernel and shape, and per network in the wall-time table")
    parser.add_argument("--layers", action="store_true", help="profile benchmarks/layers.py's grid instead of ResNet50")
    parser.add_argument("--out", default=None, help="results file (default benchmarks/results/op_shares_tensorflow.md, or op_shares_layers_tensorflow.md with --layers)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if keras.backend.backend() != "tensorflow":
        sys.exit("op_shares.py profiles with TensorFlow's profiler: run it with KERAS_BACKEND=tensorflow")
    if args.layers:
        main_layers(args)
        return

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
        f"averaged over {args.steps} profiled calls after {WARMUP_CALLS} warm-up calls (tf.function without XLA, as "
        "`benchmarks/applications.py` runs).",
        "",
    ]
    three_by_three = [
        layer for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (3, 3)
    ]
    conv_shares, shares_3x3 = {}, {}
    for mode, step in steps.items():
        print(f"profiling ResNet50 {mode} ...", file=sys.stderr, flush=True)
        times, scoped = op_times(step, args.steps, [layer.name for layer in three_by_three])
        table, conv_shares[mode] = share_table(f"### ResNet50 {mode}, batch {BATCH}", times)
        shares_3x3[mode] = scoped / sum(times.values())
        lines += table
    base_report = profile(model)
    base_macs = base_report.total_macs
    reductions = {}
    reductions_3x3 = {}  # label -> MAC reduction within the 3x3 layers, None if it changes other layers
    names_3x3 = {layer.name for layer in three_by_three}
    base_types = {layer.name: type(layer) for layer in model.layers}
    macs_3x3 = sum(row.macs for row in base_report.rows if row.name in names_3x3)
    other_macs = base_macs - macs_3x3  # unchanged in a network that changes only the 3x3 layers
    networks = {}
    for conv in conv_method_names():
        if conv != "standard":
            network = applications.EffResNet50(conv=conv)
            label = f"EffResNet50 {conv}"
            networks[label] = network
            network_macs = profile(network).total_macs
            reductions[label] = base_macs / network_macs
            changed = {
                layer.name for layer in network.layers
                # Input layers take a fresh unique name in every model.
                if not isinstance(layer, keras.layers.InputLayer) and base_types.get(layer.name) is not type(layer)
            }
            reductions_3x3[label] = macs_3x3 / (network_macs - other_macs) if changed <= names_3x3 else None
    lines += ceiling_table(conv_shares, reductions)
    lines += [
        "",
        "The ceiling assumes every convolution of the replacement runs at ResNet50's convolution rate per MAC "
        "and its other ops cost what ResNet50's do; measured speedups are in `applications_tensorflow.md` and "
        "`applications_training_tensorflow.md`. ResNet50's 3x3 layers take less of its time than of its MACs, so "
        "for a conv type that replaces only those, the last table's bounds (from their measured share) are tighter.",
        "",
    ]
    layer_shapes = [(int(layer.input.shape[1]), int(layer.input.shape[-1])) for layer in three_by_three]
    lines += kernel_tables(layer_shapes, shares_3x3, args.rounds)
    lines += three_by_three_table(shares_3x3, reductions, reductions_3x3)
    only_3x3 = {label: network for label, network in networks.items() if reductions_3x3[label] is not None}
    lines += [""] + wall_time_table(model, only_3x3, reductions, names_3x3, x, y, args.rounds)
    save_results("\n".join(lines) + "\n", "op_shares_tensorflow.md", args.out)


if __name__ == "__main__":
    main()
