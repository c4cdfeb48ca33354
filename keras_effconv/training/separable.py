"""The depth-wise decomposition recipe of He et al. (arXiv 1910.09455) as one resumable run.

Train the network with every depthwise/pointwise pair expanded into one
regular convolution (`keras_effconv.decompose.expand_separable`), decompose
the trained expanded network back into exactly the original structure
(`depthwise_decompose(..., insert_batchnorm=...)`, data-driven by default),
and fine-tune it. Each stage is a run of the training recipe
(`keras_effconv.training.recipe.train`: `model.fit`, checkpoints, resume,
`history.csv`, Keras' progress bar) or a file written atomically, so running
the same call again continues where it stopped.

Layout of `out_dir`:

    expanded/               training run of the expanded network (shared by every method)
    <method>/decomposed.keras       the decomposed network, before fine-tuning
    <method>/decomposition.md       the decomposition report (per layer: rank, errors, MACs)
    <method>/finetune/              training run of the decomposed network
    <method>/metrics.json           the summary (written last)

`method="channel"` decomposes with the channel-decomposition baseline
(Zhang et al. 2015) instead, to the standard network's MACs: the paper's
comparison. Its structure is a `k x k` conv to fewer channels + `1 x 1` conv,
not the original one.

Epochs: the expanded network trains for `expanded_epochs` (cosine schedule
from `config.learning_rate`), the decomposed one for `finetune_epochs` (cosine
from `finetune_learning_rate`, by default a tenth of it); compare with the
standard network trained for `expanded_epochs + finetune_epochs`.
"""

import dataclasses
import json
import os
import sys
import time

import keras

from keras_effconv import _validation
from keras_effconv import applications
from keras_effconv._files import atomic_path
from keras_effconv.training import recipe

METHODS = ("data", "svd", "channel")
_DECOMPOSE_BATCH = 64


def _say(message):
    print(f"keras-effconv expand-decompose: {message}", file=sys.stdout, flush=True)


def _finished_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def _train_stage(config, run_dir, build, overwrite, verbose, what):
    if recipe.run_state(run_dir) == "finished" and not overwrite:
        _say(f"{what}: reusing the finished run in {run_dir}")
        return _finished_metrics(run_dir)
    _say(f"{what}: {config.epochs} epoch(s) in {run_dir}")
    return recipe.train(config, run_dir, overwrite=overwrite, verbose=verbose, build=build)


def _base_model(config, input_shape, num_classes):
    return recipe.build_model(config, input_shape, num_classes)


def _middle_batchnorm(expanded, pairs):
    """The BatchNormalization arguments of the network, from a BN the pairs feed (else keras' defaults)."""
    for pair in pairs:
        if pair.folded_into is not None:
            bn = expanded.get_layer(pair.folded_into)
            return {"momentum": bn.momentum, "epsilon": bn.epsilon}
    return {}


def _decompose(config, method, expanded_path, out_path, report_path, decompose_images, positions_per_image):
    from keras_effconv.datasets import load_dataset
    from keras_effconv.decompose import channel_decompose
    from keras_effconv.decompose import depthwise_decompose
    from keras_effconv.decompose import expand_separable
    from keras_effconv.profiling import profile

    data = load_dataset(config.dataset, path=config.data_path, subset=config.subset, seed=config.seed)
    base = _base_model(config, data.input_shape, data.num_classes)
    _, pairs = expand_separable(base)
    expanded = keras.saving.load_model(expanded_path, compile=False)
    names = [pair.expanded for pair in pairs]
    images = data.train.shuffle(min(data.train_size, 20000), seed=config.seed).take(decompose_images)
    batches = images.map(lambda x, y: x).batch(_DECOMPOSE_BATCH)
    start = time.perf_counter()
    _say(f"decomposing {len(names)} expanded convolutions (method={method}) on {decompose_images} training images")
    if method == "channel":
        model, report = channel_decompose(expanded, macs=profile(base).total_macs, data=batches, layers=names)
    else:
        model, report = depthwise_decompose(
            expanded,
            rank=1,
            method=method,
            data=batches,
            layers=names,
            positions_per_image=positions_per_image,
            seed=config.seed,
            insert_batchnorm=_middle_batchnorm(expanded, pairs) or True,
        )
    _say(f"decomposed in {time.perf_counter() - start:.0f} s: {report.model_macs_after / 1e6:.2f} M MACs")
    with atomic_path(out_path) as tmp:
        model.save(tmp)
    with atomic_path(report_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(report.to_markdown())
    return data


def _test_accuracy(model_path, config):
    from keras_effconv.datasets import load_dataset

    data = load_dataset(config.dataset, path=config.data_path, subset=config.subset, seed=config.seed)
    model = keras.saving.load_model(model_path, compile=False)
    model.compile(loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
    test = data.test.take(config.max_test_images) if config.max_test_images else data.test
    _, accuracy = model.evaluate(test.batch(256), verbose=0)
    return float(accuracy)


def expand_decompose_finetune(
    config,
    out_dir,
    expanded_epochs,
    finetune_epochs,
    method="data",
    finetune_learning_rate=None,
    decompose_images=1024,
    positions_per_image=None,
    overwrite=False,
    verbose="auto",
):
    """Trains `config.model` expanded, decomposes it back to its own structure, fine-tunes it.

    The stages and the layout of `out_dir` are in the module docstring of
    `keras_effconv.training.separable`. Calling it again with the same
    arguments resumes; calling it with another `method` on the same
    `out_dir` reuses the trained expanded network.

    Args:
        config: a `TrainConfig` (its `epochs` is ignored; the stages use
            `expanded_epochs` and `finetune_epochs`). `config.model` must
            have depthwise/pointwise pairs (e.g. `"shufflenet_v2_cifar"`).
        out_dir: output directory.
        expanded_epochs: epochs of the expanded network.
        finetune_epochs: epochs of the decomposed network.
        method: `"data"` (data-driven depthwise decomposition with
            multi-layer compensation, the paper's), `"svd"`, or `"channel"`
            (channel decomposition to the standard network's MACs).
        finetune_learning_rate: peak learning rate of the fine-tuning; None
            for `config.learning_rate / 10`.
        decompose_images: training images the data-driven decomposition and
            the BatchNormalization statistics are computed from.
        positions_per_image: None (all) or the output positions per image
            the data-driven statistics sample.
        overwrite: redo every stage.
        verbose: `model.fit` verbosity.

    Returns:
        The dict written to `<out_dir>/<method>/metrics.json`: test accuracy
        of the expanded, the decomposed (before fine-tuning) and the
        fine-tuned network, their MACs and parameters and the standard
        network's, epochs and training seconds.

    Raises:
        ValueError: for a bad `config`, epochs, `method`, learning rate or
            `decompose_images`, or a network without depthwise/pointwise
            pairs; nothing is written then.

    Example:

    >>> from keras_effconv.training import TrainConfig
    >>> config = TrainConfig(model="shufflenet_v2_cifar", conv="standard")
    >>> metrics = expand_decompose_finetune(config, "runs/sep", 3, 1)  # doctest: +SKIP
    """
    from keras_effconv.decompose import expand_separable
    from keras_effconv.profiling import profile

    config.validate()
    expanded_epochs = _validation.check_positive_int(expanded_epochs, "expanded_epochs")
    finetune_epochs = _validation.check_positive_int(finetune_epochs, "finetune_epochs")
    method = _validation.check_choice(method, "method", METHODS)
    decompose_images = _validation.check_positive_int(decompose_images, "decompose_images")
    positions_per_image = _validation.check_positive_int(positions_per_image, "positions_per_image", allow_none=True)
    if finetune_learning_rate is None:
        finetune_learning_rate = config.learning_rate / 10
    finetune_learning_rate = _validation.check_number(
        finetune_learning_rate, "finetune_learning_rate", low=0, low_inclusive=False
    )
    # A network without depthwise/pointwise pairs (or a bad conv_config) fails here, before anything is written.
    expand_separable(applications.create(config.model, config.conv, config.conv_config, weights=None))

    def build_expanded(input_shape, num_classes):
        expanded, _ = expand_separable(_base_model(config, input_shape, num_classes))
        return keras.models.clone_model(expanded)  # fresh weights: trained from scratch

    expanded_dir = os.path.join(out_dir, "expanded")
    method_dir = os.path.join(out_dir, method)
    decomposed_path = os.path.join(method_dir, "decomposed.keras")
    os.makedirs(method_dir, exist_ok=True)

    _say(f"[1/3] training {config.model} with its depthwise/pointwise pairs expanded")
    expanded_metrics = _train_stage(
        dataclasses.replace(config, epochs=expanded_epochs), expanded_dir, build_expanded, overwrite, verbose,
        "expanded network",
    )
    _say(f"[2/3] decomposing (method={method})")
    if os.path.exists(decomposed_path) and not overwrite:
        _say(f"reusing {decomposed_path}")
    else:
        _decompose(
            config, method, os.path.join(expanded_dir, "model.keras"), decomposed_path,
            os.path.join(method_dir, "decomposition.md"), decompose_images, positions_per_image,
        )
    decomposed_accuracy = _test_accuracy(decomposed_path, config)
    _say(f"decomposed network before fine-tuning: test accuracy {decomposed_accuracy:.4f}")
    _say(f"[3/3] fine-tuning at learning rate {finetune_learning_rate:g}")
    finetune_config = dataclasses.replace(config, epochs=finetune_epochs, learning_rate=finetune_learning_rate)
    finetuned = _train_stage(
        finetune_config,
        os.path.join(method_dir, "finetune"),
        lambda input_shape, num_classes: keras.saving.load_model(decomposed_path, compile=False),
        overwrite,
        verbose,
        "decomposed network",
    )
    final = profile(keras.saving.load_model(os.path.join(method_dir, "finetune", "model.keras"), compile=False))
    metrics = {
        "model": config.model,
        "method": method,
        "dataset": config.dataset,
        "seed": config.seed,
        "expanded_epochs": expanded_epochs,
        "finetune_epochs": finetune_epochs,
        "finetune_learning_rate": finetune_learning_rate,
        "expanded_test_accuracy": expanded_metrics["test_accuracy"],
        "decomposed_test_accuracy": decomposed_accuracy,
        "test_accuracy": finetuned["test_accuracy"],
        "macs": final.total_macs,
        "params": final.total_params,
        "expanded_macs": expanded_metrics["macs"],
        "standard_macs": finetuned["standard_macs"],
        "standard_params": finetuned["standard_params"],
        "train_seconds": round(expanded_metrics["train_seconds"] + finetuned["train_seconds"], 1),
        "backend": keras.backend.backend(),
    }
    with atomic_path(os.path.join(method_dir, "metrics.json")) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    _say(
        f"{config.model} expanded -> {method} -> fine-tuned: test accuracy {metrics['test_accuracy']:.4f} "
        f"(expanded {metrics['expanded_test_accuracy']:.4f}, decomposed {decomposed_accuracy:.4f}); "
        f"{metrics['macs'] / 1e6:.2f} M MACs (standard {metrics['standard_macs'] / 1e6:.2f} M)"
    )
    return metrics
