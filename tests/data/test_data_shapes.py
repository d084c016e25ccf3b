"""The procedural shapes dataset: determinism, splits and that the factors mean what they say."""

import itertools
import math

import pytest
import torch

from vaekit.data import TensorImageDataset, load_dataset, render_shapes, shapes_factor_grid

SMALL = {"image_size": 32, "num_scales": 3, "num_rotations": 4, "num_positions": 4}
N_SMALL = 3 * 3 * 4 * 4 * 4


def _render_one(shape, scale=0.75, angle=0.3, pos_x=0.5, pos_y=0.5, size=64):
    f = torch.tensor([[shape, scale, angle, pos_x, pos_y]], dtype=torch.float32)
    return render_shapes(f, image_size=size)[0, 0]


def _centroid(img):
    rows = torch.arange(img.shape[0], dtype=torch.float64)
    cols = torch.arange(img.shape[1], dtype=torch.float64)
    mass = img.double().sum()
    return float((img.double().sum(1) * rows).sum() / mass), float(
        (img.double().sum(0) * cols).sum() / mass
    )


def test_same_seed_gives_identical_tensors():
    a = load_dataset("shapes", split="train", seed=3, **SMALL)
    b = load_dataset("shapes", split="train", seed=3, **SMALL)
    assert torch.equal(a.x, b.x)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.factors, b.factors)


def test_different_seed_gives_a_different_split():
    a = load_dataset("shapes", split="test", seed=0, **SMALL)
    b = load_dataset("shapes", split="test", seed=1, **SMALL)
    assert len(a) == len(b)
    assert not torch.equal(a.factor_classes, b.factor_classes)
    assert not torch.equal(a.x, b.x)


def test_train_and_test_partition_the_full_grid():
    train = load_dataset("shapes", split="train", **SMALL)
    test = load_dataset("shapes", split="test", **SMALL)
    assert len(train) + len(test) == N_SMALL
    assert len(test) == round(0.1 * N_SMALL)
    keys = torch.cat([train.factor_classes, test.factor_classes])
    assert torch.unique(keys, dim=0).shape[0] == N_SMALL  # disjoint and complete
    _, grid_classes = shapes_factor_grid(3, 4, 4)
    assert torch.equal(torch.unique(keys, dim=0), torch.unique(grid_classes, dim=0))


def test_dataset_type_shapes_and_value_range():
    ds = load_dataset("shapes", split="test", **SMALL)
    assert isinstance(ds, TensorImageDataset)
    assert ds.x.dtype == torch.float32 and ds.x.shape[1:] == (1, 32, 32)
    assert ds.x.min() >= 0 and ds.x.max() <= 1
    assert ds.x.max() == 1  # sprite interiors are fully on
    grey = (ds.x > 0) & (ds.x < 1)
    assert grey.any()  # anti-aliased edges
    x, y = ds[0]
    assert x.shape == (1, 32, 32) and y.dtype == torch.int64 and y.dim() == 0
    assert ds.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert ds.factors.shape == (len(ds), 5) and ds.factor_classes.shape == (len(ds), 5)
    hard = load_dataset("shapes", split="test", antialias=False, **SMALL)
    assert set(hard.x.unique().tolist()) == {0.0, 1.0}


def test_label_is_the_shape_index():
    ds = load_dataset("shapes", split="train", **SMALL)
    assert ds.class_names == ("square", "ellipse", "heart") and ds.num_classes == 3
    assert torch.equal(ds.labels, ds.factor_classes[:, 0])
    assert torch.equal(ds.labels.float(), ds.factors[:, 0])
    # The label really is the drawn shape: each image equals a fresh render of its factors.
    picks = torch.arange(0, len(ds), 37)
    assert torch.equal(ds.x[picks], render_shapes(ds.factors[picks], image_size=32))


def test_factor_values_follow_the_grid():
    factors, classes = shapes_factor_grid(num_scales=3, num_rotations=4, num_positions=5)
    assert torch.allclose(factors[:, 1], 0.5 + 0.25 * classes[:, 1].float())
    assert torch.allclose(factors[:, 2], classes[:, 2].float() * (math.pi / 2))
    assert torch.allclose(factors[:, 3], classes[:, 3].float() / 4)
    assert torch.allclose(factors[:, 4], classes[:, 4].float() / 4)


def test_default_set_is_modest_and_64px():
    test = load_dataset("shapes", split="test")
    factors, _ = shapes_factor_grid()
    assert 10_000 <= factors.shape[0] <= 20_000
    assert test.x.shape[1:] == (1, 64, 64)
    assert len(test) == round(0.1 * factors.shape[0])


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_centroid_moves_linearly_with_position(shape):
    steps = torch.linspace(0, 1, 6).tolist()
    along_x = [_centroid(_render_one(shape, pos_x=p)) for p in steps]
    along_y = [_centroid(_render_one(shape, pos_y=p)) for p in steps]
    dx = [b[1] - a[1] for a, b in itertools.pairwise(along_x)]
    dy = [b[0] - a[0] for a, b in itertools.pairwise(along_y)]
    assert min(dx) > 3 and min(dy) > 3  # pos_x moves right, pos_y moves down
    assert max(dx) - min(dx) < 0.05 and max(dy) - min(dy) < 0.05  # a pure translation
    assert abs(dx[0] - dy[0]) < 0.05  # same travel on both axes
    assert max(c[0] for c in along_x) - min(c[0] for c in along_x) < 0.05  # row fixed
    assert max(c[1] for c in along_y) - min(c[1] for c in along_y) < 0.05  # column fixed


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_largest_sprites_stay_inside_the_image(shape):
    corners = [(px, py) for px in (0.0, 1.0) for py in (0.0, 1.0)]
    for angle in torch.linspace(0, 2 * math.pi, 13).tolist():
        for px, py in corners:
            img = _render_one(shape, scale=1.0, angle=angle, pos_x=px, pos_y=py)
            border = torch.cat([img[0], img[-1], img[:, 0], img[:, -1]])
            assert border.max() == 0, (angle, px, py)


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_area_grows_with_the_square_of_scale(shape):
    scales = [0.5, 0.625, 0.75, 0.875, 1.0]
    areas = [float(_render_one(shape, scale=s).sum()) for s in scales]
    assert all(a < b for a, b in itertools.pairwise(areas))
    for s, area in zip(scales, areas):
        assert area / areas[-1] == pytest.approx(s**2, rel=0.03)


def test_rotation_symmetries_and_area_invariance():
    def at(shape, angle):
        return _render_one(shape, scale=1.0, angle=angle)

    # A square looks the same after a quarter turn, an ellipse after a half turn...
    assert torch.allclose(at(0, 0.4), at(0, 0.4 + math.pi / 2), atol=1e-3)
    assert torch.allclose(at(1, 0.4), at(1, 0.4 + math.pi), atol=1e-3)
    # ...but not after other turns, and a heart only after a full one.
    assert (at(0, 0.4) - at(0, 0.4 + math.pi / 4)).abs().sum() > 20
    assert (at(1, 0.4) - at(1, 0.4 + math.pi / 2)).abs().sum() > 20
    assert (at(2, 0.4) - at(2, 0.4 + math.pi)).abs().sum() > 20
    for shape in range(3):
        areas = [float(at(shape, a).sum()) for a in torch.linspace(0, 6, 7).tolist()]
        assert max(areas) / min(areas) < 1.02


def test_ellipse_major_axis_follows_orientation():
    def spread(img):
        rows, cols = torch.meshgrid(
            torch.arange(img.shape[0]).double(), torch.arange(img.shape[1]).double(), indexing="ij"
        )
        r0, c0 = _centroid(img)
        w = img.double()
        return float((w * (rows - r0) ** 2).sum()), float((w * (cols - c0) ** 2).sum())

    var_rows, var_cols = spread(_render_one(1, angle=0.0))
    assert var_cols > 3 * var_rows  # wide at orientation 0
    var_rows, var_cols = spread(_render_one(1, angle=math.pi / 2))
    assert var_rows > 3 * var_cols  # tall after a quarter turn


def test_heart_is_upright_at_orientation_zero():
    img = _render_one(2, scale=1.0, angle=0.0)
    rows = img.sum(1).nonzero().squeeze(1)
    top, bottom = int(rows.min()), int(rows.max())
    width = img.sum(1)
    # The lobes are at the top, the tip at the bottom.
    assert width[top + (bottom - top) // 4] > 2 * width[bottom - (bottom - top) // 8]
    # Left-right mirror symmetric.
    assert torch.allclose(img, img.flip(1), atol=2e-3)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="num_positions"):
        load_dataset("shapes", num_positions=0)
    with pytest.raises(ValueError, match="test_size"):
        load_dataset("shapes", test_size=1.5, **SMALL)
    with pytest.raises(ValueError, match="image_size"):
        render_shapes(torch.zeros(1, 5), image_size=4)


def test_render_on_the_test_device_matches_cpu(device):
    factors, _ = shapes_factor_grid(num_scales=2, num_rotations=3, num_positions=2)
    on_device = render_shapes(factors.to(device), image_size=32)
    assert on_device.device.type == device.type
    assert torch.allclose(on_device.cpu(), render_shapes(factors, image_size=32), atol=1e-4)
