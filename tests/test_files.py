"""atomic_path: results appear whole or not at all."""

import os

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
