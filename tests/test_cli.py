"""The `keras-effconv` command line."""

import json

import pytest

from keras_effconv import cli


def test_profile_prints_summary_and_json(capsys):
    assert cli.main(["profile", "eff_resnet20", "--conv", "hetconv"]) == 0
    assert "eff_resnet20:" in capsys.readouterr().out
    assert cli.main(["profile", "eff_resnet20", "--conv", "standard", "--json", "--input-shape", "28,28,1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_shape"] == [28, 28, 1] and data["total_macs"] > 0


def test_profile_the_sic_networks_and_their_standard_counterparts(capsys):
    assert cli.main(["profile", "factorized_resnet20", "--json", "--input-shape", "28,28,1"]) == 0
    factorized = json.loads(capsys.readouterr().out)["total_macs"]
    assert cli.main(["profile", "factorized_resnet20", "--conv", "standard", "--json", "--input-shape", "28,28,1"]) == 0
    standard = json.loads(capsys.readouterr().out)["total_macs"]
    assert 5 < standard / factorized < 7
    with pytest.raises(SystemExit):
        cli.main(["profile", "factorized_resnet20", "--conv", "hetconv"])
    assert "built from SIC layers" in capsys.readouterr().err


def test_profile_a_saved_model(tmp_path, capsys):
    from keras_effconv import applications

    path = str(tmp_path / "m.keras")
    applications.EffResNet20(conv="igc").save(path)
    assert cli.main(["profile", path, "--layers"]) == 0
    out = capsys.readouterr().out
    assert "InterleavedGroupConv2D" in out and "MACs" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["profile", "resnet9"], "unknown model"),
        (["profile", "missing.keras"], "not found"),
        (["profile", "eff_resnet20", "--conv", "winograd"], "invalid choice"),
        (["profile", "eff_resnet20", "--conv-config", "{part: 2}"], "not valid JSON"),
        (["profile", "eff_resnet20", "--conv-config", '{"parts": 2}'], "unknown argument"),
        (["profile", "eff_resnet20", "--input-shape", "28,28"], "three positive integers"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "resnet9", "--out", "{out}"], "invalid choice"),
        (["train", "--conv", "winograd", "--out", "{out}"], "invalid choice"),
        (["train", "--dataset", "mnist", "--out", "{out}"], "invalid choice"),
        (["train", "--epochs", "0", "--out", "{out}"], "positive integer"),
        (["train", "--batch-size", "x", "--out", "{out}"], "positive integer"),
        (["train", "--learning-rate", "-1", "--out", "{out}"], "positive number"),
        (["train", "--dataset", "image_folder", "--data-path", "/no/such/dir", "--out", "{out}"], "not found"),
        (["train", "--dataset", "cifar10", "--data-path", "/no/such/dir", "--out", "{out}"], "not found locally"),
    ],
)
def test_bad_train_input_is_one_line_and_keeps_out(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("earlier run")
    with pytest.raises(SystemExit) as exit_info:
        cli.main([a.replace("{out}", str(out)) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "earlier run"


def test_finished_run_is_refused_without_overwrite(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit):
        cli.main(["train", "--subset", "10", "--epochs", "1", "--out", str(tmp_path)])
    assert "finished run" in capsys.readouterr().err


def test_unfinished_run_is_resumed_only_with_the_same_arguments(tmp_path, capsys):
    import dataclasses
    import json

    from keras_effconv.training import TrainConfig

    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "state").write_text("epoch 1")
    earlier = dataclasses.asdict(TrainConfig(epochs=3, subset=10))
    (tmp_path / "config.json").write_text(json.dumps(earlier))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--subset", "10", "--epochs", "1", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "another configuration (epochs differ)" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "backup" / "state").read_text() == "epoch 1"
    assert json.loads((tmp_path / "config.json").read_text()) == earlier


@pytest.mark.parametrize("command", [["profile"], ["export", "--out", "{out}"]])
def test_a_file_that_is_not_a_keras_archive_is_one_line_and_exit_2(command, tmp_path, capsys):
    path = tmp_path / "model.keras"
    path.write_text("not a zip archive")
    argv = [command[0], str(path)] + [a.replace("{out}", str(tmp_path / "m.tflite")) for a in command[1:]]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"keras-effconv: error: {path} is not a valid .keras file (not a zip archive)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_no_package_module_outside_the_cli_imports_it():
    # The CLI sits on top of everything (DESIGN.md §1): a module below that
    # imports it back makes an import cycle.
    import ast
    import pathlib

    import keras_effconv

    root = pathlib.Path(keras_effconv.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if "cli" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            if any(n == "keras_effconv.cli" or n.startswith("keras_effconv.cli.") for n in names):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "keras_effconv.cli", "--help"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "{train,profile,export,expand-decompose}" in proc.stdout
