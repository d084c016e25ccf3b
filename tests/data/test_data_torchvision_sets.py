"""CIFAR-10 and CelebA without network: local layouts, the wrapper, and missing-data errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.data import CelebADataset, load_dataset

RECORD = 1 + 3 * 32 * 32


def write_cifar_binary(folder, sizes, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written = {}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, n in zip(names, sizes):
        records = rng.integers(0, 256, size=(n, RECORD), dtype=np.uint8)
        records[:, 0] %= 10
        records.tofile(folder / name)
        written[name] = records
    return written


def test_cifar10_binary_layout(tmp_path):
    written = write_cifar_binary(tmp_path / "cifar-10-batches-bin", [2, 1, 3, 1, 2, 4])
    train = load_dataset("cifar10", split="train", root=tmp_path)
    test = load_dataset("cifar10", split="test", root=tmp_path)
    assert len(train) == 9 and len(test) == 4
    assert train.x.shape == (9, 3, 32, 32) and train.class_names[0] == "airplane"
    records = written["test_batch.bin"]
    assert torch.equal(test.labels, torch.from_numpy(records[:, 0]).long())
    # Records store the red plane, then green, then blue, each row by row.
    expected = torch.from_numpy(records[:, 1:].reshape(4, 3, 32, 32)).float() / 255
    assert torch.equal(test.x, expected)
    first = written["data_batch_1.bin"]
    assert torch.equal(train.x[0, 1, 0, :5] * 255, torch.from_numpy(first[0, 1025:1030]).float())


def test_cifar10_truncated_binary_file_is_named(tmp_path):
    write_cifar_binary(tmp_path / "cifar-10-batches-bin", [1] * 6)
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"test_batch\.bin"):
        load_dataset("cifar10", split="test", root=tmp_path)


def test_cifar10_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar10", root=tmp_path)
    message = str(info.value)
    assert "download=True" in message and "cifar-10-batches-py" in message


def test_celeba_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("celeba", split="val", root=tmp_path)
    message = str(info.value)
    assert "download=True" in message and "img_align_celeba" in message


class FakeFaces:
    """Stands in for torchvision's CelebA: 178x218 PIL images with a white centre."""

    def __init__(self, n=3):
        self.n = n
        self.attr = torch.zeros(n, 40, dtype=torch.int64)

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        img = np.zeros((218, 178, 3), dtype=np.uint8)
        img[35:183, 15:163] = 255  # the central 148x148 square
        return Image.fromarray(img), self.attr[index]


def test_celeba_wrapper_crops_the_centre_and_resizes():
    ds = CelebADataset(FakeFaces(), image_size=32)
    assert len(ds) == 3 and ds.input_shape == (3, 32, 32) and ds.attributes.shape == (3, 40)
    x, label = ds[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x, torch.ones_like(x))  # only the white centre survives the crop
    assert int(label) == 0 and ds.num_classes is None
