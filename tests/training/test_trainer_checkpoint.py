"""Checkpoints: bit-exact resume, crash safety (SIGKILL), corruption detection, layout."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset
from trainer_helpers import (
    DEVICE,
    PRECISIONS,
    PlainDataset,
    assert_same_weights,
    make_config,
    make_dataset,
    make_images,
    make_model,
)

import vaekit
from vaekit.training import Callback, Trainer, find_latest_checkpoint

SRC = str(Path(vaekit.__file__).resolve().parents[1])
TIMING_KEYS = {"images_per_s", "epoch_time_s"}


def without_timing(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


def load_model_dir(path: Path) -> vaekit.VAE:
    """Loads a directory in the save_pretrained layout, as users do."""
    return vaekit.AutoVAE.from_pretrained(path)


class StopAt(Callback):
    """Requests a stop after a given step (a run interrupted mid-epoch)."""

    def __init__(self, step: int):
        self.at = step

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if metrics["step"] == self.at:
            trainer.should_stop = True


@pytest.mark.parametrize("precision", PRECISIONS)
def test_resume_at_epoch_boundary_is_bit_exact(tmp_path: Path, precision: str) -> None:
    data, test = make_dataset(128), make_dataset(32, seed=1)
    straight = make_model()
    h_straight = Trainer(straight, data, test, make_config(max_epochs=3, precision=precision)).fit()

    resumed = make_model()
    config = make_config(max_epochs=1, precision=precision, output_dir=str(tmp_path))
    Trainer(resumed, data, test, config).fit()
    fresh = make_model(seed=99)  # a new process would start from other weights: they get loaded
    config3 = make_config(max_epochs=3, precision=precision, output_dir=str(tmp_path))
    h_resumed = Trainer(fresh, data, test, config3).fit(resume_from=tmp_path)
    assert_same_weights(straight, fresh)
    assert without_timing(h_resumed) == without_timing(h_straight)


@pytest.mark.parametrize("kind", ["memory", "dataset", "dataloader"])
def test_resume_mid_epoch_is_bit_exact(tmp_path: Path, kind: str) -> None:
    """Interrupted at step 7 of 4-step epochs, with every random and scheduled piece on."""
    x, _ = make_images(128)

    def data() -> Any:
        if kind == "memory":
            return TensorDataset(x)
        if kind == "dataset":
            return PlainDataset(x)
        return DataLoader(
            PlainDataset(x), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(5)
        )

    def config(out: Path | None) -> vaekit.TrainConfig:
        return make_config(
            max_epochs=3,
            lr_warmup_steps=3,
            lr_schedule="cosine",
            beta_schedule="linear",
            kl_warmup_steps=5,
            binarize=True,
            checkpoint_every_steps=3,
            output_dir=str(out) if out else None,
        )

    straight = make_model(dropout=0.2)
    h_straight = Trainer(straight, data(), make_dataset(32, seed=1), config(None)).fit()

    first = make_model(dropout=0.2)
    Trainer(first, data(), make_dataset(32, seed=1), config(tmp_path), [StopAt(7)]).fit()
    assert find_latest_checkpoint(tmp_path).name == "step-00000007"
    second = make_model(seed=1, dropout=0.2)
    h_resumed = Trainer(second, data(), make_dataset(32, seed=1), config(tmp_path)).fit(
        resume_from=tmp_path
    )
    assert_same_weights(straight, second)
    assert without_timing(h_resumed) == without_timing(h_straight)


def test_checkpoint_layout_is_loadable_and_pickle_free(tmp_path: Path) -> None:
    model = make_model()
    config = make_config(max_epochs=4, keep_last=2, output_dir=str(tmp_path))
    history = Trainer(model, make_dataset(128), make_dataset(64, seed=1), config).fit()
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert checkpoints == ["step-00000012", "step-00000016"], "keep_last=2"
    newest = tmp_path / "checkpoints" / "step-00000016"
    names = sorted(p.name for p in newest.iterdir())
    assert names == [
        "config.json",
        "manifest.json",
        "model.safetensors",
        "train_state.json",
        "train_state.safetensors",
    ]
    every_file = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in every_file if p.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt")]
    state = json.loads((newest / "train_state.json").read_text())
    assert state["step"] == 16 and state["train_config"]["max_epochs"] == 4
    tensors = load_file(newest / "train_state.safetensors")
    assert any(k.startswith("state.optimizer.state.") for k in tensors)
    assert any(k.startswith("state.rng.rank0.torch_cpu") for k in tensors)
    # The final model (root), the newest checkpoint and the best model all load.
    for path in (tmp_path, newest, tmp_path / "best"):
        loaded = load_model_dir(path)
        assert isinstance(loaded, vaekit.MLPVAE)
    assert_same_weights(load_model_dir(tmp_path).to(DEVICE), model)
    # best/ holds the weights of the epoch with the lowest eval loss.
    best_metrics = json.loads((tmp_path / "best" / "metrics.json").read_text())
    best_loss = min(h["eval_loss"] for h in history)
    assert best_metrics["eval_loss"] == best_loss
    best_model = load_model_dir(tmp_path / "best")
    again = Trainer(best_model, make_dataset(128), config=make_config()).evaluate(
        make_dataset(64, seed=1)
    )
    assert again["loss"] == pytest.approx(best_loss, rel=1e-6)
    assert (tmp_path / "README.md").is_file()
    assert json.loads((tmp_path / "train_config.json").read_text())["max_epochs"] == 4


def test_corrupted_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = make_dataset(128)
    straight = make_model()
    Trainer(straight, data, config=make_config(max_epochs=4)).fit()

    config = make_config(max_epochs=3, keep_last=3, output_dir=str(tmp_path))
    Trainer(make_model(), data, config=config).fit()
    newest = tmp_path / "checkpoints" / "step-00000012"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    middle = tmp_path / "checkpoints" / "step-00000008" / "train_state.json"
    text = middle.read_text()
    middle.write_text(text.replace('"step": 8', '"step": 9'))  # silently edited

    resumed = make_model(seed=3)
    config4 = make_config(max_epochs=4, keep_last=3, output_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="vaekit"):
        trainer = Trainer(resumed, data, config=config4)
        history = trainer.fit(resume_from=tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("step-00000012" in w and "model.safetensors" in w for w in warnings)
    assert any("step-00000008" in w and "train_state.json" in w for w in warnings)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert_same_weights(straight, resumed)


def test_incomplete_checkpoints_are_ignored(tmp_path: Path) -> None:
    config = make_config(max_epochs=1, output_dir=str(tmp_path))
    Trainer(make_model(), make_dataset(64), config=config).fit()
    ckpts = tmp_path / "checkpoints"
    # What a crash mid-write leaves: a temp dir, and a step dir without its manifest.
    (ckpts / ".step-00000099.tmp-abc").mkdir()
    (ckpts / ".step-00000099.tmp-abc" / "model.safetensors").write_bytes(b"junk")
    (ckpts / "step-00000050").mkdir()
    (ckpts / "step-00000050" / "config.json").write_text("{}")
    assert find_latest_checkpoint(tmp_path).name == "step-00000002"
    history = Trainer(
        make_model(), make_dataset(64), config=make_config(max_epochs=2, output_dir=str(tmp_path))
    ).fit(resume_from=tmp_path)
    assert [h["step"] for h in history] == [2, 4]
    assert not (ckpts / ".step-00000099.tmp-abc").exists(), "stale temp dirs are cleaned up"


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    trainer = Trainer(make_model(), make_dataset(64), config=make_config())
    with pytest.raises(FileNotFoundError, match="no valid checkpoint found in"):
        trainer.fit(resume_from=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        trainer.fit(resume_from=tmp_path / "nope")


def test_resume_with_a_different_model_is_refused(tmp_path: Path) -> None:
    Trainer(
        make_model(), make_dataset(64), config=make_config(max_epochs=1, output_dir=str(tmp_path))
    ).fit()
    other = make_model(latent_dim=3)
    with pytest.raises(ValueError, match=r"different model.*latent_dim"):
        Trainer(other, make_dataset(64), config=make_config()).fit(resume_from=tmp_path)


def test_existing_run_is_not_overwritten_by_accident(tmp_path: Path) -> None:
    config = make_config(max_epochs=1, output_dir=str(tmp_path))
    Trainer(make_model(), make_dataset(64), config=config).fit()
    with pytest.raises(ValueError, match=r"already holds checkpoints.*resume_from"):
        Trainer(make_model(), make_dataset(64), config=config).fit()
    config_over = make_config(max_epochs=1, output_dir=str(tmp_path), overwrite=True)
    history = Trainer(make_model(), make_dataset(64), config=config_over).fit()
    assert history[-1]["step"] == 2


def test_resume_from_infers_output_dir(tmp_path: Path) -> None:
    Trainer(
        make_model(), make_dataset(64), config=make_config(max_epochs=1, output_dir=str(tmp_path))
    ).fit()
    Trainer(make_model(), make_dataset(64), config=make_config(max_epochs=2)).fit(
        resume_from=tmp_path
    )
    assert find_latest_checkpoint(tmp_path).name == "step-00000004"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]


SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {src!r})
    sys.path.insert(0, {tests!r})
    from trainer_helpers import make_config, make_dataset, make_model
    from vaekit.training import Callback, Trainer

    class Slow(Callback):
        def on_step_end(self, trainer, metrics):
            time.sleep(0.1)

    def train(out, resume, callbacks):
        config = make_config(max_epochs=6, checkpoint_every_steps=2, device="cpu",
                             output_dir=out, log_every_steps=1)
        model = make_model()
        trainer = Trainer(model, make_dataset(128), make_dataset(32, seed=1), config,
                          callbacks=callbacks)
        trainer.fit(resume_from=out if resume else None)
        return model

    mode, out = sys.argv[1], sys.argv[2]
    if mode == "slow":
        train(out, False, [Slow()])
    else:  # resume, then train the same run without interruption for comparison
        train(out, True, [])
        from safetensors.torch import save_file
        model = train(None, False, [])
        save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, sys.argv[3])
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_sigkill_mid_training_leaves_a_resumable_run(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(src=SRC, tests=str(Path(__file__).parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(script), "slow", str(run_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if find_latest_checkpoint(run_dir) is not None:
                break
            if proc.poll() is not None:
                pytest.fail(f"training ended early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
        else:
            pytest.fail("no checkpoint was written in time")
        time.sleep(0.3)  # let it get into the middle of more work
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert not (run_dir / "model.safetensors").exists(), "killed before the end of training"
    killed_at = find_latest_checkpoint(run_dir)
    assert killed_at is not None and int(killed_at.name.split("-")[1]) < 24

    reference = tmp_path / "straight.safetensors"
    subprocess.run(
        [sys.executable, str(script), "resume", str(run_dir), str(reference)],
        env=env,
        check=True,
        timeout=300,
    )
    resumed = load_file(run_dir / "model.safetensors")
    expected = load_file(reference)
    assert resumed.keys() == expected.keys()
    for name in expected:
        assert torch.equal(resumed[name], expected[name]), name
    epochs = [
        json.loads(line)["epoch"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["type"] == "epoch"
    ]
    assert epochs == [1, 2, 3, 4, 5, 6], "the log keeps one record per epoch across the crash"
