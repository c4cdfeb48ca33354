"""_files: results appear whole or not at all, output paths checked up front, no temporary file outlives a run."""

import os
import time

import pytest

from keras_effconv._files import atomic_path


def test_success_replaces_and_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            assert tmp.endswith(".json") and os.path.dirname(tmp) == str(tmp_path)
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("writer failed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["metrics.json"]

    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["metrics.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # a normal file, not mkstemp's 0600


def test_missing_directory_is_an_os_error(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        with atomic_path(tmp_path / "missing" / "m.tflite"):
            pass


def test_load_keras_model_errors_name_the_file(tmp_path):
    from keras_effconv._files import load_keras_model

    with pytest.raises(FileNotFoundError, match="model file not found: .*missing.keras"):
        load_keras_model(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="argument `weights`: expected a .keras file"):
        load_keras_model(tmp_path / "m.h5", argument="weights")
    text = tmp_path / "text.keras"
    text.write_text("not a zip archive")
    with pytest.raises(ValueError, match="text.keras is not a valid .keras file \\(not a zip archive\\)"):
        load_keras_model(text)
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("notes.txt", "no model here")
    with pytest.raises(ValueError, match="other.keras is not a valid .keras file \\(no config.json"):
        load_keras_model(tmp_path / "other.keras")
    (tmp_path / "folder.keras").mkdir()
    with pytest.raises(ValueError, match="folder.keras is not a valid .keras file"):
        load_keras_model(tmp_path / "folder.keras")


def test_load_keras_model_passes_safe_mode(tmp_path):
    import keras

    from keras_effconv._files import load_keras_model

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t + 1)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        load_keras_model(tmp_path / "lambda.keras")
    loaded = load_keras_model(str(tmp_path / "lambda.keras"), safe_mode=False)
    assert loaded.input_shape == (None, 3)


def _dead_pid():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_check_output_path(tmp_path, monkeypatch):
    from keras_effconv._files import check_output_path

    assert check_output_path(tmp_path / "m.tflite", ".tflite") == str(tmp_path / "m.tflite")
    (tmp_path / "folder.tflite").mkdir()
    with pytest.raises(ValueError, match="folder.tflite is a directory, not a .tflite file"):
        check_output_path(tmp_path / "folder.tflite", ".tflite")
    with pytest.raises(ValueError, match=r"argument `--out`: expected a \.tflite file"):
        check_output_path(tmp_path / "m.onnx", ".tflite", argument="--out")
    with pytest.raises(OSError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "m.tflite", ".tflite")
    # As root every directory is writable: the refusal is simulated there.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(OSError, match=f"directory of `path` is not writable: {tmp_path}"):
        check_output_path(tmp_path / "m.tflite", ".tflite")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a user that permissions apply to")
def test_check_output_path_read_only_directory(tmp_path):
    from keras_effconv._files import check_output_path

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OSError, match="not writable"):
            check_output_path(locked / "m.tflite", ".tflite")
    finally:
        locked.chmod(0o700)


def test_atomic_path_removes_temporaries_of_dead_processes_only(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    stale = tmp_path / f".m.tflite.{dead}-0123abcd.tmp.tflite"
    live = tmp_path / f".m.tflite.{alive}-0123abcd.tmp.tflite"
    other = tmp_path / f".other.tflite.{dead}-0123abcd.tmp.tflite"  # another target: not ours to judge
    for path in (stale, live, other):
        path.write_bytes(b"half")
    with atomic_path(tmp_path / "m.tflite") as tmp, open(tmp, "wb") as f:
        f.write(b"model")
    assert sorted(os.listdir(tmp_path)) == sorted(["m.tflite", live.name, other.name])


def test_temporary_directory_and_stale_ones(tmp_path, monkeypatch):
    import fcntl
    import tempfile

    from keras_effconv import _files

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = _dead_pid()
    stale = tmp_path / f"effconv-export-{dead}-abc"
    live = tmp_path / f"effconv-worker-{os.getppid()}-abc"
    locked = tmp_path / f"effconv-gpu-{dead}-abc"  # a live owner in another pid namespace
    unrelated = tmp_path / f"other-{dead}-abc"
    for path in (stale, live, locked, unrelated):
        path.mkdir()
        (path / "model.keras").write_text("x")
    lock = os.open(locked / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        with _files.temporary_directory("export") as work:
            assert os.path.basename(work).startswith(f"effconv-export-{os.getpid()}-")
            assert os.path.dirname(work) == str(tmp_path)
            (open(os.path.join(work, "f"), "w")).close()
        assert not os.path.exists(work)
    finally:
        os.close(lock)
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, locked.name, unrelated.name])
    # Once its owner is gone (the lock released), the locked one is stale too.
    assert _files.remove_stale_temporary_directories() == [str(locked)]


_INTERRUPTIBLE = """
import os, signal, sys, time
from keras_effconv._files import interruptible
{setup}
marker = sys.argv[1]
before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
try:
    with interruptible():
        try:
            print("ready", flush=True)
            time.sleep(30)
        finally:
            open(marker, "w").write("cleaned")
            time.sleep(0.5)  # a second signal here must not interrupt the cleanup
            open(marker, "a").write(" fully")
finally:
    after = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    open(marker, "a").write(" restored" if after == before else " not restored")
"""


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize(
    "signum, setup, returncode, tail, marked",
    [
        # SIGTERM: cleaned up, then killed by SIGTERM as without the block
        # (so the script's outer `finally` never runs).
        (15, "", -15, "", "cleaned fully"),
        # SIGINT: KeyboardInterrupt as usual (uncaught, Python ends by SIGINT).
        (2, "", -2, "KeyboardInterrupt", "cleaned fully restored"),
        # An application's own handler stays in charge (here: exits 3; a
        # second signal would be its business, so none is sent).
        (15, "signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))", 3, None, "cleaned fully restored"),
    ],
)
def test_interruptible_cleans_up_and_redelivers(tmp_path, signum, setup, returncode, tail, marked):
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(_INTERRUPTIBLE.format(setup=setup))
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, str(script), str(marker)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signum)
    if tail is not None:
        time.sleep(0.2)
        proc.send_signal(signum)  # during the cleanup
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == returncode, stderr
    assert marker.read_text() == marked
    assert stderr.strip().endswith(tail or "")
    assert "_Interrupted" not in stderr
