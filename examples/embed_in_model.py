"""A vaekit encoder as a frozen feature extractor: the posterior mean E[q(z|x)] feeds a small
classifier that is trained on the labels; the VAE itself is not changed.

Run:
    python examples/embed_in_model.py                   # trains a VAE first, then the head

Set VAEKIT_EXAMPLE_TINY=1 for a seconds-long run on a few hundred images (as the tests do).
Prints the classifier's test accuracy; writes nothing.
"""

import os

import torch
from torch import nn

import vaekit

TINY = os.environ.get("VAEKIT_EXAMPLE_TINY") == "1"
torch.manual_seed(0)
train = vaekit.data.load_dataset("fashion-mnist", split="train")
test = vaekit.data.load_dataset("fashion-mnist", split="test")
if TINY:
    train, test = train.subset(range(1000)), test.subset(range(500))

vae = vaekit.MLPVAE(input_shape=(1, 28, 28), latent_dim=16, hidden_dims=(256,))
config = vaekit.TrainConfig(max_epochs=2 if TINY else 10, progress=not TINY)
vaekit.Trainer(vae, train, config=config).fit()  # or vaekit.AutoVAE.from_pretrained(...)


class LatentClassifier(nn.Module):
    """Classifies images from the frozen VAE's posterior means."""

    def __init__(self, vae: vaekit.VAE, num_classes: int):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)  # frozen: no gradients, eval mode
        self.head = nn.Sequential(
            nn.Linear(vae.latent_dim, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def train(self, mode: bool = True) -> "LatentClassifier":
        super().train(mode)
        self.vae.eval()  # keep the feature extractor in eval mode while the head trains
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = self.vae.encode(x).mean  # (B, latent_dim): q(z|x) is a distribution
        return self.head(z)  # (B, num_classes) logits


clf = LatentClassifier(vae, num_classes=10).train()
optimizer = torch.optim.Adam(clf.head.parameters(), lr=1e-2)
for _ in range(50 if TINY else 300):
    idx = torch.randint(len(train), (256,))
    loss = nn.functional.cross_entropy(clf(train.x[idx]), train.labels[idx])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

clf.eval()
with torch.no_grad():
    accuracy = (clf(test.x).argmax(1) == test.labels).float().mean().item()
print(f"test accuracy from {vae.latent_dim} latent means: {accuracy:.3f} (chance: 0.100)")
