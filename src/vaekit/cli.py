"""The ``vaekit`` command: train, evaluate, sample and share VAEs without writing code.

Options come from the same classes as the Python API (the model constructors and
:class:`vaekit.TrainConfig`) through jsonargparse, so every field is a flag
(``--conv.channels [16,32]``, ``--train.lr 3e-4``) and ``--config file.yaml`` sets any of them.
The common ones have short forms: ``--model``, ``--dataset``, ``--likelihood``,
``--latent-dim``, ``--epochs``, ``--batch-size``, ``--device``, ``--output-dir``, ``--resume``.

This module is the only place in vaekit that writes to stdout.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

import vaekit
from vaekit import data as vdata
from vaekit import viz
from vaekit.hub import AutoVAE
from vaekit.models.base import VAE

logger = logging.getLogger("vaekit.cli")

MODELS: dict[str, type[VAE]] = {"mlp": vaekit.MLPVAE, "conv": vaekit.ConvVAE}

# `vaekit train` with no arguments: a small ConvVAE on 32x32 shapes, a few minutes on a laptop
# CPU. Every subcommand uses the same dataset defaults, so `evaluate` sees the images `train` saw.
DEFAULT_DATASET_KWARGS: dict[str, dict[str, Any]] = {
    "shapes": {"image_size": 32, "num_positions": 8}
}
DEFAULT_MODEL: dict[str, dict[str, Any]] = {
    "conv": {"latent_dim": 8, "channels": (16, 32, 64)},
    "mlp": {"latent_dim": 16},
}


class CLIError(Exception):
    """A user error that the command reports in one line."""


# --------------------------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------------------------


def _add_model_ref(parser: ArgumentParser) -> None:
    parser.add_argument("model", help="a run directory (vaekit train --output-dir) or Hub repo id")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit")


def _add_data(parser: ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--dataset",
        required=required,
        default=None,
        help=f"dataset name: {', '.join(vdata.list_datasets())}",
    )
    parser.add_argument("--split", default="test", help="dataset split (default test)")
    parser.add_argument("--root", default=None, help="folder holding the dataset files")
    parser.add_argument(
        "--dataset-kwargs", type=dict[str, Any], default={}, help="extra load_dataset options"
    )


def build_parser() -> ArgumentParser:
    """The ``vaekit`` argument parser with one subcommand per action."""
    parser = ArgumentParser(
        prog="vaekit",
        description="Variational autoencoders: train, evaluate, sample and share.",
        env_prefix="VAEKIT",
        default_env=False,
    )
    parser.add_argument("--version", action="version", version=f"vaekit {vaekit.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subcommands(dest="command")

    train = ArgumentParser(description="Train a VAE and write model, metrics and pictures.")
    train.add_argument("--config", action=ActionConfigFile, help="YAML file of options")
    train.add_argument("--model", choices=sorted(MODELS), default="conv", help="architecture")
    _add_data(train, required=False)
    train.set_defaults(dataset="shapes", split="train")
    train.add_argument("--likelihood", default=None, help="p(x|z) family (overrides the model's)")
    train.add_argument("--latent-dim", type=int, default=None, help="latent dimensions")
    train.add_argument("--epochs", type=int, default=None, help="= --train.max_epochs")
    train.add_argument("--batch-size", type=int, default=None, help="= --train.batch_size")
    train.add_argument("--device", default=None, help="= --train.device (auto, cpu, cuda, mps)")
    train.add_argument("--output-dir", default=None, help="default runs/<timestamp>")
    train.add_argument("--resume", action="store_true", help="continue the run in --output-dir")
    train.add_argument(
        "--init-from",
        default=None,
        help="fine-tune: start from this run directory or Hub repo (its architecture is used)",
    )
    train.add_argument(
        "--eval-split", default="test", help="split used for evaluation during training ('' none)"
    )
    for name, cls in MODELS.items():
        train.add_class_arguments(cls, name, skip={"input_shape"}, sub_configs=True)
        train.set_defaults({f"{name}.{k}": v for k, v in DEFAULT_MODEL[name].items()})
    train.add_class_arguments(vaekit.TrainConfig, "train", sub_configs=True)
    train.set_defaults({"train.max_epochs": 3})
    commands.add_subcommand("train", train, help="train a model")

    evaluate = ArgumentParser(
        description="Evaluate a model: ELBO, NLL (importance sampled), bits/dim."
    )
    _add_model_ref(evaluate)
    _add_data(evaluate, required=True)
    evaluate.add_argument("--num-samples", type=int, default=1000, help="importance samples K")
    evaluate.add_argument("--batch-size", type=int, default=None)
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate the first N only")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object last")
    commands.add_subcommand("evaluate", evaluate, help="evaluate a model on a dataset")

    sample = ArgumentParser(description="Save a grid of samples from the prior.")
    _add_model_ref(sample)
    sample.add_argument("--num", type=int, default=64)
    sample.add_argument("--out", default="samples.png")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--label", type=int, default=None, help="class, for conditional models")
    commands.add_subcommand("sample", sample, help="save samples as a PNG grid")

    recon = ArgumentParser(description="Save inputs next to their reconstructions.")
    _add_model_ref(recon)
    _add_data(recon, required=True)
    recon.add_argument("--num", type=int, default=16)
    recon.add_argument("--out", default="reconstructions.png")
    commands.add_subcommand("reconstruct", recon, help="save reconstructions as a PNG grid")

    interp = ArgumentParser(description="Interpolate between two dataset images in latent space.")
    _add_model_ref(interp)
    _add_data(interp, required=True)
    interp.add_argument("--index-a", type=int, default=0)
    interp.add_argument("--index-b", type=int, default=1)
    interp.add_argument("--steps", type=int, default=10)
    interp.add_argument("--method", choices=["lerp", "slerp"], default="lerp")
    interp.add_argument("--out", default="interpolation.png")
    commands.add_subcommand("interpolate", interp, help="save a latent interpolation")

    trav = ArgumentParser(description="Vary one latent dimension at a time.")
    _add_model_ref(trav)
    _add_data(trav, required=False)
    trav.add_argument("--index", type=int, default=0, help="dataset image to start from")
    trav.add_argument("--dims", type=list[int] | None, default=None)
    trav.add_argument("--steps", type=int, default=9)
    trav.add_argument("--span", type=float, default=3.0)
    trav.add_argument("--out", default="traversal.png")
    commands.add_subcommand("traverse", trav, help="save latent traversals")

    plot = ArgumentParser(
        description="Scatter of latent means coloured by label (PCA above "
        "2-D), and the manifold grid for a 2-D latent."
    )
    _add_model_ref(plot)
    _add_data(plot, required=True)
    plot.add_argument("--max-points", type=int, default=5000)
    plot.add_argument("--out", default="latent.png")
    plot.add_argument("--manifold-out", default=None, help="2-D latents: manifold grid PNG")
    commands.add_subcommand("latent-plot", plot, help="plot the latent space")

    push = ArgumentParser(description="Upload a run's model to the Hugging Face Hub.")
    push.add_argument("run_dir")
    push.add_argument("repo_id")
    push.add_argument("--private", type=bool | None, default=None)
    push.add_argument("--revision", default=None)
    push.add_argument("--commit-message", default=None)
    push.add_argument("--token", default=None)
    commands.add_subcommand("push", push, help="push a run to the Hub")

    info = ArgumentParser(description="Show a model's config, size and metrics.")
    _add_model_ref(info)
    commands.add_subcommand("info", info, help="describe a run or Hub model")
    return parser


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _load_model(args: Namespace) -> VAE:
    device = vaekit.resolve_device(args.device)
    return AutoVAE.from_pretrained(args.model, revision=args.revision, device=device)


def _dataset(args: Namespace, split: str | None = None) -> Any:
    kwargs = dict(DEFAULT_DATASET_KWARGS.get(args.dataset, {}))
    kwargs.update(args.dataset_kwargs or {})
    return vdata.load_dataset(args.dataset, split=split or args.split, root=args.root, **kwargs)


def _batch(dataset: Any, indices: Sequence[int], device: torch.device) -> tuple[torch.Tensor, Any]:
    if not len(dataset):
        raise CLIError("the dataset is empty")
    items = [dataset[i % len(dataset)] for i in indices]
    x = torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items])
    labels = None
    if isinstance(items[0], (tuple, list)) and len(items[0]) > 1:
        labels = torch.as_tensor([int(item[1]) for item in items])
    return x.to(device), labels


def _labels_for(model: VAE, labels: Any, device: torch.device) -> torch.Tensor | None:
    if model.num_classes is None:
        return None
    if labels is None:
        raise CLIError("this conditional model needs a labelled dataset")
    return labels.to(device)


def _check_images(model: VAE, what: str) -> None:
    if len(model.input_shape) != 3:
        raise CLIError(f"{what} needs a model of images (C, H, W), got {model.input_shape}")


def _written(path: str | Path) -> None:
    print(f"wrote {path}")


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def cmd_train(args: Namespace) -> int:
    train_set = _dataset(args, split=args.split)
    eval_set = _dataset(args, split=args.eval_split) if args.eval_split else None
    if args.init_from:
        model: VAE = AutoVAE.from_pretrained(args.init_from).train()
    else:
        x0 = train_set[0][0] if isinstance(train_set[0], (tuple, list)) else train_set[0]
        model_args = dict(vars(args[args.model]))
        model_args.pop("__path__", None)
        if args.latent_dim is not None:
            model_args["latent_dim"] = args.latent_dim
        if args.likelihood is not None:
            model_args["likelihood"] = args.likelihood
        model_cls: Any = MODELS[args.model]
        model = model_cls(input_shape=tuple(x0.shape), **model_args)

    train_args = dict(vars(args.train))
    train_args.pop("__path__", None)
    overrides = {
        "max_epochs": args.epochs,
        "batch_size": args.batch_size,
        "device": args.device,
        "output_dir": args.output_dir,
    }
    train_args.update({k: v for k, v in overrides.items() if v is not None})
    if not train_args.get("output_dir"):
        if args.resume:
            raise CLIError("--resume needs --output-dir pointing at the run to continue")
        train_args["output_dir"] = str(Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    config = vaekit.TrainConfig(**train_args)
    out = Path(config.output_dir or ".")
    print(
        f"training {type(model).__name__} ({_num_params(model):,} parameters) on "
        f"{args.dataset} ({len(train_set)} examples) -> {out}"
    )
    trainer = vaekit.Trainer(model, train_set, eval_data=eval_set, config=config)
    history = trainer.fit(resume_from=str(out) if args.resume else None)
    _save_pictures(model, history, out, eval_set if eval_set is not None else train_set)
    last = history[-1] if history else {}
    summary = {k: v for k, v in last.items() if isinstance(v, (int, float))}
    print("final: " + ", ".join(f"{k}={v:.4g}" for k, v in summary.items()))
    print(f"model saved in {out} (load with vaekit.AutoVAE.from_pretrained({str(out)!r}))")
    return 0


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _save_pictures(model: VAE, history: list[dict[str, Any]], out: Path, dataset: Any) -> None:
    """The pictures of a finished run: loss curve, samples, reconstructions, traversals."""
    pictures = out / "pictures"
    pictures.mkdir(parents=True, exist_ok=True)
    model.eval()
    if history:
        try:
            viz.loss_curve(history, path=pictures / "loss_curve.png")
            _written(pictures / "loss_curve.png")
        except ImportError as err:  # matplotlib is the optional `plots` extra
            logger.warning("no loss curve: %s", err)
    if len(model.input_shape) != 3:
        return
    gen = torch.Generator(device=model.device).manual_seed(0)
    x, labels = _batch(dataset, range(16), model.device)
    y = _labels_for(model, labels, model.device)
    y_sample = None if model.num_classes is None else 0
    images = {
        "samples.png": viz.sample_grid(model, n=64, y=y_sample, generator=gen),
        "reconstructions.png": viz.reconstruction_grid(model, x, y=y),
        "traversals.png": viz.image_grid(
            viz.traverse(
                model, x[:1], dims=range(min(model.latent_dim, 10)), y=None if y is None else y[:1]
            )
        ),
    }
    for name, grid in images.items():
        viz.save_image(grid, pictures / name)
        _written(pictures / name)


def cmd_evaluate(args: Namespace) -> int:
    model = _load_model(args)
    dataset = _dataset(args)
    if args.limit is not None:
        if args.limit < 1:
            raise CLIError(f"--limit must be >= 1, got {args.limit}")
        dataset = torch.utils.data.Subset(dataset, range(min(args.limit, len(dataset))))
    metrics = vaekit.evaluate(
        model, dataset, num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed
    )
    rows = {
        "examples": metrics["num_examples"],
        "ELBO (nats)": metrics["elbo"],
        "reconstruction log p(x|z) (nats)": metrics["log_px"],
        "KL (nats)": metrics["kl"],
        f"NLL, K={metrics['num_samples']} (nats)": metrics["nll"],
        "bits/dim": metrics["bits_per_dim"],
        "active units": f"{metrics['active_units']}/{model.latent_dim}",
    }
    for key, value in rows.items():
        shown = (
            "n/a (continuous density)"
            if value is None
            else (f"{value:.4f}" if isinstance(value, float) else value)
        )
        print(f"{key:>36}: {shown}")
    if args.json:
        print(json.dumps(metrics))
    return 0


def cmd_sample(args: Namespace) -> int:
    model = _load_model(args)
    _check_images(model, "sample")
    if args.num < 1:
        raise CLIError(f"--num must be >= 1, got {args.num}")
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    grid = viz.sample_grid(model, n=args.num, y=args.label, generator=gen)
    _written(viz.save_image(grid, args.out))
    return 0


def cmd_reconstruct(args: Namespace) -> int:
    model = _load_model(args)
    _check_images(model, "reconstruct")
    x, labels = _batch(_dataset(args), range(args.num), model.device)
    grid = viz.reconstruction_grid(model, x, y=_labels_for(model, labels, model.device), n=args.num)
    _written(viz.save_image(grid, args.out))
    return 0


def cmd_interpolate(args: Namespace) -> int:
    model = _load_model(args)
    _check_images(model, "interpolate")
    x, labels = _batch(_dataset(args), [args.index_a, args.index_b], model.device)
    y = _labels_for(model, labels, model.device)
    path = viz.interpolate(
        model,
        x[0],
        x[1],
        steps=args.steps,
        method=args.method,
        y=None if y is None else int(y[0]),
    )
    _written(viz.save_image(viz.image_grid(path, nrow=args.steps), args.out))
    return 0


def cmd_traverse(args: Namespace) -> int:
    model = _load_model(args)
    _check_images(model, "traverse")
    x = y = None
    if args.dataset:
        x, labels = _batch(_dataset(args), [args.index], model.device)
        y = _labels_for(model, labels, model.device)
    elif model.num_classes is not None:
        y = torch.zeros(1, dtype=torch.long, device=model.device)
    dims = args.dims if args.dims is not None else range(min(model.latent_dim, 10))
    rows = viz.traverse(model, x, dims=list(dims), steps=args.steps, span=args.span, y=y)
    _written(viz.save_image(viz.image_grid(rows), args.out))
    return 0


def cmd_latent_plot(args: Namespace) -> int:
    model = _load_model(args)
    dataset = _dataset(args)
    fig = viz.latent_scatter(
        model,
        dataset,
        max_points=args.max_points,
        path=args.out,
        class_names=getattr(dataset, "class_names", None),
    )
    del fig
    _written(args.out)
    if model.latent_dim == 2 and len(model.input_shape) == 3:
        out = args.manifold_out or str(
            Path(args.out).with_name(Path(args.out).stem + "_manifold.png")
        )
        y = None if model.num_classes is None else 0
        _written(viz.save_image(viz.manifold_grid(model, y=y), out))
    elif args.manifold_out:
        raise CLIError(
            f"the manifold grid needs a 2-D latent image model, this one has "
            f"latent_dim={model.latent_dim}"
        )
    return 0


def cmd_push(args: Namespace) -> int:
    run = Path(args.run_dir)
    if not (run / "config.json").is_file():
        raise CLIError(f"{run} holds no model (config.json); train one with vaekit train")
    model = AutoVAE.from_pretrained(run)
    metrics = _last_metrics(run)
    url = model.push_to_hub(
        args.repo_id,
        private=args.private,
        token=args.token,
        revision=args.revision,
        commit_message=args.commit_message,
        model_card={"metrics": metrics} if metrics else None,
    )
    print(f"pushed {run} to {args.repo_id}: {url}")
    return 0


def _last_metrics(run: Path) -> dict[str, float]:
    log = run / "metrics.jsonl"
    if not log.is_file():
        return {}
    last: dict[str, Any] = {}
    for line in log.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if "epoch" in record:
                last = record
    return {
        k: float(v)
        for k, v in last.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def cmd_info(args: Namespace) -> int:
    model = _load_model(args)
    print(f"{type(model).__name__} ({model.model_type}), {_num_params(model):,} parameters")
    print(json.dumps(model.config.to_dict(), indent=2))
    path = Path(args.model).expanduser()
    metrics = _last_metrics(path) if path.is_dir() else {}
    if metrics:
        print("last epoch: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "sample": cmd_sample,
    "reconstruct": cmd_reconstruct,
    "interpolate": cmd_interpolate,
    "traverse": cmd_traverse,
    "latent-plot": cmd_latent_plot,
    "push": cmd_push,
    "info": cmd_info,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vaekit`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    command = args.command
    sub_args = args[command]
    sub_args.command = command
    try:
        return COMMANDS[command](sub_args)
    except (
        CLIError,
        ValueError,
        TypeError,
        FileNotFoundError,
        PermissionError,
        vaekit.HubLoadError,
        OSError,
    ) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"vaekit {command}: error: {message}", file=sys.stderr)
        return 2 if isinstance(err, CLIError) else 1
    except KeyboardInterrupt:
        print(f"vaekit {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
