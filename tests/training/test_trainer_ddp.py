"""DistributedDataParallel: two CPU processes with gloo end with identical weights, and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

import vaekit

SRC = str(Path(vaekit.__file__).resolve().parents[1])

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {src!r})
    sys.path.insert(0, {tests!r})
    from safetensors.torch import save_file
    from trainer_helpers import make_config, make_dataset, make_model
    from vaekit.training import Trainer

    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    def run(epochs, resume):
        model = make_model(seed=0 if not resume else 7 + rank)
        config = make_config(max_epochs=epochs, device="cpu", output_dir=out, binarize=True)
        trainer = Trainer(model, make_dataset(128), make_dataset(40, seed=1), config)
        history = trainer.fit(resume_from=out if resume else None)
        return trainer, model, history
    trainer, _, _ = run(1, False)
    assert trainer.world_size == 2 and trainer.rank == rank
    _, model, history = run(2, True)
    save_file({{k: v.contiguous() for k, v in model.state_dict().items()}},
              os.path.join(out, f"rank{{rank}}.safetensors"))
    with open(os.path.join(out, f"history{{rank}}.json"), "w") as f:
        json.dump([{{k: v for k, v in h.items() if k not in ("images_per_s", "epoch_time_s")}}
                   for h in history], f)
    """
)


def test_two_gloo_processes_end_with_identical_weights(tmp_path: Path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT.format(src=SRC, tests=str(Path(__file__).parent)))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("WORLD_SIZE", None)
    log = tmp_path / "torchrun.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                "2",
                "--standalone",
                str(script),
                str(out),
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            proc.terminate()  # torchrun passes SIGTERM on to its workers
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise AssertionError(f"the 2-process run hung: {log.read_text()[-3000:]}") from None
    assert proc.returncode == 0, log.read_text()[-4000:]
    w0, w1 = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert w0.keys() == w1.keys()
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    h0 = json.loads((out / "history0.json").read_text())
    h1 = json.loads((out / "history1.json").read_text())
    assert h0 == h1, "metrics are reduced over both processes"
    # 128 examples over 2 processes with batch 32: 2 steps per epoch, and both epochs ran.
    assert [h["step"] for h in h0] == [2, 4]
    # The evaluation counts all 40 examples once (20 per process).
    assert all("eval_loss" in h for h in h0)
    final = load_file(out / "model.safetensors")
    for name in w0:
        assert torch.equal(final[name], w0[name]), "rank 0 wrote the final model"
    state = json.loads((out / "checkpoints" / "step-00000004" / "train_state.json").read_text())
    assert state["world_size"] == 2 and set(state["rng"]) == {"rank0", "rank1"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2], "rank 0 logs once"
