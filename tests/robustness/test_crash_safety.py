"""Crash safety: training killed with SIGKILL at random moments, and checkpoints damaged on disk.

Threat: a training process dies without warning (OOM killer, preemption, power loss) at any
instant: during set-up, between steps, or in the middle of writing a checkpoint. Outcome: the
output directory always resumes, and the resumed run reaches the same final weights as a run
that was never interrupted (CPU, bit-exact, ``torch.equal``).

How: importing torch costs seconds, so the kills are driven by a *fork server*: a child Python
imports torch and vaekit once, then forks one process per attempt; each forked process runs
``Trainer.fit`` (resuming when the directory has checkpoints) and is sent SIGKILL after a
random delay drawn from a seeded RNG (``checkpoint_every_steps=1``, so a good share of the kills
land inside a checkpoint write; the test counts how many left a half-written checkpoint behind).
Every forked process is a real, separate process killed by the kernel, as in production.

Threat: a checkpoint file truncated or with a flipped bit (disk or copy error). Outcome: resume
warns naming the damaged checkpoint and what is wrong with it, and continues from the previous
good one, again to the same final weights.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from robust_helpers import python, state_equal, tiny_config, tiny_data, tiny_model
from safetensors.torch import load_file

from vaekit.training import Trainer
from vaekit.training.checkpoint import find_latest_checkpoint, list_checkpoints

KILLS = 24

# Runs inside the fork server. Reads one JSON command per line: {"out", "delay"}; forks a
# process that trains into "out" and kills it with SIGKILL after "delay" seconds (null: never);
# answers {"killed", "rc", "elapsed"}.
_SERVER = r"""
import json, os, signal, sys, time
sys.path.insert(0, {helpers!r})
import torch
torch.set_num_threads(1)
from robust_helpers import tiny_config, tiny_data, tiny_model
from vaekit.training import Trainer, find_latest_checkpoint

def die_at_fsync(n):
    # Every fsync (of a checkpoint file, of its directory, of the rename) is a kill point:
    # the n-th one sends SIGKILL to this process before it happens.
    real, calls = os.fsync, [0]
    def fsync(fd):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        real(fd)
    os.fsync = fsync

def train(out):
    # What a job script does: resume when there is a checkpoint, else start (again). A run
    # killed before its first checkpoint was complete has nothing to resume, and
    # fit(resume_from=...) says so (FileNotFoundError); the test counts those kills.
    resume = find_latest_checkpoint(out) is not None
    cfg = tiny_config(output_dir=out, max_epochs=3, checkpoint_every_steps=1, keep_last=2)
    Trainer(tiny_model(0), tiny_data(), config=cfg).fit(resume_from=out if resume else None)

print("ready", flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            if cmd.get("die_at") is not None:
                die_at_fsync(cmd["die_at"])
            train(cmd["out"])
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code)
    killed, status = False, None
    if cmd["delay"] is not None:
        deadline = start + cmd["delay"]
        while time.monotonic() < deadline:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            time.sleep(0.002)
        else:
            os.kill(pid, signal.SIGKILL)
            killed = True
    if status is None:
        _, status = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    print(json.dumps({{"killed": killed, "rc": rc, "elapsed": time.monotonic() - start}}),
          flush=True)
"""


class ForkServer:
    def __init__(self, log: Path):
        self.log = log
        self._stderr = log.open("wb")
        code = _SERVER.format(helpers=str(Path(__file__).parent))
        self.proc = python(code, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == b"ready", self.errors()

    def run(self, out: Path, delay: float | None, die_at: int | None = None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        command = {"out": str(out), "delay": delay, "die_at": die_at}
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the fork server died: {self.errors()}"
        return json.loads(line)

    def errors(self) -> str:
        self._stderr.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self._stderr.close()


def _half_written(out: Path) -> bool:
    ckpts = out / "checkpoints"
    return ckpts.is_dir() and any(p.name.startswith(".step-") for p in ckpts.iterdir())


@pytest.mark.slow
def test_sigkill_at_random_moments_always_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """At least 20 SIGKILLs at random delays, resumed until done: every run directory resumes
    and finishes with weights bit-identical to the uninterrupted run's."""
    server = ForkServer(tmp_path / "server.log")
    try:
        reference = server.run(tmp_path / "reference", None)
        assert reference["rc"] == 0, server.errors()
        want = load_file(tmp_path / "reference" / "model.safetensors")
        want_ckpt = load_file(
            list_checkpoints(tmp_path / "reference" / "checkpoints")[-1] / "model.safetensors"
        )
        duration = reference["elapsed"]
        rng = random.Random(20261126)
        kills = half_written = finished = before_first = 0
        run_index = 0
        out = tmp_path / f"run-{run_index}"
        attempts = 0
        while kills < KILLS:
            attempts += 1
            assert attempts < 10 * KILLS, "kills kept missing the training window"
            result = server.run(out, rng.uniform(0.0, 1.1 * duration))
            if result["killed"]:
                kills += 1
                half_written += _half_written(out)
                before_first += find_latest_checkpoint(out) is None
                continue
            assert result["rc"] == 0, f"resume of {out} failed:\n{server.errors()}"
            finished += 1
            assert state_equal(load_file(out / "model.safetensors"), want), out
            run_index += 1
            out = tmp_path / f"run-{run_index}"
        if (out / "checkpoints").exists() or out.exists():
            result = server.run(out, None)  # finish the last, interrupted run
            assert result["rc"] == 0, f"resume of {out} failed:\n{server.errors()}"
            assert state_equal(load_file(out / "model.safetensors"), want), out
            last = list_checkpoints(out / "checkpoints")[-1] / "model.safetensors"
            assert state_equal(load_file(last), want_ckpt)
            finished += 1
    finally:
        server.close()
    logging.getLogger(__name__).warning(
        "crash safety: %d SIGKILLs survived (%d inside a checkpoint write, %d before the first "
        "complete checkpoint: restarted), %d runs finished bit-exact; uninterrupted run %.2f s",
        kills,
        half_written,
        before_first,
        finished,
        duration,
    )
    assert kills >= 20 and finished >= 1


@pytest.mark.slow
def test_sigkill_inside_checkpoint_writes_always_resumes_to_the_same_weights(
    tmp_path: Path,
) -> None:
    """Deterministic kills *inside* checkpoint writes: the process SIGKILLs itself at its n-th
    fsync (between the files of a checkpoint, before and after its rename, inside the final
    model write), for n spread over the whole run; each directory resumes to the same final
    weights as the uninterrupted run."""
    server = ForkServer(tmp_path / "server.log")
    half_written = 0
    points = list(range(2, 80, 8))
    try:
        assert server.run(tmp_path / "reference", None)["rc"] == 0, server.errors()
        want = load_file(tmp_path / "reference" / "model.safetensors")
        for n in points:
            out = tmp_path / f"die-at-{n}"
            result = server.run(out, None, die_at=n)
            assert result["rc"] == -9, f"fsync {n} was never reached: {result}"
            half_written += _half_written(out)
            if n > 12:  # past the first checkpoint: a real resume
                assert find_latest_checkpoint(out) is not None, n
            result = server.run(out, None)
            assert result["rc"] == 0, f"resume after fsync {n} failed:\n{server.errors()}"
            assert state_equal(load_file(out / "model.safetensors"), want), n
    finally:
        server.close()
    logging.getLogger(__name__).warning(
        "crash safety: %d SIGKILLs at fsync points %s survived (%d left a half-written "
        "checkpoint behind)",
        len(points),
        points,
        half_written,
    )
    assert half_written >= len(points) // 3, "the kills did not land inside checkpoint writes"


# ---- damaged checkpoints ------------------------------------------------------------------


def _train(out: Path, resume: bool = False) -> Trainer:
    cfg = tiny_config(output_dir=str(out), max_epochs=2, checkpoint_every_steps=1, keep_last=3)
    trainer = Trainer(tiny_model(0), tiny_data(), config=cfg)
    trainer.fit(resume_from=out if resume else None)
    return trainer


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - 3] ^= 0x10  # inside the tensor data, so the header still parses
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_bit], ids=["truncated", "bit_flipped"])
@pytest.mark.parametrize("filename", ["model.safetensors", "train_state.safetensors"])
def test_damaged_checkpoint_is_detected_and_the_previous_one_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any, filename: str
) -> None:
    """A damaged newest checkpoint is named in a warning, skipped, and the run resumes from the
    previous good one to the same final weights as an undamaged run."""
    want = _train(tmp_path / "reference").model.state_dict()
    out = tmp_path / "run"
    _train(out)
    # Roll the run back to "killed after step 6": drop later checkpoints, damage step 6.
    checkpoints = list_checkpoints(out / "checkpoints")
    newest, previous = checkpoints[-2], checkpoints[-3]
    shutil.rmtree(checkpoints[-1])
    damage(newest / filename)
    caplog.set_level(logging.INFO, logger="vaekit")
    trainer = _train(out, resume=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        str(newest) in w and filename in w and "sha256" in w and "truncated or corrupted" in w
        for w in warnings
    ), warnings
    assert any(f"resumed from {previous}" in r.getMessage() for r in caplog.records)
    got = trainer.model.state_dict()
    assert state_equal(got, want)


def test_all_checkpoints_damaged_is_a_clear_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When no checkpoint is good, resume refuses with FileNotFoundError and each damaged
    checkpoint is named in a warning; nothing is trained from scratch silently."""
    out = tmp_path / "run"
    _train(out)
    checkpoints = list_checkpoints(out / "checkpoints")
    for path in checkpoints:
        _flip_bit(path / "model.safetensors")
    caplog.set_level(logging.WARNING, logger="vaekit")
    with pytest.raises(FileNotFoundError, match="no valid checkpoint"):
        _train(out, resume=True)
    named = " ".join(r.getMessage() for r in caplog.records)
    assert all(str(p) in named for p in checkpoints)
