"""The training loop: it learns, on both data paths, with schedules and labels as configured."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from trainer_helpers import (
    DEVICE,
    PRECISIONS,
    PlainDataset,
    Recorder,
    assert_same_weights,
    make_config,
    make_dataset,
    make_images,
    make_model,
)

import vaekit
from vaekit.objectives import make_beta_schedule
from vaekit.training import Callback, Trainer, lr_factor


@pytest.mark.parametrize("precision", PRECISIONS)
def test_loss_decreases(precision: str) -> None:
    model = make_model()
    train, test = make_dataset(256, seed=0), make_dataset(64, seed=0)
    config = make_config(max_epochs=6, lr=3e-3, precision=precision)
    history = Trainer(model, train, eval_data=test, config=config).fit()
    assert [h["epoch"] for h in history] == list(range(1, 7))
    first, last = history[0], history[-1]
    assert last["train_loss"] < first["train_loss"] - 1.0
    assert last["eval_loss"] < first["eval_loss"] - 1.0
    for h in history:
        assert math.isclose(h["train_loss"], h["kl"] - h["log_px"], rel_tol=1e-4, abs_tol=1e-3)
        assert h["step"] == 8 * h["epoch"] and h["images_per_s"] > 0
    assert model.validate_inputs is True, "the trainer restores validate_inputs"
    assert next(model.parameters()).device == torch.device(DEVICE)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", ["memory", "dataset", "dataloader"])
def test_both_data_paths_train(kind: str, precision: str) -> None:
    x, _ = make_images(128)
    data: Any = {
        "memory": TensorDataset(x),
        "dataset": PlainDataset(x),
        "dataloader": DataLoader(PlainDataset(x), batch_size=32, shuffle=True),
    }[kind]
    model = make_model()
    history = Trainer(model, data, config=make_config(precision=precision)).fit()
    assert all(math.isfinite(h["train_loss"]) for h in history)
    assert history[-1]["step"] == 8
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_memory_and_dataset_paths_see_the_same_batches() -> None:
    """The fast path indexes the same seeded order the DataLoader path reads: same weights."""
    x, _ = make_images(100)  # 100 = 3 full batches + a partial one
    fast, slow = make_model(), make_model()
    Trainer(fast, TensorDataset(x), config=make_config(binarize=True)).fit()
    Trainer(slow, PlainDataset(x), config=make_config(binarize=True)).fit()
    assert_same_weights(fast, slow)


def test_tensor_dataset_forced_through_loader_matches_fast_path() -> None:
    x, _ = make_images(64)
    a, b = make_model(), make_model()
    Trainer(a, TensorDataset(x), config=make_config(data_path="memory")).fit()
    Trainer(b, TensorDataset(x), config=make_config(data_path="loader")).fit()
    assert_same_weights(a, b)


def test_data_order_is_a_fresh_permutation_each_epoch() -> None:
    seen: list[torch.Tensor] = []

    class Spy(vaekit.MLPVAE):
        def forward(self, x: torch.Tensor, y: Any = None, **kwargs: Any) -> Any:
            if self.training:
                seen.append(x.detach().cpu().flatten(1)[:, 0].clone())
            return super().forward(x, y, **kwargs)

    torch.manual_seed(0)
    model = Spy(input_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,))
    x = torch.arange(64, dtype=torch.float32).div(64).view(64, 1, 1, 1).expand(64, 1, 8, 8)
    Trainer(model, TensorDataset(x.contiguous()), config=make_config(batch_size=16)).fit()
    epoch1, epoch2 = torch.cat(seen[:4]), torch.cat(seen[4:])
    assert sorted(epoch1.tolist()) == sorted(x[:, 0, 0, 0].tolist()), "each example once"
    assert sorted(epoch2.tolist()) == sorted(epoch1.tolist())
    assert not torch.equal(epoch1, epoch2), "a new order every epoch"
    assert not torch.equal(epoch1, x[:, 0, 0, 0]), "shuffled"


def test_conditional_model_gets_the_labels_of_its_batch() -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    class Spy(vaekit.MLPVAE):
        def forward(self, x: torch.Tensor, y: Any = None, **kwargs: Any) -> Any:
            if self.training:
                seen.append((x.detach().cpu(), y.detach().cpu()))
            return super().forward(x, y, **kwargs)

    torch.manual_seed(0)
    model = Spy(input_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,), num_classes=4)
    labels = torch.arange(96) % 4
    x = (labels.float() / 4).view(-1, 1, 1, 1).expand(96, 1, 8, 8).contiguous()
    for data in (TensorDataset(x, labels), PlainDataset(x, labels)):
        seen.clear()
        Trainer(model, data, config=make_config(max_epochs=1)).fit()
        assert len(seen) == 3
        for xb, yb in seen:
            assert torch.equal((xb[:, 0, 0, 0] * 4).round().long(), yb)


def test_unconditional_model_is_not_given_labels() -> None:
    calls: list[Any] = []

    class Spy(vaekit.MLPVAE):
        def forward(self, x: torch.Tensor, y: Any = None, **kwargs: Any) -> Any:
            calls.append((y, sorted(kwargs)))
            return super().forward(x, y, **kwargs)

    torch.manual_seed(0)
    model = Spy(input_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,))
    Trainer(model, make_dataset(64, labels=True), config=make_config(max_epochs=1)).fit()
    assert calls and all(y is None for y, _ in calls)
    assert calls[0][1] == ["beta", "free_bits", "iwae_samples"]


def test_objective_settings_reach_the_model() -> None:
    calls: list[dict[str, Any]] = []

    class Spy(vaekit.MLPVAE):
        def forward(self, x: torch.Tensor, y: Any = None, **kwargs: Any) -> Any:
            if self.training:
                calls.append({**kwargs, "values": torch.unique(x).tolist()})
            return super().forward(x, y, **kwargs)

    torch.manual_seed(0)
    model = Spy(input_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,))
    config = make_config(max_epochs=1, free_bits=0.25, iwae_samples=3, binarize=True)
    Trainer(model, make_dataset(64), config=config).fit()
    assert all(c["free_bits"] == 0.25 and c["iwae_samples"] == 3 for c in calls)
    assert all(set(c["values"]) <= {0.0, 1.0} for c in calls), "binarized on the device"


@pytest.mark.parametrize(
    ("schedule", "extra"),
    [
        ("constant", {}),
        ("linear", {"kl_warmup_steps": 5}),
        ("cyclical", {"beta_cycle_steps": 6, "beta_cycle_ratio": 0.5}),
    ],
)
def test_beta_follows_the_schedule(schedule: str, extra: dict[str, Any]) -> None:
    recorder = Recorder()
    config = make_config(max_epochs=2, beta=2.0, beta_schedule=schedule, **extra)
    Trainer(make_model(), make_dataset(128), config=config, callbacks=[recorder]).fit()
    kwargs: dict[str, Any] = {"beta": 2.0} if schedule == "constant" else {"beta_max": 2.0}
    if schedule == "linear":
        kwargs["warmup_steps"] = 5
    if schedule == "cyclical":
        kwargs.update(cycle_steps=6, ratio=0.5)
    expected = make_beta_schedule(schedule, **kwargs)
    betas = [s["beta"] for s in recorder.steps]
    assert betas == [expected(i) for i in range(8)]
    if schedule != "constant":
        assert betas[0] == 0.0 and max(betas) == 2.0


def test_lr_factor_values() -> None:
    f = lambda s, **kw: lr_factor(s, **{"warmup_steps": 4, "total_steps": 14, **kw})  # noqa: E731
    assert [f(s, schedule="constant") for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert f(4, schedule="cosine") == 1.0
    assert math.isclose(f(9, schedule="cosine"), 0.5)
    assert math.isclose(f(14, schedule="cosine"), 0.0, abs_tol=1e-12)
    assert math.isclose(f(100, schedule="cosine", min_lr_ratio=0.1), 0.1)
    assert math.isclose(f(9, schedule="cosine", min_lr_ratio=0.2), 0.6)


def test_lr_used_at_each_step_follows_warmup_and_cosine() -> None:
    recorder = Recorder()
    config = make_config(
        max_epochs=3, lr=1e-2, lr_warmup_steps=4, lr_schedule="cosine", min_lr_ratio=0.1
    )
    history = Trainer(make_model(), make_dataset(128), config=config, callbacks=[recorder]).fit()
    total = 3 * 4
    expected = [
        1e-2 * lr_factor(s, warmup_steps=4, schedule="cosine", total_steps=total, min_lr_ratio=0.1)
        for s in range(total)
    ]
    lrs = [s["lr"] for s in recorder.steps]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert history[-1]["lr"] == pytest.approx(expected[-1])


@pytest.mark.filterwarnings(r"ignore:Seems like `optimizer.step\(\)` has been overridden")
def test_gradient_clipping_bounds_the_applied_gradient() -> None:
    norms: list[float] = []

    class ClipSpy(Callback):
        def on_fit_start(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
            step = trainer.optimizer.step

            def wrapped(*args: Any, **kwargs: Any) -> Any:
                grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
                norms.append(float(torch.nn.utils.get_total_norm(grads)))
                return step(*args, **kwargs)

            trainer.optimizer.step = wrapped  # type: ignore[method-assign]

    config = make_config(max_epochs=1, grad_clip_norm=0.01)
    history = Trainer(make_model(), make_dataset(128), config=config, callbacks=[ClipSpy()]).fit()
    assert len(norms) == 4
    assert max(norms) <= 0.01 * (1 + 1e-4)
    assert history[0]["grad_norm"] > 0.01, "the unclipped norm is reported and was larger"


def test_max_steps_stops_mid_epoch() -> None:
    history = Trainer(make_model(), make_dataset(256), config=make_config(max_steps=5)).fit()
    assert len(history) == 1 and history[0]["step"] == 5 and history[0]["partial_epoch"]


def test_adamw_and_weight_decay_run() -> None:
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    config = make_config(max_epochs=1, optimizer="adamw", weight_decay=0.1)
    Trainer(model, make_dataset(64), config=config).fit()
    assert any(not torch.equal(a, b.cpu()) for a, b in zip(before, model.parameters()))


def test_evaluate_returns_negative_elbo_and_leaves_state_alone() -> None:
    model = make_model()
    trainer = Trainer(model, make_dataset(64), config=make_config())
    rng_before = torch.get_rng_state()
    first = trainer.evaluate(make_dataset(48, seed=1))
    assert torch.equal(torch.get_rng_state(), rng_before)
    second = trainer.evaluate(make_dataset(48, seed=1))
    assert first == second, "evaluation uses its own fixed seed"
    assert first["num_examples"] == 48
    assert first["loss"] == pytest.approx(first["kl"] - first["log_px"])
    assert first["elbo"] == -first["loss"]
    assert model.training


class ImageTensors(torch.utils.data.Dataset):
    """Duck-typed like vaekit.data.TensorImageDataset: `.x`, `.labels` and `binarize`."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, binarize: str | None = None):
        self.x, self.labels, self.binarize = x, labels, binarize

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> Any:  # the fast path never calls this
        raise AssertionError("the in-memory fast path must not read examples one by one")


def test_dataset_with_x_and_labels_takes_the_fast_path_and_binarizes() -> None:
    seen: list[torch.Tensor] = []

    class Spy(vaekit.MLPVAE):
        def forward(self, x: torch.Tensor, y: Any = None, **kwargs: Any) -> Any:
            if self.training:
                seen.append(x.detach())
            return super().forward(x, y, **kwargs)

    torch.manual_seed(0)
    model = Spy(input_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,), num_classes=4)
    x, labels = make_images(64)
    data = ImageTensors(x, labels, binarize="dynamic")
    history = Trainer(model, data, config=make_config(max_epochs=1)).fit()
    assert history[0]["step"] == 2
    assert all(set(torch.unique(b).tolist()) <= {0.0, 1.0} for b in seen)


def test_compile_trains_and_saves_the_plain_module(tmp_path: Any) -> None:
    model = make_model()
    config = make_config(max_epochs=2, compile=True, output_dir=str(tmp_path))
    history = Trainer(model, make_dataset(128), config=config).fit()
    assert all(math.isfinite(h["train_loss"]) for h in history)
    assert type(model) is vaekit.MLPVAE
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "model.safetensors")
    assert saved.keys() == model.state_dict().keys(), "no _orig_mod. prefixes"
