"""Decomposition benchmark: svd vs data (GSVD) vs channel decomposition at equal MACs.

What it does
------------
1. Trains a VGG-style CNN (3 blocks of two 3x3 Conv2D + BatchNorm + ReLU,
   16/32/64 channels, max pooling, global average pooling, linear classifier)
   on the full real Fashion-MNIST training set (60k images, offline from the
   Debian package ``dataset-fashion-mnist``) with Adam, ``--epochs`` epochs.
2. For every ``--ranks`` value r, decomposes every 3x3 Conv2D of the trained
   network with
   - ``depthwise_decompose(method="svd", rank=r)``,
   - ``depthwise_decompose(method="data", rank=r)`` on ``--fit-images``
     training images (multi-layer compensated GSVD),
   - ``channel_decompose(macs=M)`` with M = the MACs of the rank-r depthwise
     network (Zhang et al. 2015, response PCA on the same images), so all
     three have the same cost up to one channel per layer.
3. For each network: test accuracy on the full 10k test set right after the
   decomposition and after ``--finetune-epochs`` epoch(s) of fine-tuning on
   the full training set (Adam, lr ``--finetune-lr``), the relative error of
   the logits on the test set against the original network (before
   fine-tuning), analytic MACs for one sample (1 MAC = 2 FLOPs) and
   parameters, and latency: median of ``--repeats`` batch-1 inference calls
   measured round-robin over all networks in one run
   (``keras_effconv.profiling.measure_latency``).

How to run
----------
One backend per process; TensorFlow is the fastest to train on a CPU::

    KERAS_BACKEND=tensorflow python benchmarks/decomposition.py
    KERAS_BACKEND=tensorflow python benchmarks/decomposition.py --quick   # smoke test

It prints the table and writes ``<out>/decomposition.md``
(``decomposition_quick.md`` for ``--quick``). The full run takes about
10-15 minutes on 2 CPU cores. Latencies are only comparable within one
results file.

The ShuffleNet V2 study (``--shufflenet``)
------------------------------------------
The paper's headline (He et al.: train ShuffleNet V2 with every depthwise +
pointwise pair as one regular convolution, decompose back to ShuffleNet V2,
fine-tune; about +2% ImageNet top-1 over ShuffleNet V2 trained directly), on
the small ShuffleNet V2 1.0 (``shufflenet_v2_cifar``, 37.6 M MACs at 28 px)
and the full Fashion-MNIST, with the training recipe
(``keras_effconv.training``), equal total epochs per arm, seeds 0 and 1:

- (a) ShuffleNet V2 trained directly for ``E + F`` epochs;
- (b) the expanded network trained ``E`` epochs, depthwise-decomposed back
  (``svd``, and ``data`` = GSVD with multi-layer compensation on
  ``--fit-images`` training images) and fine-tuned ``F`` epochs
  (``keras_effconv.training.expand_decompose_finetune``);
- (c) the same expanded network, channel-decomposed to ShuffleNet V2's MACs,
  fine-tuned ``F`` epochs.

Every run lives under ``--runs`` and resumes when the command is repeated::

    KERAS_BACKEND=tensorflow python benchmarks/decomposition.py --shufflenet

It writes ``<out>/decomposition_shufflenet.md`` and ``.png``.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import time

import numpy as np

import keras

import keras_effconv
from keras_effconv.datasets import fashion_mnist
from keras_effconv.decompose import channel_decompose
from keras_effconv.decompose import depthwise_decompose


def vgg_style(widths=(16, 32, 64)):
    inputs = keras.Input((28, 28, 1))
    x = inputs
    for block, width in enumerate(widths):
        for i in range(2):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{block + 1}_conv{i + 1}")(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{block + 1}_bn{i + 1}")(x)
            x = keras.layers.ReLU(name=f"block{block + 1}_relu{i + 1}")(x)
        x = keras.layers.MaxPooling2D(name=f"block{block + 1}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="vgg_style")


def compile_model(model, lr):
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def accuracy(model, x, y):
    logits = model.predict(x, batch_size=500, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y)), logits


def version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "n/a"


def header(args, train_seconds, base_accuracy, n_train):
    versions = ", ".join(
        f"{name} {version(name)}" for name in ("keras", "tensorflow", "jax", "torch", "numpy")
    )
    return "\n".join(
        [
            f"# Decomposition benchmark ({keras.backend.backend()})" + (" — quick" if args.quick else ""),
            "",
            f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
            f"- backend: {keras.backend.backend()}; keras_effconv {keras_effconv.__version__}; {versions}; python {platform.python_version()}",
            f"- platform: {platform.platform()}; CPUs: {os.cpu_count()}",
            f"- data: real Fashion-MNIST, {n_train} training images, full 10k test set",
            f"- network: VGG-style, 6 x (3x3 Conv2D no bias + BatchNorm(momentum 0.9) + ReLU), widths 16/32/64, "
            f"GAP, Dense(10); trained {args.epochs} epoch(s), Adam 1e-3, batch {args.batch_size} "
            f"({train_seconds:.0f} s); test accuracy {base_accuracy:.4f}",
            f"- decomposition: every 3x3 Conv2D (6 layers, the 1-channel stem included); "
            f"`data` and channel PCA fit on {args.fit_images} training images"
            + (f", {args.positions} random positions per image" if args.positions else ", all positions"),
            f"- fine-tuning: {args.finetune_epochs} epoch(s) on the training set, Adam lr {args.finetune_lr}, batch {args.batch_size}",
            f"- latency: batch 1 (median of {args.repeats} calls) and batch 256 (median of "
            f"{max(3, args.repeats // 5)} calls), round-robin over all networks "
            "(keras_effconv.profiling.measure_latency; tf.function / jax.jit / torch eager)",
            "",
            "MACs for ONE sample in millions (1 MAC = 2 FLOPs; bias, BN and activations excluded). "
            "Logit error: ||z - z_orig|| / ||z_orig|| on the test set before fine-tuning. "
            "Equal MACs: channel decomposition gets the MAC budget of the depthwise network of "
            "the same rank (d' per layer, never above it).",
        ]
    )


ARMS = (
    ("direct", "ShuffleNet V2 trained directly"),
    ("data", "expanded → depthwise data (GSVD) → fine-tuned"),
    ("svd", "expanded → depthwise svd → fine-tuned"),
    ("channel", "expanded → channel decomposition (equal MACs) → fine-tuned"),
)


def shufflenet_table(args, results):
    """Markdown of the ShuffleNet study; `results[(arm, seed)]` = metrics dict."""
    seeds = sorted({seed for _, seed in results})
    lines = [
        f"# Depth-wise decomposition of ShuffleNet V2 ({keras.backend.backend()})",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC; keras_effconv "
        f"{keras_effconv.__version__}; keras {version('keras')}; tensorflow {version('tensorflow')}; "
        f"platform {platform.platform()}, {os.cpu_count()} CPUs",
        f"- network: `shufflenet_v2_cifar` (ShuffleNet V2 1.0, stem stride 1, no max pooling), 28x28x1 input, 10 classes",
        "- data: " + ("QUICK smoke run: 6k training images, 1k test images" if args.quick else
                      "the full real Fashion-MNIST (60k training images; test accuracy on the full 10k test split)"),
        f"- recipe: `keras_effconv.training` (AdamW, cosine decay, label smoothing 0.1, flip + translation, "
        f"batch {args.batch_size}); learning rate {args.learning_rate:g}, fine-tuning {args.learning_rate / 10:g}",
        f"- epochs: (a) {args.expanded_epochs + args.finetune_epochs}; (b), (c) {args.expanded_epochs} expanded "
        f"+ {args.finetune_epochs} fine-tuning (equal totals)",
        f"- decomposition statistics: {args.fit_images} training images"
        + (f", {args.positions} random positions per image" if args.positions else ", all positions"),
        "",
        "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | spread (max − min) "
        "| before fine-tuning | MACs (M) | params |",
        "|---|" + "---:|" * len(seeds) + "---:|---:|---:|---:|---:|",
    ]
    means = {}
    for arm, label in ARMS:
        accs = [results[(arm, s)]["test_accuracy"] for s in seeds if (arm, s) in results]
        if not accs:
            continue
        means[arm] = float(np.mean(accs))
        first = next(results[(arm, s)] for s in seeds if (arm, s) in results)
        before = [results[(arm, s)].get("decomposed_test_accuracy") for s in seeds if (arm, s) in results]
        before_text = "—" if before[0] is None else " / ".join(f"{b:.4f}" for b in before)
        cells = [f"{results[(arm, s)]['test_accuracy']:.4f}" if (arm, s) in results else "—" for s in seeds]
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {means[arm]:.4f} | {max(accs) - min(accs):.4f} | "
            f"{before_text} | {first['macs'] / 1e6:.2f} | {first['params']:,} |"
        )
    if "direct" in means:
        lines.append("")
        lines.append("Mean difference to direct training (the paper reports about +2 points of ImageNet top-1 "
                     "for the data-driven arm, at full training length):")
        lines.append("")
        for arm, label in ARMS[1:]:
            if arm in means:
                lines.append(f"- {label}: {100 * (means[arm] - means['direct']):+.2f} points")
    return "\n".join(lines) + "\n"


def shufflenet_plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (arm, label) in enumerate(ARMS):
        accs = [m["test_accuracy"] for (a, _), m in sorted(results.items()) if a == arm]
        if accs:
            ax.bar(i, np.mean(accs), color="#9ecae1")
            ax.plot([i] * len(accs), accs, "ko")
    ax.set_xticks(range(len(ARMS)), [label.replace(" → ", "\n→ ") for _, label in ARMS], fontsize=7)
    ax.set_ylabel("test accuracy (Fashion-MNIST)")
    ax.set_title("ShuffleNet V2 1.0 (small): direct vs expand → decompose → fine-tune (dots: seeds)")
    values = [m["test_accuracy"] for m in results.values()]
    ax.set_ylim(max(0.0, min(values) - 0.02), min(1.0, max(values) + 0.01))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def shufflenet_study(args):
    from keras_effconv.training import TrainConfig
    from keras_effconv.training import expand_decompose_finetune
    from keras_effconv.training import train
    from keras_effconv.training.recipe import run_state

    results = {}
    for seed in args.seeds:
        config = TrainConfig(
            model="shufflenet_v2_cifar",
            conv="standard",
            epochs=args.expanded_epochs + args.finetune_epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=seed,
            subset=6000 if args.quick else None,
            max_test_images=1000 if args.quick else None,
        )
        direct_dir = os.path.join(args.runs, f"seed{seed}", "direct")
        if run_state(direct_dir) == "finished":
            with open(os.path.join(direct_dir, "metrics.json")) as f:
                results[("direct", seed)] = json.load(f)
        else:
            results[("direct", seed)] = train(config, direct_dir, verbose=2)
        for method in ("data", "svd", "channel"):
            results[(method, seed)] = expand_decompose_finetune(
                config,
                os.path.join(args.runs, f"seed{seed}", "separable"),
                args.expanded_epochs,
                args.finetune_epochs,
                method=method,
                decompose_images=args.fit_images,
                positions_per_image=args.positions,
                verbose=2,
            )
        text = shufflenet_table(args, results)
        print(text, flush=True)
        os.makedirs(args.out, exist_ok=True)
        stem = "decomposition_shufflenet_quick" if args.quick else "decomposition_shufflenet"
        with open(os.path.join(args.out, f"{stem}.md"), "w") as f:
            f.write(text)
        shufflenet_plot(results, os.path.join(args.out, f"{stem}.png"))
        print(f"wrote {os.path.join(args.out, stem)}.md/.png", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--fit-images", type=int, default=2000)
    parser.add_argument("--positions", type=int, default=None, help="random positions per image for the data fits")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-lr", type=float, default=3e-4)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="6k training images, 1 epoch, 500 fit images")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--shufflenet", action="store_true", help="the ShuffleNet V2 study (see the docstring)")
    parser.add_argument("--expanded-epochs", type=int, default=1, help="--shufflenet: epochs of the expanded network")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="--shufflenet: peak learning rate")
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1])
    parser.add_argument("--runs", default="/tmp/keras_effconv_decomposition_runs",
                        help="--shufflenet: where the training runs live (rerun the command to resume)")
    args = parser.parse_args()
    if args.shufflenet:
        if args.quick:
            args.fit_images = 256
        shufflenet_study(args)
        return
    if args.quick:
        args.epochs, args.fit_images, args.repeats = 1, 500, 10

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    x_train = x_train[..., None].astype("float32") / 255.0
    x_test = x_test[..., None].astype("float32") / 255.0
    if args.quick:
        x_train, y_train = x_train[:6000], y_train[:6000]
    x_fit = x_train[: args.fit_images]

    model = compile_model(vgg_style(), 1e-3)
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=2)
    train_seconds = time.perf_counter() - start
    base_accuracy, base_logits = accuracy(model, x_test, y_test)
    print(f"trained in {train_seconds:.0f} s, test accuracy {base_accuracy:.4f}")

    networks = {"original": (model, None, 0.0)}
    for rank in [int(r) for r in args.ranks.split(",")]:
        start = time.perf_counter()
        svd_model, svd_report = depthwise_decompose(model, rank=rank, method="svd")
        networks[f"depthwise svd, rank {rank}"] = (svd_model, svd_report, time.perf_counter() - start)
        start = time.perf_counter()
        data_model, data_report = depthwise_decompose(
            model, rank=rank, method="data", data=x_fit, positions_per_image=args.positions
        )
        networks[f"depthwise data (GSVD), rank {rank}"] = (data_model, data_report, time.perf_counter() - start)
        start = time.perf_counter()
        channel_model, channel_report = channel_decompose(model, macs=svd_report.model_macs_after, data=x_fit)
        networks[f"channel (Zhang et al.), MACs of rank {rank}"] = (
            channel_model, channel_report, time.perf_counter() - start
        )
        for label in list(networks)[-3:]:
            print(f"{label}: decomposed in {networks[label][2]:.1f} s")
            print(networks[label][1].to_markdown())

    from keras_effconv.profiling import measure_latency
    from keras_effconv.profiling import profile

    latency = measure_latency(
        {label: entry[0] for label, entry in networks.items()}, (28, 28, 1), repeats=args.repeats, warmup=3
    )
    latency_batch = measure_latency(
        {label: entry[0] for label, entry in networks.items()},
        (28, 28, 1),
        batch_size=256,
        repeats=max(3, args.repeats // 5),
        warmup=2,
    )

    rows = []
    base_macs = profile(model).total_macs
    base_latency = latency["original"]["median_ms"]
    for label, (net, report, seconds) in networks.items():
        acc_before, logits = accuracy(net, x_test, y_test)
        error = float(np.linalg.norm(logits - base_logits) / np.linalg.norm(base_logits))
        if report is None:
            acc_after = acc_before
        else:
            compile_model(net, args.finetune_lr)
            start = time.perf_counter()
            net.fit(x_train, y_train, epochs=args.finetune_epochs, batch_size=args.batch_size, verbose=2)
            print(f"{label}: fine-tuned in {time.perf_counter() - start:.0f} s")
            acc_after, _ = accuracy(net, x_test, y_test)
        macs = profile(net).total_macs
        assert report is None or macs == report.model_macs_after
        rows.append(
            (
                label,
                acc_before,
                acc_after,
                error,
                macs,
                macs / base_macs,
                net.count_params(),
                latency[label]["median_ms"],
                base_latency / latency[label]["median_ms"],
                latency_batch[label]["median_ms"],
                latency_batch["original"]["median_ms"] / latency_batch[label]["median_ms"],
                seconds,
            )
        )
        print(rows[-1])

    table = [
        "| network | test acc. before FT | test acc. after FT | logit error | MACs (M) | MACs ratio "
        "| params | latency b1 (ms) | speedup b1 | latency b256 (ms) | speedup b256 | decompose (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, before, after, error, macs, ratio, params, ms, speedup, ms_b, speedup_b, seconds in rows:
        after_text = "—" if label == "original" else f"{after:.4f}"
        table.append(
            f"| {label} | {before:.4f} | {after_text} | {error:.4f} | {macs / 1e6:.3f} | {ratio:.3f} | "
            f"{params:,} | {ms:.3f} | {speedup:.2f}× | {ms_b:.2f} | {speedup_b:.2f}× | {seconds:.1f} |"
        )
    text = header(args, train_seconds, base_accuracy, len(x_train)) + "\n\n" + "\n".join(table) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    name = "decomposition_quick.md" if args.quick else "decomposition.md"
    with open(os.path.join(args.out, name), "w") as f:
        f.write(text)
    print(f"wrote {os.path.join(args.out, name)}")


if __name__ == "__main__":
    main()
