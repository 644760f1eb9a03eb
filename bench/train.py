"""Training speed: etsdm's Trainer against a minimal plain-PyTorch loop on the same model, data, batch.

    python bench/train.py                       # the default digits config, 60 timed steps per phase
    python bench/train.py configs/gmm_etsdm.yaml --steps 200 --set train.batch_size=256
    python bench/train.py --device cuda         # on a GPU (peak memory from torch.cuda)

Phases (each in its own fresh process, so peak memory is per phase; run in interleaved rounds, in a
shuffled order, so that a busy machine slows every phase alike; the median over rounds is reported):

* ``plain``: the loop anyone would write: random batch from an in-memory tensor, t ~ U{0..T-1},
  x_t = α_t x0 + σ_t ε from a precomputed table, MSE to ε, Adam step, EMA update with
  ``torch._foreach_lerp_`` (the Trainer keeps an EMA too, so both loops do the same work).
* ``etsdm`` / ``baseline``: ``Trainer._one_step`` (accelerate, DataLoader + resumable sampler,
  the Denoiser with the E-TSDM / identity condition map, diffusion_loss, per-step seeding, NaN
  check, EMA) — the exact code ``etsdm train`` runs, minus logging and checkpoints.

Prints steps/s, ratios to the plain loop (goal: Trainer >= 0.98x), the share of the Trainer's step
time spent waiting for data (``next()`` on its DataLoader; goal: never the bottleneck) and peak
memory (RSS on CPU, allocated on CUDA).
diffusers' own unconditional training example is a script outside the installed package, so it is
not run here (no network).
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click


def _peak_mem_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_plain(cfg, steps: int, warmup: int, device: str) -> tuple[float, float]:
    import torch

    from etsdm.runs import build_dataset, build_net, dataset_shape
    from etsdm.train.ema import EMA

    ds = build_dataset(cfg)
    data = torch.stack([ds[i] for i in range(len(ds))]).to(device)
    torch.manual_seed(cfg.train.seed)
    net = build_net(cfg, dataset_shape(ds)).to(device).train()
    ema = EMA(net, cfg.train.ema_rate)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr)
    sched = cfg.build_schedule()
    t_all = torch.arange(sched.T, dtype=torch.float64)
    alpha = sched.alpha(t_all).float().to(device)
    sigma = sched.sigma(t_all).float().to(device)
    b, T = cfg.train.batch_size, sched.T
    view = (-1,) + (1,) * (data.ndim - 1)

    def step() -> None:
        idx = torch.randint(0, len(data), (b,), device=device)
        x0 = data[idx]
        t = torch.randint(0, T, (b,), device=device)
        eps = torch.randn_like(x0)
        x_t = alpha[t].view(view) * x0 + sigma[t].view(view) * eps  # Eq. (1)
        loss = (net(x_t, t.float()) - eps).pow(2).mean()  # Eq. (4)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(net)
        float(loss)  # the same per-step host sync as the Trainer's NaN check

    return _time(step, steps, warmup, device), 0.0


class _Waiting:
    """An iterator wrapper that adds up the time spent in ``next()`` (waiting for a batch)."""

    def __init__(self, it):
        self.it, self.seconds = it, 0.0

    def __iter__(self):
        return self

    def __next__(self):
        t0 = time.perf_counter()
        try:
            return next(self.it)
        finally:
            self.seconds += time.perf_counter() - t0


def run_trainer(cfg, steps: int, warmup: int, device: str) -> tuple[float, float]:
    """Steps/s of ``Trainer._one_step`` and the share of its time spent waiting for data."""
    from etsdm.train.trainer import Trainer

    trainer = Trainer(cfg, Path(tempfile.mkdtemp()), progress=False)
    trainer.net.train()
    data = _Waiting(iter(trainer._loader()))

    def step() -> None:
        trainer._one_step(data)
        trainer.step += 1

    rate = _time(step, steps, warmup, device, reset=lambda: setattr(data, "seconds", 0.0))
    return rate, data.seconds * rate / steps  # waiting time / total time of the timed steps


def _time(step, steps: int, warmup: int, device: str, reset=None) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    if reset is not None:
        reset()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps / (time.perf_counter() - t0)


def _phase(phase: str, config: str | None, sets: tuple[str, ...], steps: int, warmup: int, device: str,
           threads: int) -> dict:
    import torch

    from etsdm.config import load_config

    if threads:
        torch.set_num_threads(threads)
    cond = "etsdm" if phase == "etsdm" else "identity"
    extra = [f"diffusion.condition.kind={cond}", "train.tensorboard=false"]
    cfg = load_config(config, [*sets, *extra])
    if not device.startswith("cuda"):
        os.environ["ACCELERATE_USE_CPU"] = "true"  # the Trainer's Accelerator stays on the CPU
    fn = run_plain if phase == "plain" else run_trainer
    rate, waiting = fn(cfg, steps, warmup, device)
    return {"phase": phase, "steps_per_s": rate, "data_wait": waiting, "peak_mem_mb": _peak_mem_mb(device)}


@click.command(context_settings={"show_default": True})
@click.argument("config", required=False)
@click.option("--set", "sets", multiple=True, help="Config overrides, as for `etsdm train`.")
@click.option("--steps", default=60, help="Timed steps per phase and round.")
@click.option("--warmup", default=5, help="Untimed steps first.")
@click.option("--rounds", default=3, help="Interleaved rounds (median reported).")
@click.option("--device", default="cpu", help="cpu or cuda.")
@click.option("--threads", default=0, help="torch CPU threads in every phase (0: torch's default; 1 on a busy CPU).")
@click.option("--phase", default=None, hidden=True)
def main(config, sets, steps, warmup, rounds, device, threads, phase) -> None:
    """Steps/s of the Trainer vs a plain loop, E-TSDM vs baseline, and peak memory."""
    if phase:
        click.echo(json.dumps(_phase(phase, config, sets, steps, warmup, device, threads)))
        return
    results: dict[str, list[dict]] = {"plain": [], "baseline": [], "etsdm": []}
    for r in range(rounds):
        order = list(results)
        random.Random(r).shuffle(order)  # no phase always runs first (or right after another)
        for ph in order:
            cmd = [sys.executable, __file__, "--phase", ph, "--steps", str(steps), "--warmup", str(warmup),
                   "--device", device, "--threads", str(threads), *["--set=" + s for s in sets],
                   *([config] if config else [])]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            results[ph].append(json.loads(out))
            click.echo(f"round {r + 1} {ph:9s} {results[ph][-1]['steps_per_s']:8.2f} steps/s", err=True)
    med = {ph: statistics.median(x["steps_per_s"] for x in v) for ph, v in results.items()}
    wait = {ph: statistics.median(x["data_wait"] for x in v) for ph, v in results.items()}
    mem = {ph: max(x["peak_mem_mb"] for x in v) for ph, v in results.items()}
    ratio = {ph: statistics.median(b["steps_per_s"] / a["steps_per_s"]  # per round: phases ran back to back
                                   for a, b in zip(results["plain"], v, strict=True)) for ph, v in results.items()}
    click.echo(f"config: {config or 'default (digits E-TSDM)'}  overrides: {list(sets)}  device: {device}  "
               f"threads: {threads or 'default'}  rounds: {rounds} x {steps} steps")
    click.echo(f"{'phase':10s} {'steps/s':>9s} {'vs plain':>9s} {'per round':>9s} {'data wait':>9s} {'peak MB':>9s}")
    for ph in results:
        data_wait = "-" if ph == "plain" else f"{100 * wait[ph]:.1f} %"
        click.echo(f"{ph:10s} {med[ph]:9.2f} {med[ph] / med['plain']:9.3f} {ratio[ph]:9.3f} {data_wait:>9s} "
                   f"{mem[ph]:9.0f}")
    click.echo("goal: Trainer / plain >= 0.98 ('vs plain': ratio of the medians; 'per round': median of the "
               "per-round ratios)")
    click.echo(f"E-TSDM / baseline (Trainer): {med['etsdm'] / med['baseline']:.3f}")


if __name__ == "__main__":
    main()
