"""Data-parallel training: the same Trainer script, started with torchrun, trains on several
processes (one per GPU; gloo on the CPU), each on its own shard of the data.

Run:
    torchrun --standalone --nproc_per_node 2 examples/distributed.py [OUTPUT_DIR]
    python examples/distributed.py                      # the same script, one process

The default OUTPUT_DIR is distributed_out/. Set VAEKIT_EXAMPLE_TINY=1 for a seconds-long
run on a few hundred images (as the tests do). Only rank 0 writes: OUTPUT_DIR/run/
(checkpoints, metrics.jsonl, the final model) and OUTPUT_DIR/model/.
"""

import os
import sys
from pathlib import Path

import vaekit

TINY = os.environ.get("VAEKIT_EXAMPLE_TINY") == "1"
out = Path(sys.argv[1] if len(sys.argv) > 1 else "distributed_out")

train = vaekit.data.load_dataset("fashion-mnist", split="train")
test = vaekit.data.load_dataset("fashion-mnist", split="test")
if TINY:
    train, test = train.subset(range(512)), test.subset(range(128))

model = vaekit.MLPVAE(input_shape=(1, 28, 28), latent_dim=16, hidden_dims=(256,))
config = vaekit.TrainConfig(
    max_epochs=1 if TINY else 20,
    batch_size=64,  # per process: the global batch is 64 * WORLD_SIZE
    device="auto",  # each process takes its own GPU (LOCAL_RANK), or the CPU
    output_dir=str(out / "run"),  # rank 0 writes; the others only train
    overwrite=True,
    save_images=False,
    progress=not TINY,
    seed=0,
)
# Under torchrun the Trainer joins the process group (WORLD_SIZE, RANK, LOCAL_RANK) itself,
# wraps the model in DistributedDataParallel and shards train and eval data by rank.
trainer = vaekit.Trainer(model, train, eval_data=test, config=config)
history = trainer.fit()  # metrics are averaged over all processes

if trainer.is_main_process:
    model.save_pretrained(out / "model")
    print(f"{trainer.world_size} process(es); eval loss {history[-1]['eval_loss']:.1f} nats")
