"""Sampler speed: etsdm's samplers vs bare network forwards vs diffusers' scheduler loops.

For a small MLP on 2-D data and a small diffusers UNet2DModel on 8x8 images, times each sampler at
the given NFEs against (a) the same number of bare network forwards (conditions prebuilt, input
never updated: the floor) and (b) diffusers' own scheduler loop on the same network
(DDIMScheduler for ddim, DPMSolverSinglestepScheduler for dpm-solver-2/3, DPMSolverMultistepScheduler
for dpm-solver++2m, DDPMScheduler for ddpm). Every run is under torch.inference_mode, after a
warm-up, and reported as the median of ``--repeats``.

Columns: ``ours/bare`` = our time / bare forwards (1.00 = no overhead), ``over/NFE`` = (ours - bare)
/ NFE in µs, ``ours/diff`` = our time / diffusers' time (< 1: faster), ``diff/bare`` likewise.

    python bench/samplers.py                      # CPU, 1 thread, about 2 minutes
    python bench/samplers.py --device cuda --repeats 20

The ``none`` network (identity) isolates each loop's own cost per step; runs are interleaved so
that background load hits ours, diffusers' and the bare loop alike.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    UNet2DModel,
)
from torch import Tensor, nn

from etsdm import Denoiser, make_schedule, sample

SAMPLERS = ("ddim", "ddpm", "dpm-solver-2", "dpm-solver-3", "dpm-solver++2m")


class MLP(nn.Module):
    """A small ε-network for 2-D data: sinusoidal embedding of c, 3 hidden layers."""

    def __init__(self, width: int = 256, emb: int = 32):
        super().__init__()
        self.register_buffer("freqs", torch.exp(-math.log(1e4) * torch.arange(emb // 2) / (emb // 2)))
        self.body = nn.Sequential(
            nn.Linear(2 + emb, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, 2),
        )

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        arg = c.float().reshape(-1, 1).expand(x.shape[0], 1) * self.freqs
        return self.body(torch.cat([x, arg.sin(), arg.cos()], 1))


class Identity(nn.Module):
    """No network at all: net(x, c) = x, so a loop's time is its own overhead."""

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return x


class UNet(nn.Module):
    """diffusers' UNet2DModel on 8x8 RGB, called as net(x, c)."""

    def __init__(self):
        super().__init__()
        self.unet = UNet2DModel(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
        )

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.unet(x, c).sample


def diffusers_scheduler(sampler: str):
    """diffusers' counterpart of each sampler, on the same linear β table (1e-4 .. 0.02, T = 1000)."""
    common = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}
    if sampler == "ddim":
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **common)
    if sampler == "ddpm":
        return DDPMScheduler(clip_sample=False, variance_type="fixed_large", **common)
    if sampler == "dpm-solver++2m":
        return DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero", **common
        )
    return DPMSolverSinglestepScheduler(
        algorithm_type="dpmsolver", solver_order=int(sampler[-1]), final_sigmas_type="sigma_min", **common
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(runs: dict[Any, Callable[[], object]], device: torch.device, repeats: int) -> dict[Any, float]:
    """Median wall time (s) of each run, after one warm-up each. The runs are interleaved, repeat by
    repeat, in a shuffled order, so that load from other processes hits all of them alike."""
    times: dict[Any, list[float]] = {key: [] for key in runs}
    order = list(runs)
    for rep in range(repeats + 1):
        random.Random(rep).shuffle(order)  # no run is always first after the previous cell
        for key in order:
            fn = runs[key]
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if rep:  # rep 0 is the warm-up
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(v) for key, v in times.items()}


def bare_forwards(net: nn.Module, noise: Tensor, nfe: int) -> Callable[[], object]:
    conds = [torch.full((noise.shape[0],), float(t), device=noise.device) for t in torch.linspace(999, 0, nfe)]

    def run() -> object:
        for c in conds:
            out = net(noise, c)
        return out

    return run


def ours(net: nn.Module, noise: Tensor, sampler: str, nfe: int) -> Callable[[], object]:
    schedule = make_schedule("linear", T=1000)
    denoiser = Denoiser(net, schedule, prediction="eps")
    gen = torch.Generator(device=noise.device).manual_seed(0)
    return lambda: sample(denoiser, noise, schedule, sampler, nfe, generator=gen)


def theirs(net: nn.Module, noise: Tensor, sampler: str, nfe: int) -> Callable[[], object]:
    """diffusers' pipeline loop: set_timesteps, then model + scheduler.step per timestep."""
    scheduler = diffusers_scheduler(sampler)
    gen = torch.Generator(device=noise.device).manual_seed(0)
    kwargs = {"generator": gen} if sampler == "ddpm" else {}

    def run() -> Tensor:
        scheduler.set_timesteps(nfe, device=noise.device)
        x = noise
        for t in scheduler.timesteps:
            out = net(x, t.expand(x.shape[0]))
            x = scheduler.step(out, t, x, **kwargs).prev_sample
        return x

    return run


def bench_network(name: str, net: nn.Module, noise: Tensor, nfes: list[int], samplers: list[str], repeats: int):
    rows = []
    for nfe in nfes:
        runs = {("bare", ""): bare_forwards(net, noise, nfe)}
        for sampler in samplers:
            runs[("ours", sampler)] = ours(net, noise, sampler, nfe)
            runs[("diffusers", sampler)] = theirs(net, noise, sampler, nfe)
        t = timed(runs, noise.device, repeats)
        for sampler in samplers:
            rows.append((name, sampler, nfe, t[("bare", "")], t[("ours", sampler)], t[("diffusers", sampler)]))
            print_row(rows[-1])
    return rows


HEADER = (
    f"{'network':8} {'sampler':15} {'NFE':>4} {'bare ms':>9} {'ours ms':>9} {'diff ms':>9} "
    f"{'ours/bare':>9} {'over/NFE µs':>11} {'ours/diff':>9} {'diff/bare':>9}"
)


def print_row(row) -> None:
    name, sampler, nfe, bare, t_ours, t_diff = row
    print(
        f"{name:8} {sampler:15} {nfe:4d} {bare * 1e3:9.2f} {t_ours * 1e3:9.2f} {t_diff * 1e3:9.2f} "
        f"{t_ours / bare:9.3f} {(t_ours - bare) / nfe * 1e6:11.1f} {t_ours / t_diff:9.3f} {t_diff / bare:9.3f}",
        flush=True,
    )


def print_estimates(rows: list[tuple]) -> None:
    """(bare + loop overhead measured on the 'none' network) / bare: a ratio that background load
    distorts far less than the direct one, since the overhead is timed without the network."""
    none = {(r[1], r[2]): r for r in rows if r[0] == "none"}
    nets = [r for r in rows if r[0] != "none" and (r[1], r[2]) in none]
    if not nets:
        return
    print("\nestimated from the 'none' rows: (bare + loop overhead) / bare")
    print(
        f"{'network':8} {'sampler':15} {'NFE':>4} {'ours/bare':>9} {'diff/bare':>9} "
        f"{'ours µs/NFE':>11} {'diff µs/NFE':>11}"
    )
    for name, sampler, nfe, bare, _, _ in nets:
        _, _, _, bare0, ours0, diff0 = none[(sampler, nfe)]
        over_ours, over_diff = ours0 - bare0, diff0 - bare0
        print(
            f"{name:8} {sampler:15} {nfe:4d} {(bare + over_ours) / bare:9.3f} {(bare + over_diff) / bare:9.3f} "
            f"{over_ours / nfe * 1e6:11.1f} {over_diff / nfe * 1e6:11.1f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[20, 50], help="NFE budgets to time")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument(
        "--networks",
        nargs="+",
        default=["none", "mlp", "unet"],
        choices=["none", "mlp", "unet"],
        help="'none' is the identity: its rows show the pure per-step cost of each loop",
    )
    parser.add_argument("--batch-mlp", type=int, default=256)
    parser.add_argument("--batch-unet", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (CPU; 0 = torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device={device} threads={torch.get_num_threads()} repeats={args.repeats} torch={torch.__version__}")
    print(HEADER)
    rows: list[tuple] = []
    with torch.inference_mode():
        for name in args.networks:
            net = {"none": Identity, "mlp": MLP, "unet": UNet}[name]().to(device).eval()
            shape = (args.batch_unet, 3, 8, 8) if name == "unet" else (args.batch_mlp, 2)
            noise = torch.randn(shape, device=device)
            rows += bench_network(name, net, noise, args.nfe, args.samplers, args.repeats)
    print_estimates(rows)


if __name__ == "__main__":
    main()
