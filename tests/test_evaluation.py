"""Tests of vaekit.evaluation: the metrics' maths, determinism and the accepted data types."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import kl_divergence
from torch.utils.data import DataLoader, TensorDataset

from conftest import TEST_DEVICE as DEVICE
from vaekit import MLPVAE
from vaekit.evaluation import evaluate

SHAPE = (1, 6, 6)


def binary_data(n: int, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Structured, so that posterior means differ between examples: a per-example brightness.
    p = torch.rand(n, 1, generator=g).expand(n, math.prod(shape)).reshape(n, *shape)
    return torch.bernoulli(p, generator=g).to(DEVICE)


def small_model(latent_dim: int = 3, seed: int = 0, **kwargs) -> MLPVAE:
    torch.manual_seed(seed)
    kwargs.setdefault("input_shape", SHAPE)
    return MLPVAE(latent_dim=latent_dim, hidden_dims=(16,), **kwargs).to(DEVICE)


def test_deterministic_for_a_seed() -> None:
    model, x = small_model(), binary_data(40)
    a = evaluate(model, x, num_samples=20, batch_size=16, seed=3, progress=False)
    b = evaluate(model, x, num_samples=20, batch_size=16, seed=3, progress=False)
    c = evaluate(model, x, num_samples=20, batch_size=16, seed=4, progress=False)
    assert a == b
    assert a["nll"] != c["nll"]
    # The global RNG plays no part.
    torch.manual_seed(123)
    assert evaluate(model, x, num_samples=20, batch_size=16, seed=3, progress=False) == a


def test_metric_keys_and_consistency() -> None:
    model, x = small_model(), binary_data(50)
    m = evaluate(model, x, num_samples=10, batch_size=16, progress=False)
    assert m["num_examples"] == 50 and m["num_samples"] == 10
    assert m["elbo"] == pytest.approx(m["log_px"] - m["kl"], abs=1e-9)
    assert len(m["kl_per_dim"]) == model.latent_dim
    assert sum(m["kl_per_dim"]) == pytest.approx(m["kl"], rel=1e-6)
    # The KL is the data average of the closed form, however the batches fall (50 = 3*16 + 2).
    with torch.no_grad():
        qz = model.encode(x)
        kl = kl_divergence(qz, model.prior())
        kl_dims = kl_divergence(qz.base_dist, model.prior().base_dist).mean(0)
    assert m["kl"] == pytest.approx(kl.mean().item(), rel=1e-5)
    assert m["kl_per_dim"] == pytest.approx(kl_dims.tolist(), rel=1e-5)
    assert all(
        isinstance(v, (int, float)) for k, v in m.items() if k not in ("kl_per_dim", "active_dims")
    )


def test_importance_sampled_nll_is_tighter_than_the_elbo() -> None:
    model, x = small_model(latent_dim=4), binary_data(64)
    m = evaluate(model, x, num_samples=200, batch_size=32, progress=False)
    assert m["nll"] < -m["elbo"]


def test_nll_decreases_with_more_samples() -> None:
    model, x = small_model(latent_dim=4), binary_data(64)
    nll = [
        evaluate(model, x, num_samples=k, batch_size=64, progress=False)["nll"]
        for k in (1, 10, 200)
    ]
    assert nll[0] >= nll[1] >= nll[2]
    # With K = 1 the estimate is the one-sample ELBO.
    m1 = evaluate(model, x, num_samples=1, batch_size=64, progress=False)
    assert m1["nll"] == pytest.approx(-m1["elbo"], rel=0.02)


def test_nll_matches_exact_marginal_likelihood_by_quadrature() -> None:
    # One latent dimension: log p(x) = log integral p(x|z) N(z; 0, 1) dz by the trapezoid rule.
    model = small_model(latent_dim=1, input_shape=(5,))
    with torch.no_grad():
        # A proposal wider than the posterior keeps the importance weights bounded, so that
        # K = 2000 is close to the limit (a narrow q(z|x) gives heavy-tailed weights).
        model.encoder_head.weight[1:] = 0.0
        model.encoder_head.bias[1:] = 1.5  # scale softplus(1.5) = 1.7
    x = binary_data(24, shape=(5,))
    z = torch.linspace(-9, 9, 4001, device=DEVICE, dtype=torch.float64)
    with torch.no_grad():
        log_px_z = torch.stack(
            [model.decode(zi.float().view(1, 1).expand(24, 1)).log_prob(x) for zi in z]
        ).double()  # (Z, N)
        log_joint = log_px_z + torch.distributions.Normal(0.0, 1.0).log_prob(z)[:, None]
        exact = torch.logsumexp(log_joint, 0) + math.log(z[1] - z[0])  # (N,)
    m = evaluate(model, x, num_samples=2000, progress=False)
    assert m["nll"] == pytest.approx(-exact.mean().item(), abs=0.01)


def test_active_units_follow_the_variance_of_posterior_means() -> None:
    model, x = small_model(latent_dim=6), binary_data(200)
    d = model.latent_dim
    head = model.encoder_head  # output rows [0, d) are the posterior locations
    with torch.no_grad():
        var = model.encode(x).mean.var(0)
        # Scale each location row to a chosen variance across the data; zero rows 1 and 4.
        target = torch.tensor([1.0, 0.0, 0.004, 0.03, 0.0, 0.5], device=DEVICE)
        factor = (target / var).sqrt()
        head.weight[:d] *= factor[:, None]
        head.bias[:d] *= factor
        head.weight[[1, 4]] = 0.0
        head.bias[[1, 4]] = 0.0
    m = evaluate(model, x, num_samples=2, batch_size=64, progress=False)
    assert m["active_dims"] == [0, 3, 5]
    assert m["active_units"] == 3


def test_single_example_has_no_active_units() -> None:
    m = evaluate(small_model(), binary_data(1), num_samples=5, progress=False)
    assert m["active_units"] == 0 and m["num_examples"] == 1


def test_bits_per_dim_only_where_probabilities_are_masses() -> None:
    x = binary_data(20)
    d = math.prod(SHAPE)
    m = evaluate(small_model(), x, num_samples=5, progress=False)
    assert m["bits_per_dim"] == pytest.approx(m["nll"] / (d * math.log(2)), rel=1e-12)
    grey = torch.rand(20, *SHAPE, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    assert evaluate(small_model(), grey, num_samples=5, progress=False)["bits_per_dim"] is None
    gauss = small_model(likelihood="gaussian")
    assert evaluate(gauss, grey, num_samples=5, progress=False)["bits_per_dim"] is None
    levels = torch.round(grey * 255) / 255
    dlog = small_model(likelihood="discretized_logistic", likelihood_kwargs={"num_mixtures": 2})
    m = evaluate(dlog, levels, num_samples=5, progress=False)
    assert m["bits_per_dim"] == pytest.approx(m["nll"] / (d * math.log(2)), rel=1e-12)
    # Bin masses are at most 1: the NLL of a discrete model is non-negative.
    assert m["bits_per_dim"] > 0


def test_tensor_dataset_and_dataloader_give_the_same_numbers() -> None:
    model, x = small_model(), binary_data(45)
    labels = torch.arange(45) % 3
    kwargs = {"num_samples": 15, "seed": 1, "progress": False}
    from_tensor = evaluate(model, x, batch_size=10, **kwargs)
    from_dataset = evaluate(model, TensorDataset(x.cpu(), labels), batch_size=10, **kwargs)
    loader = DataLoader(TensorDataset(x.cpu()), batch_size=10)
    from_loader = evaluate(model, loader, **kwargs)
    assert from_tensor == from_dataset == from_loader


def test_conditional_model_gets_the_labels() -> None:
    model = small_model(num_classes=3)
    x = binary_data(30)
    y = torch.arange(30) % 3
    kwargs = {"num_samples": 10, "batch_size": 8, "progress": False}
    m = evaluate(model, TensorDataset(x, y), **kwargs)
    m_same = evaluate(model, DataLoader(TensorDataset(x, y), batch_size=8), num_samples=10)
    m_other = evaluate(model, TensorDataset(x, (y + 1) % 3), **kwargs)
    assert m == m_same
    assert m["nll"] != m_other["nll"]
    with pytest.raises(ValueError, match="needs labels"):
        evaluate(model, x, **kwargs)


def test_eval_mode_is_used_and_restored() -> None:
    model, x = small_model(dropout=0.5), binary_data(20)
    model.train()
    model.encoder_head.eval()  # a mixed state must come back exactly
    a = evaluate(model, x, num_samples=5, progress=False)
    assert model.training and model.encoder.training and not model.encoder_head.training
    model.eval()
    assert evaluate(model, x, num_samples=5, progress=False) == a
    assert not model.training


def test_memory_budget_sets_the_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = small_model(), binary_data(20)
    chunks = []
    original = model.log_likelihood

    def spy(*args, **kwargs):
        chunks.append(kwargs["chunk_size"])
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "log_likelihood", spy)
    d = math.prod(SHAPE)
    m = evaluate(model, x, num_samples=50, batch_size=10, max_memory_elements=7 * 10 * d)
    assert chunks == [7, 7]
    assert math.isfinite(m["nll"])
    evaluate(model, x, num_samples=50, batch_size=10, max_memory_elements=1)
    assert chunks[2:] == [1, 1]


def test_progress_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    evaluate(small_model(), binary_data(10), num_samples=3, progress=True)
    assert "evaluate" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("data", "kwargs", "match"),
    [
        (torch.empty(0, *SHAPE), {}, "empty"),
        (torch.rand(4, 36).round(), {}, "reshape"),
        (torch.rand(4, *SHAPE) * 3, {}, r"\[0, 1\]"),
        (torch.rand(4, *SHAPE).round(), {"num_samples": 0}, "num_samples"),
        (torch.rand(4, *SHAPE).round(), {"batch_size": 0}, "batch_size"),
        (torch.rand(4, *SHAPE).round(), {"max_memory_elements": 0}, "max_memory_elements"),
        (DataLoader(torch.rand(4, *SHAPE).round()), {"batch_size": 2}, "DataLoader"),
    ],
)
def test_clear_errors(data, kwargs, match) -> None:
    if isinstance(data, torch.Tensor):
        data = data.to(DEVICE)
    with pytest.raises(ValueError, match=match):
        evaluate(small_model(), data, progress=False, **kwargs)


def test_rejects_unsupported_data() -> None:
    with pytest.raises(TypeError, match="Dataset"):
        evaluate(small_model(), 3.0, progress=False)  # type: ignore[arg-type]


def test_device_argument_moves_the_model_only_for_the_call() -> None:
    model, x = small_model(), binary_data(10)
    a = evaluate(model, x, num_samples=5, progress=False)
    assert evaluate(model, x, num_samples=5, device=DEVICE.type, progress=False) == a
    auto = evaluate(model, x, num_samples=5, device="auto", progress=False)
    assert model.device == x.device and math.isfinite(auto["nll"])
    with pytest.raises(ValueError, match="device"):
        evaluate(model, x, device="not-a-device", progress=False)
