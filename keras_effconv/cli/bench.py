"""`keras-effconv bench`: measured latency of a network against reference networks.

    keras-effconv bench eff_resnet50 --conv hetconv                  # against eff_resnet50 --conv standard
    keras-effconv bench model.keras --reference keras:ResNet50 --input-shape 224,224,3
    keras-effconv bench eff_resnet20 --conv igc --reference eff_resnet20 --reference keras:MobileNetV2 --litert

The networks run on the current Keras backend (`KERAS_BACKEND`), one call of
each per round, round-robin (`keras_effconv.profiling.measure_latency`), so
that drifts of the machine hit them alike; warm-up rounds are not timed. With
`--litert` each is also exported with `export_litert` to a temporary
`.tflite` file (verified against Keras) and timed on LiteRT: with LiteRT's
own `benchmark_model` binary when it is on PATH (its runs alternate between
the models), else with the `ai_edge_litert` Python interpreter, interleaved
like the Keras timings; the output says which. The table gives medians and
the speedup over the first reference (its time / the network's time), next
to the analytic MACs: fewer MACs alone do not make a network faster.
"""

import os
import re
import shutil
import statistics
import subprocess

from keras_effconv.cli._args import CommandError
from keras_effconv.cli._args import conv_choices
from keras_effconv.cli._args import json_dict
from keras_effconv.cli._args import model_names
from keras_effconv.cli._args import module_constant
from keras_effconv.cli._args import network
from keras_effconv.cli._args import parse_shape
from keras_effconv.cli._args import positive_int

KERAS_PREFIX = "keras:"
BENCHMARK_MODEL = "benchmark_model"
# Invocations of the benchmark_model binary per network (alternating), each of `--repeats` runs.
BINARY_ROUNDS = 3
_BINARY_AVERAGE = re.compile(r"Inference \(avg\):\s*([0-9.eE+-]+)")


def _keras_application(name, input_shape):
    import keras

    builder = getattr(keras.applications, name, None)
    if not callable(builder) or not name[:1].isupper():
        known = sorted(n for n in dir(keras.applications) if n[:1].isupper())
        raise CommandError(f"unknown keras.applications network {name!r}; e.g. {', '.join(known[:6])}, ...")
    kwargs = {"weights": None}
    if input_shape is not None:
        kwargs["input_shape"] = input_shape
    return builder(**kwargs)


def resolve(spec, input_shape, conv=None, conv_config=None):
    """`(label, model)` for a network spec.

    Args:
        spec: a `MODELS` name, optionally `NAME:CONV`; a `.keras` file; or
            `keras:NAME` (`keras.applications.NAME(weights=None)`).
        input_shape: per-sample input shape for the networks that are built,
            or None for their default.
        conv: the conv method of a `MODELS` name given without `:CONV`
            (None: the network's default).
        conv_config: its arguments.
    """
    if spec.startswith(KERAS_PREFIX):
        return spec, _keras_application(spec[len(KERAS_PREFIX):], input_shape)
    if spec.endswith(".keras"):
        return os.path.basename(spec), network(spec)
    name, _, spec_conv = spec.partition(":")
    if name not in model_names():
        raise CommandError(
            f"unknown network {spec!r}; choose one of {sorted(model_names())} (optionally NAME:CONV), a .keras file "
            "or keras:NAME"
        )
    if spec_conv:
        if spec_conv not in conv_choices():
            raise CommandError(f"unknown conv method {spec_conv!r} in {spec!r}; choose one of {list(conv_choices())}")
        conv = spec_conv
    from keras_effconv.applications import default_conv

    conv = conv or default_conv(name)
    return f"{name} {conv}", network(name, conv, conv_config, input_shape=input_shape)


def _input_shape(label, model):
    shape = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
    if shape is None or None in shape:
        raise CommandError(
            f"{label} has input {[tuple(t.shape) for t in model.inputs]}: bench needs one input of fixed size; "
            "pass --input-shape H,W,C"
        )
    return shape


def _macs(model, input_shape):
    from keras_effconv import profile

    try:
        return profile(model, input_shape=input_shape).total_macs
    except (ValueError, TypeError):  # a layer without a MAC rule: shown as n/a, never as 0
        return None


def _unique(label, taken):
    candidate, number = label, 2
    while candidate in taken:
        candidate, number = f"{label} ({number})", number + 1
    return candidate


def binary_average_ms(output):
    """The mean inference time in ms from `benchmark_model`'s output (`Inference (avg): <us>`)."""
    match = _BINARY_AVERAGE.search(output)
    if not match:
        raise ValueError(f"{BENCHMARK_MODEL} printed no 'Inference (avg)' line: {output.strip()[-300:]!r}")
    return float(match.group(1)) / 1000.0


def _time_with_binary(binary, paths, threads, repeats, warmup):
    times = {label: [] for label in paths}
    for _ in range(BINARY_ROUNDS):
        for label, path in paths.items():
            command = [binary, f"--graph={path}", f"--num_threads={threads}", f"--num_runs={repeats}",
                       f"--warmup_runs={warmup}"]
            proc = subprocess.run(command, capture_output=True, text=True)
            if proc.returncode != 0:
                raise OSError(f"{BENCHMARK_MODEL} failed on {label} (exit status {proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()[-300:]}")
            times[label].append(binary_average_ms(proc.stdout + proc.stderr))
    return {label: statistics.median(t) for label, t in times.items()}


def _time_with_interpreter(paths, threads, batch_size, input_shape, repeats, warmup):
    import numpy as np

    from keras_effconv.profiling import time_interleaved

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise CommandError("--litert needs ai-edge-litert (pip install 'keras-effconv[litert]')") from None
    x = np.random.default_rng(0).standard_normal((batch_size,) + tuple(input_shape)).astype("float32")
    runners = {}
    for label, path in paths.items():
        runner = Interpreter(model_path=path, num_threads=threads).get_signature_runner()
        (name,) = runner.get_input_details()
        runners[label] = lambda runner=runner, name=name: runner(**{name: x})
    return {label: t["median_ms"] for label, t in time_interleaved(runners, repeats, warmup).items()}


def time_litert(models, input_shape, batch_size, threads, repeats, warmup, target):
    """Exports every model to a temporary `.tflite` file and times them on LiteRT.

    Returns:
        `(medians_ms, engine)`: `{label: ms}` and a sentence naming the timer.
    """
    from keras_effconv._files import temporary_directory
    from keras_effconv.export import export_litert

    with temporary_directory("bench") as directory:
        paths = {}
        for number, (label, model) in enumerate(models.items()):
            paths[label] = os.path.join(directory, f"model{number}.tflite")
            export_litert(model, paths[label], input_shape=input_shape, batch_size=batch_size, target=target)
        binary = shutil.which(BENCHMARK_MODEL)
        if binary:
            medians = _time_with_binary(binary, paths, threads, repeats, warmup)
            engine = (f"LiteRT's {BENCHMARK_MODEL} binary ({binary}), {threads} thread(s), {BINARY_ROUNDS} "
                      f"alternating runs of {repeats} inferences per network, median of their averages")
        else:
            medians = _time_with_interpreter(paths, threads, batch_size, input_shape, repeats, warmup)
            engine = (f"the ai_edge_litert Python interpreter ({BENCHMARK_MODEL} is not on PATH), {threads} "
                      f"thread(s), {repeats} interleaved rounds after {warmup} warm-up")
    return medians, f"LiteRT: {engine}; export_litert(target={target!r})"


def _table(rows, columns, reference):
    header = ["network", "MACs", "params"]
    for column in columns:
        header += [f"{column} ms", "speedup"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for label, row in rows.items():
        cells = [label + (" (reference)" if label == reference else ""),
                 "n/a" if row["macs"] is None else f"{row['macs'] / 1e6:.2f} M", f"{row['params']:,}"]
        for column in columns:
            ms = row[column]
            cells += [f"{ms:.2f}", f"{rows[reference][column] / ms:.2f}x" if reference else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _command(args):
    import json

    import keras

    from keras_effconv.profiling import measure_latency

    if args.model.endswith(".keras") and (args.conv or args.conv_config):
        raise CommandError("--conv and --conv-config build a network by name; a .keras file is timed as it is")
    label, model = resolve(args.model, args.input_shape, args.conv, args.conv_config)
    shape = args.input_shape or _input_shape(label, model)
    specs = list(args.reference or [])
    if not specs and not args.model.endswith(".keras") and not label.endswith(" standard"):
        specs = [args.model.partition(":")[0]]  # the same network with conv standard
    models = {label: model}
    references = []
    for spec in specs:
        ref_label, ref_model = resolve(spec, shape, conv="standard")
        ref_label = _unique(ref_label, models)
        ref_shape = tuple(ref_model.inputs[0].shape[1:])
        if len(ref_model.inputs) != 1 or any(a is not None and a != b for a, b in zip(ref_shape, shape)):
            raise CommandError(f"reference {spec} takes input {ref_shape}, the network {tuple(shape)}")
        models[ref_label] = ref_model
        references.append(ref_label)
    reference = references[0] if references else None
    backend = keras.backend.backend()
    timed = measure_latency(models, shape, batch_size=args.batch_size, repeats=args.repeats, warmup=args.warmup)
    rows = {
        name: {"macs": _macs(m, shape), "params": m.count_params(), backend: timed[name]["median_ms"]}
        for name, m in models.items()
    }
    columns = [backend]
    engine = None
    if args.litert:
        medians, engine = time_litert(
            models, shape, args.batch_size, args.threads, args.repeats, args.warmup, args.target
        )
        for name, ms in medians.items():
            rows[name]["LiteRT"] = ms
        columns.append("LiteRT")
    if args.json:
        print(json.dumps({"backend": backend, "input_shape": list(shape), "batch_size": args.batch_size,
                          "reference": reference, "litert": engine, "networks": rows}, indent=2))
        return
    print(f"Latency on Keras {backend} (batch {args.batch_size}, input {'x'.join(map(str, shape))}): medians of "
          f"{args.repeats} interleaved rounds after {args.warmup} warm-up; speedup = the reference's time / the "
          "network's")
    if engine:
        print(engine)
    print()
    print(_table(rows, columns, reference))


def register(subparsers):
    """Adds the `bench` sub-command to an argparse sub-parser collection.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.

    Returns:
        The `bench` sub-parser.
    """
    parser = subparsers.add_parser(
        "bench",
        help="measured latency of a network against reference networks (Keras backend, optionally LiteRT)",
        description="Times a network and its references interleaved on the current Keras backend (and with "
        "--litert on LiteRT after export) and prints medians, speedups over the first reference and MACs.",
    )
    parser.add_argument("model", metavar="MODEL",
                        help=f"a network ({', '.join(model_names())}; built with --conv) or a .keras file")
    parser.add_argument("--conv", default=None, choices=conv_choices(),
                        help="efficient convolution of a network by name (default: the network's)")
    parser.add_argument("--conv-config", type=json_dict, default=None, help="method arguments as JSON")
    parser.add_argument("--reference", action="append", metavar="SPEC",
                        help="a network to compare with (repeatable; speedups are over the first): a name from the "
                        "list above (built with conv standard; NAME:CONV for another method), a .keras file or "
                        "keras:NAME for keras.applications.NAME(weights=None), e.g. keras:ResNet50. Default: MODEL "
                        "with conv standard, for a network by name")
    parser.add_argument("--input-shape", type=parse_shape, default=None, metavar="H,W,C",
                        help="per-sample input shape of every network (default: MODEL's)")
    parser.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="default 1")
    parser.add_argument("--repeats", type=positive_int, default=20, metavar="N", help="timed rounds (default 20)")
    parser.add_argument("--warmup", type=positive_int, default=3, metavar="N", help="untimed rounds first (default 3)")
    parser.add_argument("--litert", action="store_true", help="also export to LiteRT and time there")
    parser.add_argument("--threads", type=positive_int, default=2, metavar="N",
                        help="LiteRT CPU threads (default 2)")
    parser.add_argument("--target", choices=module_constant("keras_effconv.export.inference", "TARGETS"), default="cpu",
                        help="export_litert target of --litert (default cpu: the forms fastest on XNNPACK)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(handler=_command)
    return parser
