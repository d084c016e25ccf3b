"""Concurrency: two trainings pointed at the same output_dir.

Threat: a second run started on a directory a live run is writing into (by mistake, or by a
job scheduler retrying too early) deletes or interleaves the first run's checkpoints
(``overwrite=True`` even clears them). Outcome: the Trainer holds an exclusive lock on
``output_dir`` for the whole of ``fit``; the second run is refused with
``OutputDirLockedError`` naming the pid that holds it, before it touches any file. The lock dies
with its process, so a run killed with SIGKILL never leaves a stale lock behind.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from robust_helpers import python, tiny_config, tiny_data, tiny_model

from vaekit.training import Callback, Trainer
from vaekit.training.checkpoint import LOCK_NAME, OutputDirLockedError, list_checkpoints


class _StartSecondRun(Callback):
    """Starts a second Trainer on the same output_dir from inside the first one's fit."""

    def __init__(self, out: Path):
        self.out = out
        self.error: BaseException | None = None
        self.checkpoints_seen: list[str] = []

    def on_epoch_end(self, trainer, metrics):  # type: ignore[no-untyped-def]
        if self.error is not None:
            return
        self.checkpoints_seen = [p.name for p in list_checkpoints(self.out / "checkpoints")]
        second = Trainer(
            tiny_model(1), tiny_data(), config=tiny_config(output_dir=str(self.out), overwrite=True)
        )
        try:
            second.fit()
        except OutputDirLockedError as err:
            self.error = err


def test_second_run_on_a_live_output_dir_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    """Threat: a second run with overwrite=True wipes a live run's checkpoints. Outcome: it is
    refused with a message naming the holder's pid; the first run's checkpoints survive and
    the first run finishes normally."""
    import os

    out = tmp_path / "run"
    probe = _StartSecondRun(out)
    cfg = tiny_config(output_dir=str(out), max_epochs=2, checkpoint_every_steps=1)
    Trainer(tiny_model(), tiny_data(), config=cfg, callbacks=[probe]).fit()
    assert isinstance(probe.error, OutputDirLockedError)
    message = str(probe.error)
    assert f"pid {os.getpid()}" in message and "another training run" in message
    assert probe.checkpoints_seen, "the first run had written checkpoints before the second"
    # The refused run deleted nothing: every checkpoint seen then is either still there or was
    # pruned by the first run's own keep_last policy; the final model exists.
    assert (out / "model.safetensors").is_file()
    assert list_checkpoints(out / "checkpoints")


def test_lock_is_released_after_fit_and_after_a_failing_fit(tmp_path: Path) -> None:
    """Threat: a lock that outlives its run blocks every later run (or resume). Outcome: it is
    released when fit returns and when fit raises."""
    out = tmp_path / "run"
    Trainer(tiny_model(), tiny_data(), config=tiny_config(output_dir=str(out))).fit()
    # A failing fit (resume from a directory without checkpoints) releases it too.
    with pytest.raises(FileNotFoundError):
        Trainer(tiny_model(), tiny_data(), config=tiny_config(output_dir=str(tmp_path / "b"))).fit(
            resume_from=tmp_path / "b"
        )
    Trainer(tiny_model(), tiny_data(), config=tiny_config(output_dir=str(tmp_path / "b"))).fit()
    Trainer(tiny_model(), tiny_data(), config=tiny_config(output_dir=str(out), max_epochs=2)).fit(
        resume_from=out
    )


def test_lock_held_by_another_process_refuses_and_dies_with_it(tmp_path: Path) -> None:
    """Threat: (a) another *process* writing into the directory; (b) a stale lock left by a
    process killed with SIGKILL. Outcome: (a) refused, naming that pid; (b) once the holder is
    dead the directory is free again, with no manual clean-up."""
    out = tmp_path / "run"
    out.mkdir()
    child = python(
        "import sys, time; from pathlib import Path\n"
        "from vaekit.training.checkpoint import RunLock\n"
        f"RunLock(Path({str(out)!r})).acquire(); print('locked', flush=True); time.sleep(60)\n",
        stdout=__import__("subprocess").PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"locked"
        trainer = Trainer(tiny_model(), tiny_data(), config=tiny_config(output_dir=str(out)))
        with pytest.raises(OutputDirLockedError, match=f"pid {child.pid}"):
            trainer.fit()
        assert not (out / "checkpoints").exists() and not (out / "train_config.json").exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert (out / LOCK_NAME).read_text().strip() == str(child.pid)  # the stale file is there
    start = time.monotonic()
    Trainer(tiny_model(), tiny_data(), config=tiny_config(output_dir=str(out))).fit()
    assert time.monotonic() - start < 30
    assert (out / "model.safetensors").is_file()
