"""Candidate exact forms of the ring projection on LiteRT XNNPACK, written directly in TensorFlow ops.

The question: is there a way to run `TopologicalProjection(grid=(1, 8),
window=(1, 2))` (each output cell reads its own input cell and the next: 4x
fewer MACs than a dense 1x1) on LiteRT that beats the dense masked matmul at
the sizes of ResNet-50's early stages, before building it into the layer
and its export rule? Each form below computes the same function (checked
against the masked form in float32 before timing) with builtin ops and
4-D tensors:

- ``masked``: one dense 1x1 CONV_2D (the structural zeros executed);
- ``rolled``: what the layer's ``rolled_groups`` form emits: the input's
  cells rolled by one (slices + concatenation), two grouped 1x1 convs
  (8 groups), added;
- ``input_expanded``: every group's two input cells side by side (the input
  and its roll concatenated per cell: 2x the input copied), ONE grouped
  1x1 conv (8 groups), no add;
- ``output_side``: ONE grouped conv on the unrolled input whose groups
  produce both offsets' partial outputs (2x the outputs), then the second
  half rolled back by one cell and added: the copies are on the output
  side, the smaller one for a reducing projection;
- ``no_overlap_ceiling``: a plain 4-group 1x1 conv (4x cut, no window
  overlap, no copy): no exact form of the ring can beat it.

Every form ends with bias + ReLU (fused by the converter), batch 1, 2
threads, timed interleaved (median of ``--rounds``). Projections are
``(H, C_in, C_out)`` at ResNet-50's sizes (reducing ``_1_conv``, square,
expanding ``_3_conv``).

    .venv/bin/python benchmarks/projection_exact_forms.py

Writes ``benchmarks/results/projection_exact_forms.md``.
"""

import argparse
import datetime
import os
import platform
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

from keras_effconv.profiling import time_interleaved
from results_file import save_results

CELLS = 8
SHAPES = [(56, 256, 64), (56, 64, 64), (56, 64, 256), (28, 512, 128), (28, 128, 512),
          (14, 1024, 256), (14, 256, 256), (14, 256, 1024), (7, 512, 512)]
FORMS = ("masked", "rolled", "input_expanded", "output_side", "no_overlap_ceiling")


def ring_forms(height, c_in, c_out, rng):
    """{form: f(x)} for one random ring projection; all but the ceiling compute the same function."""
    import tensorflow as tf

    c, n = c_in // CELLS, c_out // CELLS
    # weights[o][cell j]: (c, n), the block from input cell j + o to output cell j.
    weights = (rng.standard_normal((2, CELLS, c, n)) / np.sqrt(2 * c)).astype("float32")
    bias = tf.constant(rng.standard_normal(c_out).astype("float32"))
    dense = np.zeros((c_in, c_out), "float32")
    for o in range(2):
        for j in range(CELLS):
            i = (j + o) % CELLS
            dense[i * c:(i + 1) * c, j * n:(j + 1) * n] = weights[o, j]
    dense = tf.constant(dense.reshape(1, 1, c_in, c_out))
    grouped = [tf.constant(weights[o].transpose(1, 0, 2).reshape(1, 1, c, c_out)) for o in range(2)]
    expanded = tf.constant(np.concatenate([weights[0], weights[1]], axis=1).transpose(1, 0, 2).reshape(1, 1, 2 * c, c_out))
    # Output side: input cell i feeds output cell i (offset 0) and output cell i - 1 (offset 1).
    both = np.concatenate([weights[0], np.roll(weights[1], 1, axis=0)], axis=2)  # (cell i, c, 2n)
    output_side = tf.constant(both.transpose(1, 0, 2).reshape(1, 1, c, 2 * c_out))
    ceiling = tf.constant(rng.standard_normal((1, 1, c_in // 4, c_out)).astype("float32"))
    pixels = height * height

    def conv(x, w):
        return tf.nn.conv2d(x, w, 1, "VALID")

    def roll_cells(x4):  # (1, pixels, CELLS, k): cell j takes cell j + 1
        return tf.concat([x4[:, :, 1:], x4[:, :, :1]], axis=2)

    def finish(y):
        return tf.nn.relu(y + bias)

    def masked(x):
        return finish(conv(x, dense))

    def rolled(x):
        view = tf.reshape(roll_cells(tf.reshape(x, (1, pixels, CELLS, c))), (1, height, height, c_in))
        return finish(conv(x, grouped[0]) + conv(view, grouped[1]))

    def input_expanded(x):
        x4 = tf.reshape(x, (1, pixels, CELLS, c))
        pairs = tf.reshape(tf.concat([x4, roll_cells(x4)], axis=3), (1, height, height, 2 * c_in))
        return finish(conv(pairs, expanded))

    def output_side_form(x):
        z = tf.reshape(conv(x, output_side), (1, pixels, CELLS, 2 * n))
        y = z[..., :n] + roll_cells(z[..., n:])
        return finish(tf.reshape(y, (1, height, height, c_out)))

    def no_overlap_ceiling(x):
        return finish(conv(x, ceiling))

    return dict(masked=masked, rolled=rolled, input_expanded=input_expanded, output_side=output_side_form,
                no_overlap_ceiling=no_overlap_ceiling)


def to_litert(fn, shape):
    import tensorflow as tf

    traced = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([traced.get_concrete_function()], traced)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be >= 1 and --warmup >= 0")
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(0)
    runs = {}
    for height, c_in, c_out in SHAPES:
        shape = (1, height, height, c_in)
        x = rng.standard_normal(shape).astype("float32")
        forms = ring_forms(height, c_in, c_out, rng)
        expected = forms["masked"](x).numpy()
        for name in FORMS:
            if name != "no_overlap_ceiling":
                got = forms[name](x).numpy()
                if not np.allclose(got, expected, rtol=1e-4, atol=1e-4):
                    raise AssertionError(f"{name} at {shape} differs from the masked form")
            interpreter = Interpreter(model_content=to_litert(forms[name], shape), num_threads=2)
            interpreter.allocate_tensors()
            index = interpreter.get_input_details()[0]["index"]

            def run(interpreter=interpreter, index=index, x=x):
                interpreter.set_tensor(index, x)
                interpreter.invoke()

            runs[(height, c_in, c_out, name)] = run
        print(f"converted {height}x{height} {c_in}->{c_out}", file=sys.stderr, flush=True)
    timed = time_interleaved({" ".join(map(str, k)): v for k, v in runs.items()}, args.rounds, args.warmup)
    ms = {k: timed[" ".join(map(str, k))]["median_ms"] for k in runs}
    lines = [
        "# Exact forms of the ring projection (grid (1, 8), window (1, 2)) on LiteRT XNNPACK",
        "",
        f"Generated {datetime.date.today()} by `benchmarks/projection_exact_forms.py` on {platform.machine()} "
        f"({os.cpu_count()} CPUs): batch 1, 2 threads, {args.rounds} interleaved rounds after {args.warmup} "
        "warm-up, median ms; each form checked equal to the masked one before timing (the ceiling is a "
        "different, non-overlapping 4x cut). Speedup = masked ms / form ms.",
        "",
        "| H x W | C_in -> C_out | " + " | ".join(FORMS) + " | best exact form vs masked |",
        "|---|---|" + "---:|" * (len(FORMS) + 1),
    ]
    for height, c_in, c_out in SHAPES:
        row = [ms[(height, c_in, c_out, name)] for name in FORMS]
        exact = {name: ms[(height, c_in, c_out, name)] for name in FORMS[1:-1]}
        best = min(exact, key=exact.get)
        lines.append(f"| {height}x{height} | {c_in} -> {c_out} | " + " | ".join(f"{t:.3f}" for t in row)
                     + f" | {best} {row[0] / exact[best]:.2f}x |")
    save_results("\n".join(lines) + "\n", "projection_exact_forms.md", args.out)


if __name__ == "__main__":
    main()
