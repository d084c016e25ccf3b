"""Peer comparison: the same VAE trained and evaluated by vaekit and by pythae, in one process.

Both libraries train the same architecture from the same initial weights on the same data,
with the same budget and the same number of CPU threads, and are then evaluated on the same
test images:

- architecture: a 784-512-512-40 MLP encoder (ReLU) whose last layer gives the posterior's
  mean and (pre-)scale, and a 40-512-512-784 MLP decoder (ReLU) giving Bernoulli logits
  (pythae: a sigmoid on them and ``reconstruction_loss="bce"``, the same likelihood);
- data: Fashion-MNIST train (60,000 images), binarised once with seed 0 (pythae has no dynamic
  binarisation), the same tensor for both; the test set binarised the same way;
- training: Adam, lr 1e-3, batch 128, constant lr, beta 1 (no KL warm-up), no evaluation
  during training, nothing written but what pythae insists on (into a temporary directory);
  vaekit through ``vaekit.training.Trainer``, pythae through ``pythae.pipelines.
  TrainingPipeline`` with a ``BaseTrainerConfig``;
- test NLL on the first ``--test-images`` test images with K = ``--num-samples`` importance
  samples: vaekit with ``vaekit.evaluate``, pythae with its own ``model.get_nll`` (one image at
  a time), both timed. As a cross-check, the trained pythae weights are copied 1:1 into a
  vaekit model that uses pythae's posterior parameterisation (std = exp(log_var / 2)) and
  evaluated with ``vaekit.evaluate`` too: it tells a difference in training from a difference
  in the estimator.

Training time counts only the training loop (from the library's "training begins" hook to the
end of its last epoch); the whole library call (data checks, optimiser set-up, pythae's final
model save) is reported beside it. images/s = epochs x training images / loop seconds.

pythae lives only in the benchmark's own environment (never in pyproject.toml):

    bash benchmarks/setup_pythae_env.sh
    benchmarks/.venv-pythae/bin/python benchmarks/compare_pythae.py --epochs 10 --threads 2 \\
        --json benchmarks/results/compare_pythae.json
    benchmarks/.venv-pythae/bin/python benchmarks/compare_pythae.py --tiny --threads 1  # check
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import platform
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal
from torch.utils.data import TensorDataset

import vaekit
from vaekit.data import load_dataset
from vaekit.training import Callback, TrainConfig, Trainer

try:
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback
except ImportError as err:
    raise SystemExit(
        f"pythae is not importable ({err}); run this benchmark in its own environment: "
        "bash benchmarks/setup_pythae_env.sh && benchmarks/.venv-pythae/bin/python "
        "benchmarks/compare_pythae.py --tiny --threads 1"
    ) from err

logger = logging.getLogger("compare_pythae")

INPUT_SHAPE = (1, 28, 28)
PIXELS = math.prod(INPUT_SHAPE)
HIDDEN = (512, 512)
LATENT = 40
BATCH_SIZE = 128
LR = 1e-3
#: Images per importance-sampling batch in pythae's get_nll (its default).
PYTHAE_NLL_BATCH = 100


# ---- the same architecture, written for pythae --------------------------------------------
# Module names match vaekit's MLPVAE (encoder.0, encoder.2, encoder_head, decoder.0, ...), so
# that the state dicts of the two map 1:1.


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise(dims):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    return nn.Sequential(*layers)


class PythaeEncoder(BaseEncoder):
    """784-512-512 ReLU MLP and a linear head giving the posterior mean and log-variance."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _mlp([PIXELS, *HIDDEN])
        self.encoder_head = nn.Linear(HIDDEN[-1], 2 * LATENT)

    def forward(self, x: Tensor) -> ModelOutput:
        h = self.encoder_head(self.encoder(rearrange(x, "b ... -> b (...)")))  # (B, 2 * LATENT)
        loc, log_var = h.chunk(2, dim=-1)
        return ModelOutput(embedding=loc, log_covariance=log_var)


class PythaeDecoder(BaseDecoder):
    """40-512-512 ReLU MLP and a linear head; the sigmoid of its output is the Bernoulli mean."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = _mlp([LATENT, *HIDDEN[::-1]])
        self.decoder_head = nn.Linear(HIDDEN[0], PIXELS)

    def forward(self, z: Tensor) -> ModelOutput:
        logits = self.decoder_head(self.decoder(z))  # (B, 784)
        probs = torch.sigmoid(rearrange(logits, "b (c h w) -> b c h w", c=1, h=28, w=28))
        return ModelOutput(reconstruction=probs)


class ExpScaleMLPVAE(vaekit.MLPVAE):
    """An MLPVAE with pythae's posterior parameterisation, std = exp(log_var / 2), instead of
    vaekit's softplus; it holds a trained pythae model's weights for vaekit's estimator."""

    def _posterior(self, x: Tensor, y1h: Tensor | None) -> Distribution:
        h = self.encoder_output(x.to(self.dtype), y1h).float()
        loc, log_var = h.chunk(2, dim=-1)
        return Independent(Normal(loc, torch.exp(0.5 * log_var), validate_args=False), 1)


def make_vaekit_model(seed: int, cls: type[vaekit.MLPVAE] = vaekit.MLPVAE) -> vaekit.MLPVAE:
    torch.manual_seed(seed)
    return cls(
        input_shape=INPUT_SHAPE,
        latent_dim=LATENT,
        hidden_dims=HIDDEN,
        activation="relu",
        likelihood="bernoulli",
    )


def pythae_state_dict(model: VAE) -> dict[str, Tensor]:
    """The pythae model's encoder and decoder weights under MLPVAE's names."""
    return {**model.encoder.state_dict(), **model.decoder.state_dict()}


def make_pythae_model(initial: dict[str, Tensor]) -> VAE:
    """pythae's VAE with our encoder/decoder, starting from the given (vaekit) weights."""
    config = VAEConfig(input_dim=INPUT_SHAPE, latent_dim=LATENT, reconstruction_loss="bce")
    model = VAE(config, encoder=PythaeEncoder(), decoder=PythaeDecoder())
    model.encoder.load_state_dict({k: v for k, v in initial.items() if k.startswith("encoder")})
    model.decoder.load_state_dict({k: v for k, v in initial.items() if k.startswith("decoder")})
    return model


# ---- timing hooks --------------------------------------------------------------------------


class VaekitLoopTimer(Callback):
    """Wall time from the start of the training loop to the end of the last epoch."""

    def __init__(self) -> None:
        self.start = self.end = math.nan

    def on_fit_start(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.end = time.perf_counter()


class PythaeLoopTimer(TrainingCallback):
    """The same for pythae's trainer, plus the epoch losses it logs."""

    def __init__(self) -> None:
        self.start = self.end = math.nan
        self.epoch_losses: list[float] = []

    def on_train_begin(self, training_config: BaseTrainerConfig, **kwargs: Any) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, training_config: BaseTrainerConfig, **kwargs: Any) -> None:
        self.end = time.perf_counter()

    def on_log(self, training_config: BaseTrainerConfig, logs: dict, **kwargs: Any) -> None:
        self.epoch_losses.append(float(logs["train_epoch_loss"]))


# ---- the two runs --------------------------------------------------------------------------


def run_vaekit(x_train: Tensor, x_test: Tensor, args: argparse.Namespace) -> dict[str, Any]:
    model = make_vaekit_model(args.seed)
    config = TrainConfig(
        max_epochs=args.epochs,
        batch_size=BATCH_SIZE,
        lr=LR,
        optimizer="adam",
        lr_schedule="constant",
        beta=1.0,
        beta_schedule="constant",
        device=args.device,
        seed=args.seed,
        output_dir=None,
        progress=False,
        save_images=False,
        log_every_steps=10**9,
    )
    timer = VaekitLoopTimer()
    trainer = Trainer(model, TensorDataset(x_train), config=config, callbacks=[timer])
    logger.info("vaekit: training %d epochs on %d images", args.epochs, x_train.shape[0])
    start = time.perf_counter()
    history = trainer.fit()
    call_s = time.perf_counter() - start
    loop_s = timer.end - timer.start
    logger.info("vaekit: trained in %.1f s (loop %.1f s)", call_s, loop_s)

    start = time.perf_counter()
    metrics = vaekit.evaluate(
        model, x_test, num_samples=args.num_samples, seed=args.seed, progress=False
    )
    nll_s = time.perf_counter() - start
    logger.info("vaekit: NLL %.2f nats in %.1f s", metrics["nll"], nll_s)
    return {
        "train_loop_s": loop_s,
        "train_call_s": call_s,
        "images_per_s": args.epochs * x_train.shape[0] / loop_s,
        "final_epoch_train_loss": history[-1]["train_loss"],
        "nll": metrics["nll"],
        "nll_s": nll_s,
        "nll_estimator": "vaekit.evaluate",
        "elbo": metrics["elbo"],
        "kl": metrics["kl"],
        "active_units": metrics["active_units"],
    }


def pythae_nll_batch(num_samples: int) -> int:
    """The largest divisor of K that is at most pythae's default batch of 100.

    pythae's get_nll draws ``batch_size`` samples per pass and ``n_samples // batch_size``
    passes, and uses ``batch_size`` samples (not ``n_samples``) when ``n_samples <=
    batch_size``; a divisor of K makes it use exactly K samples.
    """
    return max(d for d in range(1, min(num_samples, PYTHAE_NLL_BATCH) + 1) if num_samples % d == 0)


def run_pythae(
    x_train: Tensor, x_test: Tensor, initial: dict[str, Tensor], args: argparse.Namespace
) -> tuple[dict[str, Any], VAE]:
    model = make_pythae_model(initial)
    timer = PythaeLoopTimer()
    with tempfile.TemporaryDirectory(prefix="pythae-") as output_dir:
        config = BaseTrainerConfig(
            output_dir=output_dir,
            num_epochs=args.epochs,
            per_device_train_batch_size=BATCH_SIZE,
            learning_rate=LR,
            optimizer_cls="Adam",
            scheduler_cls=None,
            steps_saving=None,
            steps_predict=None,
            seed=args.seed,
            no_cuda=args.device == "cpu",
        )
        pipeline = TrainingPipeline(model=model, training_config=config)
        logger.info("pythae: training %d epochs on %d images", args.epochs, x_train.shape[0])
        start = time.perf_counter()
        pipeline(train_data=x_train, callbacks=[timer])
        call_s = time.perf_counter() - start
    loop_s = timer.end - timer.start
    logger.info("pythae: trained in %.1f s (loop %.1f s)", call_s, loop_s)
    # pythae's final model is the epoch with the lowest training loss (no eval set); we evaluate
    # the last epoch, like vaekit's. With a constant lr they are normally the same epoch.
    best = pipeline.trainer._best_model  # pythae exposes it no other way
    best_is_last = all(
        torch.equal(a, b)
        for a, b in zip(best.state_dict().values(), model.state_dict().values(), strict=True)
    )
    if not best_is_last:
        logger.warning("pythae kept an earlier epoch as its best model; evaluating the last one")

    model.eval()
    batch = pythae_nll_batch(args.num_samples)
    if batch < min(args.num_samples, PYTHAE_NLL_BATCH) // 4:
        logger.warning("K=%d has no divisor near 100: get_nll runs in passes of %d", batch, batch)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    with torch.no_grad():  # get_nll does not turn autograd off itself
        # Despite its name, get_nll returns the mean estimated log p(x) (negative): negate it.
        nll = -float(model.get_nll(x_test, n_samples=args.num_samples, batch_size=batch))
    nll_s = time.perf_counter() - start
    logger.info("pythae: NLL %.2f nats in %.1f s (get_nll, %d-sample passes)", nll, nll_s, batch)
    return {
        "train_loop_s": loop_s,
        "train_call_s": call_s,
        "images_per_s": args.epochs * x_train.shape[0] / loop_s,
        "final_epoch_train_loss": timer.epoch_losses[-1],
        "best_model_is_last_epoch": best_is_last,
        "nll": nll,
        "nll_s": nll_s,
        "nll_estimator": f"pythae VAE.get_nll (one image at a time, {batch}-sample passes)",
    }, model


def cross_check(pythae_model: VAE, x_test: Tensor, args: argparse.Namespace) -> dict[str, Any]:
    """The trained pythae weights, evaluated by vaekit's estimator."""
    model = make_vaekit_model(args.seed, cls=ExpScaleMLPVAE)
    model.load_state_dict(pythae_state_dict(pythae_model), strict=True)
    start = time.perf_counter()
    metrics = vaekit.evaluate(
        model, x_test, num_samples=args.num_samples, seed=args.seed, progress=False
    )
    seconds = time.perf_counter() - start
    logger.info("cross-check: pythae's weights, vaekit's estimator: NLL %.2f", metrics["nll"])
    return {
        "nll": metrics["nll"],
        "nll_s": seconds,
        "elbo": metrics["elbo"],
        "kl": metrics["kl"],
        "active_units": metrics["active_units"],
    }


# ---- report --------------------------------------------------------------------------------


def markdown_table(report: dict[str, Any]) -> str:
    k, n = report["settings"]["num_samples"], report["settings"]["test_images"]
    rows = [
        "| library | train loop s | images/s | whole fit call s | final train loss | "
        f"test NLL (nats, K={k}, {n} images) | NLL s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("vaekit", "pythae"):
        r = report[name]
        rows.append(
            f"| {name} {report['versions'][name]} | {r['train_loop_s']:.1f} | "
            f"{r['images_per_s']:.0f} | {r['train_call_s']:.1f} | "
            f"{r['final_epoch_train_loss']:.2f} | {r['nll']:.2f} | {r['nll_s']:.1f} |"
        )
    c = report["cross_check"]
    rows.append(
        f"| pythae's weights, vaekit.evaluate | | | | | {c['nll']:.2f} | {c['nll_s']:.1f} |"
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--train-images", type=int, default=None, help="first N only")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=1000, help="K for the test NLL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--tiny", action="store_true", help="a quick check: 1 epoch, 2,000 images, 50 test, K=50"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    if args.tiny:
        args.epochs, args.train_images, args.test_images, args.num_samples = 1, 2000, 50, 50
    for name in ("epochs", "threads", "test_images", "num_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # pythae gives each of its module loggers a console handler at INFO; our lines say enough.
    for name in [*logging.root.manager.loggerDict, "vaekit"]:
        if name.split(".")[0] in ("pythae", "vaekit"):
            logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    train = load_dataset("fashion-mnist", split="train", binarize="static", binarize_seed=0)
    test = load_dataset("fashion-mnist", split="test", binarize="static", binarize_seed=0)
    x_train = train.x[: args.train_images].contiguous()  # (N, 1, 28, 28), 0.0/1.0
    x_test = test.x[: args.test_images].contiguous()
    logger.info(
        "%d training and %d test images, %d threads, device %s",
        x_train.shape[0],
        x_test.shape[0],
        torch.get_num_threads(),
        args.device,
    )

    vaekit_result = run_vaekit(x_train, x_test, args)
    initial = make_vaekit_model(args.seed).state_dict()  # the weights vaekit started from
    pythae_result, pythae_model = run_pythae(x_train, x_test, initial, args)
    report = {
        "settings": {
            "epochs": args.epochs,
            "train_images": x_train.shape[0],
            "test_images": x_test.shape[0],
            "num_samples": args.num_samples,
            "batch_size": BATCH_SIZE,
            "lr": LR,
            "threads": args.threads,
            "device": args.device,
            "seed": args.seed,
            "architecture": f"MLP {PIXELS}-{'-'.join(map(str, HIDDEN))}-{LATENT} ReLU, Bernoulli",
            "data": "fashion-mnist, statically binarised (seed 0), train and test",
        },
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "versions": {n: version(n) for n in ("vaekit", "pythae", "torch", "numpy")},
        "vaekit": vaekit_result,
        "pythae": pythae_result,
        "cross_check": cross_check(pythae_model, x_test, args),
    }
    print(markdown_table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        logger.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
