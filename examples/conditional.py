"""A conditional VAE (num_classes=10): p(x|z, y) and q(z|x, y) see the class label, so you
can ask for samples of one class.

Run:
    python examples/conditional.py [OUTPUT_DIR]         # default: conditional_out/

Set VAEKIT_EXAMPLE_TINY=1 for a seconds-long run on a few hundred images (as the tests do).
Writes OUTPUT_DIR/samples_per_class.png: one row of 8 samples per Fashion-MNIST class.
"""

import os
import sys
from pathlib import Path

import torch

import vaekit
from vaekit import viz

TINY = os.environ.get("VAEKIT_EXAMPLE_TINY") == "1"
out = Path(sys.argv[1] if len(sys.argv) > 1 else "conditional_out")
out.mkdir(parents=True, exist_ok=True)

# The dataset yields (x, label) pairs; the Trainer passes the labels on as y.
train = vaekit.data.load_dataset("fashion-mnist", split="train")
if TINY:
    train = train.subset(range(500))

model = vaekit.MLPVAE(input_shape=(1, 28, 28), latent_dim=8, hidden_dims=(256,), num_classes=10)
config = vaekit.TrainConfig(max_epochs=1 if TINY else 20, batch_size=128, progress=not TINY)
vaekit.Trainer(model, train, config=config).fit()

# Samples per class: the same 8 latent codes decoded under each label, one row per class.
generator = torch.Generator().manual_seed(0)
rows = [model.sample(8, y=c, generator=generator.manual_seed(0)) for c in range(10)]
grid = viz.image_grid(torch.stack(rows))  # (10, 8, C, H, W) -> one picture, 10 rows
viz.save_image(grid, out / "samples_per_class.png")
for c, name in enumerate(train.class_names):
    print(f"row {c}: {name}")
