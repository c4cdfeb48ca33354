"""Training under faults never loses finished work.

Each scenario (a kill after `fit()`, a bad `--conv-config` with `--overwrite`,
a corrupt checkpoint or leftover backup, a full disk while a checkpoint is
written) ends with a rerun of the same command, which continues from the
newest intact state, loses at most the unfinished epoch and leaves `--out`
consistent: config, checkpoints, history, metrics and model agree. Kills and
the full disk happen in a child process. The runs use the tiny network of
`recipe_helpers`, so the module adds little to CI.
"""

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

import keras

from keras_effconv import applications
from keras_effconv import cli
from keras_effconv.training import TrainConfig
from keras_effconv.training import train

from recipe_helpers import TINY
from recipe_helpers import Interrupt
from recipe_helpers import TINY_MODEL
from recipe_helpers import assert_consistent
from recipe_helpers import checkpoint_epochs
from recipe_helpers import history_rows
from recipe_helpers import tiny_net

HERE = os.path.dirname(os.path.abspath(__file__))

# The child trains `config` into `out` and meets `fault` on the way.
_CHILD = r"""
import json, os, signal, sys
sys.path.insert(0, sys.argv[4])
from recipe_helpers import register_tiny_net
register_tiny_net()
import keras
from keras_effconv.training import TrainConfig, train

fault, config, out = sys.argv[1], TrainConfig(**json.loads(sys.argv[2])), sys.argv[3]


class Fault(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if fault == "disk_full_in_epoch_2" and epoch == 1:
            import resource

            # Files may grow to half a checkpoint from now on (CPython ignores
            # SIGXFSZ, so writes beyond fail with EFBIG as on a full disk).
            size = os.path.getsize(os.path.join(out, "checkpoints", "epoch_001.keras"))
            resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    def on_train_end(self, logs=None):
        if fault == "kill_after_fit":
            os.kill(os.getpid(), signal.SIGKILL)


train(config, out, callbacks=[Fault()], verbose=0)
"""


def run_child(fault, config, out):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-c", _CHILD, fault, json.dumps(dataclasses.asdict(config)), out, HERE],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def tiny_model(monkeypatch):
    monkeypatch.setitem(applications.MODELS, TINY_MODEL, tiny_net)


class RecordEpochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.begun = []

    def on_epoch_begin(self, epoch, logs=None):
        self.begun.append(epoch)


def snapshot(directory):
    """{relative path: sha256} of every file under `directory`."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return files


def test_run_killed_after_fit_is_finished_by_the_rerun_not_retrained(tmp_path, tiny_model):
    out = str(tmp_path / "run")
    config = TrainConfig(epochs=2, **TINY)
    child = run_child("kill_after_fit", config, out)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    checkpoints = snapshot(os.path.join(out, "checkpoints"))
    assert sorted(checkpoints) == ["epoch_001.keras", "epoch_002.keras"]

    epochs = RecordEpochs()
    train(config, out, callbacks=[epochs], verbose=0)
    assert epochs.begun == []  # the finished training is recognised, not started again
    assert snapshot(os.path.join(out, "checkpoints")) == checkpoints
    assert_consistent(out, config)


@pytest.mark.parametrize("conv_config", ['{"part": 3}', '{"parts": 2}'])
def test_bad_conv_config_fails_before_anything_in_out_is_deleted_or_written(tmp_path, capsys, conv_config):
    # A finished run (its files need not be real: nothing may even be read).
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "epoch_001.keras").write_bytes(b"checkpoint")
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events").write_bytes(b"events")
    for name in ("metrics.json", "model.keras", "history.csv", "curves.png"):
        (out / name).write_text(name)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(TrainConfig(epochs=1, subset=32))))
    before = snapshot(out)
    argv = ["train", "--subset", "32", "--epochs", "1", "--conv-config", conv_config]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + ["--out", str(out), "--overwrite"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "conv" in err and len(err.strip().splitlines()) == 1
    assert snapshot(out) == before

    fresh = tmp_path / "fresh"
    with pytest.raises(SystemExit):
        cli.main(argv + ["--out", str(fresh)])
    assert not fresh.exists()  # no config.json, no checkpoints/


def test_corrupt_checkpoint_and_leftover_backup_fall_back_to_newest_intact_checkpoint(tmp_path, tiny_model, capfd):
    out = str(tmp_path / "run")
    config = TrainConfig(epochs=3, **TINY)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        train(config, out, callbacks=[Interrupt(at_epoch=2)], verbose=0)
    assert checkpoint_epochs(out) == [1, 2]
    first_rows = history_rows(out)
    newest = os.path.join(out, "checkpoints", "epoch_002.keras")
    with open(newest, "rb") as f:
        data = f.read()
    with open(newest, "wb") as f:
        f.write(data[: len(data) // 2])  # a truncated zip
    # BackupAndRestore's files as an earlier version left them, damaged.
    os.makedirs(os.path.join(out, "backup"), exist_ok=True)
    with open(os.path.join(out, "backup", "latest.weights.h5"), "wb") as f:
        f.write(b"\x89HDF\r\n\x1a\n garbage")
    with open(os.path.join(out, "backup", "training_metadata.json"), "w") as f:
        f.write('{"epoch": ')
    # A checkpoint a killed process was writing (a pid above Linux' largest).
    with open(os.path.join(out, "checkpoints", ".epoch_003.keras.99999999-abcd1234.tmp.keras"), "wb") as f:
        f.write(data[:100])
    capfd.readouterr()

    epochs = RecordEpochs()
    metrics = train(config, out, callbacks=[epochs], verbose=0)
    err = capfd.readouterr().err
    assert epochs.begun == [1, 2]  # from epoch_001.keras: only the lost epoch 2 is trained again
    reports = [line for line in err.splitlines() if newest in line]
    assert len(reports) == 1 and "epoch_001.keras" in reports[0], err[-3000:]
    assert any(os.path.join(out, "backup") in line for line in err.splitlines()), err[-3000:]
    assert_consistent(out, config)
    rows = history_rows(out)
    assert rows[0] == first_rows[0]  # the first session's epoch (and its time) is kept
    assert metrics["train_seconds"] >= float(first_rows[0]["seconds"]) > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE stands in for a full disk")
def test_full_disk_while_a_checkpoint_is_written_leaves_no_truncated_checkpoint(tmp_path, tiny_model):
    out = str(tmp_path / "run")
    config = TrainConfig(epochs=3, **TINY)
    child = run_child("disk_full_in_epoch_2", config, out)
    assert child.returncode == 1 and "File too large" in child.stderr, child.stderr[-3000:]
    assert checkpoint_epochs(out) == [1]  # no truncated epoch_002.keras, no temporary file

    epochs = RecordEpochs()
    train(config, out, callbacks=[epochs], verbose=0)
    assert epochs.begun == [1, 2]
    assert_consistent(out, config)  # history.csv: 0, 1, 2, none skipped or repeated
