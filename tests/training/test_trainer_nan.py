"""The NaN/Inf guard: raise naming the step, or skip it; never apply or save bad weights."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from trainer_helpers import assert_same_weights, make_config, make_dataset

import vaekit
from vaekit.training import NonFiniteLossError, Trainer


class NaNGrad(torch.autograd.Function):
    """Identity forward, NaN gradient backward: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, float("nan"))


class Faulty(vaekit.MLPVAE):
    """An MLPVAE whose training loss (or gradient) goes bad at given forward calls."""

    bad_calls: tuple[int, ...] = ()
    bad_grad = False
    calls = 0

    def forward(self, x: torch.Tensor, y: Any = None, **kwargs: Any) -> Any:
        out = super().forward(x, y, **kwargs)
        if self.training:
            if self.calls in self.bad_calls:
                if self.bad_grad:
                    out.loss = NaNGrad.apply(out.loss)
                else:
                    out.loss = out.loss * float("nan")
            self.calls += 1
        return out


def faulty(bad_calls: tuple[int, ...], bad_grad: bool = False) -> Faulty:
    torch.manual_seed(0)
    model = Faulty(input_shape=(1, 8, 8), latent_dim=4, hidden_dims=(32,))
    model.bad_calls, model.bad_grad = bad_calls, bad_grad
    return model


@contextlib.contextmanager
def sync_free(on: bool) -> Iterator[None]:
    """Forces the accelerators' sync-free guard (masked fused-Adam steps) on or off."""
    import vaekit.training.trainer as trainer_module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "_use_lazy_guard", lambda *args: on)
        yield


@pytest.mark.parametrize("bad_grad", [False, True], ids=["nan-loss", "nan-grad"])
def test_raise_names_step_batch_and_last_checkpoint(tmp_path: Path, bad_grad: bool) -> None:
    model = faulty((5,), bad_grad)
    config = make_config(max_epochs=3, output_dir=str(tmp_path))
    trainer = Trainer(model, make_dataset(128), config=config)
    with sync_free(False), pytest.raises(NonFiniteLossError) as info:  # the immediate guard
        trainer.fit()
    err = info.value
    assert (err.step, err.epoch, err.batch_index) == (5, 2, 1)
    assert err.last_checkpoint == tmp_path / "checkpoints" / "step-00000004"
    message = str(err)
    assert "step 5 (epoch 2, batch 1)" in message and "step-00000004" in message
    assert isinstance(err, RuntimeError)
    # The bad step was not applied: the weights are those after 5 good steps.
    reference = faulty(())
    Trainer(reference, make_dataset(128), config=make_config(max_steps=5)).fit()
    assert_same_weights(model, reference)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not (tmp_path / "model.safetensors").exists(), "no final model after a failure"
    assert model.validate_inputs is True


def test_skip_policy_counts_skipped_steps_and_finishes(tmp_path: Path) -> None:
    model = faulty((1, 6))
    config = make_config(max_epochs=3, nan_policy="skip", output_dir=str(tmp_path))
    history = Trainer(model, make_dataset(128), config=config).fit()
    assert [h["skipped_steps"] for h in history] == [1, 1, 0]
    assert [h["step"] for h in history] == [4, 8, 12]
    assert all(math.isfinite(h["train_loss"]) for h in history)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert (tmp_path / "model.safetensors").exists()


def test_skip_policy_gives_up_after_too_many_bad_steps_in_a_row() -> None:
    model = faulty(tuple(range(2, 100)))
    config = make_config(max_epochs=3, nan_policy="skip", max_consecutive_skips=3)
    with (
        sync_free(False),
        pytest.raises(NonFiniteLossError, match="4 non-finite steps in a row at step 5"),
    ):
        Trainer(model, make_dataset(128), config=config).fit()


def test_sync_free_guard_skips_exactly_like_the_eager_one() -> None:
    config = make_config(max_epochs=3, nan_policy="skip")
    models, histories = [], []
    for on in (False, True):
        with sync_free(on):
            model = faulty((1, 6), bad_grad=True)
            histories.append(Trainer(model, make_dataset(128), config=config).fit())
            models.append(model)
    assert_same_weights(*models)
    keys = ("step", "train_loss", "kl", "log_px", "grad_norm", "skipped_steps", "lr", "beta")
    eager, lazy = ([{k: h[k] for k in keys} for h in hist] for hist in histories)
    assert eager == lazy
    assert [h["skipped_steps"] for h in lazy] == [1, 1, 0]


def test_sync_free_guard_raises_at_the_next_check_naming_the_bad_step() -> None:
    model = faulty((5,))
    config = make_config(max_epochs=3, log_every_steps=4)
    with (
        sync_free(True),
        pytest.raises(NonFiniteLossError, match=r"at step 5 \(epoch 2, batch 1\), detected at"),
    ):
        Trainer(model, make_dataset(128), config=config).fit()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_sync_free_guard_gives_up_after_too_many_bad_steps_in_a_row() -> None:
    model = faulty(tuple(range(2, 100)))
    config = make_config(max_epochs=3, nan_policy="skip", max_consecutive_skips=3)
    with (
        sync_free(True),
        pytest.raises(NonFiniteLossError, match="non-finite steps in a row"),
    ):
        Trainer(model, make_dataset(128), config=config).fit()
    assert all(torch.isfinite(p).all() for p in model.parameters())
