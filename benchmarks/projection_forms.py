"""How fast can an exact 4x-cheaper topological projection be? Its forms against the no-overlap ceiling.

What it measures
----------------
At ResNet-50's four projection sizes (56x56x64, 28x28x128, 14x14x256, 7x7x512,
``C_in = C_out``), a stack of ``--depth`` (default 10) identical 1x1
projections, so that the per-call dispatch of TensorFlow and of the LiteRT
interpreter is shared by the stack and the time per projection is the
operators' own:

- ``Conv2D 1x1`` (keras' dense projection: the baseline of every ratio);
- ``TopologicalProjection(grid=(1, 8), window=(1, 2))`` (the SIC networks'
  ring topology, 4x fewer MACs) in both exact forms, ``masked_dense`` and
  ``rolled_groups``;
- ``TopologicalProjection(grid=(1, 4), window=(1, 1))`` in ``rolled_groups``:
  the same 4x cut with windows that do not overlap, which is one grouped 1x1
  convolution with no copy of the input at all. No exact form of an
  *overlapping* window can beat it (each input cell must reach two groups,
  so every such form copies or re-reads the input at least once), so its
  speedup is the ceiling for the ring's forms on that runtime.

Two runtimes, timed interleaved (round-robin over the four stacks, median of
``--repeats``): TensorFlow (``measure_latency``: ``tf.function``, non-XLA) at batch ``--batch``
(default 8), and LiteRT XNNPACK (2 threads, batch 1) of the stack exported with
``export_litert(target="cpu")``.

How to run
----------
::

    KERAS_BACKEND=tensorflow python benchmarks/projection_forms.py

saves ``benchmarks/results/projection_forms.md`` (``--quick``: 14x14x256 only,
3 repeats, saved as ``projection_forms_quick.md``). Run it on an otherwise
idle machine.
"""

import argparse
import datetime
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

import keras

from keras_effconv.export import export_litert
from keras_effconv.layers import TopologicalProjection
from keras_effconv.profiling import measure_latency
from keras_effconv.profiling import time_interleaved
from results_file import write_results

SHAPES = [(56, 56, 64), (28, 28, 128), (14, 14, 256), (7, 7, 512)]
QUICK_SHAPES = [(14, 14, 256)]
BASELINE = "Conv2D 1x1"
RING = ((1, 8), (1, 2))
CEILING = ((1, 4), (1, 1))


def stack_factories():
    """(label, MAC ratio against the dense projection, factory(C) -> layer) of the four stacks."""

    def projection(topology, execution):
        grid, window = topology
        return lambda c: TopologicalProjection(c, grid, window, execution=execution)

    return [
        (BASELINE, 1.0, lambda c: keras.layers.Conv2D(c, 1)),
        (f"ring {RING[0]}/{RING[1]}, masked_dense", 1.0, projection(RING, "masked_dense")),
        (f"ring {RING[0]}/{RING[1]}, rolled_groups", 0.25, projection(RING, "rolled_groups")),
        (f"no overlap {CEILING[0]}/{CEILING[1]} (ceiling)", 0.25, projection(CEILING, "rolled_groups")),
    ]


def build_stack(factory, shape, depth):
    inputs = keras.Input(shape)
    x = inputs
    for _ in range(depth):
        x = factory(shape[2])(x)
    return keras.Model(inputs, x)


def litert_runners(models, shape, work):
    from ai_edge_litert.interpreter import Interpreter

    x = np.random.default_rng(0).standard_normal((1,) + shape).astype("float32")
    runners = {}
    for index, (label, model) in enumerate(models.items()):
        path = os.path.join(work, f"{index}.tflite")
        export_litert(model, path, target="cpu")
        runner = Interpreter(model_path=path, num_threads=2).get_signature_runner()
        name = next(iter(runner.get_input_details()))
        runners[label] = lambda runner=runner, name=name: runner(**{name: x})
    return runners


def log(message):
    print(message, file=sys.stderr, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=10, help="projections per stack (default 10)")
    parser.add_argument("--batch", type=int, default=8, help="TensorFlow batch (default 8)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    if keras.backend.backend() != "tensorflow":
        sys.exit("Run with KERAS_BACKEND=tensorflow: the LiteRT export needs TensorFlow.")
    for flag in ("depth", "batch", "repeats"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be a positive integer")
    shapes, repeats = (QUICK_SHAPES, 3) if args.quick else (SHAPES, args.repeats)

    import tensorflow as tf

    factories = stack_factories()
    rows = []
    with tempfile.TemporaryDirectory(prefix="effconv-projection-forms-") as work:
        for shape in shapes:
            log(f"{'x'.join(map(str, shape))}: building and exporting {len(factories)} stacks")
            models = {label: build_stack(factory, shape, args.depth) for label, _, factory in factories}
            tf_times = measure_latency(models, shape, batch_size=args.batch, repeats=repeats, warmup=args.warmup)
            lite_times = time_interleaved(litert_runners(models, shape, work), repeats, args.warmup)
            for label, mac_ratio, _ in factories:
                rows.append((shape, label, mac_ratio) + tuple(
                    times[key]["median_ms"] for times in (tf_times, lite_times) for key in (label, BASELINE)
                ))

    per = 1.0 / args.depth
    lines = [
        "# TopologicalProjection forms against the no-overlap ceiling",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC; "
        f"tensorflow {tf.__version__}, keras {keras.__version__}; CPUs: {os.cpu_count()}",
        f"- a stack of {args.depth} identical 1x1 projections (C_in = C_out = C); times are ms per "
        f"projection (stack time / {args.depth}), median of {repeats}, stacks timed round-robin",
        f"- TensorFlow: `tf.function` (non-XLA), batch {args.batch}; LiteRT: XNNPACK, 2 threads, batch 1, "
        "`export_litert(target='cpu')`",
        "- speedup = dense Conv2D 1x1 time / row time, measured in the same run on the same runtime; "
        "the ring (1, 8)/(1, 2) and the no-overlap (1, 4)/(1, 1) topology both cut MACs 4x",
        "",
        "| input | projection | MACs vs dense | TF ms | TF speedup | LiteRT ms | LiteRT speedup |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for shape, label, mac_ratio, t_tf, b_tf, t_lite, b_lite in rows:
        lines.append(
            f"| {'x'.join(map(str, shape))} | {label} | {mac_ratio:.2f} | {t_tf * per:.3f} | "
            f"{b_tf / t_tf:.2f}x | {t_lite * per:.4f} | {b_lite / t_lite:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    path = write_results(text, os.path.join(args.out, f"projection_forms{'_quick' if args.quick else ''}.md"))
    log(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
