"""Figures of the reproduction report: K curves with bands over seeds (claim 1), stability bars
(claim 2), ablation curves (claim 6) and, for every claim, the paired differences with their 95%
intervals per row (a forest plot: FID per sampler / NFE, per schedule, ...)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .report import claim_runs


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _t_half(values: list[float]) -> float:
    k = len(values)
    return float(stats.t.ppf(0.975, k - 1) * np.std(values, ddof=1) / math.sqrt(k)) if k > 1 else 0.0


def forest(claim: dict[str, Any], path: Path, cid: str = "") -> Path | None:
    """b − a per row as a percentage of a's mean (rows differ in units), with its 95% interval, the
    per-seed differences and the zero line; green: reproduced, red: reversed, grey: not resolved."""
    rows = [r for r in claim["rows"] if "difference" in r and r["a_values"]["value"] != 0]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        d, scale = r["difference"], 100.0 / abs(r["a_values"]["value"])
        color = {"reproduced": "tab:green", "reversed": "tab:red"}.get(r["verdict"], "0.4")
        m = d["mean"] * scale
        ax.errorbar(m, i, xerr=[[m - d["low"] * scale], [d["high"] * scale - m]], fmt="o", color=color,
                    capsize=3, ms=4)
        ax.scatter([v * scale for v in d["differences"]], [i] * len(d["differences"]), s=8, color="0.7", zorder=0)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)), [r["label"] + ("" if r["primary"] else " *") for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("(b − a) / mean(a), % — mean over training seeds, 95% t-interval (grey: per seed)", fontsize=8)
    ax.set_title(f"claim {cid} ({claim['paper_ref']}); * = not counted", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def k_curves(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Mean K(t, t+1) over seeds per arm with a min-max band over seeds (log scale)."""
    per_arm: dict[str, list[list[float]]] = {}
    t: list[float] = []
    for run in runs:
        if "K" in run:
            per_arm.setdefault(run["arm"], []).append(run["K"]["K"])
            t = run["K"]["t"]
    if not per_arm:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    positive = np.array([v for c in per_arm.values() for k in c for v in k if v > 0])
    floor = positive.min() / 10 if positive.size else 1e-12  # K = 0 exactly (E-TSDM inside a sub-interval)
    for arm, curves in sorted(per_arm.items()):
        K = np.maximum(np.array(curves), floor)
        line = ax.plot(t, K.mean(0), label=f"{arm} ({len(curves)} seeds)")[0]
        ax.fill_between(t, K.min(0), K.max(0), color=line.get_color(), alpha=0.25, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("t (timestep)")
    ax.set_ylabel("K(t, t+1), network output, per step")
    ax.set_title("mean over training seeds; band: min-max over seeds; K = 0 drawn at the bottom", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def stability_bars(claim: dict[str, Any], path: Path) -> Path | None:
    """Per perturbation scale: each arm's mean x̂0 MSE over seeds with its 95% t-interval."""
    rows = [r for r in claim["rows"] if "difference" in r]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    x = np.arange(len(rows))
    for off, side, color in ((-0.18, "a", "tab:blue"), (0.18, "b", "tab:red")):
        vals = [r[f"{side}_values"]["value_values"] for r in rows]
        ax.bar(x + off, [np.mean(v) for v in vals], width=0.36, yerr=[_t_half(v) for v in vals], capsize=3,
               color=color, label=rows[0][side])
    ax.set_yscale("log")
    ax.set_xticks(x, [r["label"].replace("x̂0 MSE, ", "") for r in rows])
    ax.set_ylabel("x̂0 per-pixel MSE at t = t̃")
    ax.set_title("mean over training seeds, 95% t-interval", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def ablation_curves(claim: dict[str, Any], path: Path) -> Path | None:
    """FID against t̃ (t̃/n ≈ 20) and against n (t̃ = 100), mean over seeds with 95% t-intervals;
    the baseline (t̃ = 0) as a band."""
    pts = []
    for r in claim["rows"]:
        m = re.match(r"t̃ = (\d+), n = (\d+)", r["label"])
        if m and "difference" in r:
            pts.append((int(m[1]), int(m[2]), r["b_values"]["value_values"], r["a_values"]["value_values"]))
    if not pts:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    base = pts[0][3]
    for ax, sel, key, label in ((axes[0], lambda p: p[0] == 100 and p[1] == 5 or p[0] != 100, 0, "t̃ (t̃/n ≈ 20)"),
                                (axes[1], lambda p: p[0] == 100, 1, "n (t̃ = 100)")):
        chosen = sorted((p for p in pts if sel(p)), key=lambda p: p[key])
        if not chosen:
            continue
        ax.errorbar([p[key] for p in chosen], [np.mean(p[2]) for p in chosen],
                    yerr=[_t_half(p[2]) for p in chosen], fmt="o-", capsize=3, color="tab:red", label="E-TSDM")
        ax.axhspan(np.mean(base) - _t_half(base), np.mean(base) + _t_half(base), color="tab:blue", alpha=0.2,
                   label="baseline (95% CI)")
        ax.set_xscale("log" if key == 1 else "linear")
        ax.set_xlabel(label)
        ax.set_ylabel("FID-n")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def fid_per_nfe(claim: dict[str, Any], path: Path) -> Path | None:
    """Claim 5: FID of each arm against NFE per sampler, one panel per grid convention; mean over
    training seeds with its 95% t-interval."""
    pts: dict[str, dict[tuple[str, str], list[tuple[int, list[float]]]]] = {}
    for r in claim["rows"]:
        if "difference" not in r:
            continue
        _, sampler, nfe, *rest = r["metric_a"].split(":")
        conv = "fractional grid" if rest else "integer grid"
        for side in ("a", "b"):
            pts.setdefault(conv, {}).setdefault((sampler, r[side]), []).append(
                (int(nfe), r[f"{side}_values"]["value_values"]))
    if not pts:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(pts), figsize=(4.2 * len(pts), 3.4), squeeze=False)
    samplers = sorted({k[0] for lines in pts.values() for k in lines})
    colors = {s: f"C{i}" for i, s in enumerate(samplers)}
    for ax, (conv, lines) in zip(axes[0], sorted(pts.items()), strict=True):
        nfes = set()
        for (sampler, arm), values in sorted(lines.items()):
            values.sort()
            nfes |= {v[0] for v in values}
            ax.errorbar([v[0] for v in values], [np.mean(v[1]) for v in values],
                        yerr=[_t_half(v[1]) for v in values], capsize=3, marker="o" if arm == "baseline" else "s",
                        ls="-" if arm == "baseline" else "--", color=colors[sampler], label=f"{sampler}, {arm}")
        ax.set_xscale("log")
        ax.set_xticks(sorted(nfes), [str(v) for v in sorted(nfes)])
        ax.minorticks_off()
        ax.set_xlabel("NFE")
        ax.set_ylabel("FID-n")
        ax.set_title(conv, fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def draw_all(results: dict[str, Any], folder: Path) -> dict[str, list[str]]:
    """Every figure, as paths relative to the report's folder, per claim."""
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, list[str]] = {}
    for cid, claim in results["claims"].items():
        figs = [forest(claim, folder / f"claim{cid}_rows.png", cid)]
        if cid in ("1", "11"):  # Fig. 1b / A1; Fig. A10 (LDM, latent space)
            figs.append(k_curves(claim_runs(results, claim), folder / f"claim{cid}_k_curves.png"))
        if cid == "2":
            figs.append(stability_bars(claim, folder / "claim2_stability.png"))
        if cid == "5":
            figs.append(fid_per_nfe(claim, folder / "claim5_fid_per_nfe.png"))
        if cid == "6":
            figs.append(ablation_curves(claim, folder / "claim6_ablations.png"))
        made[cid] = [f"{folder.name}/{p.name}" for p in figs if p is not None]
    return made
