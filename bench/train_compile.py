"""``train.compile: true`` against eager training: the Trainer's steps/s on the same config.

    python bench/train_compile.py                   # the default digits config (CPU), 40 timed steps
    python bench/train_compile.py configs/cond_digits_etsdm.yaml --set train.batch_size=64
    python bench/train_compile.py --device cuda

Phases ``eager`` and ``compiled`` each run in a fresh process (so one's compiled kernels and caches
never help the other), in interleaved rounds in a shuffled order (a busy machine slows both alike);
each runs ``--warmup`` untimed steps first — the compiled phase's first step is where torch.compile
traces and compiles, reported as ``first step`` — then ``--steps`` timed ``Trainer._one_step``
calls (the exact code ``etsdm train`` runs, minus logging and checkpoints). Prints the median
steps/s of each phase, compiled / eager (ratio of the medians, and the median of the per-round
ratios) and the compile time.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

PHASES = ("eager", "compiled")


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _phase(phase: str, config: str | None, sets: tuple[str, ...], steps: int, warmup: int, device: str,
           threads: int) -> dict:
    import torch

    from etsdm.config import load_config
    from etsdm.train.trainer import Trainer

    if threads:
        torch.set_num_threads(threads)
    if not device.startswith("cuda"):
        os.environ["ACCELERATE_USE_CPU"] = "true"  # the Trainer's Accelerator stays on the CPU
    cfg = load_config(config, [*sets, "train.tensorboard=false", f"train.compile={phase == 'compiled'}"])
    trainer = Trainer(cfg, Path(tempfile.mkdtemp()), progress=False)
    trainer.net.train()
    data = iter(trainer._loader())

    def step() -> None:
        trainer._one_step(data)
        trainer.step += 1

    t0 = time.perf_counter()
    step()  # the compiled phase traces and compiles here
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return {"phase": phase, "steps_per_s": steps / (time.perf_counter() - t0), "first_step_s": first}


@click.command(context_settings={"show_default": True})
@click.argument("config", required=False)
@click.option("--set", "sets", multiple=True, help="Config overrides, as for `etsdm train`.")
@click.option("--steps", default=40, help="Timed steps per phase and round.")
@click.option("--warmup", default=5, help="Untimed steps first (the first one compiles).")
@click.option("--rounds", default=3, help="Interleaved rounds (median reported).")
@click.option("--device", default="cpu", help="cpu or cuda.")
@click.option("--threads", default=0, help="torch CPU threads in every phase (0: torch's default).")
@click.option("--phase", default=None, hidden=True)
def main(config, sets, steps, warmup, rounds, device, threads, phase) -> None:
    """Steps/s of the Trainer with train.compile false vs true."""
    if phase:
        click.echo(json.dumps(_phase(phase, config, sets, steps, warmup, device, threads)))
        return
    results: dict[str, list[dict]] = {ph: [] for ph in PHASES}
    for r in range(rounds):
        order = list(PHASES)
        random.Random(r).shuffle(order)
        for ph in order:
            cmd = [sys.executable, __file__, "--phase", ph, "--steps", str(steps), "--warmup", str(warmup),
                   "--device", device, "--threads", str(threads), *["--set=" + s for s in sets],
                   *([config] if config else [])]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            results[ph].append(json.loads(out))
            click.echo(f"round {r + 1} {ph:9s} {results[ph][-1]['steps_per_s']:8.2f} steps/s", err=True)
    med = {ph: statistics.median(x["steps_per_s"] for x in v) for ph, v in results.items()}
    first = {ph: statistics.median(x["first_step_s"] for x in v) for ph, v in results.items()}
    per_round = statistics.median(c["steps_per_s"] / e["steps_per_s"]
                                  for e, c in zip(results["eager"], results["compiled"], strict=True))
    click.echo(f"config: {config or 'default (digits)'}  overrides: {list(sets)}  device: {device}  "
               f"threads: {threads or 'default'}  rounds: {rounds} x {steps} steps")
    click.echo(f"{'phase':10s} {'steps/s':>9s} {'first step':>11s}")
    for ph in PHASES:
        click.echo(f"{ph:10s} {med[ph]:9.2f} {first[ph]:10.2f}s")
    click.echo(f"compiled / eager: {med['compiled'] / med['eager']:.3f} (ratio of the medians), "
               f"{per_round:.3f} (median of the per-round ratios)")


if __name__ == "__main__":
    main()
