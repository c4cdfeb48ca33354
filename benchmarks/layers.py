"""Layer benchmark: keras_effconv's efficient convolutions against Keras' Conv2D.

What it measures
----------------
Over a grid of shapes (``C_in = C_out = C``, kernel 3, stride 1, ``"same"``
padding): CIFAR-style ResNet-20's stages 28x28x16, 14x14x32, 7x7x64 at batch
128 and ResNet-50's 56x56x64, 28x28x128, 14x14x256, 7x7x512 at batch 8, it
compares these layers against the baseline
``keras.layers.Conv2D(C, 3, padding="same")``:

- ``HetConv2D(C, 3, part=4)``
- ``InterleavedGroupConv2D(C, 3, primary_groups=4)`` (secondary_groups default)
- ``CompConv2D(C, 3)`` (depth "auto")
- ``FactorizedConv2D(C, 3, num_units=2, activation="relu")``
- ``FactorizedConv2D(C, 3, num_units=1)``
- ``DepthwiseSeparableConv2D(C, 3)`` (the ``depthwise_separable`` method: keras'
  ``SeparableConv2D`` through the library's depthwise forms) and
  ``keras.layers.SeparableConv2D(C, 3, padding="same")`` itself (reference point)

For each layer it reports:

- params: ``layer.count_params()`` (biases included, for every layer);
- MACs for ONE sample (1 MAC = 2 FLOPs; bias and activations excluded):
  ``layer.compute_macs(input_shape)`` for keras_effconv layers, and
  analytically for Keras' own layers (Conv2D ``H*W*9*C*C``,
  SeparableConv2D ``H*W*(9*C + C*C)``);
- the median wall time (ms, whole batch of 8) of
  - "fwd": the forward pass, and
  - "fwd+bwd": the forward pass plus the gradient of ``sum(output**2)`` with
    respect to the layer's trainable weights (one training step's gradient
    computation, no optimizer update),
  in two modes, using each backend's native mechanism:

  ============  ================================  ==============================
  backend       non-XLA                           XLA
  ============  ================================  ==============================
  tensorflow    ``tf.function(jit_compile=False)`` ``tf.function(jit_compile=True)``
                + ``tf.GradientTape``               + ``tf.GradientTape``
  jax           n/a (JAX always compiles with XLA) ``jax.jit`` over
                                                    ``layer.stateless_call``;
                                                    ``jax.grad`` for fwd+bwd
  torch         eager (fwd under ``torch.no_grad``, n/a
                fwd+bwd with ``torch.autograd.grad``)
  ============  ================================  ==============================

- ratios measured IN THE SAME RUN against the Conv2D baseline on the same
  backend: params ratio and MACs ratio (layer / Conv2D; < 1 is cheaper), and
  speedups ``t_Conv2D / t_layer`` (> 1 is faster than Conv2D).

Warm-up calls (tracing / compilation) are excluded. Repetitions are taken
round-robin over the layers of one configuration and mode (repetition 1 of
every layer, then repetition 2, ...), so that load changes on the machine hit
the baseline and the other layers alike; the median of ``--repeats`` timings
is reported. Fewer MACs do not make a layer faster by themselves: read the
speedup columns, and compare them only within one results file.

How to run
----------
One backend per process (the backend is chosen by ``KERAS_BACKEND``)::

    KERAS_BACKEND=tensorflow python benchmarks/layers.py
    KERAS_BACKEND=jax python benchmarks/layers.py
    KERAS_BACKEND=torch python benchmarks/layers.py

    # smoke test: 14x14x256 only, 2 repeats, 1 warm-up call
    KERAS_BACKEND=jax python benchmarks/layers.py --quick

Layers with several exact forms run ``execution="auto"``; the table names
the form chosen for the forward call and for the training call
(``training=True``, as in ``model.fit``).

Flags: ``--repeats N`` (default 10), ``--warmup N`` (default 3), ``--batch N``
(overrides every configuration's batch), ``--data-format channels_first``
(every layer and input in NCHW, saved as ``layers_<backend>_channels_first.md``;
Keras' torch backend transposes around each convolution in channels_last),
``--quick``, ``--out DIR`` (default ``benchmarks/results``).
The table (with a header of versions, CPU count and date) is printed and
saved to ``<out>/layers_<backend>.md`` (``layers_<backend>_quick.md`` for
``--quick`` runs, so a smoke test never overwrites full results). The exit
status is 1 if any measurement failed (its cells then read "error").

Run backends one after another, not in parallel, on an otherwise idle
machine: the numbers are only meaningful relative to the Conv2D baseline of
the same run.
"""

import argparse
import datetime
import importlib.metadata
import inspect
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np

import keras

import keras_effconv
from keras_effconv import _progress
from keras_effconv.conv_methods import conv_methods
from keras_effconv.layers import FactorizedConv2D
from keras_effconv.layers import TopologicalProjection
from keras_effconv.profiling import time_interleaved
from keras_effconv.profiling.macs import layer_macs
from results_file import write_results

# ((H, W, C), batch), C_in = C_out = C: ResNet-20's stages at batch 128, ResNet-50's at batch 8.
CONFIGS = [
    ((28, 28, 16), 128), ((14, 14, 32), 128), ((7, 7, 64), 128),
    ((56, 56, 64), 8), ((28, 28, 128), 8), ((14, 14, 256), 8), ((7, 7, 512), 8),
]
QUICK_CONFIGS = [((14, 14, 256), 8)]
KERNEL = 3
BASELINE = "Conv2D (baseline)"
MODES = ("non_xla", "xla")
KINDS = ("fwd", "fwd_bwd")
NA = "n/a"
ERROR = "error"


# ----------------------------------------------------------------------------
# Layers under test
# ----------------------------------------------------------------------------


def layer_specs():
    """(label, factory(C) -> layer, macs(layer, (H, W, C)) -> int): Conv2D, then every registered method."""

    def macs(layer, shape):
        # The profiler's MAC rules (keras' layers included): one set of rules in the project.
        batched = (1,) + tuple(shape)
        return int(layer_macs(layer, batched, layer.compute_output_shape(batched)))

    def replacing_conv2d(method, config, activation):
        def factory(c):
            conv2d = keras.layers.Conv2D(c, KERNEL, padding="same", activation=activation)
            return method.build_layer(conv2d.get_config(), config)

        return factory

    specs = [(BASELINE, lambda c: keras.layers.Conv2D(c, KERNEL, padding="same"), macs)]
    for method in conv_methods():
        if method.layer is None:
            continue
        variants = [(method.default_config, None)]
        if method.layer is FactorizedConv2D:
            # The paper's unit ends with ReLU, so two units do not collapse into one linear map.
            variants.append(({"num_units": 2}, "relu"))
        if method.relabelled_channels:
            # As the networks run it between learned convolutions: channels in its faster order.
            relabelled = {argument: True for argument in method.relabelled_channels.values()}
            variants.append(({**method.default_config, **relabelled}, None))
        for config, activation in variants:
            arguments = [f"{k}={v}" for k, v in config.items()] + ([activation] if activation else [])
            label = f"{method.layer.__name__}({', '.join(arguments)})"
            specs.append((label, replacing_conv2d(method, config, activation), macs))
    # keras' own layer, which the "depthwise_separable" method's layer subclasses: a reference point.
    specs.append(("keras SeparableConv2D (reference)", lambda c: keras.layers.SeparableConv2D(c, KERNEL, padding="same"), macs))
    return specs


# (grid, window): both cut the projection's MACs 4x; the ring needs one rolled view, the torus three.
PROJECTION_TOPOLOGIES = (((1, 8), (1, 2)), ((4, 4), (2, 2)))
PROJECTION_SHAPE = (14, 14, 256)


def projection_specs(grid, window):
    """TopologicalProjection in its dense masked form (the baseline of its table) and its rolled-groups form."""

    def macs(layer, shape):
        return int(layer.compute_macs(shape))

    def masked_dense_macs(layer, shape):
        return shape[0] * shape[1] * shape[2] * layer.filters  # the dense matmul it executes

    specs = []
    for execution, count in (("masked_dense", masked_dense_macs), ("rolled_groups", macs)):
        label = f"TopologicalProjection(grid={grid}, window={window}, {execution})"
        specs.append((label, lambda c, e=execution: TopologicalProjection(c, grid, window, execution=e), count))
    return specs


def litert_times(rows_and_layers, shape, repeats, warmup):
    """LiteRT XNNPACK (2 threads, batch 1) median ms per layer, exported as the library exports it."""
    from ai_edge_litert.interpreter import Interpreter

    from keras_effconv.export import export_litert

    work = tempfile.mkdtemp(prefix="effconv-layers-bench-")
    runners = {}
    x = np.random.default_rng(0).standard_normal((1,) + shape).astype("float32")
    for label, layer in rows_and_layers:
        inputs = keras.Input(shape)
        model = keras.Model(inputs, layer(inputs))
        path = os.path.join(work, f"{len(runners)}.tflite")
        export_litert(model, path, target="cpu")
        interpreter = Interpreter(model_path=path, num_threads=2)
        runner = interpreter.get_signature_runner()
        # Ten invocations per sample: one takes tens of microseconds, near the timer's noise.
        runners[label] = lambda runner=runner: [runner(args_0=x) for _ in range(10)]
    times = time_interleaved(runners, repeats, warmup)
    return {label: t["median_ms"] / 10 for label, t in times.items()}


# ----------------------------------------------------------------------------
# Backend-specific runners: make_runners(layer, x) -> {mode: {kind: fn or None}}
# Every fn runs one call to completion (synchronised) and returns nothing.
# ----------------------------------------------------------------------------


def _tensorflow_runners(layer, x):
    import tensorflow as tf

    sync = getattr(getattr(tf.test, "experimental", None), "sync_devices", None)

    def fwd(inputs):
        return layer(inputs)

    def fwd_bwd(inputs):
        with tf.GradientTape() as tape:
            y = layer(inputs, training=True)
            loss = tf.reduce_sum(tf.square(y))
        return tape.gradient(loss, layer.trainable_variables)

    def timed(fn):
        def run():
            fn(x)
            if sync is not None:
                sync()

        return run

    runners = {}
    for mode, jit in (("non_xla", False), ("xla", True)):
        runners[mode] = {
            "fwd": timed(tf.function(fwd, jit_compile=jit)),
            "fwd_bwd": timed(tf.function(fwd_bwd, jit_compile=jit)),
        }
    return runners


def _jax_runners(layer, x):
    import jax
    import jax.numpy as jnp

    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def fwd(tv, ntv, inputs):
        return layer.stateless_call(tv, ntv, inputs)[0]

    # stateless_call hands keyword arguments straight to call(), which keras' own layers define without training.
    training = {"training": True} if "training" in inspect.signature(layer.call).parameters else {}

    def loss(tv, ntv, inputs):
        return jnp.sum(jnp.square(layer.stateless_call(tv, ntv, inputs, **training)[0]))

    fwd_jit = jax.jit(fwd)
    grad_jit = jax.jit(jax.grad(loss))

    def timed(fn):
        def run():
            jax.block_until_ready(fn(trainable, non_trainable, x))

        return run

    return {
        "non_xla": {"fwd": None, "fwd_bwd": None},
        "xla": {"fwd": timed(fwd_jit), "fwd_bwd": timed(grad_jit)},
    }


def _torch_runners(layer, x):
    import torch

    params = [v.value for v in layer.trainable_variables]
    cuda = x.is_cuda

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def fwd():
        with torch.no_grad():
            layer(x)
        sync()

    def fwd_bwd():
        y = layer(x, training=True)
        loss = torch.sum(torch.square(y))
        torch.autograd.grad(loss, params)
        sync()

    return {
        "non_xla": {"fwd": fwd, "fwd_bwd": fwd_bwd},
        "xla": {"fwd": None, "fwd_bwd": None},
    }


RUNNERS = {
    "tensorflow": _tensorflow_runners,
    "jax": _jax_runners,
    "torch": _torch_runners,
}

MODE_LABELS = {
    "tensorflow": {
        "non_xla": "tf.function(jit_compile=False)",
        "xla": "tf.function(jit_compile=True)",
    },
    "jax": {
        "non_xla": "n/a (JAX always compiles with XLA)",
        "xla": "jax.jit over layer.stateless_call (jax.grad for fwd+bwd)",
    },
    "torch": {
        "non_xla": "eager (fwd under torch.no_grad, fwd+bwd with torch.autograd.grad)",
        "xla": "n/a",
    },
}


# ----------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------


# The run's progress over the measured cases (Keras' Progbar when a terminal shows it; see main).
PROGRESS = _progress.Progress("", 0, verbose=0)


def log(message):
    if PROGRESS.verbose:
        PROGRESS.log(message)  # above the bar, on standard output
    else:
        print(message, file=sys.stderr, flush=True)


def _forms(layer, input_shape):
    """"fwd form / fwd+bwd form" of a layer with several exact forms, else "-".

    On TensorFlow the forms a `jit_compile=True` trace chooses follow when
    they differ (the rules ask whether they run under XLA while tracing).
    """
    forms = getattr(layer, "execution_form", None)
    if forms is None or forms(input_shape) is None:
        return "-"

    def pair(inference, training):
        return inference if inference == training else f"{inference} / {training}"

    text = pair(forms(input_shape, training=False), forms(input_shape, training=True))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        traced = []

        @tf.function(jit_compile=True)
        def probe():
            traced.extend(forms(input_shape, training=t) for t in (False, True))
            return tf.constant(0)

        probe()
        xla = pair(*traced)
        if xla != text:
            text += f" (XLA: {xla})"
    return text


def benchmark_config(shape, specs, make_runners, batch, repeats, warmup):
    """Returns one row dict per layer for input shape (H, W, C)."""
    h, w, c = shape
    rng = np.random.default_rng(0)
    channels_first = keras.config.image_data_format() == "channels_first"
    expected = (batch, c, h, w) if channels_first else (batch, h, w, c)
    x_np = rng.standard_normal(expected).astype("float32")
    x = keras.ops.convert_to_tensor(x_np)

    rows = []
    for label, factory, macs_fn in specs:
        row = {"label": label, "shape": shape, "batch": batch, "times": {}, "errors": []}
        rows.append(row)
        try:
            keras.utils.set_random_seed(0)
            layer = factory(c)
            y = layer(x)  # builds the layer (eagerly)
            if tuple(y.shape) != expected:
                raise ValueError(
                    f"unexpected output shape {tuple(y.shape)}, "
                    f"expected {expected}"
                )
            row["forms"] = _forms(layer, tuple(x.shape))
            row["params"] = int(layer.count_params())
            row["macs"] = int(macs_fn(layer, shape))
            row["runners"] = make_runners(layer, x)
        except Exception:
            row["errors"].append(f"{label} setup:\n{traceback.format_exc()}")
            log(f"  ERROR setting up {label}:\n{traceback.format_exc()}")
            row["runners"] = None

    for mode in MODES:
        for kind in PROGRESS.iterate(KINDS):  # one measured case per (mode, kind)
            active = []
            for row in rows:
                fn = row["runners"][mode][kind] if row["runners"] else None
                if row["runners"] is None:
                    row["times"][(mode, kind)] = ERROR
                    continue
                if fn is None:
                    row["times"][(mode, kind)] = NA
                    continue
                log(f"  {h}x{w}x{c} {mode:7s} {kind:7s} warm-up {row['label']}")
                try:
                    for _ in range(warmup):
                        fn()
                except Exception:
                    msg = f"{row['label']} {mode} {kind}:\n{traceback.format_exc()}"
                    row["errors"].append(msg)
                    log(f"  ERROR {msg}")
                    row["times"][(mode, kind)] = ERROR
                    continue
                row["times"][(mode, kind)] = []
                active.append((row, fn))
            if not active:
                continue
            log(f"  {h}x{w}x{c} {mode:7s} {kind:7s} timing {repeats} rounds")
            for _ in range(repeats):
                for row, fn in active:
                    if row["times"][(mode, kind)] == ERROR:
                        continue
                    try:
                        start = time.perf_counter()
                        fn()
                        row["times"][(mode, kind)].append(
                            (time.perf_counter() - start) * 1e3
                        )
                    except Exception:
                        msg = f"{row['label']} {mode} {kind}:\n{traceback.format_exc()}"
                        row["errors"].append(msg)
                        log(f"  ERROR {msg}")
                        row["times"][(mode, kind)] = ERROR
            for row, _ in active:
                samples = row["times"][(mode, kind)]
                if samples != ERROR:
                    row["times"][(mode, kind)] = statistics.median(samples)
    for row in rows:
        row.pop("runners", None)
    return rows


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_info():
    total = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = total
    text = f"{total} (usable by this process: {usable})"
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if not model:
        model = platform.processor() or platform.machine()
    return f"{text}, {model}"


def header(backend, args, configs):
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"# keras_effconv layer benchmark ({backend})",
        "",
        f"- date: {now.strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- backend: {backend}",
        f"- keras {keras.__version__}, keras_effconv {keras_effconv.__version__}, "
        f"tensorflow {_version('tensorflow')}, jax {_version('jax')}, "
        f"torch {_version('torch')}, numpy {np.__version__}, "
        f"python {platform.python_version()}",
        f"- platform: {platform.platform()}",
        f"- CPUs: {_cpu_info()}",
    ]
    if backend == "torch":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        lines.append(
            f"- torch device: {device}, torch.get_num_threads(): "
            f"{torch.get_num_threads()}"
        )
    elif backend == "jax":
        import jax

        lines.append(f"- jax devices: {', '.join(str(d) for d in jax.devices())}")
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        lines.append(f"- tensorflow GPUs: {len(gpus)}")
    shapes = ", ".join(f"{h}x{w}x{c} (batch {args.batch or batch})" for (h, w, c), batch in configs)
    lines += [
        f"- inputs (HxWxC, C_in = C_out): {shapes}; kernel "
        f"{KERNEL}, stride 1, padding same, float32, {args.data_format}",
        f"- timing: median of {args.repeats} repetitions (round-robin over "
        f"layers), {args.warmup} warm-up call(s) excluded"
        + (" [--quick]" if args.quick else ""),
        f"- non-XLA mode: {MODE_LABELS[backend]['non_xla']}",
        f"- XLA mode: {MODE_LABELS[backend]['xla']}",
        "",
        "params: `count_params()` (biases included). MACs: multiply-accumulates "
        "for ONE sample, in millions (1 MAC = 2 FLOPs), bias and activations "
        "excluded; `compute_macs()` for keras_effconv layers, analytic for "
        "Keras' Conv2D (H·W·9·C²) and SeparableConv2D (H·W·(9·C + C²)). "
        "Times: ms for the whole batch. Ratios are layer / Conv2D (lower = "
        "cheaper); speedups are t_Conv2D / t_layer (higher = faster), "
        "measured in this run on this backend. fwd+bwd = forward + gradient of "
        "sum(output²) w.r.t. the layer's trainable weights, the layer called with "
        "`training=True` as in `model.fit`. form: what `execution_form()` chose "
        "for the forward call / the training call (layers with several exact forms); "
        "on TensorFlow, `(XLA: ...)` when a `jit_compile=True` trace chooses differently.",
        "",
    ]
    return "\n".join(lines)


def _fmt_ms(value):
    if isinstance(value, str):
        return value
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _speedup(base, value):
    if isinstance(base, str) or isinstance(value, str) or value <= 0:
        return NA if NA in (base, value) else ERROR
    return f"{base / value:.2f}×"


def _ratio(value, base):
    if value is None or base in (None, 0):
        return ERROR
    return f"{value / base:.3f}"


def table(all_rows, baseline=BASELINE):
    columns = [
        "input x batch",
        "layer",
        "form (fwd / fwd+bwd)",
        "params",
        "params ratio",
        "MACs (M)",
        "MACs ratio",
        "fwd ms (non-XLA)",
        "fwd speedup (non-XLA)",
        "fwd+bwd ms (non-XLA)",
        "fwd+bwd speedup (non-XLA)",
        "fwd ms (XLA)",
        "fwd speedup (XLA)",
        "fwd+bwd ms (XLA)",
        "fwd+bwd speedup (XLA)",
    ]
    align = ["---", "---", "---"] + ["---:"] * (len(columns) - 3)
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(align) + "|",
    ]
    for rows in all_rows:
        base = rows[0]
        assert base["label"].startswith(baseline)
        for row in rows:
            h, w, c = row["shape"]
            params = row.get("params")
            macs = row.get("macs")
            cells = [
                f"{h}x{w}x{c} x{row['batch']}",
                row["label"],
                row.get("forms", ERROR),
                f"{params:,}" if params is not None else ERROR,
                _ratio(params, base.get("params")),
                f"{macs / 1e6:.2f}" if macs is not None else ERROR,
                _ratio(macs, base.get("macs")),
            ]
            for mode in MODES:
                for kind in KINDS:
                    t = row["times"].get((mode, kind), ERROR)
                    cells.append(_fmt_ms(t))
                    cells.append(_speedup(base["times"].get((mode, kind), ERROR), t))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save(text, out_dir, filename):
    return write_results(text, os.path.join(out_dir, filename))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark keras_effconv layers against keras.layers.Conv2D on the "
            "current Keras backend (set KERAS_BACKEND=tensorflow|jax|torch)."
        )
    )
    parser.add_argument(
        "--repeats", type=int, default=None,
        help="timed repetitions per measurement; the median is reported "
        "(default 10, or 2 with --quick)",
    )
    parser.add_argument(
        "--warmup", type=int, default=None,
        help="untimed warm-up calls per measurement (default 3, or 1 with --quick)",
    )
    parser.add_argument(
        "--batch", type=int, default=None,
        help="batch size for every input (default: 128 at ResNet-20 sizes, 8 at ResNet-50 sizes)",
    )
    parser.add_argument(
        "--data-format", choices=("channels_last", "channels_first"), default="channels_last",
        help="image data format of every layer and input (default channels_last); a channels_first "
        "run is saved as layers_<backend>_channels_first.md",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke test: only the 14x14x256 configuration, 2 repeats, "
        "1 warm-up call; saved as layers_<backend>_quick.md",
    )
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
        help="directory for the results file (default benchmarks/results)",
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 10
    if args.warmup is None:
        args.warmup = 1 if args.quick else 3
    for name in ("repeats", "batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def main(argv=None):
    args = parse_args(argv)
    backend = keras.backend.backend()
    if backend not in RUNNERS:
        sys.exit(
            f"Unsupported Keras backend {backend!r}: set KERAS_BACKEND to "
            "tensorflow, jax or torch."
        )
    keras.config.set_image_data_format(args.data_format)
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")

    configs = QUICK_CONFIGS if args.quick else CONFIGS
    specs = layer_specs()
    global PROGRESS
    cases = (len(configs) + len(PROJECTION_TOPOLOGIES)) * len(MODES) * len(KINDS)
    PROGRESS = _progress.Progress(
        f"benchmarks/layers.py [{backend}]: {cases} measured cases (input shape x mode x fwd/fwd_bwd)",
        cases, "auto", "case",
    )
    all_rows = []
    for shape, batch in configs:
        batch = args.batch or batch
        log(f"[{backend}] input {shape[0]}x{shape[1]}x{shape[2]}, batch {batch}")
        all_rows.append(
            benchmark_config(
                shape, specs, RUNNERS[backend], batch, args.repeats, args.warmup
            )
        )

    text = header(backend, args, configs) + "\n" + table(all_rows)
    projection_rows = []
    for grid, window in PROJECTION_TOPOLOGIES:
        log(f"[{backend}] TopologicalProjection grid={grid} window={window} at {PROJECTION_SHAPE}")
        projection_rows.append(
            benchmark_config(
                PROJECTION_SHAPE, projection_specs(grid, window), RUNNERS[backend], args.batch or 8,
                args.repeats, args.warmup,
            )
        )
    text += (
        "\n## TopologicalProjection: executed-MACs form against its dense masked form\n\n"
        f"Input {'x'.join(map(str, PROJECTION_SHAPE))}, {PROJECTION_SHAPE[2]} filters, batch {args.batch or 8}; "
        "each table's baseline is the dense masked form of the same topology (its MACs column counts "
        "what it executes; the rolled form executes exactly the counted MACs).\n\n"
        + table(projection_rows, baseline="TopologicalProjection")
    )
    PROGRESS.finish()
    if backend == "tensorflow" and args.data_format == "channels_last":
        lines = [
            "",
            "LiteRT XNNPACK, 2 threads, batch 1, each layer exported alone with `export_litert(target='cpu')`, "
            "timed interleaved (median ms of 10 invocations):",
            "",
            "| layer | LiteRT ms | speedup over its masked form |",
            "|---|---:|---:|",
        ]
        for grid, window in PROJECTION_TOPOLOGIES:
            specs = projection_specs(grid, window)
            layers_ = [(label, factory(PROJECTION_SHAPE[2])) for label, factory, _ in specs]
            times = litert_times(layers_, PROJECTION_SHAPE, args.repeats, args.warmup)
            base = times[specs[0][0]]
            for label, _ in layers_:
                lines.append(f"| {label} | {times[label]:.4f} | {base / times[label]:.2f}x |")
        text += "\n".join(lines) + "\n"
    all_rows = all_rows + projection_rows
    errors = [e for rows in all_rows for row in rows for e in row["errors"]]
    if errors:
        text += (
            f"\n{len(errors)} measurement(s) failed (cells marked '{ERROR}'); "
            "see stderr of the run.\n"
        )
    print(text)
    layout = "_channels_first" if args.data_format == "channels_first" else ""
    filename = f"layers_{backend}{layout}{'_quick' if args.quick else ''}.md"
    path = save(text, args.out, filename)
    log(f"saved {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
