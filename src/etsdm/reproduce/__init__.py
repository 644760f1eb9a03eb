"""``etsdm reproduce``: every claim of the paper re-tested in one command, with seeds and intervals.

    from etsdm.reproduce import reproduce
    results = reproduce("out/repro", budget="quick")          # trains, samples, measures, reports
    print(reproduce("out/repro", budget="toy", dry_run=True))  # the runs, the work left, its cost

Pieces: :mod:`.claims` (the registry: what each claim compares, the paper's numbers),
:mod:`.budgets` (quick / toy / full sizes), :mod:`.runner` (runs and cached evaluations, resumable),
:mod:`.report` (paired statistics, verdicts, report.md / report.json), :mod:`.figures`.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .budgets import BUDGETS, Budget, FamilyBudget
from .claims import CLAIM_IDS, CLAIMS, Arm, Claim, Row
from .report import build_results, machine, markdown, report_json
from .runner import (
    Context,
    ReproduceError,
    RunSpec,
    execute,
    pending,
    plan_runs,
    run_finished,
    task_seconds,
)

__all__ = [
    "BUDGETS", "CLAIMS", "CLAIM_IDS", "Arm", "Budget", "Claim", "FamilyBudget", "ReproduceError", "Row", "RunSpec",
    "plan_runs", "plan_text", "reproduce", "select_budget",
]


ANALYTIC_S = 0.0125  # seconds per (test image x mixture component) of the analytic reference, one idle core


def select_budget(name: str, seeds: int | None = None, steps: int | None = None) -> Budget:
    """The named budget, with every family's number of training seeds and training steps per run set
    to ``seeds`` and ``steps`` where given (a longer or better-seeded toy run of a few claims)."""
    if name not in BUDGETS:
        raise ReproduceError(f"budget {name!r}: allowed: {', '.join(BUDGETS)}")
    budget = BUDGETS[name]
    if seeds is not None and seeds < 2:
        raise ReproduceError(f"--seeds {seeds}: a paired interval needs at least 2 training seeds")
    if steps is not None and steps < 1:
        raise ReproduceError(f"--steps {steps}: a run trains at least 1 step")
    if steps is not None and budget.train_only:
        raise ReproduceError(f"--steps with --budget {name}: its runs train as long as their configs/paper "
                             "config says (edit train.steps there)")
    changes = {k: v for k, v in (("seeds", seeds), ("steps", steps)) if v is not None}
    if not changes:
        return budget
    fams = {k: dataclasses.replace(v, **changes) for k, v in budget.families.items()}
    return dataclasses.replace(budget, families=fams)


def _check_claims(claims: list[str] | None) -> list[str]:
    ids = list(CLAIM_IDS) if not claims else list(dict.fromkeys(claims))
    unknown = [c for c in ids if c not in CLAIMS]
    if unknown:
        raise ReproduceError(f"unknown claim(s) {', '.join(unknown)}; allowed: {', '.join(CLAIM_IDS)}")
    return ids


def _fmt(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def full_command(spec: RunSpec, out: Path, data: str | None) -> str:
    """The ``accelerate launch`` command of one paper-scale run."""
    sets = [f"train.seed={spec.seed}"] + ([f"data.root={data}"] if data and data != "digits" else [])
    parts = ["accelerate", "launch", "$(which etsdm)", "train", spec.arm.paper_config]
    for s in sets:
        parts += ["--set", shlex.quote(s)]
    return " ".join(parts + ["--out", shlex.quote(str(spec.run_dir(out)))])


def plan_text(out: Path, budget: Budget, claims: list[str], specs: list[RunSpec], data: str | None,
              jobs: int) -> str:
    """The dry-run listing: per claim its runs, what is left to do, and the estimated time."""
    lines = [f"etsdm reproduce --budget {budget.name}: {len(specs)} runs for claims {', '.join(claims)} -> {out}"]
    if budget.train_only:
        lines.append("full budget: train each run below at paper scale (configs/paper), then rerun without "
                     "--dry-run to build the report from the finished run folders:")
        for spec in specs:
            state = "finished" if _paper_run_done(spec, out) else "to train"
            lines.append(f"  [{state}] {full_command(spec, out, data)}")
        return "\n".join(lines)
    total = 0.0
    for cid in claims:
        claim = CLAIMS[cid]
        fam = budget.families[claim.family]
        mine = [s for s in specs if cid in s.claims and s.metrics]
        lines.append(f"claim {cid} ({claim.paper_ref}): {len({s.arm.name for s in mine})} arms x {fam.seeds} seeds, "
                     f"{fam.steps} steps; rows: {len(budget.rows(claim))}")
    lines.append("runs (group/arm-sSEED: work left, estimated seconds on one core):")
    for spec in specs:
        todo = pending(spec, out, budget)
        est = sum(task_seconds(t, spec, budget) for t in todo)
        total += est
        lines.append(f"  {spec.key}: {', '.join(todo) if todo else 'done'} ({est:.0f} s)")
    if data in (None, "digits") and {"1", "2"} & set(claims):
        seeds, samples, components = budget.analytic
        est = seeds * samples * components * ANALYTIC_S
        total += est
        lines.append(f"  analytic reference: {seeds} noise seeds x {samples} test images, {components}-component "
                     f"mixture ({est:.0f} s)")
    measured = budget.name in BUDGETS and budget.steps_per_s != BUDGETS[budget.name].steps_per_s
    core = "one core" if measured else "one quiet core"
    lines.append(f"estimated time: {_fmt(total)} on {core}; {_fmt(total / max(1, jobs))} with --jobs {jobs}"
                 if jobs > 1 else f"estimated time: {_fmt(total)} on {core} ({_fmt(total / 2)} with --jobs 2)")
    lines.append(f"cost model: {budget.steps_per_s:.3g} training steps/s at batch 128, "
                 f"{budget.sample_nfe_s * 1e3:.2g} ms per sample per network evaluation (the default digits UNet; "
                 + ("measured now on this machine, one thread)" if measured
                    else "one idle core, measured earlier; --calibrate measures this machine now)"))
    return "\n".join(lines)


def _wall(out: Path, seconds: float) -> dict[str, Any]:
    """This invocation's wall time added to the total over every invocation on ``out``."""
    from .runner import atomic_json

    path = out / "cache" / "wall_time.json"
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        rec = {"total_s": 0.0, "invocations": 0}
    rec = {"total_s": rec["total_s"] + seconds, "invocations": rec["invocations"] + 1, "last_s": seconds}
    atomic_json(path, rec)
    return rec


def reproduce(out: str | Path, *, budget: str | Budget = "quick", claims: list[str] | None = None,
              seeds: int | None = None, steps: int | None = None, data: str | None = None, jobs: int = 1,
              dry_run: bool = False, progress: bool = True, command: str = "", device: str = "cpu",
              calibrate: bool = False) -> dict[str, Any] | str:
    """Train (or reuse) every run the claims need, evaluate them (cached), write OUT/report.md,
    OUT/report.json and OUT/figures/; return the results (``dry_run``: the plan as text).

    Raises:
        ReproduceError: unknown claims or budget, too few seeds or steps, a run folder holding another run
            (e.g. one trained with another ``steps``).
    """
    t0 = time.perf_counter()
    out = Path(out)
    bud = budget if isinstance(budget, Budget) else select_budget(budget, seeds, steps)
    ids = _check_claims(claims)
    specs = plan_runs(bud, ids, data)
    if calibrate and not bud.train_only:
        from .budgets import calibrate as measure_costs

        bud = measure_costs(bud)
    if dry_run:
        return plan_text(out, bud, ids, specs, data, jobs)
    if progress and not bud.train_only:  # the last lines of the plan: how long this will take
        print("\n".join(plan_text(out, bud, ids, specs, data, jobs).splitlines()[-2:]), file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out, bud, data, device)
    if bud.train_only:  # full: evaluate what `accelerate launch` has finished; the rest stays "missing"
        specs_now = [s for s in specs if _paper_run_done(s, out)]
    else:
        specs_now = specs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is fastest, and never slowed many-fold on a busy CPU
    try:
        execute(specs_now, ctx, jobs=jobs, progress=progress)
    finally:
        torch.set_num_threads(threads)
    wall = _wall(out, time.perf_counter() - t0)
    meta = {"machine": machine(), "command": command or f"reproduce(budget={bud.name!r})",
            "data": data or "digits (sklearn 8x8, 1,497 train / 300 test images)",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_time": f"{wall['last_s'] / 60:.1f} min this invocation, {wall['total_s'] / 60:.1f} min over "
                         f"{wall['invocations']} invocation(s)"}
    results = build_results(bud, ids, specs, out, meta, data)
    if data in (None, "digits") and not bud.train_only and {"1", "2"} & set(ids):
        from .analytic import analytic_reference

        if progress:
            print("[reproduce] analytic reference (ideal denoisers of the digits train split)", file=sys.stderr)
        results["analytic"] = analytic_reference(out, *bud.analytic)
    return write_report(results, out)


def _paper_run_done(spec: RunSpec, out: Path) -> bool:
    from ..config import load_config

    run = spec.run_dir(out)
    try:
        steps = load_config(run / "config.yaml").train.steps
    except Exception:  # no run there yet (or unreadable): not finished
        return False
    return run_finished(run, steps)


def write_report(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """Figures, report.json and report.md (both written atomically)."""
    from ..train.checkpoint import atomic_write_text
    from .figures import draw_all

    figures = draw_all(results, out / "figures")
    for cid, paths in figures.items():
        results["claims"][cid]["figures"] = paths
    atomic_write_text(out / "report.json", report_json(results))
    atomic_write_text(out / "report.md", markdown(results))
    return results
