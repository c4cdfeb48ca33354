"""The `keras-effconv` command line."""

import json

import pytest

from conftest import BACKEND
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
        (["train", "--model", "resnet9", "--out", "{out}"], "unknown --model 'resnet9'"),
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
    assert proc.returncode == 0 and "{train,profile,export,expand-decompose,decompose,bench}" in proc.stdout


# --- a fast, complete CLI: --help without Keras, --version, decompose, bench, corrupt files ---

FRAMEWORKS = ("keras", "tensorflow", "jax", "torch")


def _python(code, timeout=300):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _commands():
    parser = cli.make_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    return list(commands.choices)


def test_building_the_parser_and_every_help_imports_no_framework():
    import json

    code = f"""
import contextlib, io, json, sys
import keras_effconv, keras_effconv.cli
assert "layers" in dir(keras_effconv) and keras_effconv.__version__
parser = keras_effconv.cli.make_parser()
for argv in [["--help"]] + [[command, "--help"] for command in {_commands()!r}]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        keras_effconv.cli.main(argv)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {FRAMEWORKS!r})))
"""
    assert json.loads(_python(code).stdout) == []


def test_help_of_every_command_exits_0_without_log_lines():
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(sys.executable), "keras-effconv")
    program = [script] if os.path.exists(script) else [sys.executable, "-m", "keras_effconv.cli"]
    for argv in [["--help"]] + [[command, "--help"] for command in _commands()]:
        proc = subprocess.run(program + argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stderr == "", (argv, proc.stderr)
        assert proc.stdout.startswith("usage: keras-effconv"), argv


def test_version(capsys):
    from keras_effconv.version import __version__

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"keras-effconv {__version__}\n"


def test_choice_lists_read_without_importing_equal_the_imported_ones():
    # The CLI reads --conv/--model/--dataset/... from the defining modules' source
    # (cli/_args.py); the registry and the constants stay the one place.
    import json

    from keras_effconv.applications import MODELS
    from keras_effconv.conv_methods import conv_method_names
    from keras_effconv.datasets import DATASETS
    from keras_effconv.export.inference import TARGETS
    from keras_effconv.training.separable import METHODS

    code = """
import json, sys
from keras_effconv.cli import _args
print(json.dumps([_args.conv_choices(), _args.model_names(), _args.dataset_names(),
                  _args.module_constant("keras_effconv.training.separable", "METHODS"),
                  _args.module_constant("keras_effconv.export.inference", "TARGETS"),
                  [m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow", "jax", "torch")]]))
"""
    convs, models, datasets, methods, targets, imported = json.loads(_python(code).stdout)
    assert imported == []
    assert tuple(convs) == conv_method_names() and tuple(models) == tuple(MODELS)
    assert tuple(datasets) == tuple(DATASETS) and tuple(methods) == tuple(METHODS) and tuple(targets) == tuple(TARGETS)


def test_a_method_registered_at_run_time_is_a_conv_choice():
    import keras

    from keras_effconv import conv_methods
    from keras_effconv.cli._args import conv_choices

    class DoubledConv2D(keras.layers.Conv2D):
        pass

    conv_methods.register_conv_method("cli_doubled", DoubledConv2D)
    try:
        assert "cli_doubled" in conv_choices()
    finally:
        conv_methods.unregister_conv_method("cli_doubled")


def test_lazy_public_names():
    import keras_effconv

    assert keras_effconv.profile is keras_effconv.profiling.profile
    assert keras_effconv.convert is keras_effconv.applications.convert
    assert {"applications", "datasets", "decompose", "export", "layers", "profiling", "convert", "profile"} <= set(
        dir(keras_effconv)
    )
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        keras_effconv.nothing_here


@pytest.mark.parametrize(
    "imports",
    [
        "import keras_effconv; import keras",  # the package first: registered when Keras arrives
        "import keras; import keras_effconv",
        "from keras_effconv.layers import HetConv2D; import keras",  # EffConvModel registered too
    ],
)
def test_saved_models_load_after_import_keras_effconv(imports, tmp_path):
    from keras_effconv import applications

    path = str(tmp_path / "m.keras")
    applications.EffResNet20(conv="hetconv", input_shape=(16, 16, 3), classes=3).save(path)
    code = f"""
{imports}
model = keras.saving.load_model({path!r})
print(type(model).__name__, type(model.get_layer("stack1_block1_1_conv")).__name__)
"""
    assert _python(code).stdout.split() == ["EffConvModel", "HetConv2D"]


def _small_model(path, shape=(16, 16, 3)):
    import keras

    model = keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
            keras.layers.Conv2D(8, 3, padding="same", name="c2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    model.save(path)
    return model


@pytest.mark.parametrize(
    "options, method",
    [
        ([], "svd"),
        (["--method", "svd", "--rank", "2", "--layers", "c2", "--verbose"], "svd"),
        (["--method", "channel", "--ratio", "0.5"], "channel"),
    ],
)
def test_decompose_writes_the_model_and_prints_the_report(options, method, tmp_path, capsys):
    import keras

    source, out = str(tmp_path / "m.keras"), str(tmp_path / "small.keras")
    _small_model(source)
    assert cli.main(["decompose", source, "--out", out] + options) == 0
    text = capsys.readouterr().out
    assert f"with method {method}" in text and "MACs" in text and " -> " in text and f"wrote {out}" in text
    assert ("| c2 |" in text) == ("--verbose" in options)
    names = [layer.name for layer in keras.saving.load_model(out).layers]
    if method == "channel":
        assert "c1_reduce" in names and "c2_expand" in names
    else:
        assert "c2_dw" in names and ("c1_dw" in names) == ("--layers" not in options)


def test_decompose_data_method_on_real_images(tmp_path, capsys):
    import json

    source, out = str(tmp_path / "m.keras"), str(tmp_path / "small.keras")
    _small_model(source)  # 3 channels, 16 px: the gray 28 px Fashion-MNIST images are adapted
    argv = ["decompose", source, "--out", out, "--method", "data", "--dataset", "fashion_mnist", "--images", "16",
            "--json"]
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "data" and report["out"] == out
    assert report["model_macs_after"] < report["model_macs_before"]
    assert all(layer["output_error"] is not None for layer in report["layers"])


@pytest.mark.parametrize(
    "options, message",
    [
        (["--out", "{dir}/small.h5"], "expected a .keras file"),
        (["--out", "{dir}/missing/small.keras"], "does not exist"),
        (["--out", "{dir}/m.keras"], "--out must differ from MODEL.keras"),
        (["--out", "{dir}/s.keras", "--method", "data"], "--method data needs images"),
        (["--out", "{dir}/s.keras", "--method", "channel"], "exactly one of --ratio"),
        (["--out", "{dir}/s.keras", "--method", "channel", "--ratio", "0.5", "--macs", "1M"], "exactly one of"),
        (["--out", "{dir}/s.keras", "--method", "channel", "--ratio", "0.5", "--rank", "2"], "--rank do(es) not apply"),
        (["--out", "{dir}/s.keras", "--ratio", "0.5"], "--ratio do(es) not apply to --method svd"),
        (["--out", "{dir}/s.keras", "--images", "10"], "--images needs --dataset"),
        (["--out", "{dir}/s.keras", "--energy", "1.5"], "expected a number in (0, 1]"),
        (["--out", "{dir}/s.keras", "--method", "channel", "--macs", "lots"], "positive MAC count"),
        (["--out", "{dir}/s.keras", "--layers", "nope"], "nope"),
    ],
)
def test_bad_decompose_input_is_one_line_and_writes_nothing(options, message, tmp_path, capsys):
    source = str(tmp_path / "m.keras")
    _small_model(source)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["decompose", source] + [o.replace("{dir}", str(tmp_path)) for o in options])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_mac_count_suffixes():
    from keras_effconv.cli.decompose import mac_count

    assert mac_count("300M") == 300_000_000 and mac_count("1.5g") == 1_500_000_000 and mac_count("1200") == 1200


def test_bench_prints_medians_and_speedups(tmp_path, capsys):
    import json

    assert cli.main(["bench", "eff_resnet20", "--conv", "hetconv", "--input-shape", "16,16,3", "--repeats", "2",
                     "--warmup", "1"]) == 0
    text = capsys.readouterr().out
    assert "interleaved" in text and "| eff_resnet20 hetconv |" in text
    assert "| eff_resnet20 standard (reference) |" in text and "1.00x" in text
    path = str(tmp_path / "m.keras")
    _small_model(path)
    argv = ["bench", path, "--reference", "eff_resnet20:igc", "--reference", path, "--repeats", "2", "--json"]
    assert cli.main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["networks"]) == ["m.keras", "eff_resnet20 igc", "m.keras (2)"]
    assert data["reference"] == "eff_resnet20 igc" and data["input_shape"] == [16, 16, 3]
    assert all(row[data["backend"]] > 0 and row["params"] > 0 for row in data["networks"].values())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "resnet9"], "unknown network 'resnet9'"),
        (["bench", "eff_resnet20", "--reference", "keras:NoSuchNet"], "unknown keras.applications network"),
        (["bench", "eff_resnet20", "--reference", "eff_resnet20:winograd"], "unknown conv method 'winograd'"),
        (["bench", "{dir}/m.keras", "--conv", "igc"], "--conv and --conv-config build a network by name"),
        (["bench", "{dir}/m.keras", "--reference", "{dir}/big.keras"], "reference {dir}/big.keras takes input"),
        (["bench", "{dir}/missing.keras"], "model file not found"),
    ],
)
def test_bad_bench_input_is_one_line(argv, message, tmp_path, capsys):
    _small_model(str(tmp_path / "m.keras"), shape=(8, 8, 3))
    _small_model(str(tmp_path / "big.keras"), shape=(12, 12, 3))
    with pytest.raises(SystemExit) as exit_info:
        cli.main([a.replace("{dir}", str(tmp_path)) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message.replace("{dir}", str(tmp_path)) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bench_uses_the_benchmark_model_binary_when_on_path(tmp_path, monkeypatch):
    import os

    from keras_effconv.cli import bench

    binary = tmp_path / "benchmark_model"
    binary.write_text(
        "#!/bin/sh\n"
        'echo "$@" >> "$(dirname "$0")/calls"\n'
        'case "$1" in *a.tflite) t=2000;; *) t=4000;; esac\n'
        'echo "INFO: Inference timings in us: Init: 10, First inference: 99, Warmup (avg): 1, Inference (avg): $t"\n'
    )
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    found = bench.shutil.which(bench.BENCHMARK_MODEL)
    assert found == str(binary)
    medians = bench._time_with_binary(found, {"a": "/x/a.tflite", "b": "/x/b.tflite"}, 2, 7, 1)
    assert medians == {"a": 2.0, "b": 4.0}
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 2 * bench.BINARY_ROUNDS and calls[0].startswith("--graph=/x/a.tflite")
    assert calls[1].startswith("--graph=/x/b.tflite") and "--num_threads=2 --num_runs=7 --warmup_runs=1" in calls[0]
    with pytest.raises(ValueError, match="no 'Inference \\(avg\\)' line"):
        bench.binary_average_ms("crashed")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="one set of conversions is enough; they run in a TF worker")
def test_bench_on_litert(tmp_path, capsys, monkeypatch):
    from keras_effconv.cli import bench

    monkeypatch.setattr(bench.shutil, "which", lambda name: None)  # the Python interpreter path
    path, other = str(tmp_path / "m.keras"), str(tmp_path / "o.keras")
    _small_model(path, shape=(8, 8, 3))
    _small_model(other, shape=(8, 8, 3))
    assert cli.main(["bench", path, "--reference", other, "--repeats", "2", "--litert"]) == 0
    text = capsys.readouterr().out
    assert "ai_edge_litert Python interpreter (benchmark_model is not on PATH)" in text
    assert "LiteRT ms" in text and "| o.keras (reference) |" in text
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tflite"] == []


def _damaged_copies(tmp_path):
    """A good .keras file and damaged copies of it: name -> path."""
    import zipfile

    good = tmp_path / "good.keras"
    _small_model(str(good), shape=(8, 8, 3))
    data = good.read_bytes()
    paths = {"truncated": tmp_path / "truncated.keras"}
    paths["truncated"].write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    with zipfile.ZipFile(good) as archive:
        weights = archive.getinfo("model.weights.h5")
        middle = weights.header_offset + 30 + len(weights.filename) + weights.compress_size // 2
        flipped[middle] ^= 0xFF
        paths["bad_crc"] = tmp_path / "bad_crc.keras"
        paths["bad_crc"].write_bytes(bytes(flipped))
        for name, member, content in [("bad_config", "config.json", b"{not json"),
                                      ("bad_weights", "model.weights.h5", b"garbage")]:
            paths[name] = tmp_path / f"{name}.keras"
            with zipfile.ZipFile(paths[name], "w") as out:
                for item in archive.namelist():
                    out.writestr(item, content if item == member else archive.read(item))
    return paths


def test_a_corrupt_keras_file_is_reported_as_corrupt_never_as_missing(tmp_path, capsys):
    from keras_effconv._files import load_keras_model

    for kind, path in _damaged_copies(tmp_path).items():
        with pytest.raises(ValueError) as error:
            load_keras_model(path)
        assert f"{path} is a corrupt .keras file" in str(error.value), kind
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["profile", str(path)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, kind
        assert f"{path} is a corrupt .keras file" in err and "file not found" not in err.lower(), kind
    with pytest.raises(SystemExit):
        cli.main(["profile", str(tmp_path / "absent.keras")])
    assert "model file not found" in capsys.readouterr().err


def test_keras_refusals_name_the_file(tmp_path):
    import keras

    from keras_effconv._files import load_keras_model

    inputs = keras.Input((3,))
    keras.Model(inputs, keras.layers.Lambda(lambda t: t + 1)(inputs)).save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match=f"cannot load {tmp_path / 'lambda.keras'}: .*safe_mode=False"):
        load_keras_model(tmp_path / "lambda.keras")
