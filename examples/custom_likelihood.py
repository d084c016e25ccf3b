"""A likelihood of your own: a Student-t p(x|z), registered by name, trained with the
Trainer, saved and loaded back by name.

Run:
    python examples/custom_likelihood.py [OUTPUT_DIR]   # default: custom_likelihood_out/

Set VAEKIT_EXAMPLE_TINY=1 for a seconds-long run on a few hundred images (as the tests do).
Writes OUTPUT_DIR/model/ whose config.json names the likelihood "student_t".
"""

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributions import StudentT

import vaekit

TINY = os.environ.get("VAEKIT_EXAMPLE_TINY") == "1"
out = Path(sys.argv[1] if len(sys.argv) > 1 else "custom_likelihood_out")


class StudentTLikelihood(vaekit.Likelihood):
    """Student-t per pixel: heavier tails than a Gaussian, so outlier pixels cost less."""

    params_per_element = 2  # the decoder emits a location and a raw scale per pixel

    def __init__(self, df: float = 4.0):
        super().__init__()
        if not df > 1:
            raise ValueError(f"df must be > 1 so that the mean exists, got {df!r}")
        self.df = float(df)

    def distribution(self, loc, raw_scale):
        scale = F.softplus(raw_scale) + 1e-3  # keep the scale away from zero
        return StudentT(self.df, loc, scale, validate_args=False)


# Registering by name keeps the model config JSON: it stores "student_t", never code.
vaekit.register_likelihood("student_t", StudentTLikelihood)

train = vaekit.data.load_dataset("fashion-mnist", split="train")
if TINY:
    train = train.subset(range(256))
model = vaekit.MLPVAE(
    input_shape=(1, 28, 28),
    latent_dim=8,
    hidden_dims=(128,),
    likelihood="student_t",
    likelihood_kwargs={"df": 3.0},
)
config = vaekit.TrainConfig(max_epochs=1 if TINY else 10, batch_size=128, progress=not TINY)
vaekit.Trainer(model, train, config=config).fit()

model.save_pretrained(out / "model")
# Loading works in any process that has imported the module registering "student_t".
loaded = vaekit.AutoVAE.from_pretrained(out / "model")
assert isinstance(loaded.likelihood, StudentTLikelihood) and loaded.likelihood.df == 3.0
x = train.x[:4]
assert torch.allclose(loaded.reconstruct(x), model.eval().reconstruct(x))
print("loaded likelihood:", loaded.config.likelihood, loaded.config.likelihood_kwargs)
