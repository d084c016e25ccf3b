"""Fine-tune pretrained weights: load a saved model, freeze its encoder and train only the
decoder on new data with the Trainer; the frozen weights stay bit-for-bit the same.

Run:
    python examples/finetune.py [PRETRAINED_DIR]        # default: trains and saves one first

Set VAEKIT_EXAMPLE_TINY=1 for a seconds-long run on a few hundred images (as the tests do).
Writes finetune_out/pretrained/ (when no PRETRAINED_DIR is given) and finetune_out/finetuned/.
"""

import os
import sys
from pathlib import Path

import torch

import vaekit

TINY = os.environ.get("VAEKIT_EXAMPLE_TINY") == "1"
EPOCHS = 1 if TINY else 10
out = Path("finetune_out")
data = vaekit.data.load_dataset("fashion-mnist", split="train")
if TINY:
    data = data.subset(range(1000))
# "Old" data: clothes (classes 0-4); "new" data: shoes and bags (classes 5-9).
old_data = data.subset(torch.nonzero(data.labels < 5).squeeze(1))
new_data = data.subset(torch.nonzero(data.labels >= 5).squeeze(1))

if len(sys.argv) > 1:
    pretrained_dir = Path(sys.argv[1])
else:  # no weights given: pretrain a small model on the old data and save it
    pretrained_dir = out / "pretrained"
    base = vaekit.MLPVAE(input_shape=(1, 28, 28), latent_dim=16, hidden_dims=(256,))
    vaekit.Trainer(base, old_data, config=vaekit.TrainConfig(max_epochs=EPOCHS)).fit()
    base.save_pretrained(pretrained_dir)

model = vaekit.AutoVAE.from_pretrained(pretrained_dir)
for module in (model.encoder, model.encoder_head):
    module.requires_grad_(False)  # the Trainer optimises only parameters with requires_grad
before = {name: p.detach().clone() for name, p in model.named_parameters()}

# A smaller learning rate than from scratch, so the pretrained decoder is adapted, not reset.
config = vaekit.TrainConfig(max_epochs=EPOCHS, lr=1e-4, progress=not TINY)
vaekit.Trainer(model, new_data, config=config).fit()
model.save_pretrained(out / "finetuned")

after = dict(model.named_parameters())
unchanged = all(torch.equal(before[n], after[n]) for n in after if not after[n].requires_grad)
changed = any(not torch.equal(before[n], after[n]) for n in after if n.startswith("decoder"))
print(f"encoder unchanged: {unchanged}; decoder changed: {changed}")
if not (unchanged and changed):
    sys.exit("fine-tuning did not train exactly the decoder")
