"""Datasets for vaekit: a registry of built-in data sets, an IDX reader and binarization.

Every dataset yields `(x, label)` pairs with x a float32 (C, H, W) image in [0, 1].

Example:
    >>> from vaekit.data import load_dataset
    >>> train = load_dataset("shapes", split="train", image_size=32, num_positions=4)
    >>> train.x.shape, train.factor_names[:2]
    (torch.Size([1382, 1, 32, 32]), ('shape', 'scale'))
"""

from vaekit.data.celeba import CelebADataset, load_celeba
from vaekit.data.cifar import load_cifar10
from vaekit.data.dataset import TensorImageDataset, dynamic_binarize, static_binarize
from vaekit.data.folder import ImageFolderDataset, load_folder, read_image
from vaekit.data.idx import IDXFormatError, read_idx
from vaekit.data.mnist import BUILDERS as _IDX_BUILDERS
from vaekit.data.registry import default_data_root, list_datasets, load_dataset, register_dataset
from vaekit.data.shapes import load_shapes, render_shapes, shapes_factor_grid

__all__ = [
    "CelebADataset",
    "IDXFormatError",
    "ImageFolderDataset",
    "TensorImageDataset",
    "default_data_root",
    "dynamic_binarize",
    "list_datasets",
    "load_dataset",
    "read_idx",
    "read_image",
    "register_dataset",
    "render_shapes",
    "shapes_factor_grid",
    "static_binarize",
]

register_dataset("shapes", load_shapes)
for _name, _builder in _IDX_BUILDERS.items():
    register_dataset(_name, _builder)
register_dataset("cifar10", load_cifar10)
register_dataset("celeba", load_celeba, splits=("train", "val", "test"))
register_dataset("folder", load_folder, splits=("train", "val", "test"))
