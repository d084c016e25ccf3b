"""Quickstart: train an MLPVAE on Fashion-MNIST, sample from it, save it, load it back and
evaluate it.

Run:
    python examples/quickstart.py [OUTPUT_DIR]          # default: quickstart_out/

Set VAEKIT_EXAMPLE_TINY=1 for a seconds-long run on a few hundred images (as the tests do).
Writes OUTPUT_DIR/model/ (config.json + model.safetensors) and OUTPUT_DIR/samples.png.
"""

import os
import sys
from pathlib import Path

import torch

import vaekit
from vaekit import viz

TINY = os.environ.get("VAEKIT_EXAMPLE_TINY") == "1"
out = Path(sys.argv[1] if len(sys.argv) > 1 else "quickstart_out")

train = vaekit.data.load_dataset("fashion-mnist", split="train")
test = vaekit.data.load_dataset("fashion-mnist", split="test")
if TINY:
    train, test = train.subset(range(512)), test.subset(range(128))

model = vaekit.MLPVAE(input_shape=(1, 28, 28), latent_dim=16, hidden_dims=(256,))
config = vaekit.TrainConfig(
    max_epochs=1 if TINY else 20,
    batch_size=128,
    lr=1e-3,
    output_dir=str(out / "run"),
    overwrite=True,  # start afresh if the folder holds an earlier run
    save_images=not TINY,
)
trainer = vaekit.Trainer(model, train, eval_data=test, config=config)
history = trainer.fit()
print("last epoch:", history[-1])

# Samples: the means of p(x|z) for z drawn from the prior.
viz.save_image(
    viz.sample_grid(model, n=64, generator=torch.Generator().manual_seed(0)), out / "samples.png"
)

# Save (safetensors + config.json, no pickle) and load back.
model.save_pretrained(out / "model")
loaded = vaekit.AutoVAE.from_pretrained(out / "model")
x = test.x[:8]
assert torch.allclose(loaded.reconstruct(x), model.eval().reconstruct(x))

# ELBO terms and an importance-sampled estimate of -log p(x), in nats per image.
metrics = vaekit.evaluate(loaded, test, num_samples=10 if TINY else 1000)
print({k: metrics[k] for k in ("elbo", "kl", "nll", "active_units")})
