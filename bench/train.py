"""Training speed: etsdm's Trainer against a minimal plain-PyTorch loop on the same model, data, batch.

    python bench/train.py                       # the default digits config, 60 timed steps per phase
    python bench/train.py configs/gmm_etsdm.yaml --steps 200 --set train.batch_size=256
    python bench/train.py --compile             # also the torch.compile phases
    python bench/train.py --device cuda         # on a GPU (peak memory from torch.cuda)

Phases (each in its own fresh process, so peak memory and torch.compile's in-process caches are per
phase; run in interleaved rounds — each round the eager phases first, then the compiled ones; round
1 in the table's order, later rounds shuffled — so that a busy machine slows every phase alike; the
median over rounds is reported):

* ``plain``: the loop anyone would write: random batch from an in-memory tensor, t ~ U{0..T-1},
  x_t = α_t x0 + σ_t ε from a precomputed table, MSE to ε, Adam step, EMA update (the Trainer
  keeps an EMA too, so both loops do the same work).
* ``baseline`` / ``etsdm``: ``Trainer._one_step`` (accelerate, DataLoader + resumable sampler,
  the Denoiser with the identity / E-TSDM condition map, diffusion_loss, per-step seeding, NaN
  check, EMA) — the exact code ``etsdm train`` runs, minus logging and checkpoints.
* with ``--compile`` also ``plain+compile`` (the plain loop's network in ``torch.compile``, default
  mode) and ``baseline+compile`` / ``etsdm+compile`` (the Trainer with ``train.compile: true``, which
  compiles the training network the same way; the EMA copy stays eager in both).

``--in-process N`` instead runs ``plain``, ``baseline`` and ``etsdm`` in one process, N alternating
blocks of ``--steps`` steps each, and prints wall and CPU time per step and the ratios to the plain loop
(process-to-process differences cancel; a cross-check of the table's ratios).

Each phase runs ``--warmup`` untimed steps — the first one timed apart as ``first step`` (a compiled
phase traces and compiles there; round 1 compiles cold unless inductor's on-disk cache already
holds the graphs, later rounds may hit that cache) — then ``--steps`` timed steps.

Prints steps/s; ``vs plain``: the ratio to the plain loop of the same kind (eager rows to
``plain``, compiled rows to ``plain+compile``; goal: Trainer >= 0.98x), as the ratio of the medians
and the median of the per-round ratios; ``vs eager``: a compiled phase over the same phase eager
(the speed-up of torch.compile); the share of the Trainer's step time spent waiting for data
(``next()`` on its DataLoader; goal: never the bottleneck); peak memory (RSS on CPU,
``torch.cuda.max_memory_allocated`` on CUDA). A phase that fails or runs past ``--phase-timeout``
(or what is left of ``--budget``) is reported as such and the others still run; once ``--budget`` is
spent the remaining phases are skipped and the table is printed.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click


@dataclass(frozen=True)
class Phase:
    label: str
    trainer: bool  # Trainer._one_step (else the plain loop)
    condition: str  # diffusion.condition.kind
    compiled: bool
    eager: str | None = None  # the same phase without torch.compile
    reference: str = "plain"  # the plain loop it is compared with


EAGER_PHASES = {
    "plain": Phase("plain loop", False, "identity", False),
    "baseline": Phase("Trainer, identity (baseline)", True, "identity", False),
    "etsdm": Phase("Trainer, E-TSDM", True, "etsdm", False),
}
COMPILED_PHASES = {
    "plain+compile": Phase("plain loop, torch.compile", False, "identity", True, "plain", "plain+compile"),
    "baseline+compile": Phase("Trainer, identity, compiled (train.compile: true)", True, "identity", True,
                              "baseline", "plain+compile"),
    "etsdm+compile": Phase("Trainer, E-TSDM, compiled (train.compile: true)", True, "etsdm", True,
                           "etsdm", "plain+compile"),
}
PHASES = {**EAGER_PHASES, **COMPILED_PHASES}
MIN_PHASE_S = 5.0  # a phase is not started with less of --budget left


def _peak_mem_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_step(cfg: Any, device: str, compiled: bool) -> Callable[[], None]:
    """One step of the plain loop (its network in ``torch.compile`` when ``compiled``)."""
    import torch

    from etsdm.runs import build_dataset, build_net, dataset_shape
    from etsdm.train.ema import EMA

    ds = build_dataset(cfg)
    data = torch.stack([ds[i] for i in range(len(ds))]).to(device)
    torch.manual_seed(cfg.train.seed)
    net = build_net(cfg, dataset_shape(ds)).to(device).train()
    ema = EMA(net, cfg.train.ema_rate)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr)
    forward = torch.compile(net) if compiled else net  # as Trainer does with train.compile: true
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
        loss = (forward(x_t, t.float()) - eps).pow(2).mean()  # Eq. (4)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(net)
        float(loss.detach())  # the same per-step host sync as the Trainer's NaN check

    return step


class _Waiting:
    """An iterator wrapper that adds up the time spent in ``next()`` (waiting for a batch)."""

    def __init__(self, it: Iterator[Any]):
        self.it, self.seconds = it, 0.0

    def __iter__(self) -> _Waiting:
        return self

    def __next__(self) -> Any:
        t0 = time.perf_counter()
        try:
            return next(self.it)
        finally:
            self.seconds += time.perf_counter() - t0


def trainer_step(cfg: Any) -> tuple[Callable[[], None], _Waiting]:
    """One ``Trainer._one_step`` and the wrapper that times its DataLoader's ``next()``."""
    from etsdm.train.trainer import Trainer

    trainer = Trainer(cfg, Path(tempfile.mkdtemp()), progress=False)
    trainer.net.train()
    data = _Waiting(iter(trainer._loader()))

    def step() -> None:
        trainer._one_step(data)
        trainer.step += 1

    return step, data


def _time(step: Callable[[], None], steps: int, warmup: int, device: str,
          reset: Callable[[], None] | None = None) -> tuple[float, float]:
    """(seconds of the first step, steps/s of ``steps`` timed steps after ``warmup`` untimed ones)."""
    t0 = time.perf_counter()
    step()  # a compiled phase traces and compiles here
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        step()
    _sync(device)
    if reset is not None:
        reset()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return first, steps / (time.perf_counter() - t0)


def _phase(name: str, config: str | None, sets: tuple[str, ...], steps: int, warmup: int, device: str,
           threads: int) -> dict:
    import torch

    from etsdm.config import load_config

    ph = PHASES[name]
    if threads:
        torch.set_num_threads(threads)
    extra = [f"diffusion.condition.kind={ph.condition}", "train.tensorboard=false",
             f"train.compile={ph.trainer and ph.compiled}"]
    cfg = load_config(config, [*sets, *extra])
    if not device.startswith("cuda"):
        os.environ["ACCELERATE_USE_CPU"] = "true"  # the Trainer's Accelerator stays on the CPU
    waiting = None
    if ph.trainer:
        step, waiting = trainer_step(cfg)
    else:
        step = plain_step(cfg, device, ph.compiled)
    reset = None if waiting is None else (lambda: setattr(waiting, "seconds", 0.0))
    first, rate = _time(step, steps, warmup, device, reset=reset)
    wait_share = 0.0 if waiting is None else waiting.seconds * rate / steps  # waiting / time of the timed steps
    return {"phase": name, "steps_per_s": rate, "first_step_s": first, "data_wait": wait_share,
            "peak_mem_mb": _peak_mem_mb(device)}


def _phase_limit(phase_timeout: float, deadline: float | None) -> float | None:
    """Seconds the next phase may run: --phase-timeout or what is left of --budget, the smaller; None: no limit."""
    limits = [phase_timeout] if phase_timeout else []
    if deadline is not None:
        limits.append(deadline - time.monotonic())
    return min(limits) if limits else None


def _run_phase(name: str, args: list[str], timeout: float | None) -> dict | None:
    """One phase in a fresh process: its result, or None (the reason on stderr) if it failed or timed out."""
    cmd = [sys.executable, __file__, "--phase", name, *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        click.echo(f"  {name}: no result, ran past its {timeout:.0f} s (--phase-timeout / --budget)", err=True)
        return None
    if done.returncode:
        click.echo(f"  {name}: failed (exit {done.returncode}); its stderr ends:\n{done.stderr[-2000:]}", err=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _order(names: list[str], round_index: int) -> list[str]:
    """A round's phase order: the eager phases, then the compiled ones (a run cut short by --budget keeps
    its cheap eager rows); round 1 in the table's order, later rounds each group shuffled (no phase
    always runs first or right after another)."""
    groups = [[n for n in names if not PHASES[n].compiled], [n for n in names if PHASES[n].compiled]]
    if round_index:
        rng = random.Random(round_index)
        for group in groups:
            rng.shuffle(group)
    return [n for group in groups for n in group]


def _median(rows: list[dict], key: str) -> float | None:
    return statistics.median(r[key] for r in rows) if rows else None


def _per_round(results: dict[str, list[dict | None]], num: str, den: str) -> float | None:
    """Median over rounds of num / den where both ran (phases of a round run back to back)."""
    ratios = [a["steps_per_s"] / b["steps_per_s"] for a, b in zip(results[num], results[den], strict=True) if a and b]
    return statistics.median(ratios) if ratios else None


def _fmt(value: float | None, width: int, spec: str, suffix: str = "") -> str:
    text = "-" if value is None else f"{value:{spec}}{suffix}"
    return f"{text:>{width}}"


def report(results: dict[str, list[dict | None]], header: str) -> None:
    """The table: steps/s, ratios to the plain loop and to eager, first step, data wait, peak memory."""
    ok = {ph: [r for r in rows if r] for ph, rows in results.items()}
    med = {ph: _median(rows, "steps_per_s") for ph, rows in ok.items()}
    click.echo(header)
    click.echo(f"{'phase':50s} {'steps/s':>8s} {'vs plain':>8s} {'per rnd':>8s} {'vs eager':>8s} "
               f"{'1st step':>8s} {'data wait':>9s} {'peak MB':>8s} {'ran':>5s}")
    for name, rows in ok.items():
        ph = PHASES[name]
        ref, eager = med.get(ph.reference), med.get(ph.eager) if ph.eager else None
        vs_plain = med[name] / ref if med[name] and ref else None
        vs_eager = med[name] / eager if med[name] and eager else None
        wait = _median(rows, "data_wait") if ph.trainer else None
        peak = max((r["peak_mem_mb"] for r in rows), default=None)
        click.echo(f"{ph.label:50s} {_fmt(med[name], 8, '.2f')} {_fmt(vs_plain, 8, '.3f')} "
                   f"{_fmt(_per_round(results, name, ph.reference), 8, '.3f')} {_fmt(vs_eager, 8, '.3f')} "
                   f"{_fmt(_median(rows, 'first_step_s'), 8, '.2f', 's')} "
                   f"{_fmt(None if wait is None else 100 * wait, 9, '.1f', ' %')} "
                   f"{_fmt(peak, 8, '.0f')} {len(rows):>3d}/{len(results[name])}")
    click.echo("vs plain: ratio of the medians to the plain loop of the same kind (compiled rows: to the compiled "
               "plain loop); per rnd: median of the per-round ratios; goal: Trainer / plain >= 0.98. vs eager: a "
               "compiled phase / the same phase eager. 1st step: median over rounds (includes compiling). "
               "ran: rounds with a result / rounds")
    for num, den in (("etsdm", "baseline"), ("etsdm+compile", "baseline+compile")):
        if med.get(num) and med.get(den):
            click.echo(f"E-TSDM / baseline ({PHASES[num].label.split(',')[0]}"
                       f"{', compiled' if PHASES[num].compiled else ''}): {med[num] / med[den]:.3f}")


def in_process(config: str | None, sets: tuple[str, ...], blocks: int, steps: int, warmup: int, device: str,
               threads: int) -> None:
    """The plain loop and the eager Trainer phases in one process, in alternating blocks of ``steps``
    steps (the order rotates each block): what differs between processes (where the allocator put
    the tensors, the CPU's clock) is shared, so the per-block ratios are tighter than the table's."""
    import torch

    from etsdm.config import load_config

    if threads:
        torch.set_num_threads(threads)
    if not device.startswith("cuda"):
        os.environ["ACCELERATE_USE_CPU"] = "true"
    steppers = {}
    for name, ph in EAGER_PHASES.items():
        cfg = load_config(config, [*sets, f"diffusion.condition.kind={ph.condition}", "train.tensorboard=false"])
        steppers[name] = trainer_step(cfg)[0] if ph.trainer else plain_step(cfg, device, False)
        for _ in range(warmup):
            steppers[name]()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steppers}  # (wall, CPU) s per step
    names = list(steppers)
    for b in range(blocks):
        for name in names[b % len(names):] + names[: b % len(names)]:
            _sync(device)
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                steppers[name]()
            _sync(device)
            times[name].append(((time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps))
    click.echo(f"in one process: config {config or 'default (digits E-TSDM)'}  overrides {list(sets)}  device "
               f"{device}  threads {threads or 'default'}  {blocks} blocks x {steps} steps (+{warmup} warm-up)")
    click.echo(f"{'phase':30s} {'ms/step wall':>12s} {'ms/step CPU':>12s} {'vs plain, wall':>15s} {'CPU':>6s} "
               f"{'per block':>10s}")
    ref_wall, ref_cpu = (statistics.median(t[i] for t in times["plain"]) for i in (0, 1))
    for name in names:
        wall, cpu = (statistics.median(t[i] for t in times[name]) for i in (0, 1))
        per_block = statistics.median(p[0] / t[0] for p, t in zip(times["plain"], times[name], strict=True))
        click.echo(f"{PHASES[name].label:30s} {1e3 * wall:12.2f} {1e3 * cpu:12.2f} {ref_wall / wall:15.3f} "
                   f"{ref_cpu / cpu:6.3f} {per_block:10.3f}")
    click.echo("vs plain: plain loop's median time per step / the phase's (speed ratio; goal >= 0.98); per block: "
               "median over blocks of that ratio (wall)")


@click.command(context_settings={"show_default": True})
@click.argument("config", required=False)
@click.option("--set", "sets", multiple=True, help="Config overrides, as for `etsdm train`.")
@click.option("--steps", default=60, help="Timed steps per phase and round.")
@click.option("--warmup", default=5, help="Untimed steps first (>= 1; the first one is timed apart and compiles).")
@click.option("--rounds", default=3, help="Interleaved rounds (median reported).")
@click.option("--compile", "with_compile", is_flag=True, help="Also the torch.compile phases (plain loop, Trainer).")
@click.option("--device", default="cpu", help="cpu or cuda.")
@click.option("--threads", default=0, help="torch CPU threads in every phase (0: torch's default; 1 on a busy CPU).")
@click.option("--phase-timeout", default=0.0, help="Seconds per phase process before it is skipped (0: none).")
@click.option("--budget", default=0.0,
              help="Seconds for the whole run: later phases get what is left, then are skipped (0: none).")
@click.option("--in-process", "blocks", default=0,
              help="Instead: the eager phases in one process, this many alternating blocks of --steps steps.")
@click.option("--phase", default=None, hidden=True, type=click.Choice(list(PHASES)))
def main(config, sets, steps, warmup, rounds, with_compile, device, threads, phase_timeout, budget, blocks,
         phase) -> None:
    """Steps/s of the Trainer vs a plain loop, E-TSDM vs baseline, eager vs compiled, and peak memory."""
    if warmup < 1:
        raise click.BadParameter(f"must be >= 1 (the first step is timed apart), got {warmup}", param_hint="--warmup")
    if blocks:
        in_process(config, sets, blocks, steps, warmup, device, threads)
        return
    if phase:
        click.echo(json.dumps(_phase(phase, config, sets, steps, warmup, device, threads)))
        return
    names = list(PHASES if with_compile else EAGER_PHASES)
    results: dict[str, list[dict | None]] = {ph: [] for ph in names}
    args = ["--steps", str(steps), "--warmup", str(warmup), "--device", device, "--threads", str(threads),
            *["--set=" + s for s in sets], *([config] if config else [])]
    deadline = time.monotonic() + budget if budget else None
    for r in range(rounds):
        for ph in _order(names, r):
            limit = _phase_limit(phase_timeout, deadline)
            if limit is not None and limit < MIN_PHASE_S:
                click.echo(f"  {ph}: skipped, --budget spent", err=True)
                results[ph].append(None)
                continue
            res = _run_phase(ph, args, limit)
            results[ph].append(res)
            if res:
                click.echo(f"round {r + 1} {ph:17s} {res['steps_per_s']:8.2f} steps/s, first step "
                           f"{res['first_step_s']:.2f} s, data wait {100 * res['data_wait']:.1f} %, "
                           f"peak {res['peak_mem_mb']:.0f} MB", err=True)
    report(results, f"config: {config or 'default (digits E-TSDM)'}  overrides: {list(sets)}  device: {device}  "
                    f"threads: {threads or 'default'}  rounds: {rounds} x {steps} steps (+{warmup} warm-up)")


if __name__ == "__main__":
    main()
