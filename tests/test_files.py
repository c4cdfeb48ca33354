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
