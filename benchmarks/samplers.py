"""Benchmark the core samplers: accuracy per NFE budget and per-step overhead.

1. Error: sliced 2-Wasserstein distance between samples drawn with the *exact* Gaussian-mixture denoiser and
   exact mixture samples, in 2-D and 64-D, for several NFE budgets (EDM ρ grid, σ ∈ [0.002, 80]).
   The floor is the mean distance between independent exact sample sets (sampling noise).
2. Overhead: each sampler's own cost per step (run with a free, cached denoiser) as a fraction of one call of
   a ~1M-parameter MLP denoiser at batch 1024.

Usage: ``python benchmarks/samplers.py [--quick] [--device cuda] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch import nn

from molediff.core.mixture import GaussianMixture, sliced_wasserstein
from molediff.core.samplers import SAMPLERS, prior_sample, sample
from molediff.core.schedules import EDM
from molediff.core.spaces import EuclideanSpace

NFE_PER_STEP = {"heun": 2, "pc": 2}  # Heun: 2 per step except the last; PC: predictor + one corrector


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_mixture(dim: int, device: str, seed: int) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    k = 3 if dim == 2 else 6
    means = 3 * torch.randn(k, dim, generator=g)
    stds = 0.3 + 0.5 * torch.rand(k, dim, generator=g)
    weights = torch.rand(k, generator=g) + 0.5
    return GaussianMixture(means.to(device), stds.to(device), weights.to(device))


def run_sampler(name, den, x, steps, seed, **kw):
    sig = EDM().sigmas(steps, device=x.device)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    info: dict = {}
    if name == "adaptive":
        kw["info"] = info
    out = sample(name, den, x, sig, generator=gen, **kw)
    return out, info


def accuracy_table(args, device):
    budgets = [10, 30, 100] if args.quick else [10, 20, 50, 100, 200]
    n = 2000 if args.quick else 10000
    print(f"\n## Error: sliced W2 to exact mixture samples (n={n}, lower is better)\n")
    for dim in (2, 64):
        gm = make_mixture(dim, device, args.seed)
        ref = gm.sample(n, torch.Generator(device=device).manual_seed(args.seed + 1))
        others = [gm.sample(n, torch.Generator(device=device).manual_seed(args.seed + k)) for k in (10, 11, 12)]
        proj = lambda: torch.Generator().manual_seed(args.seed + 3)  # noqa: E731
        x = prior_sample(EuclideanSpace(), (n, dim), 80.0, torch.Generator(device=device).manual_seed(args.seed),
                         device=device)
        floor = sum(float(sliced_wasserstein(ref, o, generator=proj())) for o in others) / len(others)
        print(f"### {dim}-D mixture (exact-vs-exact floor, mean of 3 pairs: {floor:.4f})\n")
        print("| sampler | " + " | ".join(f"NFE≈{b}" for b in budgets) + " |")
        print("|---" * (len(budgets) + 1) + "|")
        for name in SAMPLERS:
            cells = []
            for b in budgets:
                if name == "adaptive":
                    tol = {10: 1e-1, 20: 3e-2, 30: 1e-2, 50: 1e-2, 100: 1e-3, 200: 1e-4}[b]
                    out, info = run_sampler(name, gm.denoiser, x, 2, args.seed, rtol=tol, atol=tol)
                    cells.append(f"{float(sliced_wasserstein(out, ref, generator=proj())):.4f} ({info['nfe']})")
                    continue
                steps = max(1, (b + 1) // NFE_PER_STEP.get(name, 1))
                out, _ = run_sampler(name, gm.denoiser, x, steps, args.seed)
                cells.append(f"{float(sliced_wasserstein(out, ref, generator=proj())):.4f}")
            label = name + (" (tol, NFE)" if name == "adaptive" else "")
            print(f"| {label} | " + " | ".join(cells) + " |")
        print()


class MLPDenoiser(nn.Module):
    """A ~1M-parameter MLP ``D(x, σ)`` (cost model only)."""

    def __init__(self, dim: int = 64, hidden: int = 512, depth: int = 4) -> None:
        super().__init__()
        layers = [nn.Linear(dim + 1, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, x, sigma):
        return x + self.net(torch.cat([x, sigma.log()[:, None] / 4], dim=1))


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def overhead_table(args, device):
    dim, batch = 64, 1024
    steps = 20 if args.quick else 50
    net = MLPDenoiser(dim).to(device).eval()
    params = sum(p.numel() for p in net.parameters())
    x = torch.randn(batch, dim, device=device)
    sigma = torch.full((batch,), 1.0, device=device)
    with torch.no_grad():
        for _ in range(3):
            net(x, sigma)
        _sync(device)
        reps = 20 if args.quick else 50
        t0 = time.perf_counter()
        for _ in range(reps):
            net(x, sigma)
        _sync(device)
        t_call = (time.perf_counter() - t0) / reps
        cached = net(x, sigma)
    free = lambda x, s, **c: cached  # noqa: E731  (denoiser of zero cost: isolates the sampler's own work)
    print(f"\n## Overhead per step vs one denoiser call (MLP {params / 1e6:.2f}M params, batch {batch}, dim {dim}, "
          f"{steps} steps; one call = {1e3 * t_call:.2f} ms)\n")
    print("| sampler | NFE | sampler-only ms/step | overhead / call |")
    print("|---|---|---|---|")
    for name in SAMPLERS:
        kw = {"rtol": 1e-3, "atol": 1e-3} if name == "adaptive" else {}
        run_sampler(name, free, x * 80, 3, args.seed, **kw)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        _, info = run_sampler(name, free, x * 80, steps, args.seed, **kw)
        _sync(device)
        elapsed = time.perf_counter() - t0
        if name == "adaptive":
            nfe = info["nfe"]
            per = elapsed / max(nfe, 1)
            print(f"| {name} | {nfe} | {1e3 * per:.3f} (per NFE) | {100 * per / t_call:.1f}% |")
        else:
            per = elapsed / steps
            nfe = steps * NFE_PER_STEP.get(name, 1)
            print(f"| {name} | {nfe} | {1e3 * per:.3f} | {100 * per / (t_call * NFE_PER_STEP.get(name, 1)):.1f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer samples, budgets and timing repeats")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print("# molediff.core sampler benchmark")
    print(f"seed={args.seed} torch={torch.__version__} device={args.device} cpu='{cpu_name()}' "
          f"threads={torch.get_num_threads()} python={platform.python_version()} quick={args.quick}")
    if args.device.startswith("cuda"):
        print(f"gpu='{torch.cuda.get_device_name(args.device)}'")
    accuracy_table(args, args.device)
    overhead_table(args, args.device)


if __name__ == "__main__":
    main()
