"""Numerical faults: targets on the edge of the support, huge activations, half precision.

Threats and outcomes:

- Targets at the edges of each likelihood's support (exact 0 and 1 for the Bernoulli and
  continuous Bernoulli, 0 and 255/255 for the discretized logistic), with ordinary and with
  extreme decoder outputs (decoder weights scaled by 1e4): the loss *and every gradient* stay
  finite in float32 and under bfloat16 autocast. (Before this suite, the discretized logistic
  gave a finite loss but NaN gradients for a very wide logistic: ``log(-expm1(0))`` in the
  ``torch.where`` branch it discarded.)
- Overflow that cannot be avoided (float16 activations above 65504) or weights that turn NaN
  during training: the Trainer's guard stops with ``NonFiniteLossError`` and a message saying
  where it happened and which checkpoint is the last good one; no file it leaves on disk holds a
  NaN/Inf, and that checkpoint resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from robust_helpers import tiny_config, tiny_data, tiny_model
from safetensors.torch import load_file

import vaekit
from vaekit import NonFiniteLossError
from vaekit.training import Callback, Trainer, find_latest_checkpoint

LIKELIHOODS = {
    "bernoulli": {},
    "continuous_bernoulli": {},
    "discretized_logistic": {"num_mixtures": 2},
    "gaussian_learned": {"scale": "learned"},
    "gaussian_per_pixel": {"scale": "per_pixel"},
    "laplace_per_pixel": {"scale": "per_pixel"},
}


def _model(arch: str, likelihood: str, decoder_scale: float) -> vaekit.VAE:
    name = likelihood.split("_per_pixel")[0].removesuffix("_learned")
    kwargs: dict[str, Any] = {"likelihood": name, "likelihood_kwargs": LIKELIHOODS[likelihood]}
    torch.manual_seed(0)
    if arch == "mlp":
        model: vaekit.VAE = vaekit.MLPVAE(
            input_shape=(1, 4, 4), latent_dim=2, hidden_dims=(8,), **kwargs
        )
    else:
        model = vaekit.ConvVAE(input_shape=(1, 4, 4), latent_dim=2, channels=(4,), **kwargs)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("decoder"):
                param.mul_(decoder_scale)
    return model


def _edges(kind: str) -> torch.Tensor:
    if kind == "zeros":
        return torch.zeros(4, 1, 4, 4)
    if kind == "ones":
        return torch.ones(4, 1, 4, 4)  # 255/255 exactly
    g = torch.Generator().manual_seed(0)
    return (torch.rand(4, 1, 4, 4, generator=g) > 0.5).float()


def _finite_step(model: vaekit.VAE, x: torch.Tensor, autocast: torch.dtype | None) -> None:
    model.zero_grad()
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        out = model(x)
    assert torch.isfinite(out.loss), f"loss {out.loss}"
    out.loss.backward()
    bad = [
        n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()
    ]
    assert not bad, f"non-finite gradients in {bad} (loss {out.loss.item()})"


@pytest.mark.parametrize("autocast", [None, torch.bfloat16], ids=["fp32", "bf16_autocast"])
@pytest.mark.parametrize("decoder_scale", [1.0, 1e4], ids=["normal", "decoder_x1e4"])
@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_support_edges_and_huge_activations_give_finite_loss_and_gradients(
    arch: str, likelihood: str, decoder_scale: float, autocast: torch.dtype | None
) -> None:
    """Targets exactly 0 and 1 (every one, and mixed), decoder outputs ordinary or ~1e4x too
    large: finite loss and finite gradient for every parameter."""
    model = _model(arch, likelihood, decoder_scale)
    for kind in ("zeros", "ones", "mixed"):
        _finite_step(model, _edges(kind), autocast)


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_float16_autocast_is_finite_for_ordinary_outputs(likelihood: str) -> None:
    """float16 autocast with ordinary decoder outputs: the likelihoods compute in float32, so
    the loss is finite at the support's edges. (Activations over 65504 overflow in the
    decoder's own float16 matmul; that case is the Trainer guard's job, tested below.)"""
    model = _model("mlp", likelihood, 1.0)
    for kind in ("zeros", "ones", "mixed"):
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(_edges(kind))
        assert torch.isfinite(out.loss), (kind, out.loss)


def _all_files_finite(out: Path) -> int:
    files = list(out.rglob("*.safetensors"))
    for path in files:
        for key, tensor in load_file(path).items():
            if tensor.is_floating_point():
                assert tensor.isfinite().all(), f"{path}: {key} holds NaN/Inf"
    return len(files)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_overflow_stops_with_a_clear_error(tmp_path: Path, precision: str) -> None:
    """Decoder weights x1e4 under fp16/bf16 training: the first step overflows; the Trainer
    stops before applying it, says so, and writes no non-finite weights."""
    model = tiny_model(0, likelihood="gaussian", likelihood_kwargs={"scale": "per_pixel"})
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("decoder"):
                param.mul_(1e4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = tiny_config(output_dir=str(tmp_path), precision=precision, checkpoint_every_steps=1)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss or gradient at step 0") as info:
        Trainer(model, tiny_data(), config=cfg).fit()
    # The message must not tell a user who did set output_dir to set it.
    assert "no checkpoint was written in" in str(info.value), str(info.value)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a bad step was applied"
    _all_files_finite(tmp_path)


class _PoisonAt(Callback):
    """Turns one decoder weight into NaN after ``step`` steps (a corrupted update)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, metrics):  # type: ignore[no-untyped-def]
        if trainer.step == self.step:
            with torch.no_grad():
                next(p for n, p in trainer.model.named_parameters() if "decoder" in n).view(-1)[
                    0
                ] = float("nan")


@pytest.mark.parametrize("nan_policy", ["raise", "skip"])
def test_nan_weights_are_never_saved_and_the_last_good_checkpoint_resumes(
    tmp_path: Path, nan_policy: str
) -> None:
    """Weights turn NaN mid-run (checkpoint every step): the guard stops the run naming the last
    good checkpoint; every file on disk is finite; that checkpoint resumes and, with the
    poison gone, trains to the end with finite weights."""
    out = tmp_path / "run"
    cfg = tiny_config(
        output_dir=str(out),
        max_epochs=2,
        checkpoint_every_steps=1,
        nan_policy=nan_policy,
        max_consecutive_skips=2,
    )
    with pytest.raises(NonFiniteLossError) as info:
        Trainer(tiny_model(), tiny_data(), config=cfg, callbacks=[_PoisonAt(3)]).fit()
    message = str(info.value)
    last = info.value.last_checkpoint
    assert last is not None and str(last) in message, message
    assert find_latest_checkpoint(out) == last
    assert _all_files_finite(out) >= 1
    trainer = Trainer(tiny_model(), tiny_data(), config=cfg)
    trainer.fit(resume_from=out)
    assert trainer.step == 8
    assert all(p.isfinite().all() for p in trainer.model.parameters())
    _all_files_finite(out)
