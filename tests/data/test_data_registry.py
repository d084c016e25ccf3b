"""load_dataset's registry, splits, options and TensorImageDataset's checks."""

import pytest
import torch
from torch.utils.data import Dataset, Subset

import vaekit.data.registry as registry
from vaekit.data import TensorImageDataset, list_datasets, load_dataset, register_dataset

BUILTIN = {"shapes", "mnist", "fashion-mnist", "kmnist", "cifar10", "celeba", "folder"}


@pytest.fixture(autouse=True)
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def numbered(split, root=None, download=False, n=100):
    """Image i is filled with i / n, so every image says where it came from."""
    offset = 0 if split == "train" else n
    ids = torch.arange(offset, offset + n)
    x = (ids.float() / (2 * n)).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    return TensorImageDataset(x, ids % 3, num_classes=3, name=f"numbered:{split}")


def ids_of(ds):
    return torch.round(ds.x[:, 0, 0, 0] * 200).long()


def test_builtins_are_listed():
    assert set(list_datasets()) >= BUILTIN
    assert list_datasets() == sorted(list_datasets())


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'") as info:
        load_dataset("imagenet")
    for name in BUILTIN:
        assert name in str(info.value)


def test_unknown_split_lists_valid_splits():
    with pytest.raises(ValueError, match="train, val, test"):
        load_dataset("shapes", split="validation")


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="image_sze") as info:
        load_dataset("shapes", image_sze=32)
    assert "image_size" in str(info.value)
    with pytest.raises(ValueError, match="no options"):
        load_dataset("mnist", image_size=32)


def test_names_are_case_and_underscore_insensitive(tmp_path):
    register_dataset("My_Numbers", numbered)
    assert "my-numbers" in list_datasets()
    assert len(load_dataset("MY-numbers", n=5)) == 5
    assert len(load_dataset("my_numbers", n=5)) == 5


def test_register_errors_and_overwrite():
    register_dataset("numbers", numbered)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("numbers", numbered)
    register_dataset("numbers", lambda split, root, download: numbered(split, n=4), overwrite=True)
    assert len(load_dataset("numbers")) == 4
    with pytest.raises(TypeError, match="callable"):
        register_dataset("bad", 3)
    with pytest.raises(ValueError, match="splits"):
        register_dataset("bad", numbered, splits=("train", "dev"))


def test_register_as_decorator():
    @register_dataset("decorated")
    def build(split, root=None, download=False):
        return numbered(split, n=6)

    assert build("train").x.shape == (6, 1, 2, 2)  # the function itself is returned
    assert len(load_dataset("decorated", split="test")) == 6


def test_builder_receives_split_root_and_download(tmp_path):
    seen = {}

    def spy(split, root, download, **kwargs):
        seen.update(split=split, root=root, download=download, **kwargs)
        return numbered(split, n=3)

    register_dataset("spy", spy)
    load_dataset("spy", "test", tmp_path, True, colour="blue")
    assert seen == {"split": "test", "root": tmp_path, "download": True, "colour": "blue"}


@pytest.mark.parametrize("val_size", [25, 0.25])
def test_val_is_carved_from_train_without_overlap(val_size):
    register_dataset("numbers", numbered)
    train = load_dataset("numbers", "train", val_size=val_size, val_seed=4)
    val = load_dataset("numbers", "val", val_size=val_size, val_seed=4)
    test = load_dataset("numbers", "test", val_size=val_size, val_seed=4)
    assert len(train) == 75 and len(val) == 25 and len(test) == 100  # test untouched
    assert val.name == "numbered:val"
    train_ids, val_ids = ids_of(train), ids_of(val)
    assert sorted(torch.cat([train_ids, val_ids]).tolist()) == list(range(100))
    assert torch.equal(train.labels, train_ids % 3) and torch.equal(val.labels, val_ids % 3)
    again = load_dataset("numbers", "val", val_size=val_size, val_seed=4)
    other = load_dataset("numbers", "val", val_size=val_size, val_seed=5)
    assert torch.equal(ids_of(again), val_ids) and not torch.equal(ids_of(other), val_ids)


def test_val_needs_val_size_and_sensible_sizes():
    register_dataset("numbers", numbered)
    with pytest.raises(ValueError, match="val_size"):
        load_dataset("numbers", "val")
    for bad in (0, 100, 1.0, 0.0, -3, "10", True):
        with pytest.raises(ValueError, match="val_size"):
            load_dataset("numbers", "val", val_size=bad)


def test_native_val_split_is_used_without_val_size():
    register_dataset(
        "three", lambda split, root, download: numbered(split, n=9), splits=("train", "val", "test")
    )
    assert len(load_dataset("three", "val")) == 9


class Lazy(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.full((1, 2, 2), i / 10), i


def test_lazy_datasets_are_carved_with_subset_and_refuse_binarization():
    register_dataset("lazy", lambda split, root, download: Lazy())
    val = load_dataset("lazy", "val", val_size=3)
    assert isinstance(val, Subset) and len(val) == 3
    with pytest.raises(ValueError, match="in-memory"):
        load_dataset("lazy", binarize="static")


def test_tensor_dataset_checks_its_inputs():
    x = torch.rand(4, 1, 3, 3)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        TensorImageDataset(torch.rand(4, 9))
    with pytest.raises(TypeError, match="float32"):
        TensorImageDataset((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TensorImageDataset(x * 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TensorImageDataset(torch.full((1, 1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match=r"labels of shape \(4,\)"):
        TensorImageDataset(x, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="int64"):
        TensorImageDataset(x, torch.zeros(4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        TensorImageDataset(x, torch.tensor([0, 1, 2, 1]), class_names=("a", "b"))
    with pytest.raises(ValueError, match="factors"):
        TensorImageDataset(x, factors=torch.zeros(3, 2))


def test_tensor_dataset_items_and_subset():
    x = torch.rand(5, 2, 3, 4)
    ds = TensorImageDataset(
        x,
        torch.tensor([0, 1, 0, 1, 1]),
        class_names=("a", "b"),
        factors=torch.arange(10.0).view(5, 2),
        factor_names=("f", "g"),
    )
    assert len(ds) == 5 and ds.input_shape == (2, 3, 4) and ds.num_classes == 2
    xi, yi = ds[3]
    assert torch.equal(xi, x[3]) and yi.dtype == torch.int64 and yi.dim() == 0 and int(yi) == 1
    sub = ds.subset([4, 0])
    assert torch.equal(sub.x, x[[4, 0]]) and sub.labels.tolist() == [1, 0]
    assert sub.factors.tolist() == [[8.0, 9.0], [0.0, 1.0]] and sub.class_names == ("a", "b")
    unlabelled = TensorImageDataset(x)
    assert unlabelled.num_classes is None and unlabelled.labels.tolist() == [0] * 5
    assert "5 images" in repr(ds)
