"""Training throughput: vaekit's Trainer against a plain PyTorch loop, one epoch each.

Both train the same model from the same initial weights on Fashion-MNIST train (60k grey-level
images read straight from the IDX file) with Adam at lr 1e-3 and batch 128:

- plain: what a user writes first: ``DataLoader(TensorDataset(x), batch_size, shuffle=True)``,
  ``torch.optim.Adam``, ``zero_grad`` / ``backward`` / ``step``, autocast for bf16/fp16;
- trainer: ``Trainer(model, TensorDataset(x), config=TrainConfig(...)).fit()`` for one
  epoch; its wall time includes set-up (validating the data set once, building the
  optimizer), so images/s is 60k divided by the whole ``fit()``.

Runs alternate (plain, trainer, plain, trainer, ...) so that both see the same machine load;
the table reports the median and the best round. Achieved GFLOP/s counts the model's FLOPs
for one forward + backward pass with ``torch.utils.flop_counter`` (the matmuls: about 3x
the forward's), against ``torch.mm`` timed at the MLP's layer shapes on the same machine.

    PYTHONPATH=src python benchmarks/throughput.py                         # CPU, fp32 and bf16
    PYTHONPATH=src python benchmarks/throughput.py --num-images 12800      # a quick look
    PYTHONPATH=src python benchmarks/throughput.py --device cuda --model conv \\
        --batch-size 1024 --compile --precisions fp32 bf16 fp16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

import vaekit
from vaekit.data.idx import read_idx
from vaekit.training import TrainConfig, Trainer, resolve_device

IMAGES = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
PIXELS, HIDDEN, LATENT = 784, 400, 20
MLP_SHAPES = [(PIXELS, HIDDEN), (HIDDEN, 2 * LATENT), (LATENT, HIDDEN), (HIDDEN, PIXELS)]


def load_images(path: Path, limit: int | None) -> torch.Tensor:
    """(N, 1, 28, 28) float32 grey levels in [0, 1]."""
    x = read_idx(path).unsqueeze(1).float() / 255
    return x[:limit].contiguous() if limit else x


def make_model(kind: str) -> vaekit.VAE:
    torch.manual_seed(0)
    if kind == "mlp":
        return vaekit.MLPVAE(input_shape=(1, 28, 28), latent_dim=LATENT, hidden_dims=(HIDDEN,))
    return vaekit.ConvVAE(input_shape=(1, 28, 28), latent_dim=32, channels=(32, 64, 128))


def sync(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def plain_epoch(
    kind: str, x: torch.Tensor, batch_size: int, device: torch.device, precision: str
) -> float:
    """One epoch of the loop a user writes first; returns images/s."""
    model = make_model(kind).to(device)
    loader = DataLoader(TensorDataset(x), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    model.train()
    sync(device)
    start = time.perf_counter()
    for (xb,) in loader:
        xb = xb.to(device)
        with autocast(device, precision):
            loss = model(xb).loss
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    sync(device)
    return x.shape[0] / (time.perf_counter() - start)


def trainer_epoch(
    kind: str,
    x: torch.Tensor,
    batch_size: int,
    device: torch.device,
    precision: str,
    compile_model: bool,
) -> float:
    """One epoch with vaekit's Trainer (the whole fit() is timed); returns images/s."""
    model = make_model(kind)
    config = TrainConfig(
        max_epochs=1,
        batch_size=batch_size,
        lr=1e-3,
        device=str(device),
        precision=precision,
        compile=compile_model,
        progress=False,
        save_images=False,
        log_every_steps=10**9,
    )
    if compile_model:
        # Compile outside the timed epoch (same model object, so the graphs are cached), for
        # the full batches and for the epoch's last, smaller batch.
        warm = x[: 20 * batch_size + x.shape[0] % batch_size]
        Trainer(model, TensorDataset(warm), config=config).fit()
    data = TensorDataset(x)
    sync(device)
    start = time.perf_counter()
    Trainer(model, data, config=config).fit()
    sync(device)
    return x.shape[0] / (time.perf_counter() - start)


def flops_per_image(kind: str, batch_size: int, device: torch.device) -> float:
    """FLOPs of one forward + backward pass per image, counted by torch's flop counter."""
    model = make_model(kind).to(device)
    x = torch.rand(batch_size, 1, 28, 28, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).loss.backward()
    return counter.get_total_flops() / batch_size


def mlp_gemms(batch_size: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product in one forward + backward pass of the MLP."""
    gemms = []
    for i, (d_in, d_out) in enumerate(MLP_SHAPES):
        gemms.append((batch_size, d_in, d_out))  # forward
        gemms.append((d_out, batch_size, d_in))  # weight gradient
        if i != 0:  # every layer but the first passes a gradient to its input (x needs none)
            gemms.append((batch_size, d_out, d_in))
    return gemms


def matmul_time(
    gemms: list[tuple[int, int, int]], device: torch.device, dtype: torch.dtype, repeats: int = 20
) -> float:
    """Seconds for the given products with torch.mm, each the best of ``repeats`` runs."""
    g = torch.Generator(device=device).manual_seed(0)
    total = 0.0
    for m, k, n in gemms:
        a = torch.randn(m, k, device=device, generator=g).to(dtype)
        b = torch.randn(k, n, device=device, generator=g).to(dtype)
        best = float("inf")
        for _ in range(repeats + 1):
            sync(device)
            start = time.perf_counter()
            torch.mm(a, b)
            sync(device)
            best = min(best, time.perf_counter() - start)
        total += best
    return total


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        return info
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(
            (k.strip(), v.strip())
            for k, v in (ln.split(":", 1) for ln in out.splitlines() if ":" in ln)
        )
        flags = fields.get("Flags", "").split()
        info["name"] = f"{fields.get('Model name', 'unknown CPU')}, {os.cpu_count()} cores"
        info["bf16_flags"] = [f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile")]
    except (OSError, subprocess.CalledProcessError):
        info["name"] = platform.processor() or "unknown CPU"
    info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    info["mkldnn_bf16"] = bool(
        getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", choices=("mlp", "conv"), default="mlp")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16", "fp16")
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per setting")
    parser.add_argument("--num-images", type=int, default=None, help="default: all 60k")
    parser.add_argument("--compile", action="store_true", help="Trainer(compile=True)")
    parser.add_argument(
        "--plain-precisions",
        nargs="*",
        default=None,
        help="precisions of the plain loop (default: fp32 only)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    x = load_images(IMAGES, args.num_images)
    plain_precisions = args.plain_precisions if args.plain_precisions is not None else ["fp32"]
    # Warm-up: first-call costs (allocator, oneDNN primitive caches, lazy imports) are not
    # what either side should be charged for.
    plain_epoch(args.model, x[: 10 * args.batch_size], args.batch_size, device, "fp32")
    trainer_epoch(args.model, x[: 10 * args.batch_size], args.batch_size, device, "fp32", False)

    results: dict[str, list[float]] = {}
    loads: list[float] = []
    for _ in range(args.rounds):
        for precision in sorted(
            set(args.precisions) | set(plain_precisions), key=["fp32", "bf16", "fp16"].index
        ):
            loads.append(os.getloadavg()[0])
            if precision in plain_precisions:
                results.setdefault(f"plain {precision}", []).append(
                    plain_epoch(args.model, x, args.batch_size, device, precision)
                )
            if precision in args.precisions:
                name = f"trainer {precision}" + (" compiled" if args.compile else "")
                results.setdefault(name, []).append(
                    trainer_epoch(args.model, x, args.batch_size, device, precision, args.compile)
                )
            print(json.dumps({k: [round(v) for v in vs] for k, vs in results.items()}), flush=True)
    loads.append(os.getloadavg()[0])

    flops = flops_per_image(args.model, args.batch_size, device)
    baseline = statistics.median(results["plain fp32"]) if "plain fp32" in results else None
    rows = []
    for name, values in results.items():
        median = statistics.median(values)
        rows.append(
            {
                "setting": name,
                "images_per_s_median": round(median),
                "images_per_s_best": round(max(values)),
                "rounds": [round(v) for v in values],
                "vs_plain_fp32": round(median / baseline, 2) if baseline else None,
                "achieved_gflops": round(median * flops / 1e9, 1),
            }
        )
    peaks: dict[str, Any] = {}
    if args.model == "mlp":
        # The same products one training step computes, timed alone: their GFLOP/s is the
        # machine's speed at these shapes, and the images/s they allow is the ceiling.
        gemms = mlp_gemms(args.batch_size)
        gemm_flops = sum(2 * m * k * n for m, k, n in gemms)
        for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            seconds = matmul_time(gemms, device, dtype)
            peaks[label] = {
                "gflops": round(gemm_flops / seconds / 1e9, 1),
                "images_per_s_if_only_matmuls": round(args.batch_size / seconds),
            }
    report = {
        "machine": machine(device),
        "device": str(device),
        "model": args.model,
        "batch_size": args.batch_size,
        "num_images": x.shape[0],
        "load_average_1min": [round(v, 2) for v in loads],
        "mflop_per_image_fwd_bwd": round(flops / 1e6, 3),
        "matmul_at_the_step_shapes": peaks,
        "results": rows,
    }
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("\n| setting | images/s (median) | best | vs plain fp32 | GFLOP/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['setting']} | {r['images_per_s_median']} | {r['images_per_s_best']} | "
            f"{r['vs_plain_fp32']}x | {r['achieved_gflops']} |"
        )


if __name__ == "__main__":
    main()
