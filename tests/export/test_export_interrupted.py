"""An export stopped by SIGTERM/SIGINT/SIGKILL leaves no temporary file behind (the next run removes a SIGKILL's)."""

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import keras

from keras_effconv.export import export_litert

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

# The export runs in its own process, with the test's TMPDIR. With
# `slow_verify`, verification sleeps, so that the signal lands while the
# converted temporary file sits in the target folder.
_SCRIPT = """
import sys, time
import keras
from keras_effconv.export import export_litert, verification
out, slow_verify, marker = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
if slow_verify:
    def _verify(*args):
        open(marker, "w").close()
        time.sleep(120)
    verification.verify = _verify
inputs = keras.Input((8, 8, 3))
x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(x))
print("exporting", flush=True)
export_litert(model, out, target="cpu")
"""


def _start(tmp_path, slow_verify):
    private, target = tmp_path / "tmp", tmp_path / "target"
    private.mkdir()
    target.mkdir()
    script = tmp_path / "export.py"
    script.write_text(_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(target / "m.tflite"), "1" if slow_verify else "0",
         str(tmp_path / "verifying")],
        env=dict(os.environ, TMPDIR=str(private)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, private, target


def _wait_for(condition, proc, what, timeout=240):
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the export ended before {what}: {proc.stderr.read()[-2000:]}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _converter_pid(private):
    """The pid of the running converter: the worker process whose cwd is its effconv-worker-* directory."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if cwd.startswith(str(private) + os.sep + "effconv-worker-"):
                return int(pid)
    return None


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _temporary_file(target):
    return any(name.endswith(".tmp.tflite") for name in os.listdir(target))


def _verifying(target):
    return (target.parent / "verifying").exists()


@pytest.mark.skipif(not os.path.exists("/proc/self/cwd"), reason="finds the converter through /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_conversion(signum, tmp_path):
    proc, private, target = _start(tmp_path, slow_verify=False)
    _wait_for(lambda: _converter_pid(private) is not None, proc, "the converter started")
    converter = _converter_pid(private)
    time.sleep(1.0)  # into TensorFlow's import / the conversion
    proc.send_signal(signum)
    proc.communicate(timeout=120)
    assert proc.returncode == -signum  # ended by the signal, as without the handlers
    assert _gone(converter), "the converter outlived the export"
    assert os.listdir(private) == [] and os.listdir(target) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_with_the_converted_file_in_the_target_folder(signum, tmp_path):
    proc, private, target = _start(tmp_path, slow_verify=True)
    _wait_for(lambda: _verifying(target), proc, "the verification started")
    assert _temporary_file(target)
    proc.send_signal(signum)
    proc.communicate(timeout=120)
    assert proc.returncode == -signum
    assert os.listdir(private) == [] and os.listdir(target) == []


@pytest.mark.skipif(not os.path.exists("/proc/self/cwd"), reason="finds the converter through /proc")
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="two conversions each, on the TF test run")
@pytest.mark.parametrize("stage", ["conversion", "verification"])
def test_sigkill_leftovers_are_removed_by_the_next_export(stage, tmp_path, monkeypatch):
    # SIGKILL cannot be caught: the converter dies with its parent
    # (PR_SET_PDEATHSIG), and the next export removes what they left.
    proc, private, target = _start(tmp_path, slow_verify=stage == "verification")
    if stage == "conversion":
        _wait_for(lambda: _converter_pid(private) is not None, proc, "the converter started")
        converter = _converter_pid(private)
        time.sleep(1.0)
    else:
        _wait_for(lambda: _verifying(target), proc, "the verification started")
    proc.kill()
    proc.communicate(timeout=60)
    if stage == "conversion":
        deadline = time.time() + 10
        while not _gone(converter):
            assert time.time() < deadline, "the converter outlived its killed parent"
            time.sleep(0.1)
    left = sorted(name.split("-")[1] for name in os.listdir(private))
    assert left == (["export", "worker"] if stage == "conversion" else ["export"])
    assert _temporary_file(target) == (stage == "verification")
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    export_litert(model, target / "m.tflite", target="cpu")
    assert os.listdir(target) == ["m.tflite"]
    assert os.listdir(private) == []
