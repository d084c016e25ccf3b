"""The real Fashion-MNIST from Debian's dataset-fashion-mnist package, read offline.

CI installs that package, so a missing file is a failure here, not a skip.
"""

import pytest
import torch

from vaekit.data import TensorImageDataset, load_dataset


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    # An empty root makes the loader fall through to /usr/share/datasets/fashion-mnist.
    return load_dataset("fashion-mnist", split="train", root=tmp_path_factory.mktemp("empty"))


def test_train_split(train):
    assert isinstance(train, TensorImageDataset)
    assert train.x.shape == (60000, 1, 28, 28) and train.x.dtype == torch.float32
    assert train.labels.shape == (60000,) and train.labels.dtype == torch.int64
    assert train.x.min() == 0 and train.x.max() == 1
    # Published statistics of the training images and the balanced classes.
    assert train.x.mean().item() == pytest.approx(0.2860, abs=1e-3)
    assert train.x.std().item() == pytest.approx(0.3530, abs=1e-3)
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 6000))
    x, label = train[0]
    assert int(label) == 9 and train.class_names[int(label)] == "Ankle boot"
    assert x.shape == (1, 28, 28)


def test_test_split(tmp_path):
    test = load_dataset("fashion-mnist", split="test", root=tmp_path)
    assert test.x.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))
    assert int(test.labels[0]) == 9
    assert test.class_names == (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )
