"""Quality benchmark: test-set log-likelihood of a trained vaekit model on Fashion-MNIST.

Protocol: the Fashion-MNIST test set (10,000 images) binarised once with a fixed seed
(``static_binarize(x, seed=0)``), NLL estimated by importance sampling with K = 5000 samples
per image (``vaekit.evaluate``). Models are trained by the recipes in ``benchmarks/configs``:

    vaekit train --config benchmarks/configs/fashion_mlp.yaml --output-dir runs/fashion-mlp
    python benchmarks/quality.py runs/fashion-mlp --num-samples 5000 --json test.json

Models of the 8-bit grey levels (``discretized_logistic``) are evaluated on the grey test set
with ``--grey``; they report bits per dimension:

    python benchmarks/quality.py runs/fashion-conv-dl --grey --num-samples 1000
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import vaekit
from vaekit.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory or Hub repo of the trained model")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--limit", type=int, default=None, help="first N test images only")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the metrics here")
    parser.add_argument(
        "--grey", action="store_true", help="the 8-bit grey-level test set, not binarised"
    )
    args = parser.parse_args()

    model = vaekit.AutoVAE.from_pretrained(args.run, device=args.device)
    if args.grey:
        test = load_dataset("fashion-mnist", split="test")
    else:
        test = load_dataset("fashion-mnist", split="test", binarize="static", binarize_seed=0)
    if args.limit:
        test = test.subset(range(args.limit))
    start = time.perf_counter()
    metrics = vaekit.evaluate(
        model, test, num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed
    )
    seconds = time.perf_counter() - start
    metrics.update(
        seconds=seconds,
        model=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        torch=torch.__version__,
    )
    print(
        f"{type(model).__name__}: NLL {metrics['nll']:.2f} nats (K={args.num_samples}), "
        f"ELBO {metrics['elbo']:.2f}, KL {metrics['kl']:.2f}, active units "
        f"{metrics['active_units']}/{model.latent_dim}, {metrics['num_examples']} images, "
        f"{seconds:.0f} s"
        + (f", {metrics['bits_per_dim']:.4f} bits/dim" if metrics["bits_per_dim"] else "")
    )
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
