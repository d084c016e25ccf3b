"""Builds the reference models in ``pretrained/`` from finished training runs.

Each reference model is trained by a recipe in ``benchmarks/configs`` (``vaekit train
--config ...``), then packaged here: weights (float16 when float32 would exceed the 5 MB
budget), ``config.json`` and a model card whose metrics this script measures itself:

- ``nll_subset``: NLL in nats on the first ``--subset`` test images, importance sampled with
  ``--subset-samples`` samples and seed 0, measured on the *shipped* weights. The test
  ``tests/test_pretrained.py`` recomputes it, so the cards stay honest.
- ``nll_test`` (optional, ``--full-metrics``): the quality benchmark's full-test-set figure
  from ``benchmarks/quality.py --json``, measured on the float32 weights of the run.

Example:
    python benchmarks/train_reference.py runs/fashion-mlp-iwae pretrained/fashion-mnist-mlp-vae \\
        --dataset fashion-mnist --binarize --full-metrics runs/fashion-mlp-iwae/test.json \\
        --recipe benchmarks/configs/fashion_mlp.yaml benchmarks/configs/fashion_mlp_iwae.yaml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import vaekit
from vaekit.data import load_dataset

MAX_BYTES = 5_000_000  # "under 5 MB", read strictly (decimal megabytes)


def subset_metrics(
    model: vaekit.VAE, dataset: str, binarize: bool, n: int, k: int, dataset_kwargs: dict
) -> dict[str, float]:
    """The card's checkable figures, measured on the first ``n`` test images."""
    kwargs = dict(dataset_kwargs)
    if binarize:
        kwargs.update(binarize="static", binarize_seed=0)
    test = load_dataset(dataset, split="test", **kwargs)
    test = torch.utils.data.Subset(test, range(min(n, len(test))))
    metrics = vaekit.evaluate(model, test, num_samples=k, seed=0, batch_size=100)
    return {
        "nll_subset": round(metrics["nll"], 3),
        "elbo_subset": round(metrics["elbo"], 3),
        "subset_images": metrics["num_examples"],
        "subset_samples": k,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="finished run directory (vaekit train --output-dir)")
    parser.add_argument("out", help="pretrained/<name> directory to write")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--dataset-kwargs", default="{}", help="JSON, e.g. '{\"image_size\": 32}'")
    parser.add_argument("--binarize", action="store_true", help="test set binarised once, seed 0")
    parser.add_argument("--subset", type=int, default=500)
    parser.add_argument("--subset-samples", type=int, default=1000)
    parser.add_argument("--full-metrics", default=None, help="JSON from benchmarks/quality.py")
    parser.add_argument("--recipe", nargs="*", default=[], help="config files used to train it")
    parser.add_argument("--description", default="")
    args = parser.parse_args()

    model = vaekit.AutoVAE.from_pretrained(args.run, dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    store = model
    if params * 4 > MAX_BYTES:  # ship float16 weights; users load with dtype=torch.float32
        store = vaekit.AutoVAE.from_pretrained(args.run, dtype=torch.float16)
        model.load_state_dict({k: v.float() for k, v in store.state_dict().items()})
    dataset_kwargs = json.loads(args.dataset_kwargs)
    metrics = subset_metrics(
        model, args.dataset, args.binarize, args.subset, args.subset_samples, dataset_kwargs
    )
    training: dict[str, object] = {
        "recipe": ", ".join(args.recipe) or "see benchmarks/",
        "binarized_test": args.binarize,
    }
    if args.full_metrics:
        full = json.loads(Path(args.full_metrics).read_text())
        metrics.update(
            nll_test=round(full["nll"], 2),
            elbo_test=round(full["elbo"], 2),
            test_images=full["num_examples"],
            test_samples=full["num_samples"],
        )
    if store is not model:
        training["weights"] = "float16 (load with dtype=torch.float32); " + (
            "nll_test was measured on the float32 weights, nll_subset on these"
            if args.full_metrics
            else "nll_subset was measured on these"
        )
    if dataset_kwargs:
        training["dataset_kwargs"] = json.dumps(dataset_kwargs)
    out = Path(args.out)
    store.save_pretrained(
        out,
        model_card={
            "license": "apache-2.0",
            "datasets": [args.dataset],
            "metrics": metrics,
            "training": training,
            "description": args.description
            + " Protocol: test set binarised once (seed 0) when binarized; NLL in nats by "
            "importance sampling (vaekit.evaluate, seed 0).",
        },
    )
    size = (out / "model.safetensors").stat().st_size
    print(f"{out}: {params:,} parameters, {size / 1e6:.2f} MB, {metrics}")


if __name__ == "__main__":
    main()
