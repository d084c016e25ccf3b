"""Callbacks and logs: hook order, early stopping, JSONL log, image grids, TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from trainer_helpers import Recorder, make_config, make_dataset, make_model

from vaekit.training import Callback, EarlyStopping, Trainer


def test_hooks_are_called_in_order() -> None:
    recorder = Recorder()
    config = make_config(max_epochs=2, log_every_steps=2)
    Trainer(make_model(), make_dataset(128), make_dataset(32, seed=1), config, [recorder]).fit()
    epoch = ["step", "step", "log", "step", "step", "log", "eval", "epoch"]
    assert recorder.calls == ["fit_start", *epoch, *epoch, "fit_end"]
    assert [s["step"] for s in recorder.steps] == list(range(1, 9))
    assert [s["batch"] for s in recorder.steps] == [0, 1, 2, 3] * 2
    assert all(isinstance(s["loss"], torch.Tensor) for s in recorder.steps)


def test_eval_every_epochs_and_at_the_end() -> None:
    recorder = Recorder()
    config = make_config(max_epochs=3, eval_every_epochs=2)
    history = Trainer(
        make_model(), make_dataset(64), make_dataset(32, seed=1), config, [recorder]
    ).fit()
    assert ["eval_loss" in h for h in history] == [False, True, True]
    assert recorder.calls.count("eval") == 2


def test_early_stopping_stops_when_eval_loss_stalls(tmp_path: Path) -> None:
    config = make_config(
        max_epochs=20,
        lr=1e-6,  # nothing improves by more than min_delta
        early_stopping_patience=2,
        early_stopping_min_delta=1.0,
        output_dir=str(tmp_path),
    )
    history = Trainer(make_model(), make_dataset(64), make_dataset(32, seed=1), config).fit()
    assert len(history) == 3, "the first epoch sets the best, two more without improvement"
    assert (tmp_path / "model.safetensors").exists(), "the final model is still written"
    state = json.loads(
        (tmp_path / "checkpoints" / "step-00000006" / "train_state.json").read_text()
    )
    (saved,) = [v for k, v in state["callbacks"].items() if k.endswith("EarlyStopping")]
    assert saved["wait"] == 2 and saved["stopped_epoch"] == 3


def test_early_stopping_callback_directly() -> None:
    stopper = EarlyStopping(patience=1, monitor="train_loss")

    class Fake:
        should_stop = False

    fake: Any = Fake()
    stopper.on_epoch_end(fake, {"epoch": 1, "train_loss": 10.0})
    stopper.on_epoch_end(fake, {"epoch": 2, "train_loss": 9.0})
    assert not fake.should_stop
    stopper.on_epoch_end(fake, {"epoch": 3, "train_loss": 9.5})
    assert fake.should_stop and stopper.stopped_epoch == 3
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)


def test_callback_can_stop_training() -> None:
    class Stop(Callback):
        def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
            if metrics["step"] == 3:
                trainer.should_stop = True

    trainer = Trainer(make_model(), make_dataset(128), config=make_config(), callbacks=[Stop()])
    history = trainer.fit()
    assert history[-1]["step"] == 3 and history[-1]["partial_epoch"] is True


def test_jsonl_log_has_step_and_epoch_records(tmp_path: Path) -> None:
    config = make_config(max_epochs=2, log_every_steps=2, output_dir=str(tmp_path))
    history = Trainer(make_model(), make_dataset(128), make_dataset(32, seed=1), config).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["step"] for r in steps] == [2, 4, 6, 8]
    for r in steps:
        assert {"loss", "kl", "log_px", "beta", "lr", "images_per_s", "epoch"} <= set(r)
        assert r["loss"] > 40 and r["kl"] > 0, "each record holds the means of its own steps"
        assert r["loss"] == pytest.approx(r["kl"] - r["log_px"], rel=1e-5)
    for epoch, entry in enumerate(history, start=1):
        # Two windows of two equal batches each make up the epoch: their mean is its loss.
        windows = [r["loss"] for r in steps if r["epoch"] == epoch]
        assert sum(windows) / 2 == pytest.approx(entry["train_loss"], rel=1e-5)
    assert steps[0]["loss"] > steps[-1]["loss"], "the loss of later windows is lower"
    assert [{k: v for k, v in r.items() if k != "type"} for r in epochs] == history
    for key in ("train_loss", "eval_loss", "kl", "log_px", "beta", "lr", "images_per_s"):
        assert key in epochs[0]


def test_image_grids_are_saved_as_png(tmp_path: Path) -> None:
    config = make_config(max_epochs=2, save_images=True, output_dir=str(tmp_path))
    Trainer(make_model(), make_dataset(64), make_dataset(16, seed=1), config).fit()
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert names == [
        "epoch-0001-reconstructions.png",
        "epoch-0001-samples.png",
        "epoch-0002-reconstructions.png",
        "epoch-0002-samples.png",
    ]
    for name in names:
        assert (tmp_path / "images" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_files_without_output_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Trainer(make_model(), make_dataset(64), config=make_config(save_images=True)).fit()
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_event_files(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra")
    config = make_config(max_epochs=1, tensorboard=True, output_dir=str(tmp_path))
    Trainer(make_model(), make_dataset(64), config=config).fit()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_tensorboard_needs_output_dir() -> None:
    with pytest.raises(ValueError, match="tensorboard=True needs an output_dir"):
        Trainer(make_model(), make_dataset(64), config=make_config(tensorboard=True))


def test_progress_bar_goes_to_stderr_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    Trainer(make_model(), make_dataset(64), config=make_config(progress=None)).fit()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "", "silent when stderr is not a terminal"
    Trainer(make_model(), make_dataset(64), config=make_config(progress=True)).fit()
    captured = capsys.readouterr()
    assert captured.out == "" and "epoch 1/2" in captured.err
