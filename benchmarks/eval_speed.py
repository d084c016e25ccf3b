"""Speed of vaekit.evaluate: K importance samples over the Fashion-MNIST test images.

Measures the benchmark MLP (MLPVAE(input_shape=(1, 28, 28), latent_dim=20, hidden_dims=(400,)),
Bernoulli likelihood, untrained weights: speed does not depend on them) on statically binarised
Fashion-MNIST test images, read straight from the IDX file. Reports seconds, images/s and the
achieved matmul throughput against torch.mm timed at the same shapes on the same machine.

    PYTHONPATH=src python benchmarks/eval_speed.py                      # all 10k images
    PYTHONPATH=src python benchmarks/eval_speed.py --num-images 1024    # a subset, extrapolated

FLOPs counted per image: K decoder passes, 2 * (20*400 + 400*784) each, plus one encoder pass,
2 * (784*400 + 400*40). Everything else (the Bernoulli log-probabilities, the copies, the
ELBO's extra pass) is work too but is not counted, so the ratio to the matmul peak is the
share of the machine's matmul speed that evaluation turns into useful decoder FLOPs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from vaekit import MLPVAE
from vaekit.data.dataset import static_binarize
from vaekit.data.idx import read_idx
from vaekit.evaluation import evaluate

IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
LATENT, HIDDEN, PIXELS = 20, 400, 784
DECODER_FLOPS = 2 * (LATENT * HIDDEN + HIDDEN * PIXELS)  # per (sample, image)
ENCODER_FLOPS = 2 * (PIXELS * HIDDEN + HIDDEN * 2 * LATENT)  # per image


def load_binarized(path: Path, seed: int = 0) -> torch.Tensor:
    """The IDX images as (N, 1, 28, 28) float32, binarised once with a fixed seed."""
    return static_binarize(read_idx(path).unsqueeze(1).float() / 255, seed=seed)


def matmul_peak(rows: int, device: torch.device, repeats: int = 10) -> float:
    """GFLOP/s of torch.mm at the decoder's two shapes with ``rows`` rows, best of repeats."""
    g = torch.Generator(device=device).manual_seed(0)
    z = torch.randn(rows, LATENT, device=device, generator=g)
    w1 = torch.randn(LATENT, HIDDEN, device=device, generator=g)
    h = torch.randn(rows, HIDDEN, device=device, generator=g)
    w2 = torch.randn(HIDDEN, PIXELS, device=device, generator=g)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        sync(device)
        start = time.perf_counter()
        torch.mm(z, w1)
        torch.mm(h, w2)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return rows * DECODER_FLOPS / best / 1e9


def sync(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor() or "unknown CPU"
    return f"{name}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=10_000)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-memory-elements", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true", help="print the top operators")
    args = parser.parse_args()

    device = torch.device(args.device)
    x = load_binarized(IMAGES)
    total_images = x.shape[0]
    x = x[: args.num_images].to(device)
    torch.manual_seed(0)
    model = MLPVAE(input_shape=(1, 28, 28), latent_dim=LATENT, hidden_dims=(HIDDEN,)).to(device)
    kwargs = {
        "num_samples": args.num_samples,
        "batch_size": args.batch_size,
        "max_memory_elements": args.max_memory_elements,
        "progress": False,
    }
    evaluate(model, x[: args.batch_size], **{**kwargs, "num_samples": 20})  # warm-up
    n, k = x.shape[0], args.num_samples
    budget = args.max_memory_elements or 2**24  # VAE.log_likelihood's default
    chunk = max(1, min(k, budget // (args.batch_size * PIXELS)))
    peak_before = matmul_peak(chunk * args.batch_size, device)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    sync(device)
    start = time.perf_counter()
    metrics = evaluate(model, x, **kwargs)
    sync(device)
    seconds = time.perf_counter() - start

    # The best of before and after: on a shared machine other jobs slow either down.
    peak = max(peak_before, matmul_peak(chunk * args.batch_size, device))
    achieved = n * (k * DECODER_FLOPS + ENCODER_FLOPS) / seconds / 1e9
    result = {
        "machine": machine(),
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_1min": round(load, 2),
        "num_images": n,
        "num_samples": k,
        "batch_size": args.batch_size,
        "samples_per_chunk": chunk,
        "seconds": round(seconds, 2),
        "images_per_s": round(n / seconds, 2),
        "seconds_for_all_extrapolated": round(seconds * total_images / n, 1),
        "achieved_gflops": round(achieved, 2),
        "matmul_peak_gflops": round(peak, 2),
        "share_of_peak": round(achieved / peak, 3),
        "nll": round(metrics["nll"], 3),
    }
    print(json.dumps(result, indent=2))

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + (
            [ProfilerActivity.CUDA] if device.type == "cuda" else []
        )
        with profile(activities=activities) as prof:
            evaluate(model, x[: args.batch_size], **kwargs)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    main()
