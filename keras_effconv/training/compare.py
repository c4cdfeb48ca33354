"""Train one network per conv type under the same budget and tabulate the results."""

import dataclasses
import os
import statistics

import keras
import numpy as np

from keras_effconv import _progress
from keras_effconv import applications
from keras_effconv._files import atomic_path
from keras_effconv.profiling import measure_latency
from keras_effconv.profiling import measure_training_speed
from keras_effconv.training.recipe import compile_for_training
from keras_effconv.training.recipe import config_differences
from keras_effconv.training.recipe import run_state
from keras_effconv.training.recipe import train


def _entry_config(base_config, entry, seed):
    """The `TrainConfig` of one `compare_convs` entry: a conv type, a network of `MODELS`, or `network:conv`."""
    name, _, conv = entry.partition(":")
    if name in applications.MODELS:
        return dataclasses.replace(base_config, model=name, conv=conv or applications.default_conv(name),
                                   conv_config=None, seed=seed)
    if conv:
        raise ValueError(f"unknown network {name!r} in the entry {entry!r}; choose one of {sorted(applications.MODELS)}")
    return dataclasses.replace(base_config, conv=entry, seed=seed)


def _run_dir(out_dir, entry, seed):
    return os.path.join(out_dir, entry.replace(":", "_"), f"seed{seed}")


@_progress.closes_bars
def compare_convs(convs, base_config, out_dir, seeds=(0,), latency_batch=1, train_steps=10, verbose="auto"):
    """Trains `base_config` once per conv type and seed; returns one row per conv.

    Each run goes to `out_dir/<conv>/seed<k>` and resumes if interrupted;
    finished runs are reused, not retrained. An entry of `convs` that names
    a network of `keras_effconv.applications.MODELS` instead (e.g.
    `"factorized_resnet20"`, the SIC paper's design) trains that network
    with its own conv method in place of `base_config.model`; its row is
    labelled with the network's name. `"network:conv"` trains that network
    with `conv` (e.g. `"igc_resnet_cifar:standard"`, IGCV1's regular
    counterpart at equal parameters); its runs go to `network_conv/`.

    Args:
        convs: conv types (or network names) to compare.
        base_config: a `TrainConfig`; its `conv` and `seed` are overridden.
        out_dir: parent directory of the runs.
        seeds: one run per seed.
        latency_batch: batch size of the inference latency measurement.
        train_steps: timed training steps per model (batch
            `base_config.batch_size`, models interleaved).
        verbose: 0 (silent), 1 (a progress bar over the runs, each run
            named when it starts, then over the two timing stages; each
            run's `model.fit` shows its own bar), 2 (the same lines, and
            `model.fit`'s one line per epoch) or `"auto"` (1 when standard
            output is a terminal or a notebook, else 0). The value is also
            `model.fit`'s verbosity.

    Returns:
        A list of dicts: `conv`, `accuracies`, `accuracy_mean`,
        `accuracy_spread` (max - min over seeds), `macs`, `params`,
        `train_images_per_second` and `latency_ms` (medians, models
        interleaved), `fit_images_per_second` (the runs' own wall time,
        validation included).

    Raises:
        ValueError: if a run directory holds a run of another configuration
            (e.g. other epochs), which is never silently reused, or for a
            `verbose` other than 0, 1, 2 or `"auto"`.

    Example:

    >>> rows = compare_convs(["standard", "hetconv"], TrainConfig(epochs=1), "runs/cmp")  # doctest: +SKIP
    """
    import json

    verbose = _progress.check_verbose(verbose)
    convs, seeds = list(convs), list(seeds)
    rows, models = [], {}
    total = len(convs) * len(seeds)
    progress = _progress.Progress(
        f"compare_convs: {total} run{'s' * (total != 1)} under {out_dir}", total, verbose, "run"
    )
    for conv in convs:
        runs = []
        for seed in seeds:
            run_dir = _run_dir(out_dir, conv, seed)
            metrics_path = os.path.join(run_dir, "metrics.json")
            config = _entry_config(base_config, conv, seed)
            finished = run_state(run_dir) == "finished"
            progress.log(
                f"run {progress.count + 1}/{total}: {conv}, seed {seed} -> {run_dir}"
                + (" (finished: reused)" if finished else ""),
                redraw=finished,
            )
            if finished:
                changed = config_differences(config, run_dir)
                if changed:
                    raise ValueError(
                        f"{run_dir} holds a finished run with another configuration ({', '.join(changed)} differ); "
                        "compare under another `out_dir`"
                    )
                with open(metrics_path, encoding="utf-8") as f:
                    runs.append(json.load(f))
            else:
                runs.append(train(config, run_dir, verbose=verbose))
            progress.advance()
        accuracies = [r["test_accuracy"] for r in runs]
        rows.append(
            {
                "conv": conv,
                "accuracies": accuracies,
                "accuracy_mean": statistics.mean(accuracies),
                "accuracy_spread": max(accuracies) - min(accuracies),
                "macs": runs[0]["macs"],
                "params": runs[0]["params"],
                "fit_images_per_second": statistics.mean(
                    r["train_images"] * r["epochs"] / r["train_seconds"] for r in runs
                ),
                "input_shape": tuple(runs[0]["input_shape"]),
            }
        )
        models[conv] = keras.saving.load_model(os.path.join(_run_dir(out_dir, conv, seeds[0]), "model.keras"))
    progress.finish()
    progress = _progress.Progress(
        f"compare_convs: timing inference and training of {len(models)} model{'s' * (len(models) != 1)} "
        "(interleaved)", 2, verbose, "stage",
    )
    input_shape = rows[0]["input_shape"]
    latency = measure_latency(models, input_shape, batch_size=latency_batch, repeats=20, warmup=3)
    # The runs' own wall time depends on whatever else the machine did while
    # each trained; the training speed is measured again here, all interleaved.
    for model in models.values():
        compile_for_training(model, base_config, steps_per_epoch=1)
    num_classes = models[rows[0]["conv"]].output_shape[-1]
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (base_config.batch_size,) + tuple(input_shape)).astype("float32")
    y = np.eye(num_classes, dtype="float32")[rng.integers(0, num_classes, base_config.batch_size)]
    progress.advance()
    speed = measure_training_speed(models, x, y, repeats=train_steps, warmup=2)
    progress.finish()
    for row in rows:
        row["latency_ms"] = latency[row["conv"]]["median_ms"]
        row["train_images_per_second"] = speed[row["conv"]]["images_per_second"]
    return rows


def comparison_markdown(rows):
    """The rows of `compare_convs` as a markdown table.

    Ratios are taken against the `standard` row (the first row if there is
    none): MAC reduction, training and inference speedup (> 1 is faster).
    """
    base = next((r for r in rows if r["conv"] == "standard"), rows[0])
    lines = [
        "| conv | test accuracy (mean ± spread) | seeds | MACs | MAC reduction | params | train images/s | "
        "train speedup | inference ms | inference speedup |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['conv']} | {r['accuracy_mean']:.4f} ± {r['accuracy_spread'] / 2:.4f} | {len(r['accuracies'])} | "
            f"{r['macs'] / 1e6:.2f} M | {base['macs'] / r['macs']:.2f}× | {r['params']:,} | "
            f"{r['train_images_per_second']:.0f} | {r['train_images_per_second'] / base['train_images_per_second']:.2f}× | "
            f"{r['latency_ms']:.2f} | {base['latency_ms'] / r['latency_ms']:.2f}× |"
        )
    return "\n".join(lines)


def accuracy_vs_macs_plot(rows, path, title="accuracy vs MACs"):
    """Scatter plot of test accuracy (with spread) against MACs (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.errorbar(r["macs"] / 1e6, r["accuracy_mean"], yerr=r["accuracy_spread"] / 2, fmt="o", capsize=3)
        ax.annotate(r["conv"], (r["macs"] / 1e6, r["accuracy_mean"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("MACs per image (millions)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
