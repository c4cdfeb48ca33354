"""LiteRT CPU (XNNPACK) latency stage by stage: where FactorizedResNet50 spends its time against keras ResNet50.

Each network is cut after the stem (`pool1_pool`) and after each stage
(`conv2_block3_out` ... `conv5_block3_out`), and every prefix (plus the whole
network) is exported with `export_litert(target="cpu")` and timed with the
`ai_edge_litert` interpreter at 2 threads, batch 1, 224x224x3, all prefixes
of all networks interleaved round by round. A stage's time is the
difference between consecutive prefixes; its MACs likewise (`profile()`).
The per-stage speedup over ResNet50's same stage, next to that stage's MAC
reduction, shows which stages turn their saving into time.

    .venv/bin/python benchmarks/litert_stages.py [--rounds 15]

Writes `benchmarks/results/litert_stages_sic.md`. The networks: keras
ResNet50, `FactorizedResNet50()` (default knobs) and
`FactorizedResNet50(grid=None, window=None)` (dense projections: what the
masked projections of the early stages execute). Desktop-CPU numbers; the
absolute times of prefixes run one after another in one process are higher
than `litert_latency.py`'s whole-network figures, the ratios are what counts.
"""

import argparse
import datetime
import os
import platform
import tempfile

import keras

from keras_effconv import _progress
from keras_effconv import applications
from keras_effconv import profile
from keras_effconv.export import export_litert
from keras_effconv.profiling import time_interleaved
from results_file import save_results
from litert_latency import interpreters

STAGE_ENDS = ("pool1_pool", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out",
              "predictions")
STAGE_NAMES = ("stem", "conv2 (56x56)", "conv3 (28x28)", "conv4 (14x14)", "conv5 (7x7)", "head")
BASELINE = "keras ResNet50"
NETWORKS = {
    BASELINE: lambda: keras.applications.ResNet50(weights=None),
    "FactorizedResNet50": lambda: applications.FactorizedResNet50(),
    "FactorizedResNet50 (dense projections)": lambda: applications.FactorizedResNet50(grid=None, window=None),
}
THREADS = 2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per prefix")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be >= 1 and --warmup >= 0")

    work = tempfile.mkdtemp(prefix="effconv-litert-stages-")
    macs, runs = {}, {}
    todo = [(name, end) for name in NETWORKS for end in STAGE_ENDS]
    progress = _progress.Progress("benchmarks/litert_stages.py: exporting prefixes", len(todo), "auto", "prefix")
    networks = {}
    for name, end in progress.iterate(todo):
        if name not in networks:
            keras.backend.clear_session()
            networks = {name: NETWORKS[name]()}
        full = networks[name]
        prefix = keras.Model(full.input, full.get_layer(end).output, name=f"prefix_{end}")
        macs[(name, end)] = profile(prefix).total_macs
        path = os.path.join(work, f"{len(runs)}.tflite")
        # Not verified here (18 exports): `litert_latency.py --family sic` verifies the whole networks.
        export_litert(prefix, path, target="cpu", verify=False, verbose=0)
        runs[(name, end)] = interpreters(path)[THREADS]
    progress.finish()

    timed = time_interleaved({f"{name} | {end}": run for (name, end), run in runs.items()}, args.rounds, args.warmup)
    cumulative = {key: timed[f"{key[0]} | {key[1]}"]["median_ms"] for key in runs}

    def stage(name, i):
        end, before = STAGE_ENDS[i], STAGE_ENDS[i - 1] if i else None
        ms = cumulative[(name, end)] - (cumulative[(name, before)] if before else 0.0)
        mac = macs[(name, end)] - (macs[(name, before)] if before else 0)
        return ms, mac

    lines = [
        "# LiteRT CPU (XNNPACK) latency by stage, batch 1, 224x224, 2 threads",
        "",
        f"Generated {datetime.date.today()} by `benchmarks/litert_stages.py` on {platform.machine()} "
        f"({os.cpu_count()} CPUs): every prefix exported with `export_litert(target='cpu', verify=False)`, "
        f"{args.rounds} interleaved rounds after {args.warmup} warm-up; a stage = difference of consecutive "
        "prefixes (medians, ms; a negative difference is timing noise between two prefixes). Speedup and MAC "
        "reduction are against keras ResNet50's same stage.",
        "",
        "| network | stage | MACs (M) | ms | MAC reduction | speedup | speedup / MAC reduction |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in NETWORKS:
        for i, stage_name in enumerate(STAGE_NAMES):
            ms, mac = stage(name, i)
            base_ms, base_mac = stage(BASELINE, i)
            if mac > 0 and ms > 0 and base_ms > 0:
                reduction, speedup = base_mac / mac, base_ms / ms
                ratio = f"{reduction:.2f}x | {speedup:.2f}x | {speedup / reduction:.2f}"
            else:
                ratio = "- | - | -"  # the head: ~2 M MACs, its time inside the noise
            lines.append(f"| {name} | {stage_name} | {mac / 1e6:.0f} | {ms:.2f} | {ratio} |")
        total_ms, total_mac = cumulative[(name, STAGE_ENDS[-1])], macs[(name, STAGE_ENDS[-1])]
        base_ms, base_mac = cumulative[(BASELINE, STAGE_ENDS[-1])], macs[(BASELINE, STAGE_ENDS[-1])]
        reduction, speedup = base_mac / total_mac, base_ms / total_ms
        lines.append(f"| {name} | **whole network** | {total_mac / 1e6:.0f} | {total_ms:.2f} | "
                     f"{reduction:.2f}x | {speedup:.2f}x | {speedup / reduction:.2f} |")
    save_results("\n".join(lines) + "\n", "litert_stages_sic.md", args.out)


if __name__ == "__main__":
    main()
