"""Statistics and the report of ``etsdm reproduce``: paired differences per row, a verdict per row
and per claim, ``report.json`` and ``report.md``.

Row: the per-seed values of two (arm, measurement) pairs, their paired difference b − a with a
Student-t 95% interval over training seeds (:func:`etsdm.metrics.paired.paired_difference`) and
the verdict of :data:`~etsdm.metrics.paired.VERDICT_RULE`. Claim: :data:`CLAIM_RULE`.
"""

from __future__ import annotations

import json
import math
import platform
import re
from collections import Counter
from pathlib import Path
from typing import Any

from ..metrics.paired import VERDICT_RULE, paired_difference, verdict
from ..metrics.stats import summarize
from .budgets import Budget
from .claims import CLAIMS, Claim, Row
from .runner import SR_KEYS, RunSpec, _resolve_metric, arm_overrides, eval_file

CLAIM_RULE = ("a claim is reproduced / reversed / not resolved when all its primary rows are; otherwise it is "
              "'mixed' and the counts are given; a row is 'failed' when a run of either arm diverged (NaN or "
              "infinite samples), naming the arm and seed")


_NUMBER = r"-?(?:\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|NaN|Infinity)|null"
_NUMBER_LIST = re.compile(rf"\[\n\s*((?:{_NUMBER})(?:,\n\s*(?:{_NUMBER}))*)\n\s*\]")
_ITEM_BREAK = re.compile(r",\n\s*")


def report_json(results: dict[str, Any]) -> str:
    """report.json's text: indented like ``json.dumps(indent=1)``, but a list of numbers (a K curve,
    per-seed values) on one line: about half the bytes and a thirtieth of the lines. The same JSON
    value (strings never hold a raw newline, so only real lists match)."""
    text = json.dumps(results, indent=1, default=float)
    return _NUMBER_LIST.sub(lambda m: "[" + _ITEM_BREAK.sub(", ", m.group(1)) + "]", text)


def run_values(spec: RunSpec, out: Path) -> dict[str, Any]:
    """Every finished measurement of one run, by measurement key (fid:<plan> → FID-n and floor)."""
    vals: dict[str, Any] = {}
    folder = spec.eval_dir(out)
    for metric in spec.metrics:
        rec = _read(folder / eval_file(metric))
        if rec is None:
            continue
        if not metric.startswith("fid:"):  # lipschitz, stability, sr:<plan>: the values by row key
            vals.update({k: v for k, v in rec.items() if k.startswith(("K_", "stab:", *SR_KEYS))})
            if metric.startswith("sr:") and "diverged" in rec:
                vals.update({f"{k}{metric[3:]}": rec for k in SR_KEYS})  # the rows see why (_diverged)
        vals[metric] = rec
    return vals


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _value(vals: dict[str, Any], metric: str) -> float | None:
    v = vals.get(metric)
    if isinstance(v, dict):
        return v.get("fid")
    return v


def row_result(row: Row, claim: Claim, budget: Budget, specs: dict[tuple[tuple[str, ...], int], RunSpec],
               values: dict[str, dict[str, Any]], data: str | None = None) -> dict[str, Any]:
    """The row's per-seed values, paired difference, verdict, and (FID) the floor."""
    seeds = range(budget.families[claim.family].seeds)
    ma, mb = _resolve(row.metric, budget), _resolve(row.metric_b, budget)
    a, b, floors, missing, failed = [], [], [], [], []
    for seed in seeds:
        sa, sb = (specs.get((arm_overrides(claim.arm(name), budget, claim.family, seed, data), seed))
                  for name in (row.a, row.b))
        failed += [f"{name} seed {seed}: {why}" for name, s, m in ((row.a, sa, ma), (row.b, sb, mb))
                   if s and (why := _diverged(values.get(s.key, {}), m))]
        va = _value(values.get(sa.key, {}), ma) if sa else None
        vb = _value(values.get(sb.key, {}), mb) if sb else None
        if va is None or vb is None or not (math.isfinite(va) and math.isfinite(vb)):
            missing.append(seed)
            continue
        a.append(va)
        b.append(vb)
        if ma.startswith("fid:"):
            floors.append(values[sa.key][ma]["floor"])
    out: dict[str, Any] = {"label": row.label, "a": row.a, "b": row.b, "metric_a": ma, "metric_b": mb,
                           "direction": row.direction, "paper": row.paper, "primary": row.primary, "note": row.note,
                           "seeds": [s for s in seeds if s not in missing], "missing_seeds": missing}
    if failed:  # a diverged run is a result (its arm failed), never a silently missing value
        return out | {"verdict": "failed", "failed": failed, "why": "diverged: " + "; ".join(failed)}
    if len(a) < 2:
        return out | {"verdict": "missing", "why": f"{len(a)} seed(s) with both values; an interval needs 2"}
    diff = paired_difference(a, b)
    out |= {"a_values": summarize("value", a), "b_values": summarize("value", b), "difference": diff.to_dict(),
            "verdict": verdict(diff, row.direction)}
    if floors:
        out["floor"] = sum(floors) / len(floors)
    return out


def _diverged(vals: dict[str, Any], metric: str) -> str | None:
    """Why the run's samples for ``metric`` had no FID (NaN / inf samples; runner.eval_fid), else None."""
    v = vals.get(metric)
    return v.get("diverged") if isinstance(v, dict) else None


def _resolve(metric: str, budget: Budget) -> str:
    """A row's measurement key at ``budget`` (its plan resolved: ``ddpm:T`` -> ``ddpm:1000``)."""
    if metric.startswith("fid:"):
        return _resolve_metric(metric, budget)
    if metric.startswith(SR_KEYS):
        kind, plan = metric.split(":", 1)
        return f"{kind}:{budget.plan(plan, T=1000)}"
    return metric


def claim_verdict(rows: list[dict[str, Any]]) -> str:
    """:data:`CLAIM_RULE` over the primary rows."""
    verdicts = [r["verdict"] for r in rows if r["primary"]]
    if not verdicts:
        return "missing"
    counts = Counter(verdicts)
    if len(counts) == 1:
        return verdicts[0]
    return "mixed (" + ", ".join(f"{n} {v}" for v, n in counts.most_common()) + ")"


def build_results(budget: Budget, claim_ids: list[str], specs: list[RunSpec], out: Path,
                  meta: dict[str, Any], data: str | None = None) -> dict[str, Any]:
    """Everything of the report as one JSON-ready dict (``data``: as given to :func:`~.runner.plan_runs`)."""
    index = {(s.overrides, s.seed): s for s in specs}
    values = {s.key: run_values(s, out) for s in specs}
    runs = {s.key: _run_summary(s, values[s.key]) for s in specs}  # once; claims name their runs by key
    claims = {}
    for cid in claim_ids:
        claim = CLAIMS[cid]
        rows = [row_result(r, claim, budget, index, values, data) for r in budget.rows(claim)]
        claims[cid] = {"title": claim.title, "paper_ref": claim.paper_ref, "paper_numbers": claim.paper_numbers,
                       "family": claim.family, "seeds": budget.families[claim.family].seeds,
                       "notes": list(claim.notes), "rows": rows, "verdict": claim_verdict(rows),
                       "runs": [s.key for s in specs if cid in s.claims]}
    return {"budget": budget.to_dict(), "verdict_rule": VERDICT_RULE, "claim_rule": CLAIM_RULE,
            "interval": "Student-t 95%, paired by training seed (k − 1 degrees of freedom)", "meta": meta,
            "claims": claims, "runs": runs}


def claim_runs(results: dict[str, Any], claim: dict[str, Any]) -> list[dict[str, Any]]:
    """The run summaries of one claim (stored once in ``results["runs"]``, named by key in the claim)."""
    return [results["runs"][key] for key in claim["runs"]]


def _run_summary(spec: RunSpec, vals: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"arm": spec.arm.name, "seed": spec.seed, "overrides": list(spec.overrides)}
    for k, v in vals.items():
        if k.startswith("fid:"):
            out[k] = {"fid": v["fid"], "floor": v["floor"], "sampling": v.get("sampling")}
        elif k == "lipschitz":
            out["K"] = {"t": v["t"], "K": v["K"], "unit": v["unit"], "t_tilde": v["t_tilde"]}
        elif k != "stability":
            out[k] = v
    return out


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------
def _ci(row: dict[str, Any]) -> str:
    d = row["difference"]
    return f"{d['mean']:+.4g} [{d['low']:+.4g}, {d['high']:+.4g}]"


def _pm(s: dict[str, Any]) -> str:
    return f"{s['value']:.4g} ± {s['value_std']:.2g}"


def _headline(claim: dict[str, Any]) -> dict[str, Any] | None:
    return next((r for r in claim["rows"] if r["primary"] and "difference" in r), None)


def _sampling_line(claim: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    """The sampler conventions of the claim's FID rows, from the first of its ``runs`` that has them."""
    seen: dict[str, str] = {}
    used = {r[m] for r in claim["rows"] for m in ("metric_a", "metric_b")}
    used |= {f"sr:{m.split(':', 1)[1]}" for m in used if m.startswith(SR_KEYS)}  # their evaluation's record
    for run in runs:
        for k, v in run.items():
            if k in used and k.startswith(("fid:", "sr:")) and k not in seen and v.get("sampling"):
                s, plan = v["sampling"], k.split(":", 1)[1]
                keys = ("timestep_spacing", "denoise_to_zero", "clip")
                keys += ("order_plan", "orders") if plan.startswith("dpm") else ()  # DDPM/DDIM: first order
                seen[k] = f"`{plan}`: " + ", ".join(f"{x}={s[x]}" for x in keys if x in s and s[x] not in (None, []))
    return "; ".join(seen.values())


def markdown(results: dict[str, Any]) -> str:
    meta, budget = results["meta"], results["budget"]
    lines = [f"# etsdm reproduce — budget `{budget['name']}`", "",
             f"Data: {meta['data']}. Machine: {meta['machine']}. Wall time: {meta['wall_time']}. "
             f"Command: `{meta['command']}`.", "",
             "Each row: the paired difference b − a (per training seed; all sampling / forward noise shared "
             f"between the arms of a seed) with its 95% interval ({results['interval']}).", "",
             f"Verdict rule: {results['verdict_rule']}. Claim verdict: {results['claim_rule']}.", "",
             "| claim | paper | paper numbers | ours: first primary row, b − a [95% CI] | seeds | verdict |",
             "|---|---|---|---|---|---|"]
    for cid, c in results["claims"].items():
        h = _headline(c)
        ours = f"{h['label']}: {_ci(h)}" if h else "no values"
        lines.append(f"| {cid}. {c['title']} | {c['paper_ref']} | {c['paper_numbers']} | {ours} | {c['seeds']} | "
                     f"**{c['verdict']}** |")
    lines.append("")
    for cid, c in results["claims"].items():
        lines += _claim_section(cid, c, budget, claim_runs(results, c))
    if "analytic" in results:
        from .analytic import markdown as analytic_markdown

        lines += analytic_markdown(results["analytic"], results["claims"])
    return "\n".join(lines) + "\n"


def _evaluation(c: dict[str, Any], fam: dict[str, Any]) -> str:
    """How the claim's rows are measured: FID-n from a pool, PSNR / SSIM over test pairs, or neither."""
    metrics = {r["metric_a"].split(":")[0] for r in c["rows"]}
    parts = []
    if "fid" in metrics:
        parts.append(f"FID-{fam['n']} from a pool of {fam['pool']} samples per run, mean over {fam['eval_seeds']} "
                     "random subsets")
    if metrics & {"psnr", "ssim"}:
        parts.append(f"PSNR / SSIM of one output per held-out low-resolution input, the first {fam['pool']} test "
                     "pairs, mean over images")
    return "; ".join(parts) or "measured on held-out test images"


def _claim_section(cid: str, c: dict[str, Any], budget: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    fam = budget["families"][c["family"]]
    lines = [f"## Claim {cid}: {c['title']} ({c['paper_ref']})", "", f"Paper: {c['paper_numbers']}.", "",
             f"Verdict: **{c['verdict']}**. Seeds: {c['seeds']} training seeds per arm "
             f"({fam['steps']} training steps, batch {fam['batch_size']}); {_evaluation(c, fam)}; "
             "noise seed 1000 + k.", ""]
    sampling = _sampling_line(c, runs)
    if sampling:
        lines += [f"Samplers: {sampling}.", ""]
    lines += ["| row | paper (a / b) | a | b | b − a [95% CI] | verdict | FID floor |", "|---|---|---|---|---|---|---|"]
    for r in c["rows"]:
        star = "" if r["primary"] else " (not counted)"
        if "difference" not in r:
            lines.append(f"| {r['label']}{star} | {r['paper']} | | | {r.get('why', '')} | {r['verdict']} | |")
            continue
        floor = f"{r['floor']:.3g}" if "floor" in r else ""
        lines.append(f"| {r['label']}{star} | {r['paper']} | {r['a']}: {_pm(r['a_values'])} | "
                     f"{r['b']}: {_pm(r['b_values'])} | {_ci(r)} | {r['verdict']} | {floor} |")
    notes = list(c["notes"]) + [f"{r['label']}: {r['note']}" for r in c["rows"] if r["note"]]
    lines += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    for fig in c.get("figures", []):
        lines += [f"![claim {cid}]({fig})", ""]
    return lines


def machine() -> str:
    import os

    import torch

    return (f"{platform.platform()}, {os.cpu_count()} CPU cores, python {platform.python_version()}, "
            f"torch {torch.__version__}")
