"""compare_convs: one run per conv type, reused when finished, tabulated and plotted."""

import dataclasses
import os

import pytest

from conftest import BACKEND
from keras_effconv.training import TrainConfig
from keras_effconv.training.compare import accuracy_vs_macs_plot
from keras_effconv.training.compare import compare_convs
from keras_effconv.training.compare import comparison_markdown


@pytest.mark.skipif(BACKEND == "jax", reason="two extra XLA train-step compilations; the logic is backend independent")
def test_compare_convs_tabulates_and_reuses_finished_runs(tmp_path):
    config = TrainConfig(epochs=1, subset=64, batch_size=32, max_test_images=32)
    # A conv type and a network entry (each model traced on TF costs ~20 s, hence two).
    rows = compare_convs(["standard", "factorized_resnet20"], config, str(tmp_path), train_steps=2)
    assert [r["conv"] for r in rows] == ["standard", "factorized_resnet20"]
    assert rows[1]["macs"] < rows[0]["macs"] and all(r["latency_ms"] > 0 for r in rows)
    with open(tmp_path / "factorized_resnet20" / "seed0" / "config.json") as f:
        assert '"model": "factorized_resnet20"' in f.read()
    assert all(r["train_images_per_second"] > 0 and r["fit_images_per_second"] > 0 for r in rows)
    stamp = os.path.getmtime(tmp_path / "factorized_resnet20" / "seed0" / "metrics.json")
    again = compare_convs(["factorized_resnet20"], config, str(tmp_path), train_steps=2)
    assert os.path.getmtime(tmp_path / "factorized_resnet20" / "seed0" / "metrics.json") == stamp
    assert again[0]["accuracies"] == rows[1]["accuracies"]
    with pytest.raises(ValueError, match="another configuration.*epochs"):
        compare_convs(["factorized_resnet20"], dataclasses.replace(config, epochs=2), str(tmp_path))
    table = comparison_markdown(rows)
    assert "| factorized_resnet20 |" in table and "± 0.0000" in table
    assert "| standard | " in table and "| 1.00× | " in table
    accuracy_vs_macs_plot(rows, str(tmp_path / "plot.png"))
    assert os.path.getsize(tmp_path / "plot.png") > 0


def test_entries_name_conv_types_networks_and_network_with_conv():
    from keras_effconv.training import TrainConfig
    from keras_effconv.training.compare import _entry_config

    base = TrainConfig(model="eff_resnet20", conv="hetconv", conv_config={"part": 2})
    assert (_entry_config(base, "igc", 1).model, _entry_config(base, "igc", 1).conv) == ("eff_resnet20", "igc")
    network = _entry_config(base, "igc_resnet_cifar", 0)
    assert (network.model, network.conv, network.conv_config) == ("igc_resnet_cifar", "igc", None)
    regular = _entry_config(base, "igc_resnet_cifar:standard", 1)
    assert (regular.model, regular.conv, regular.seed) == ("igc_resnet_cifar", "standard", 1)
    with pytest.raises(ValueError, match="unknown network 'resnet9'"):
        _entry_config(base, "resnet9:standard", 0)
