"""Offline loaders and the data preparation used by the training recipe."""

import os
import pickle

import numpy as np
import pytest

import keras

from keras_effconv import datasets


def write_fake_cifar(directory, per_batch=4, protocol=pickle.DEFAULT_PROTOCOL, binary=False):
    """CIFAR-10's python format (pickled dicts with b"data" (N, 3072) CHW rows) or binary format (label + CHW bytes)."""
    rng = np.random.default_rng(0)
    os.makedirs(directory)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        rows = images.transpose(0, 3, 1, 2).reshape(per_batch, -1)
        if binary:
            records = np.concatenate([np.array(labels, np.uint8)[:, None], rows], axis=1)
            records.tofile(os.path.join(directory, f"{name}.bin"))
        else:
            with open(os.path.join(directory, name), "wb") as f:
                pickle.dump({b"batch_label": b"fake", b"labels": labels, b"data": rows}, f, protocol=protocol)
        batches[name] = (images, labels)
    return batches


class Exploit:
    """Unpickling this runs a shell command: what a crafted `data_batch_1` does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["python-protocol-2", "python-protocol-5", "binary"])
def test_cifar10_reads_a_local_copy(tmp_path, layout):
    if layout == "binary":
        batches = write_fake_cifar(str(tmp_path / "cifar-10-batches-bin"), binary=True)
    else:
        batches = write_fake_cifar(str(tmp_path / "cifar-10-batches-py"), protocol=int(layout[-1]))
    (x_train, y_train), (x_test, y_test) = datasets.cifar10(path=str(tmp_path))
    assert x_train.shape == (20, 32, 32, 3) and y_train.shape == (20, 1) and x_test.dtype == np.uint8
    np.testing.assert_array_equal(x_train[:4], batches["data_batch_1"][0])
    np.testing.assert_array_equal(x_train[16:], batches["data_batch_5"][0])
    np.testing.assert_array_equal(x_test, batches["test_batch"][0])
    assert y_test.reshape(-1).tolist() == batches["test_batch"][1]
    assert y_train.reshape(-1).tolist() == sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])


def test_malicious_cifar10_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch, capsys):
    from keras_effconv import cli

    directory = tmp_path / "cifar-10-batches-py"
    write_fake_cifar(str(directory))
    marker = tmp_path / "marker"
    with open(directory / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Exploit(marker), b"labels": []}, f)
    with pytest.raises(pickle.UnpicklingError, match=r"data_batch_1.*refused.*'posix\.system'"):
        datasets.cifar10(path=str(tmp_path))
    assert not marker.exists()

    # The reproduction: found automatically through $KERAS_EFFCONV_CIFAR10 by the command line.
    monkeypatch.setenv("KERAS_EFFCONV_CIFAR10", str(tmp_path))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--dataset", "cifar10", "--epochs", "1", "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "data_batch_1" in err and "posix.system" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x80\x02}q\x00(", "not a CIFAR-10 batch"),  # truncated pickle
        (pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}), "shape"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "labels"),
    ],
)
def test_a_damaged_cifar10_batch_is_named(tmp_path, content, message):
    directory = tmp_path / "cifar-10-batches-py"
    write_fake_cifar(str(directory))
    (directory / "test_batch").write_bytes(content)
    with pytest.raises(ValueError, match=f"test_batch.*{message}"):
        datasets.cifar10(path=str(tmp_path))
    binary = tmp_path / "bin" / "cifar-10-batches-bin"
    write_fake_cifar(str(binary), binary=True)
    (binary / "test_batch.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(ValueError, match="test_batch.bin.*3073"):
        datasets.cifar10(path=str(tmp_path / "bin"))


def test_cifar10_without_local_copy_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_EFFCONV_CIFAR10", raising=False)
    with pytest.raises(FileNotFoundError, match="download=True"):
        datasets.cifar10()


def test_load_dataset_cifar10_is_ready_for_the_model(tmp_path, monkeypatch):
    write_fake_cifar(str(tmp_path / "cifar-10-batches-py"))
    monkeypatch.setenv("KERAS_EFFCONV_CIFAR10", str(tmp_path))
    data = datasets.load_dataset("cifar10", subset=6)
    assert (data.train_size, data.test_size, data.input_shape, data.num_classes) == (6, 4, (32, 32, 3), 10)
    images, labels = next(iter(data.train.batch(6)))
    images = np.asarray(images)
    assert images.dtype == np.float32 and 0 <= images.min() and images.max() <= 1
    assert np.asarray(labels).shape == (6, 10)


def test_image_folder(tmp_path):
    for label, value in (("cats", 10), ("dogs", 200)):
        os.makedirs(tmp_path / label)
        for i in range(5):
            keras.utils.save_img(str(tmp_path / label / f"{i}.png"), np.full((20, 24, 3), value, np.uint8), scale=False)
    data = datasets.load_dataset("image_folder", path=str(tmp_path), image_size=(16, 16))
    assert data.class_names == ["cats", "dogs"] and data.train_size + data.test_size == 10
    assert data.input_shape == (16, 16, 3)
    for image, label in data.train:
        expected = 10 / 255 if np.argmax(label) == 0 else 200 / 255
        np.testing.assert_allclose(np.asarray(image), expected, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="not found"):
        datasets.image_folder(str(tmp_path / "missing"))


def test_fashion_mnist_is_real_and_complete():
    (x_train, y_train), (x_test, y_test) = datasets.fashion_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert np.bincount(y_test).tolist() == [1000] * 10


def test_fashion_mnist_channels_first_layout():
    original = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        data = datasets.load_dataset("fashion_mnist", subset=10)
    finally:
        keras.config.set_image_data_format(original)
    assert data.input_shape == (1, 28, 28) and data.train_size == 10 and data.test_size == 10000


def test_bad_arguments():
    with pytest.raises(ValueError, match="name"):
        datasets.load_dataset("mnist")
    with pytest.raises(ValueError, match="subset"):
        datasets.load_dataset("fashion_mnist", subset=0)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.fashion_mnist(path="/nonexistent")


def test_min_size_resizes_small_images_up():
    data = datasets.load_dataset("fashion_mnist", subset=4, min_size=32)
    assert data.input_shape == (32, 32, 1) and data.train_size == 4
    assert datasets.load_dataset("fashion_mnist", subset=4, min_size=16).input_shape == (28, 28, 1)
