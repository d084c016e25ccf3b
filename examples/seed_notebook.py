"""The original Keras notebook, in vaekit: a convolutional VAE with a 2-D latent space on
Fashion-MNIST, then four pictures of what it learned.

Run:
    python examples/seed_notebook.py [OUTPUT_DIR]       # default: seed_notebook_out/

Set VAEKIT_EXAMPLE_TINY=1 for a seconds-long run on a few hundred images (as the tests do).
Writes into OUTPUT_DIR: latent_scatter.png (posterior means coloured by class),
manifold.png (the decoded 2-D latent grid), interpolation.png and samples.png.
"""

import os
import sys
from pathlib import Path

import torch

import vaekit
from vaekit import viz

TINY = os.environ.get("VAEKIT_EXAMPLE_TINY") == "1"
out = Path(sys.argv[1] if len(sys.argv) > 1 else "seed_notebook_out")
out.mkdir(parents=True, exist_ok=True)

train = vaekit.data.load_dataset("fashion-mnist", split="train")
test = vaekit.data.load_dataset("fashion-mnist", split="test")
if TINY:
    train, test = train.subset(range(256)), test.subset(range(256))

# The notebook's model: two strided convolutions, latent_dim=2, Bernoulli p(x|z).
model = vaekit.ConvVAE(input_shape=(1, 28, 28), latent_dim=2, channels=(32, 64))
config = vaekit.TrainConfig(max_epochs=1 if TINY else 30, batch_size=128, progress=not TINY)
vaekit.Trainer(model, train, config=config).fit()

viz.latent_scatter(model, test, class_names=test.class_names, path=out / "latent_scatter.png")
viz.save_image(viz.manifold_grid(model, n=20), out / "manifold.png")
path = viz.interpolate(model, test.x[0], test.x[1], steps=10)
viz.save_image(viz.image_grid(path, nrow=10), out / "interpolation.png")
samples = viz.sample_grid(model, n=64, generator=torch.Generator().manual_seed(0))
viz.save_image(samples, out / "samples.png")
print(f"wrote {sorted(p.name for p in out.glob('*.png'))} to {out}/")
