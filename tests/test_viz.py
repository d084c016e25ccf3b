"""Tests of vaekit.viz: image grids, latent walks and plots."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import NormalDist

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchvision.io import read_image

from conftest import TEST_DEVICE as DEVICE
from vaekit import MLPVAE, viz

SHAPE = (1, 8, 8)
# torchvision 0.29 deprecates its image codecs (in favour of TorchCodec); read_image still works.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def small_model(latent_dim: int = 3, seed: int = 0, **kwargs) -> MLPVAE:
    torch.manual_seed(seed)
    kwargs.setdefault("input_shape", SHAPE)
    return MLPVAE(latent_dim=latent_dim, hidden_dims=(16,), **kwargs).to(DEVICE)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


class DecodeSpy:
    """Wraps ``model.decode`` to record the latent codes it is given."""

    def __init__(self, model: MLPVAE, monkeypatch: pytest.MonkeyPatch):
        self.codes: list[torch.Tensor] = []
        original = model.decode

        def decode(z, y=None):
            self.codes.append(z.detach().clone())
            return original(z, y)

        monkeypatch.setattr(model, "decode", decode)


def tile(grid: torch.Tensor, row: int, col: int, size: int = 8, padding: int = 2) -> torch.Tensor:
    """The (row, col) tile of a make_grid output."""
    top = padding + row * (size + padding)
    left = padding + col * (size + padding)
    return grid[:, top : top + size, left : left + size]


# ---- image grids ---------------------------------------------------------------------------


def test_sample_grid_shape_range_and_determinism() -> None:
    model = small_model()
    grid = viz.sample_grid(model, n=10, nrow=5, generator=torch.Generator(DEVICE).manual_seed(0))
    assert grid.shape == (3, 2 * 10 + 2, 5 * 10 + 2)
    assert grid.device.type == DEVICE.type
    assert grid.min() >= 0 and grid.max() <= 1
    again = viz.sample_grid(model, n=10, nrow=5, generator=torch.Generator(DEVICE).manual_seed(0))
    assert torch.equal(grid, again)
    # The tiles are the model's samples.
    x = model.sample(10, generator=torch.Generator(DEVICE).manual_seed(0))
    assert torch.allclose(tile(grid, 1, 2)[0], x[7, 0])


def test_grids_clamp_unbounded_means() -> None:
    model = small_model(likelihood="gaussian")
    with torch.no_grad():
        model.decoder_head.bias.fill_(5.0)  # means far above 1
    grid = viz.sample_grid(model, n=4)
    assert grid.max() == 1 and grid.min() >= 0


def test_conditional_sample_grid() -> None:
    model = small_model(num_classes=3)
    a = viz.sample_grid(model, n=4, y=0, generator=torch.Generator(DEVICE).manual_seed(0))
    b = viz.sample_grid(model, n=4, y=2, generator=torch.Generator(DEVICE).manual_seed(0))
    assert a.shape == b.shape and not torch.equal(a, b)


def test_vector_models_get_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        viz.sample_grid(small_model(input_shape=(64,)), n=4)


def test_reconstruction_grid_pairs_inputs_with_reconstructions() -> None:
    model, x = small_model(), images(12)
    grid = viz.reconstruction_grid(model, x, n=5, pairs_per_row=4)
    assert grid.shape == (3, 2 * 10 + 2, 8 * 10 + 2)  # 10 tiles: 2 rows of 4 pairs
    x_rec = model.reconstruct(x[:5])
    for i in range(5):
        row, col = divmod(i, 4)
        assert torch.allclose(tile(grid, row, 2 * col)[0], x[i, 0])
        assert torch.allclose(tile(grid, row, 2 * col + 1)[0], x_rec[i, 0])


def test_save_image_writes_a_readable_png(tmp_path: Path) -> None:
    grid = viz.sample_grid(small_model(), n=9)
    path = viz.save_image(grid, tmp_path / "out" / "samples.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = read_image(str(path))
    assert back.shape == grid.shape and back.dtype == torch.uint8
    expected = (grid.cpu() * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    assert (back.int() - expected.int()).abs().max() <= 1


# ---- latent walks --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolate_ends_at_the_reconstructions(method: str) -> None:
    model, x = small_model(), images(2)
    path = viz.interpolate(model, x[0], x[1], steps=7, method=method)
    assert path.shape == (7, *SHAPE)
    ends = model.reconstruct(x)
    assert torch.allclose(path[0], ends[0], atol=1e-6)
    assert torch.allclose(path[-1], ends[1], atol=1e-6)
    assert viz.image_grid(path).shape == (3, 3 * 10 + 2, 3 * 10 + 2)


def test_lerp_decodes_points_on_the_line(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = small_model(), images(2)
    spy = DecodeSpy(model, monkeypatch)
    viz.interpolate(model, x[:1], x[1:], steps=5)
    (z,) = spy.codes
    z_ends = model.encode(x).mean
    assert torch.allclose(z[2], z_ends.mean(0), atol=1e-6)
    assert torch.allclose(z[1], 0.75 * z_ends[0] + 0.25 * z_ends[1], atol=1e-6)


def test_slerp_keeps_unit_norm_and_equal_angles() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 16, generator=g)
    a, b = a / a.norm(), b / b.norm()
    t = torch.linspace(0, 1, 11)
    path = viz.slerp(a, b, t)
    assert torch.allclose(path.norm(dim=1), torch.ones(11), atol=1e-6)
    assert torch.allclose(path[0], a, atol=1e-6) and torch.allclose(path[-1], b, atol=1e-6)
    # Equal steps in t are equal angles.
    cos = (path[:-1] * path[1:]).sum(1)
    assert torch.allclose(cos, cos[0].expand(10), atol=1e-6)
    # Not the straight line: the midpoint of a lerp has norm < 1.
    assert torch.lerp(a, b, 0.5).norm() < 0.99


def test_slerp_is_stable_for_near_parallel_and_degenerate_vectors() -> None:
    a = torch.tensor([3.0, 4.0, 0.0])
    t = torch.linspace(0, 1, 5)
    near = a + torch.tensor([0.0, 0.0, 1e-6])
    path = viz.slerp(a, near, t)
    assert torch.isfinite(path).all()
    assert torch.allclose(path, torch.lerp(a, near, t[:, None]), atol=1e-5)
    for b in (a.clone(), 2 * a, -a, torch.zeros(3)):  # parallel, antiparallel, zero
        path = viz.slerp(a, b, t)
        assert torch.isfinite(path).all()
        assert torch.allclose(path[0], a) and torch.allclose(path[-1], b)


def test_interpolate_rejects_bad_arguments() -> None:
    model, x = small_model(), images(2)
    with pytest.raises(ValueError, match="method"):
        viz.interpolate(model, x[0], x[1], method="cubic")
    with pytest.raises(ValueError, match="one example"):
        viz.interpolate(model, x, x[1])


def test_traverse_changes_one_latent_dimension_per_row(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = small_model(latent_dim=4), images(1)
    spy = DecodeSpy(model, monkeypatch)
    out = viz.traverse(model, x[0], dims=[2, 0], steps=5, span=2.0)
    assert out.shape == (2, 5, *SHAPE)
    (z,) = spy.codes
    z = z.view(2, 5, 4)
    z0 = model.encode(x).mean[0]
    values = torch.linspace(-2.0, 2.0, 5, device=DEVICE)
    for row, d in enumerate([2, 0]):
        assert torch.allclose(z[row, :, d], values)
        others = [i for i in range(4) if i != d]
        assert torch.equal(z[row][:, others], z0[others].expand(5, 3))
    # The outputs are the decoded codes.
    assert torch.allclose(out[1, 3], model.decode(z[1, 3:4]).mean[0], atol=1e-6)


def test_traverse_without_x_starts_at_the_prior_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_model(latent_dim=3)
    spy = DecodeSpy(model, monkeypatch)
    out = viz.traverse(model, steps=3)
    assert out.shape == (3, 3, *SHAPE)
    z = spy.codes[0].view(3, 3, 3)
    assert torch.equal(z[:, 1], torch.zeros(3, 3, device=DEVICE))  # the middle step is z = 0
    assert torch.equal(z[0, :, 1:], torch.zeros(3, 2, device=DEVICE))
    assert viz.image_grid(out).shape == (3, 3 * 10 + 2, 3 * 10 + 2)


def test_manifold_grid_decodes_prior_quantiles(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_model(latent_dim=2)
    spy = DecodeSpy(model, monkeypatch)
    grid = viz.manifold_grid(model, n=5)
    assert grid.shape == (3, 5 * 10 + 2, 5 * 10 + 2)
    z = spy.codes[0].view(5, 5, 2)  # (row, column, dim)
    q95 = NormalDist().inv_cdf(0.95)  # 1.645
    assert torch.allclose(z[2, 2], torch.zeros(2, device=DEVICE), atol=1e-6)  # the middle
    assert z[0, 0].tolist() == pytest.approx([-q95, q95], abs=1e-5)  # top left
    assert z[4, 4].tolist() == pytest.approx([q95, -q95], abs=1e-5)  # bottom right
    assert z[1, 3, 0].item() == pytest.approx(NormalDist().inv_cdf(0.725), abs=1e-5)  # 4th of 5
    expected = model.decode(z[4, 0:1]).mean[0, 0]
    assert torch.allclose(tile(grid, 4, 0)[0], expected.clamp(0, 1), atol=1e-6)


def test_manifold_grid_needs_two_latent_dimensions() -> None:
    with pytest.raises(ValueError, match="latent_dim=3"):
        viz.manifold_grid(small_model(latent_dim=3))


def test_viz_restores_train_mode() -> None:
    model, x = small_model(dropout=0.5), images(4)
    model.train()
    a = viz.reconstruction_grid(model, x)
    b = viz.reconstruction_grid(model, x)
    assert torch.equal(a, b)  # dropout was off
    viz.traverse(model, x[0], steps=3)
    viz.interpolate(model, x[0], x[1], steps=3)
    assert model.training and model.encoder.training


# ---- plots ---------------------------------------------------------------------------------


def test_latent_scatter_2d_plots_the_posterior_means(tmp_path: Path) -> None:
    model, x = small_model(latent_dim=2), images(30)
    labels = torch.arange(30) % 3
    fig = viz.latent_scatter(
        model, TensorDataset(x, labels), path=tmp_path / "scatter.png", class_names=["a", "b", "c"]
    )
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    means = model.encode(x).mean.cpu()
    for cls, collection in enumerate(ax.collections):
        points = torch.as_tensor(collection.get_offsets(), dtype=torch.float32)
        assert torch.allclose(points, means[labels == cls], atol=1e-5)
    assert read_image(str(tmp_path / "scatter.png")).shape[0] in (3, 4)


def test_latent_scatter_projects_on_principal_components(tmp_path: Path) -> None:
    model, x = small_model(latent_dim=5), images(40)
    dataset = TensorDataset(x)
    dataset.class_names = ("ignored",)  # type: ignore[attr-defined]
    fig = viz.latent_scatter(
        model, DataLoader(dataset, batch_size=16), max_points=25, path=tmp_path / "pca.png"
    )
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("PC1") and ax.get_ylabel().startswith("PC2")
    (collection,) = ax.collections
    points = torch.as_tensor(collection.get_offsets(), dtype=torch.float64)
    assert points.shape == (25, 2)
    # The projection keeps the two largest variances of the centred means, in order.
    means = model.encode(x[:25]).mean.double().cpu()
    eig = torch.linalg.eigvalsh(torch.cov(means.T)).flip(0)
    assert points.var(0).tolist() == pytest.approx(eig[:2].tolist(), rel=1e-6)
    assert read_image(str(tmp_path / "pca.png")).shape[1] > 100


def test_latent_scatter_with_many_classes_uses_a_colorbar() -> None:
    model, x = small_model(latent_dim=2), images(30)
    fig = viz.latent_scatter(model, x, labels=torch.arange(30))
    assert len(fig.axes) == 2  # the plot and its colorbar


def test_loss_curve_from_a_list_and_from_jsonl(tmp_path: Path) -> None:
    history = [
        {"epoch": 1, "train_loss": 3.0, "eval_loss": 3.5},
        {"epoch": 2, "train_loss": 2.0},
        {"epoch": 3, "train_loss": 1.5, "eval_loss": 2.5},
    ]
    fig = viz.loss_curve(history)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(lines["train_loss"].get_xdata()) == [1, 2, 3]
    assert list(lines["eval_loss"].get_ydata()) == [3.5, 2.5]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in history) + "\n\n")
    fig = viz.loss_curve(path, path=tmp_path / "loss.png")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(lines["eval_loss"].get_xdata()) == [1, 3]
    assert read_image(str(tmp_path / "loss.png")).shape[1] > 100
    with pytest.raises(ValueError, match="no values"):
        viz.loss_curve([{"epoch": 1, "loss": 1.0}])
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1"):
        viz.loss_curve(path)


def test_plots_without_matplotlib_say_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install vaekit\[plots\]"):
        viz.loss_curve([{"train_loss": 1.0}])


def test_plots_leave_pyplot_alone() -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    viz.loss_curve([{"train_loss": 1.0}])
    viz.latent_scatter(small_model(latent_dim=2), images(5))
    assert plt.get_fignums() == before
