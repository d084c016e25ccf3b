"""The IDX reader and the MNIST-family loaders, on small files written here."""

import dataclasses
import gzip
import struct

import numpy as np
import pytest
import torch

import vaekit.data.mnist as mnist_module
from vaekit.data import IDXFormatError, TensorImageDataset, load_dataset, read_idx

TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C}
TYPE_CODES.update({np.float32: 0x0D, np.float64: 0x0E})


def idx_bytes(array: np.ndarray) -> bytes:
    """Encodes an array as IDX by hand, independently of the reader under test."""
    code = TYPE_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, compress=None):
    data = idx_bytes(array)
    compress = str(path).endswith(".gz") if compress is None else compress
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-128, -1, 0, 127], dtype=np.int8),
        np.array([[-30000, 2], [3, 30000]], dtype=np.int16),
        np.array([-(2**31), 2**31 - 1, 7], dtype=np.int32),
        np.array([[0.5, -1.25e-7, 3.0e20]], dtype=np.float32),
        np.array([np.pi, -np.e, 1e-300], dtype=np.float64),
    ],
    ids=["uint8", "int8", "int16", "int32", "float32", "float64"],
)
def test_round_trip(tmp_path, array, compress):
    path = write_idx(tmp_path / ("f.idx.gz" if compress else "f.idx"), array)
    t = read_idx(path)
    assert t.shape == array.shape
    assert t.dtype == torch.from_numpy(array).dtype
    assert np.array_equal(t.numpy(), array)


def test_compression_is_detected_from_content_not_name(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    plain_named_gz = write_idx(tmp_path / "a.gz", array, compress=False)
    gz_named_plain = write_idx(tmp_path / "b", array, compress=True)
    assert np.array_equal(read_idx(plain_named_gz).numpy(), array)
    assert np.array_equal(read_idx(gz_named_plain).numpy(), array)


def _raises(path, match):
    with pytest.raises(IDXFormatError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_data(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(idx_bytes(np.zeros((3, 4, 4), np.uint8))[:-1])
    _raises(path, "truncated")


def test_truncated_header(tmp_path):
    path = tmp_path / "header.idx"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">I", 5))
    _raises(path, "truncated header")
    path.write_bytes(b"\x00\x00")
    _raises(path, "too short")


def test_truncated_gzip(tmp_path):
    path = tmp_path / "short.idx.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 8), np.uint8)))[:-12])
    _raises(path, "gzip")


def test_trailing_bytes(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8)) + b"\x00")
    _raises(path, "trailing bytes")


def test_bad_magic_and_type(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x89PNG" + bytes(12))
    _raises(path, "not an IDX file")
    path.write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 1) + b"\x00")
    _raises(path, "type code 0x07")
    path.write_bytes(bytes([0, 0, 0x08, 0]))
    _raises(path, "0 dimensions")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


def make_mnist_files(folder, n_train=7, n_test=3, seed=0, compress=True):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        ext = ".gz" if compress else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels, compress)
        out[prefix] = (images, labels)
    return out


@pytest.mark.parametrize(
    ("name", "layout", "compress"),
    [
        ("mnist", ".", True),
        ("mnist", "MNIST/raw", False),
        ("kmnist", "KMNIST/raw", True),
        ("fashion-mnist", "FashionMNIST/raw", True),
        ("fashion-mnist", ".", False),
    ],
)
def test_idx_dataset_from_root(tmp_path, name, layout, compress):
    written = make_mnist_files(tmp_path / layout, compress=compress)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = written[prefix]
        ds = load_dataset(name, split=split, root=tmp_path)
        assert isinstance(ds, TensorImageDataset)
        assert ds.x.shape == (len(labels), 1, 28, 28) and ds.x.dtype == torch.float32
        assert torch.equal(ds.x[:, 0] * 255, torch.from_numpy(images).float())
        assert torch.equal(ds.labels, torch.from_numpy(labels).long())
        assert ds.num_classes == 10 and len(ds.class_names) == 10


def test_root_takes_precedence_over_system_folder(tmp_path):
    make_mnist_files(tmp_path, n_train=5)
    assert len(load_dataset("fashion-mnist", root=tmp_path)) == 5


def test_labels_out_of_range_and_count_mismatch(tmp_path):
    make_mnist_files(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 12], np.uint8))
    with pytest.raises(IDXFormatError, match=r"\[0, 10\)"):
        load_dataset("mnist", split="test", root=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2], np.uint8))
    with pytest.raises(IDXFormatError, match="3 images"):
        load_dataset("mnist", split="test", root=tmp_path)


def test_missing_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist", root=tmp_path)
    message = str(info.value)
    assert "download=True" in message
    assert "MNIST/raw" in message and "train-images-idx3-ubyte.gz" in message
    assert str(tmp_path) in message


def test_missing_fashion_mnist_mentions_the_debian_package(tmp_path, monkeypatch):
    spec = mnist_module.IDX_DATASETS["fashion-mnist"]
    elsewhere = dataclasses.replace(spec, system_dirs=(str(tmp_path / "not-installed"),))
    monkeypatch.setitem(mnist_module.IDX_DATASETS, "fashion-mnist", elsewhere)
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion-mnist", split="test", root=tmp_path / "empty")
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download=True" in message and "FashionMNIST/raw" in message


class FakeTorchvisionMNIST:
    calls: list = []

    def __init__(self, root, train=True, download=False):
        FakeTorchvisionMNIST.calls.append((root, train, download))
        n = 4 if train else 2
        self.data = torch.full((n, 28, 28), 51, dtype=torch.uint8)
        self.targets = torch.arange(n)


def test_download_goes_through_torchvision_only_when_files_are_missing(tmp_path, monkeypatch):
    FakeTorchvisionMNIST.calls = []
    monkeypatch.setattr(mnist_module.torchvision.datasets, "MNIST", FakeTorchvisionMNIST)
    ds = load_dataset("mnist", split="test", root=tmp_path, download=True)
    assert FakeTorchvisionMNIST.calls == [(str(tmp_path), False, True)]
    assert len(ds) == 2 and torch.allclose(ds.x, torch.full_like(ds.x, 0.2))
    make_mnist_files(tmp_path)
    FakeTorchvisionMNIST.calls = []
    assert len(load_dataset("mnist", split="test", root=tmp_path, download=True)) == 3
    assert FakeTorchvisionMNIST.calls == []


def test_failed_download_explains_the_offline_ways(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(mnist_module.torchvision.datasets, "KMNIST", offline)
    with pytest.raises(RuntimeError, match="network unreachable") as info:
        load_dataset("kmnist", root=tmp_path, download=True)
    assert "KMNIST/raw" in str(info.value)
