"""Theorem 3.1 per process: the analytic K(t) of the exact optimum as t -> the data end, on VP,
EDM and flow matching, and what the ideal E-TSDM optimum does to it.

The model is the exact optimum of the network (:func:`etsdm.analytic.exact_denoiser`) for the 2-D
ring mixture (8 modes, radius 2, std 0.1; the ``gmm`` data), so nothing is learned: any
singularity is the process's own. K is Eq. (8) with the conventions of
:mod:`etsdm.analysis.lipschitz` — the network's own output f (ε, v, x0, EDM's F or the flow
velocity u), x_t drawn from the forward process at t and the same x_t fed at t and t′ — at a tiny
Δt = 10⁻³ (t − t_data), i.e. E‖∂f/∂t‖ to ~10⁻³, per unit of the process's own time (continuous VP
and flow: t ∈ [0, 1], 1000 × the per-step K of Fig. A1; EDM: σ), or, for EDM, per unit of its
network input c_noise = ¼ ln σ (K_c = K_σ dσ/dc, dc from ``net_time``).

Why (Theorem 3.1, Eq. 5): ∂ε*/∂t = -σ' ∇log q_t - σ ∂_t∇log q_t, and ∇log q_t -> ∇log q_0 for a
smooth q_0. VP has σ ≈ sqrt(-2α'(0) t), so σ' ~ t^-½ (p = ½) whenever α'(0) ≠ 0. EDM (σ = t) and
flow (σ = t) have σ' = 1: the cause is absent. Per row the table gives K at a ladder of distances
to the data end, the exponent p of K ~ (t - t_data)^-p fitted over the last ``fit_points`` of the
ladder, and over the default E-TSDM band (:func:`etsdm.conditioning.process_sharing`):

* baseline mean — (1/L) ∫_band K dt (Gauss-Legendre in u, t = t_0 + L u², exact for K ~ t^-½);
* E-TSDM inside — K of the ideal E-TSDM optimum at the ladder points inside the band (0 for a
  network fed x itself: its output is constant inside a sub-interval; EDM's F is not, because
  its input c_in(t) x changes with t);
* E-TSDM jumps — J_i = E‖f̄_i - f̄_{i-1}‖ at each boundary t_i (i = 1..n, t_n = t̃: the last jump
  is into the unshared optimum), reported as secants J_i / (t_i - t_{i-1}) (max) and as the band
  mean Σ J_i / L, which is the mean of Eq. (8) over the band for any Δt below the cell width.

The integral ∫ K dt is invariant under a change of time variable, so the means in σ and in
c_noise differ only by the band length L.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analytic import GaussianMixture, exact_denoiser
from ..conditioning import process_sharing
from ..denoiser import Denoiser
from ..schedules import Schedule, make_schedule
from .lipschitz import lipschitz_curve

# (process, network output, time variable: "time" = the process's own, "net" = the network's input)
PROCESS_ROWS: tuple[tuple[str, str, str], ...] = (
    ("linear", "eps", "time"), ("linear", "v", "time"), ("linear", "x0", "time"),
    ("cosine", "eps", "time"), ("cosine", "v", "time"),
    ("edm", "eps", "time"), ("edm", "eps", "net"), ("edm", "edm", "time"), ("edm", "edm", "net"),
    ("flow", "eps", "time"), ("flow", "flow", "time"),
)  # fmt: skip
DATA_SCALE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("linear", "eps", "time"), ("edm", "eps", "time"), ("edm", "eps", "net"), ("flow", "flow", "time"),
)  # fmt: skip
DATA_STDS: tuple[float, ...] = (0.1, 0.01, 0.001)  # per-mode std s of the ring: the data scale
LADDER: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)  # t - t_data
REL_DT = 1e-3  # Δt / (t - t_data): forward-difference error ~ 2.5e-4 for K ~ t^-½; F (EDM) is
# computed with a relative rounding of ~7e-4 at σ = 1e-6 by Denoiser.target, so a smaller Δt resolves only noise there
OUTPUT_NAMES = {"eps": "ε", "v": "v", "x0": "x0", "edm": "F (EDM)", "flow": "u = ε − x0"}


def process_schedule(process: str) -> Schedule:
    """The continuous-time process of a row: VP ``linear`` / ``cosine`` (t ∈ [0, 1]), ``edm``, ``flow``."""
    if process in ("edm", "flow"):
        return make_schedule(process)
    return make_schedule(process, continuous=True)


def variable_name(schedule: Schedule, variable: str) -> str:
    if schedule.kind == "edm":
        return "c_noise" if variable == "net" else "σ"
    return "t"


def time_of_sigma(schedule: Schedule, sigma: float) -> float:
    """The time t with σ(t) = ``sigma`` (σ increases with t), by bisection in float64."""
    lo, hi = schedule.t_data, schedule.t_max
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if float(schedule.sigma(mid)) < sigma else (lo, mid)
    return 0.5 * (lo + hi)


def _k(den: Denoiser, x0: torch.Tensor, schedule: Schedule, t: float, dt: float, seed: int) -> tuple[float, float]:
    """K(t, t + Δt) of Eq. (8) per unit of the process's time, and its standard error."""
    curve = lipschitz_curve(den, x0, schedule, torch.tensor([t], dtype=torch.float64), dt=dt, scale="time",
                            batch_size=2 * len(x0), generator=torch.Generator().manual_seed(seed))
    return float(curve.K[0]), float(curve.K_sem[0])


def _per_net(schedule: Schedule, t: float, dt: float) -> float:
    """dt / dc: K per unit of the network's time input c = net_time(t) from K per unit of t."""
    c = schedule.net_time(torch.tensor([t, t + dt], dtype=torch.float64))
    return dt / float(c[1] - c[0])


def _fit_exponent(d: Sequence[float], k: Sequence[float]) -> float:
    """p of K ~ d^-p by least squares in log-log (nan if any K <= 0)."""
    if min(k) <= 0:
        return math.nan
    return -float(np.polyfit(np.log(d), np.log(k), 1)[0])


def verdict(p: float) -> str:
    if math.isnan(p):
        return "—"
    if p > 0.2:
        return f"yes: K ~ t^-{p:.2f}"
    return "no: K → const" if p > -0.2 else "no: K → 0"


def _series(mixture: GaussianMixture, process: str, output: str, *, ladder: Sequence[float], samples: int, seed: int,
            band_nodes: int, curve_points: int) -> dict[str, Any]:
    """Everything of one (process, output) in the process's own time (rows convert to c_noise)."""
    schedule = process_schedule(process)
    sharing = process_sharing(schedule)
    base = exact_denoiser(mixture, schedule, output)
    shared = exact_denoiser(mixture, schedule, output, sharing)
    x0 = mixture.sample(samples, torch.Generator().manual_seed(seed))
    t0 = schedule.t_data

    def k(den: Denoiser, d: float) -> tuple[float, float]:
        return _k(den, x0, schedule, t0 + d, REL_DT * d, seed)

    b = [float(v) for v in sharing.boundaries]
    u, w = np.polynomial.legendre.leggauss(band_nodes)
    u = 0.5 * (u + 1.0)
    length = b[-1] - b[0]
    nodes = b[0] + length * u**2  # ∫ K dt = ∫ K(t(u)) 2 L u du
    integral = float(sum(0.5 * wi * 2 * length * ui * k(base, float(ti) - t0)[0]
                         for ui, wi, ti in zip(u, w, nodes, strict=True)))
    jumps = []
    for bi in b[1:]:
        delta = 1e-9 * bi  # [b_i - δ, b_i + δ] crosses the boundary b_i and nothing else
        jumps.append(_k(shared, x0, schedule, bi - delta, 2 * delta, seed)[0] * 2 * delta)
    span = schedule.t_max - t0
    grid = np.logspace(math.log10(min(ladder)), math.log10(0.99 * span), curve_points)
    return {
        "schedule": schedule, "boundaries": b, "integral": integral, "jumps": jumps,
        "ladder": [k(base, d) for d in ladder], "ladder_shared": [k(shared, d)[0] for d in ladder],
        "grid": grid.tolist(), "curve": [k(base, float(d))[0] for d in grid],
    }  # fmt: skip


def _row(series: dict[str, Any], process: str, output: str, variable: str, ladder: Sequence[float],
         fit_points: int) -> dict[str, Any]:
    """One table row: the series in ``variable`` ("time" or "net"), with p and the band numbers."""
    schedule, b, jumps = series["schedule"], series["boundaries"], series["jumps"]
    t0 = schedule.t_data

    def per_unit(values: Sequence[float], ds: Sequence[float]) -> list[float]:  # K per unit of the variable
        if variable != "net":
            return list(values)
        return [v * _per_net(schedule, t0 + d, REL_DT * d) for v, d in zip(values, ds, strict=True)]

    def coord(t: float) -> float:
        return float(schedule.net_time(t)) if variable == "net" else t

    K = per_unit([k for k, _ in series["ladder"]], ladder)
    inside = [k for k, d in zip(per_unit(series["ladder_shared"], ladder), ladder, strict=True) if t0 + d < b[-1]]
    conditions = [coord(v) for v in b]  # the conditions the E-TSDM network sees (c_i), and t̃
    length = conditions[-1] - conditions[0]
    fit = ladder[-fit_points:]
    p = _fit_exponent(fit, K[-fit_points:])
    slopes = [_fit_exponent(ladder[i : i + 2], K[i : i + 2]) for i in range(len(ladder) - 1)]
    return {
        "process": process, "output": output, "variable": variable_name(schedule, variable),
        "schedule": schedule.config(), "distance_to_data_end": list(ladder), "K": K,
        "K_sem": per_unit([s for _, s in series["ladder"]], ladder), "fit_range": [min(fit), max(fit)],
        "p": p, "p_between_ladder_points": slopes, "singular": verdict(p),
        "band": [b[0], b[-1]], "band_in_variable": [conditions[0], conditions[-1]],
        "boundaries": b, "baseline_band_mean": series["integral"] / length,
        "etsdm_inside_max": max(inside) if inside else math.nan, "etsdm_jump": jumps,
        "etsdm_jump_secant": [j / (hi - lo) for j, lo, hi in zip(jumps, conditions, conditions[1:], strict=False)],
        "etsdm_band_mean": sum(jumps) / length,
        "curve_t": series["grid"], "curve_K": per_unit(series["curve"], series["grid"]),
    }  # fmt: skip


def singularity_table(
    rows: Sequence[tuple[str, str, str]] = PROCESS_ROWS,
    *,
    ladder: Sequence[float] = LADDER,
    samples: int = 2000,
    seed: int = 0,
    fit_points: int = 3,
    band_nodes: int = 48,
    curve_points: int = 30,
    mixture: GaussianMixture | None = None,
) -> dict[str, Any]:
    """The Theorem 3.1 table (module docstring): one dict per row, with every number.

    Args:
        rows: (process, output, variable) triples; process linear | cosine | edm | flow, output a
            prediction type, variable "time" (the process's own) or "net" (the network's input).
        ladder: distances t - t_data at which K is reported (decreasing).
        samples: data samples x0 (common random numbers across t).
        fit_points: the last ladder points the exponent p is fitted over.
        band_nodes: Gauss-Legendre nodes of the baseline's band integral.
        curve_points: log-spaced times of the figure's curves.
        mixture: the data (default: the 8-mode ring of the ``gmm`` data set).
    """
    label = "ring (8 modes, radius 2, std 0.1)" if mixture is None else "custom"
    mixture = GaussianMixture.ring() if mixture is None else mixture
    cache: dict[tuple[str, str], dict[str, Any]] = {}
    out = []
    for process, output, variable in rows:
        if (process, output) not in cache:
            cache[process, output] = _series(mixture, process, output, ladder=ladder, samples=samples, seed=seed,
                                             band_nodes=band_nodes, curve_points=curve_points)
        out.append(_row(cache[process, output], process, output, variable, ladder, fit_points))
    return {"rows": out, "samples": samples, "seed": seed, "rel_dt": REL_DT, "fit_points": fit_points,
            "mixture": label}


def process_tables(data_stds: Sequence[float] = DATA_STDS, *, samples: int = 2000,
                   seed: int = 0) -> list[dict[str, Any]]:
    """:func:`singularity_table` on the ring with each per-mode std s in ``data_stds``: every row of
    :data:`PROCESS_ROWS` for the first, :data:`DATA_SCALE_ROWS` for the others (module docstring)."""
    out = []
    for i, std in enumerate(data_stds):
        rows = PROCESS_ROWS if i == 0 else DATA_SCALE_ROWS
        res = singularity_table(rows, samples=samples, seed=seed, mixture=GaussianMixture.ring(std=std))
        out.append(res | {"data_std": std, "mixture": f"ring (8 modes, radius 2, std {std:g})"})
    return out


def markdown_table(result: dict[str, Any]) -> list[str]:
    """The table as markdown lines (K per unit of the row's variable)."""
    rows = result["rows"]
    ladder = rows[0]["distance_to_data_end"]
    head = ["process", "output", "K per unit of", *[f"K at {d:g}" for d in ladder], "p", "singular at the data end?",
            "E-TSDM band", "baseline band mean", "E-TSDM: K inside sub-intervals", "E-TSDM: max jump / cell",
            "E-TSDM band mean"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lo, hi = r["band_in_variable"]
        cells = [r["process"], OUTPUT_NAMES.get(r["output"], r["output"]), r["variable"],
                 *[f"{k:.3g}" for k in r["K"]], f"{r['p']:.2f}", r["singular"], f"[{lo:.3g}, {hi:.3g})",
                 f"{r['baseline_band_mean']:.3g}", f"{r['etsdm_inside_max']:.3g}",
                 f"{max(r['etsdm_jump_secant']):.3g}", f"{r['etsdm_band_mean']:.3g}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_singularity(result: dict[str, Any], path: str | Path, *, pdf: bool = False) -> list[Path]:
    """K(t) per process, log-log against the distance to the data end; E-TSDM's jump secants as
    markers at their boundaries, the band end dotted."""
    from ..plotting import plt, save_figure

    panels: dict[str, list[dict[str, Any]]] = {}
    for r in result["rows"]:
        key = r["process"] + (" (c_noise)" if r["variable"] == "c_noise" else "")
        panels.setdefault(key, []).append(r)
    cols = min(3, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 3.6 * rows_n), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, rows) in zip(axes.flat, panels.items(), strict=False):
        for i, r in enumerate(rows):
            color, style = f"C{i}", ("-", "--", ":")[i % 3]
            ax.loglog(r["curve_t"], r["curve_K"], color=color, ls=style,
                      label=f"{OUTPUT_NAMES.get(r['output'], r['output'])}")
            ax.loglog(r["boundaries"][1:], r["etsdm_jump_secant"], "x", color=color, ms=6)
        ax.axvline(rows[0]["band"][1], color="0.5", ls=":", lw=1)
        var = rows[0]["variable"]
        ax.set_title(f"{title}: K per unit of {var}", fontsize=9)
        ax.set_xlabel("σ" if rows[0]["process"] == "edm" else "t (data at 0)")
        ax.set_ylabel("K = E‖∂f/∂t‖ (exact optimum)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, title="× E-TSDM jump / cell", title_fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, pdf=pdf)


def plot_data_scale(results: Sequence[dict[str, Any]], path: str | Path, *, pdf: bool = False) -> list[Path]:
    """K(t) of the :data:`DATA_SCALE_ROWS` rows for each data std s (one panel per row, one curve per
    s), log-log against the distance to the data end; dotted: the time at which σ(t) = s."""
    from ..plotting import plt, save_figure

    keys = [(r["process"], r["output"], r["variable"]) for r in results[-1]["rows"]]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for i, res in enumerate(results):
            row = next((r for r in res["rows"] if (r["process"], r["output"], r["variable"]) == key), None)
            if row is None:
                continue
            ax.loglog(row["curve_t"], row["curve_K"], color=f"C{i}", label=f"s = {res['data_std']:g}")
            ax.axvline(time_of_sigma(process_schedule(row["process"]), res["data_std"]), color=f"C{i}", ls=":", lw=1)
        process, output, variable = key
        ax.set_title(f"{process}, {OUTPUT_NAMES.get(output, output)}: K per unit of {variable}", fontsize=9)
        ax.set_xlabel("σ" if process == "edm" else "t (data at 0)")
        ax.set_ylabel("K = E‖∂f/∂t‖ (exact optimum)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, title="ring, per-mode std", title_fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, pdf=pdf)
