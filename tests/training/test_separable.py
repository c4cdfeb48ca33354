"""expand_decompose_finetune: the three stages, their files, resuming, bad input (and the CLI command)."""

import json
import os

import pytest

from conftest import BACKEND
from keras_effconv import cli
from keras_effconv.applications import ShuffleNetV2
from keras_effconv.profiling import profile
from keras_effconv.training import TrainConfig
from keras_effconv.training import expand_decompose_finetune
from keras_effconv.training import recipe

# The smallest real run: ShuffleNet V2 0.5 on 64 Fashion-MNIST images (one step per epoch).
SMALL = dict(model="shufflenet_v2_cifar", conv="standard", conv_config={"width_multiplier": 0.5}, subset=64,
             batch_size=64, max_test_images=64)
STAGES = dict(expanded_epochs=1, finetune_epochs=1, decompose_images=32, positions_per_image=8, verbose=0)


def rows(model):
    return [(r.type, tuple(r.output_shape), r.params, r.macs) for r in profile(model).rows]


@pytest.mark.skipif(BACKEND == "jax", reason="61 s of XLA train-step compilations on JAX; the stages' logic is "
                    "backend independent and their numerics are tested per backend in tests/decompose")
def test_pipeline_runs_resumes_and_returns_shufflenets_structure(tmp_path, monkeypatch):
    import keras

    out = str(tmp_path / "sep")
    metrics = expand_decompose_finetune(TrainConfig(**SMALL), out, **STAGES)
    reference = ShuffleNetV2(0.5, input_shape=(28, 28, 1), classes=10, style="cifar")
    assert metrics["macs"] == metrics["standard_macs"] == profile(reference).total_macs
    assert metrics["expanded_macs"] > 2 * metrics["macs"]
    for key in ("expanded_test_accuracy", "decomposed_test_accuracy", "test_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    for path in ("expanded/model.keras", "data/decomposed.keras", "data/decomposition.md", "data/finetune/model.keras"):
        assert os.path.exists(os.path.join(out, path)), path
    with open(os.path.join(out, "data", "metrics.json")) as f:
        assert json.load(f) == metrics
    for path in ("data/decomposed.keras", "data/finetune/model.keras"):
        assert rows(keras.saving.load_model(os.path.join(out, path))) == rows(reference)
    # Run again: every stage is reused, nothing is trained.
    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(recipe, "train", no_training)
    again = expand_decompose_finetune(TrainConfig(**SMALL), out, **STAGES)
    assert again["test_accuracy"] == metrics["test_accuracy"]
    # Another method reuses the trained expanded network: only its fine-tuning trains.
    calls = []
    monkeypatch.undo()
    original = recipe.train

    def counting(config, run_dir, **kwargs):
        calls.append(run_dir)
        return original(config, run_dir, **kwargs)

    monkeypatch.setattr(recipe, "train", counting)
    channel = expand_decompose_finetune(TrainConfig(**SMALL), out, method="channel", **STAGES)
    assert calls == [os.path.join(out, "channel", "finetune")]
    assert channel["macs"] <= metrics["standard_macs"]


@pytest.mark.parametrize(
    "config, kwargs, match",
    [
        (dict(model="eff_resnet20", conv="standard"), {}, r"model.*DepthwiseConv2D feeding a 1x1 Conv2D"),
        (SMALL, {"method": "tucker"}, r"method.*'data', 'svd', 'channel'"),
        (SMALL, {"expanded_epochs": 0}, r"expanded_epochs"),
        (SMALL, {"finetune_learning_rate": -1.0}, r"finetune_learning_rate"),
    ],
)
def test_bad_input_fails_before_anything_is_written(tmp_path, config, kwargs, match):
    out = tmp_path / "sep"
    arguments = dict(expanded_epochs=1, finetune_epochs=1)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        expand_decompose_finetune(TrainConfig(**config), str(out), **arguments)
    assert not out.exists()


def test_cli_command_is_registered_and_refuses_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["expand-decompose", "--model", "eff_resnet20", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("keras-effconv: error: Invalid value for argument `model`")
    assert len(error.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    help_text = cli.make_parser().format_help()
    assert "expand-decompose" in help_text
