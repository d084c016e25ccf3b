"""The folder dataset on small images written here with Pillow."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.data import ImageFolderDataset, TensorImageDataset, load_dataset, read_image


def solid(rgb, h=12, w=12):
    return torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1).expand(3, h, w).contiguous()


def save(path, img):
    """Writes a uint8 (3, H, W) tensor with Pillow (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(path, quality=100)
    return path


@pytest.fixture
def classes(tmp_path):
    """root/cat/*.png, root/dog/*.(png|bmp), root/dog/nested/*.jpg, plus a non-image file."""
    root = tmp_path / "classes"
    save(root / "cat" / "a.png", solid((255, 0, 0)))
    save(root / "cat" / "b.png", solid((255, 0, 0), 20, 10))
    save(root / "dog" / "c.bmp", solid((0, 0, 255), 7, 7))
    save(root / "dog" / "nested" / "d.jpg", solid((128, 128, 128), 16, 16))
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_class_subfolders_rgb(classes):
    ds = load_dataset("folder", root=classes, image_size=8, channels=3, test_size=0)
    assert isinstance(ds, TensorImageDataset)
    assert ds.class_names == ("cat", "dog") and ds.num_classes == 2
    assert ds.x.shape == (4, 3, 8, 8) and ds.x.dtype == torch.float32
    assert ds.labels.tolist() == [0, 0, 1, 1]
    # Resizing keeps solid colours exact (PNG, BMP) or nearly so (JPEG at quality 100).
    assert torch.equal(ds.x[0], torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand(3, 8, 8))
    assert torch.equal(ds.x[2], torch.tensor([0, 0, 1.0]).view(3, 1, 1).expand(3, 8, 8))
    assert torch.allclose(ds.x[3], torch.full((3, 8, 8), 128 / 255), atol=2 / 255)


def test_flat_grey(tmp_path):
    for i, level in enumerate((0, 64, 255)):
        save(tmp_path / f"{i}.png", solid((level,) * 3, 10, 14))
    ds = load_dataset("folder", root=tmp_path, image_size=(6, 5), channels=1, test_size=0)
    assert ds.class_names is None and ds.num_classes is None
    assert ds.x.shape == (3, 1, 6, 5)
    assert ds.labels.tolist() == [0, 0, 0]
    assert ds.x.flatten(1).mean(1).tolist() == pytest.approx([0, 64 / 255, 1])


def test_keep_aspect_crops_the_centre_and_stretch_does_not(tmp_path):
    img = torch.zeros(3, 10, 30, dtype=torch.uint8)
    img[:, :, 10:20] = 255  # black | white | black, side by side
    save(tmp_path / "bands.png", img)
    cropped = read_image(tmp_path / "bands.png", channels=1, image_size=16)
    stretched = read_image(tmp_path / "bands.png", channels=1, image_size=16, keep_aspect=False)
    assert cropped.shape == stretched.shape == (1, 16, 16)
    # Only the white middle band survives the crop (its outer columns blur a little).
    assert torch.allclose(cropped[..., 1:-1], torch.ones(1, 16, 14))
    assert cropped.mean() > 0.97
    assert stretched[0, :, 0].max() == 0 and stretched[0, :, -1].max() == 0
    assert stretched[0, :, 8].min() == 1


def test_grey_conversion_of_colour(tmp_path):
    save(tmp_path / "red.png", solid((255, 0, 0)))
    save(tmp_path / "red.bmp", solid((255, 0, 0)))
    for name in ("red.png", "red.bmp"):
        grey = read_image(tmp_path / name, channels=1)
        assert grey.shape == (1, 12, 12)
        assert grey.mean().item() == pytest.approx(0.299, abs=0.01)  # ITU-R 601 luma of red


def test_sixteen_bit_png_scales_to_unit_range(tmp_path):
    levels = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    for channels in (1, 3):
        x = read_image(tmp_path / "deep.png", channels=channels)
        assert x.dtype == torch.float32 and x.shape == (channels, 1, 4)
        assert torch.allclose(x, torch.from_numpy(levels / 65535).float().expand_as(x))


@pytest.mark.parametrize("name", ["broken.png", "broken.jpg", "broken.bmp"])
def test_unreadable_image_is_named(tmp_path, name):
    save(tmp_path / "ok.png", solid((1, 2, 3)))
    (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 5)
    with pytest.raises(ValueError, match=re.escape(name)):
        load_dataset("folder", root=tmp_path, test_size=0)
    lazy = load_dataset("folder", root=tmp_path, test_size=0, in_memory=False)
    index = [p.name for p in lazy.files].index(name)
    with pytest.raises(ValueError, match=re.escape(name)):
        lazy[index]


def test_lazy_matches_in_memory(classes):
    eager = load_dataset("folder", root=classes, image_size=8, test_size=0)
    lazy = load_dataset("folder", root=classes, image_size=8, test_size=0, in_memory=False)
    assert isinstance(lazy, ImageFolderDataset) and len(lazy) == len(eager) == 4
    assert lazy.class_names == eager.class_names and lazy.input_shape == (3, 8, 8)
    for i in range(4):
        x, y = lazy[i]
        assert torch.equal(x, eager.x[i]) and int(y) == int(eager.labels[i])


def test_seeded_test_split(tmp_path):
    for i in range(20):
        save(tmp_path / f"{i:02d}.png", solid((i * 10,) * 3, 4, 4))

    def levels(split, seed):
        ds = load_dataset(
            "folder", root=tmp_path, split=split, image_size=4, test_size=0.25, seed=seed
        )
        return {round(v * 255) for v in ds.x.flatten(1).mean(1).tolist()}

    train, test = levels("train", 0), levels("test", 0)
    assert len(test) == 5 and len(train) == 15 and not train & test
    assert levels("test", 0) == test and levels("test", 1) != test


def test_split_folders_share_class_numbering(tmp_path):
    save(tmp_path / "train" / "a" / "0.png", solid((0, 0, 0)))
    save(tmp_path / "train" / "b" / "0.png", solid((255, 255, 255)))
    save(tmp_path / "test" / "b" / "0.png", solid((255, 255, 255)))
    test = load_dataset("folder", root=tmp_path, split="test", image_size=4)
    assert test.class_names == ("a", "b") and test.labels.tolist() == [1]
    assert len(load_dataset("folder", root=tmp_path, split="train", image_size=4)) == 2
    with pytest.raises(ValueError, match="val_size"):
        load_dataset("folder", root=tmp_path, split="val")
    val = load_dataset("folder", root=tmp_path, split="val", val_size=1, image_size=4)
    assert len(val) == 1


def test_layout_errors(tmp_path):
    with pytest.raises(ValueError, match="root="):
        load_dataset("folder")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("folder", root=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        load_dataset("folder", root=tmp_path / "empty")
    save(tmp_path / "mixed" / "top.png", solid((0, 0, 0)))
    save(tmp_path / "mixed" / "cls" / "x.png", solid((0, 0, 0)))
    with pytest.raises(ValueError, match="mixes images"):
        load_dataset("folder", root=tmp_path / "mixed")
    with pytest.raises(ValueError, match="channels"):
        load_dataset("folder", root=tmp_path / "mixed", channels=4)
    with pytest.raises(ValueError, match="cannot download"):
        load_dataset("folder", root=tmp_path / "mixed", download=True)
