"""The "ideal E-TSDM" study: the bias built into timestep sharing, on exact Gaussian mixtures.

Every model here is exact, so nothing is learned and every difference is the sharing itself:

* ``eps*``: ε*(x, t) = -σ_t ∇ log q_t(x), the baseline optimum of Eq. (4).
* ``E-TSDM post``: the true minimiser of the shared-condition loss (Eq. 9), ε̄(x) =
  E[ε | x_τ = x, τ in the sub-interval of t] (``GaussianMixture.shared_eps``, weighting posterior).
* ``E-TSDM unif``: Eq. (A15), the plain average of ε*(x, τ) over the sub-interval.

Four measurements (results: ``<out>/analytic.json``, ``<out>/analytic_tables.md``,
``<out>/figures/analytic_*.png``):

1. Sample quality per sampler and NFE (ddpm 1000, ddim 50/200, dpm-solver-2/3 at 20/50,
   dpm-solver++2m 20): ``etsdm.metrics.gmm_metrics``, mean ± std over noise seeds, with the
   true-vs-true floor at the same n. The same initial noise is used for every model of a seed.
2. K(t, t+1) of Eq. (8) for t = 0..200 (Fig. 1b analogue), ``etsdm.analysis.lipschitz_curve``.
3. ‖ε̄(x_t) − ε*(x_t, t)‖ over t in [0, t̃) for n in the Fig. 5 grid, x_t ~ q_t, against the bound of
   Theorem 4.1 (Eq. 11) with K(x), B(x) of Eq. (12) taken over the integer timesteps of [0, t̃).
4. ODE-solver error (Table 3 question): distance of each deterministic sampler's output from a
   high-accuracy solution of the SAME model's probability-flow ODE (dpm-solver-3, NFE 1000, same
   noise), beside the sharing bias itself (distance between the E-TSDM and ε* reference solutions).

Run (from the repository root): ``python experiments/analytic_sharing.py --out docs/results --seeds 3``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from etsdm import GaussianMixture, TimestepSharing, make_schedule, sample
from etsdm.analysis import lipschitz_curve
from etsdm.analysis.lipschitz import sharing_boundaries
from etsdm.metrics import format_pm, gmm_metrics, summarize
from etsdm.plotting import COLORS, plot_lipschitz, save_figure
from etsdm.samplers import SPACINGS
from etsdm.schedules import Schedule

F64 = torch.float64
METRICS: tuple[str, ...] = ("sliced_w1", "mmd2", "mode_tv", "near_mode", "spread_ratio", "log_likelihood")
REFERENCE_SPACING = "time-uniform"  # float grid, uniform in t: the high-accuracy reference ODE solutions
ODE_SAMPLERS: tuple[str, ...] = ("ddim", "dpm-solver-2", "dpm-solver-3", "dpm-solver++2m")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class Config:
    """Sizes of one run (``full`` is the documented run, ``quick`` the seconds-long smoke run)."""

    n_samples: int  # samples per (model, sampler, seed) for the quality table
    samplers: list[tuple[str, int]]  # (sampler, NFE)
    other_samplers: list[tuple[str, int]]  # (sampler, NFE) for the further (t̃, n)
    reference_nfe: int  # NFE of the high-accuracy dpm-solver-3 reference (part 4)
    main: tuple[int, int]  # (t̃, n) of the main comparison (discrete)
    others: list[tuple[int, int]]  # further (t̃, n), posterior weighting only
    lipschitz_n: int  # forward-process samples per t for K(t, t+1)
    lipschitz_t_end: int
    bound_n: int  # x_t samples per t for Theorem 4.1
    bound_t_tilde: int
    bound_grid: list[int]  # n of the Fig. 5 grid
    continuous: bool  # also the continuous-time table (ring only)
    continuous_samplers: list[tuple[str, int]] = field(default_factory=list)


def full_config() -> Config:
    return Config(
        n_samples=1000,
        samplers=[
            ("ddpm", 1000),
            ("ddim", 50),
            ("ddim", 200),
            ("dpm-solver-2", 20),
            ("dpm-solver-2", 50),
            ("dpm-solver-3", 20),
            ("dpm-solver-3", 50),
            ("dpm-solver++2m", 20),
        ],
        other_samplers=[("ddpm", 1000), ("ddim", 50), ("dpm-solver-3", 20), ("dpm-solver++2m", 20)],
        reference_nfe=1000,
        main=(100, 5),
        others=[(100, 1), (100, 20), (200, 10)],
        lipschitz_n=400,
        lipschitz_t_end=200,
        bound_n=256,
        bound_t_tilde=100,
        bound_grid=[1, 2, 5, 10, 20, 50, 100],
        continuous=True,
        continuous_samplers=[("ddpm", 1000), ("ddim", 50), ("dpm-solver-3", 20), ("dpm-solver++2m", 20)],
    )


def quick_config() -> Config:
    return Config(
        n_samples=64,
        samplers=[("ddpm", 60), ("ddim", 10), ("dpm-solver-3", 12)],
        other_samplers=[("ddim", 10)],
        reference_nfe=60,
        main=(100, 5),
        others=[(100, 20)],
        lipschitz_n=16,
        lipschitz_t_end=30,
        bound_n=8,
        bound_t_tilde=20,
        bound_grid=[1, 5, 20],
        continuous=True,
        continuous_samplers=[("ddim", 10)],
    )


def mixtures() -> dict[str, GaussianMixture]:
    """``ring``: 8 equal modes (std 0.1, radius 2). ``skewed``: 6 modes of unequal weight and std
    (0.30 down to 0.01 = σ at the first timestep), the narrow ones light."""
    modes = [  # (x, y, weight, std)
        (-2.0, -1.0, 0.30, 0.30),
        (-1.0, 1.5, 0.20, 0.10),
        (0.5, -0.5, 0.20, 0.05),
        (1.5, 1.5, 0.12, 0.02),
        (2.5, -1.5, 0.10, 0.01),
        (0.0, 2.8, 0.08, 0.15),
    ]
    skewed = GaussianMixture([m[:2] for m in modes], [m[3] for m in modes], [m[2] for m in modes])
    return {"ring": GaussianMixture.ring(8, 2.0, 0.1), "skewed": skewed}


@dataclass
class ModelSpec:
    """One exact model: ε* (sharing None) or the ideal E-TSDM denoiser."""

    label: str
    sharing: TimestepSharing | None = None
    weighting: str = "posterior"

    def build(self, gm: GaussianMixture, schedule: Schedule) -> Callable[[Tensor, float], Tensor]:
        return gm.eps_model(schedule, self.sharing, self.weighting)


def discrete_models(cfg: Config) -> list[ModelSpec]:
    t_tilde, n = cfg.main
    specs = [
        ModelSpec("eps*"),
        ModelSpec(f"E-TSDM post t̃={t_tilde} n={n}", TimestepSharing(t_tilde, n, T=1000)),
        ModelSpec(f"E-TSDM unif t̃={t_tilde} n={n}", TimestepSharing(t_tilde, n, T=1000), "uniform"),
    ]
    specs += [ModelSpec(f"E-TSDM post t̃={t} n={k}", TimestepSharing(t, k, T=1000)) for t, k in cfg.others]
    return specs


# ---------------------------------------------------------------------------------------------
# 1 + 4: samples, quality metrics and ODE-solver error
# ---------------------------------------------------------------------------------------------
def draw(
    model, noise: Tensor, schedule: Schedule, sampler: str, nfe: int, seed: int, spacing: str | None = None
) -> Tensor:
    """One sampler run from ``noise``; ancestral noise (ddpm) from its own seeded generator.
    ``spacing`` None: the library default (integer ``linspace`` grid in discrete time)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    return sample(model, noise, schedule, sampler, nfe, spacing=spacing, generator=gen)


def quality_and_solver(
    gm: GaussianMixture,
    schedule: Schedule,
    specs: Sequence[ModelSpec],
    samplers: Sequence[tuple[str, int]],
    other_samplers: Sequence[tuple[str, int]],
    seeds: Sequence[int],
    n_samples: int,
    reference_nfe: int | None,
    log: Callable[[str], None],
    main_models: int = 3,
    spacing: str | None = None,
) -> dict:
    """Metrics of every (model, sampler) over seeds: the first ``main_models`` models with
    ``samplers``, the rest with ``other_samplers``. For the main models (when ``reference_nfe`` is
    given) also the distance of each ODE sampler's output from the same model's dpm-solver-3
    reference solution at ``reference_nfe``, and the sharing bias between the references.
    The reference solutions integrate the probability-flow ODE on the float grid uniform in t
    (``REFERENCE_SPACING``; exact models are defined at every t) — an integer grid of 1000
    timesteps cannot hold NFE 1000 of a third-order solver."""
    per: dict[str, dict[str, dict[str, list[float]]]] = {}
    floors: dict[str, list[float]] = {}
    solver: dict[str, dict[str, list[float]]] = {}
    refs: dict[int, dict[str, Tensor]] = {}
    ref_check: dict[str, float] = {}
    per_mode: dict[str, dict[str, list[list[float]]]] = {}
    for seed in seeds:
        noise = torch.randn(n_samples, gm.dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
        refs[seed] = {}
        for i, spec in enumerate(specs):
            model = spec.build(gm, schedule)
            start = time.time()
            with_ref = reference_nfe is not None and i < main_models
            ref = None
            if with_ref:
                ref = draw(model, noise, schedule, "dpm-solver-3", reference_nfe, seed, REFERENCE_SPACING)
            if ref is not None:
                refs[seed][spec.label] = ref
                if seed == seeds[0]:  # accuracy of the reference: an independent solver at the same NFE
                    alt = draw(model, noise, schedule, "dpm-solver-2", reference_nfe, seed, REFERENCE_SPACING)
                    ref_check[spec.label] = float((alt - ref).norm(dim=1).mean())
            for sampler, nfe in samplers if i < main_models else other_samplers:
                key = f"{sampler} {nfe}"
                x = draw(model, noise, schedule, sampler, nfe, seed, spacing)
                if not bool(torch.isfinite(x).all()):
                    raise RuntimeError(f"non-finite samples: {spec.label}, {key}, seed {seed}")
                metrics = gmm_metrics(x, gm, seeds=(seed,))
                per_mode.setdefault(spec.label, {}).setdefault(key, []).append(spread_per_mode(x, gm))
                row = per.setdefault(spec.label, {}).setdefault(key, {})
                for name in METRICS:
                    row.setdefault(name, []).append(metrics[name]["value"])
                    if i == 0 and sampler == samplers[0][0] and nfe == samplers[0][1]:
                        floors.setdefault(name, []).append(metrics[name]["true"])
                if ref is not None and sampler in ODE_SAMPLERS:
                    dist = float((x - ref).norm(dim=1).mean())  # mean ‖x_solver − x_ref‖ over samples
                    solver.setdefault(spec.label, {}).setdefault(key, []).append(dist)
            log(f"    {spec.label:28s} seed {seed}: {time.time() - start:6.1f} s")
    bias = _sharing_bias(refs, specs[:main_models]) if reference_nfe is not None else {}
    return {
        "n_samples": n_samples,
        "seeds": list(seeds),
        "spacing": spacing or "library default (linspace integer grid; time-uniform in continuous time)",
        "reference_spacing": REFERENCE_SPACING,
        "metrics": {
            m: {k: {n: summarize("value", v) for n, v in r.items()} for k, r in d.items()} for m, d in per.items()
        },
        "floor": {name: summarize("true", v) for name, v in floors.items()},
        "spread_per_mode": {m: {k: _nanmean_rows(v) for k, v in d.items()} for m, d in per_mode.items()},
        "solver_error": {m: {k: summarize("value", v) for k, v in d.items()} for m, d in solver.items()},
        "reference": {"sampler": "dpm-solver-3", "nfe": reference_nfe, "vs_dpm_solver_2_same_nfe": ref_check},
        "sharing_bias": bias,
    }


def _nanmean_rows(rows: list[list[float]]) -> list[float]:
    """Column means ignoring NaN (a mode with no sample in any seed stays NaN, without a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.asarray(rows), 0).tolist()


def spread_per_mode(x: Tensor, gm: GaussianMixture) -> list[float]:
    """ŝ_k / s_k per mode k (NaN where no sample is assigned), ŝ_k² = mean ‖x − μ_k‖² / D over the
    samples whose most responsible component under q_0 is k (as ``etsdm.metrics.gmm``)."""
    x = x.to(F64)
    logp = gm.weights.log() - 0.5 * torch.cdist(x, gm.means) ** 2 / gm.stds**2 - gm.dim * gm.stds.log()
    comp = logp.argmax(1)
    out = []
    for k in range(len(gm.weights)):
        rows = comp == k
        spread = ((x[rows] - gm.means[k]) ** 2).sum(1).mean().div(gm.dim).sqrt() if rows.any() else math.nan
        out.append(float(spread / gm.stds[k]))
    return out


def _sharing_bias(refs: dict[int, dict[str, Tensor]], specs: Sequence[ModelSpec]) -> dict:
    """Mean distance between each E-TSDM model's reference ODE solution and ε*'s (same noise)."""
    out = {}
    for spec in specs[1:]:
        vals = [float((r[spec.label] - r[specs[0].label]).norm(dim=1).mean()) for r in refs.values()]
        out[spec.label] = summarize("value", vals)
    return out


# ---------------------------------------------------------------------------------------------
# 2: Lipschitz curves K(t, t+1)
# ---------------------------------------------------------------------------------------------
def lipschitz_part(gm: GaussianMixture, schedule: Schedule, specs: Sequence[ModelSpec], cfg: Config, seed: int):
    """K(t, t+1) (Eq. 8) for t = 0..t_end, the same x_0 and noise for every model."""
    x0 = gm.sample(cfg.lipschitz_n, torch.Generator().manual_seed(seed))
    times = torch.arange(0, cfg.lipschitz_t_end + 1, dtype=F64)
    out = []
    for spec in specs:
        curve = lipschitz_curve(
            spec.build(gm, schedule),
            x0,
            schedule,
            times,
            batch_size=2 * cfg.lipschitz_n,  # one t per call: one quadrature per distinct time
            generator=torch.Generator().manual_seed(seed + 1),
        )
        d = curve.to_dict()
        d["label"] = spec.label
        d["boundaries"] = sharing_boundaries(spec.sharing)
        out.append(d)
    return out


# ---------------------------------------------------------------------------------------------
# 3: Theorem 4.1
# ---------------------------------------------------------------------------------------------
def theorem_part(gm: GaussianMixture, schedule: Schedule, cfg: Config, seed: int) -> dict:
    """‖ε̄(x_t) − ε*(x_t, t)‖ for t = 0..t̃−1 and every n of the grid, both weightings, against
    Eq. (11): σ_t̃ K(x) Δt + B(x) Δσ_max, K and B of Eq. (12) as max over the integer timesteps of
    [0, t̃) (the times at which discrete E-TSDM shares; Δt in timesteps)."""
    t_tilde = cfg.bound_t_tilde
    gen = torch.Generator().manual_seed(seed)
    times = list(range(t_tilde))
    xs = []  # x_t ~ q_t: one forward draw per t, shared by every n
    for t in times:
        x0 = gm.sample(cfg.bound_n, gen)
        noise = torch.randn(x0.shape, generator=gen, dtype=F64)
        xs.append(schedule.alpha(float(t)) * x0 + schedule.sigma(float(t)) * noise)  # Eq. (1)
    k_x, b_x = _sup_estimates(gm, schedule, torch.stack(xs), t_tilde)  # (M, N) each
    eps_star = torch.stack([gm.eps(x, float(t), schedule) for t, x in zip(times, xs, strict=True)])
    sigma_tt = float(schedule.sigma(float(t_tilde)))
    rows = []
    for n in cfg.bound_grid:
        sharing = TimestepSharing(t_tilde, n, T=schedule.T)
        dsigma_max = float(schedule.sigma(torch.tensor(sharing.boundaries, dtype=F64)).diff().abs().max())
        bound = sigma_tt * k_x * sharing.delta + b_x * dsigma_max  # Eq. (11), per point
        for weighting in ("posterior", "uniform"):
            bar = torch.stack(
                [gm.shared_eps(x, float(t), schedule, sharing, weighting) for t, x in zip(times, xs, strict=True)]
            )
            err = (bar - eps_star).norm(dim=-1)  # (M, N)
            rows.append(
                {
                    "n": n,
                    "delta_t": sharing.delta,
                    "weighting": weighting,
                    "err_max": float(err.max()),
                    "err_mean": float(err.mean()),
                    "err_mean_per_t": err.mean(1).tolist(),
                    "err_max_per_t": err.max(1).values.tolist(),
                    "bound_mean": float(bound.mean()),
                    "bound_min": float(bound.min()),
                    "ratio_max": float((err / bound).max()),
                    "violations": int((err > bound * (1 + 1e-9)).sum()),
                    "dsigma_max": dsigma_max,
                }
            )
    return {"t_tilde": t_tilde, "n_points_per_t": cfg.bound_n, "sigma_t_tilde": sigma_tt, "rows": rows}


def _sup_estimates(gm: GaussianMixture, schedule: Schedule, xs: Tensor, t_tilde: int) -> tuple[Tensor, Tensor]:
    """K(x) = max_{t ≠ τ} ‖h(t) − h(τ)‖/|t − τ| and B(x) = max_t ‖h(t)‖, h(t) = ∇ log q_t(x), over the
    integer timesteps 0..t̃−1, for every point of ``xs`` (M, N, D). Exact on that grid (all pairs)."""
    pts = xs.reshape(-1, xs.shape[-1])
    grid = torch.arange(t_tilde, dtype=F64)
    h = torch.stack([gm.score(pts, float(t), schedule) for t in grid.tolist()], 1)  # (P, G, D)
    gap = (grid[:, None] - grid[None]).abs()
    k = torch.zeros(len(pts), dtype=F64)
    for i in range(t_tilde - 1):  # pairs (i, j > i)
        quot = (h[:, i + 1 :] - h[:, i : i + 1]).norm(dim=-1) / gap[i, i + 1 :]
        k = torch.maximum(k, quot.max(1).values)
    b = h.norm(dim=-1).max(1).values
    return k.reshape(xs.shape[:2]), b.reshape(xs.shape[:2])


# ---------------------------------------------------------------------------------------------
# Tables and figures
# ---------------------------------------------------------------------------------------------
def quality_table(res: dict, title: str) -> str:
    head = "| model | sampler | SW1 | MMD² ×1e3 | mode TV | near-mode | spread ratio | log-lik |"
    lines = [f"#### {title} (n = {res['n_samples']}, seeds {res['seeds']})", "", head, "|" + "---|" * 8]
    fl = res["floor"]
    lines.append("| exact samples (floor) | — | " + " | ".join(_fmt(fl[m], "true", m) for m in METRICS) + " |")
    for label, rows in res["metrics"].items():
        for key, vals in rows.items():
            lines.append(f"| {label} | {key} | " + " | ".join(_fmt(vals[m], "value", m) for m in METRICS) + " |")
    return "\n".join(lines) + "\n"


def _fmt(d: dict, name: str, metric: str) -> str:
    scale = 1e3 if metric == "mmd2" else 1.0
    return format_pm(d[name] * scale, d[f"{name}_std"] * scale, 3)


PAIRED: tuple[str, ...] = ("sliced_w1", "spread_ratio", "log_likelihood")


def paired_table(res: dict, title: str, metrics: Sequence[str] = PAIRED) -> str:
    """E-TSDM minus ε* per sampler, paired by seed (same initial and ancestral noise): mean ± std."""
    labels = list(res["metrics"])
    base = res["metrics"][labels[0]]
    head = " | ".join(f"Δ {m}" for m in metrics)
    lines = [f"#### {title}: E-TSDM − ε*, paired by seed (same noise)", "", f"| model | sampler | {head} |"]
    lines.append("|---|---|" + "---|" * len(metrics))
    for label in labels[1:]:
        for key, vals in res["metrics"][label].items():
            cells = []
            for m in metrics:
                diff = np.asarray(vals[m]["value_values"]) - np.asarray(base[key][m]["value_values"])
                d = summarize("d", diff.tolist())
                cells.append(format_pm(d["d"], d["d_std"], 3))
            lines.append(f"| {label} | {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def per_mode_table(res: dict, gm: GaussianMixture, title: str) -> str:
    """Spread ratio ŝ_k / s_k of every mode, for each main model and sampler (mean over seeds)."""
    stds = ", ".join(f"{float(s):g}" for s in gm.stds)
    weights = ", ".join(f"{float(w):.2f}" for w in gm.weights)
    lines = [
        f"#### {title}: spread ratio ŝ_k / s_k per mode (s_k = {stds}; w_k = {weights})",
        "",
        "| model | sampler | " + " | ".join(f"mode {k}" for k in range(len(gm.stds))) + " |",
        "|---|---|" + "---|" * len(gm.stds),
    ]
    for label, rows in res["spread_per_mode"].items():
        for key, vals in rows.items():
            lines.append(f"| {label} | {key} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    return "\n".join(lines) + "\n"


def solver_table(res: dict, title: str) -> str:
    labels = list(res["solver_error"])
    keys = list(next(iter(res["solver_error"].values())))
    lines = [
        f"#### {title}: mean ‖x_sampler − x_ref‖, x_ref = same model, dpm-solver-3 NFE {res['reference']['nfe']}",
        "",
        "| sampler | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for key in keys:
        cells = [
            format_pm(res["solver_error"][lb][key]["value"], res["solver_error"][lb][key]["value_std"], 3)
            for lb in labels
        ]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    check = res["reference"]["vs_dpm_solver_2_same_nfe"]
    lines.append(
        "| reference vs dpm-solver-2 at the same NFE (seed 0) | "
        + " | ".join(f"{check[lb]:.2g}" for lb in labels)
        + " |"
    )
    bias = res["sharing_bias"]
    cells = ["—"] + [format_pm(bias[lb]["value"], bias[lb]["value_std"], 3) for lb in labels[1:]]
    lines.append("| **sharing bias**: ‖x_ref(E-TSDM) − x_ref(ε*)‖ | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def theorem_table(res: dict, title: str) -> str:
    lines = [
        f"#### {title}: ‖ε̄ − ε*‖ over t in [0, {res['t_tilde']}), {res['n_points_per_t']} x_t ~ q_t per t",
        "",
        "| n | Δt | weighting | max err | mean err | mean Eq. 11 bound | max err/bound | violations |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['n']} | {r['delta_t']:g} | {r['weighting']} | {r['err_max']:.4g} | {r['err_mean']:.4g} | "
            f"{r['bound_mean']:.4g} | {r['ratio_max']:.3g} | {r['violations']} |"
        )
    return "\n".join(lines) + "\n"


def lipschitz_table(curves: list[dict], title: str) -> str:
    lines = [
        f"#### {title}: K(t, t+1), mean over x_t",
        "",
        "| model | K(0,1) | max K over t≤t_end (at t) | mean K over t<t̃ |",
        "|---|---|---|---|",
    ]
    for c in curves:
        k, t = np.asarray(c["K"]), np.asarray(c["t"])
        tt = c["boundaries"][-1] if c["boundaries"] else 100
        lines.append(f"| {c['label']} | {k[0]:.4g} | {k.max():.4g} ({int(t[k.argmax()])}) | {k[t < tt].mean():.4g} |")
    return "\n".join(lines) + "\n"


def plot_theorem(res: dict, path: Path, title: str) -> list[Path]:
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11.0, 4.2))
    for j, weighting in enumerate(("posterior", "uniform")):
        rows = [r for r in res["rows"] if r["weighting"] == weighting and r["err_max"] > 0]
        dt = np.array([r["delta_t"] for r in rows])
        ls = "-" if weighting == "posterior" else "--"
        ax1.plot(dt, [r["err_max"] for r in rows], ls, marker="o", color=COLORS[0], label=f"max error ({weighting})")
        ax1.plot(dt, [r["err_mean"] for r in rows], ls, marker="s", color=COLORS[2], label=f"mean error ({weighting})")
        if j == 0:
            ax1.plot(
                dt,
                [r["bound_mean"] for r in rows],
                ":",
                marker="^",
                color=COLORS[1],
                label="Eq. 11 bound (mean over x)",
            )
            ref = rows[-1]["err_mean"] * np.sqrt(dt / dt[-1])
            ax1.plot(dt, ref, color="k", lw=0.8, alpha=0.6, label="∝ sqrt(Δt)")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("Δt = t̃ / n (timesteps)")
    ax1.set_ylabel("‖ε̄ − ε*‖")
    ax1.set_title("error vs sub-interval length")
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=7)
    for i, r in enumerate(r for r in res["rows"] if r["weighting"] == "posterior" and r["err_max"] > 0):
        y = np.asarray(r["err_mean_per_t"])
        x = np.arange(len(y)) + 1.0
        ax2.plot(x, np.where(y > 0, y, np.nan), color=COLORS[i % len(COLORS)], lw=1.1, label=f"n = {r['n']}")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("timestep (DDPM index t + 1)")
    ax2.set_ylabel("mean ‖ε̄ − ε*‖ over x_t ~ q_t (posterior)")
    ax2.set_title("error along t (t = 0..t̃−1)")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_solver(results: dict[str, dict], path: Path) -> list[Path]:
    """Grouped bars (log scale): ODE-solver error per sampler and model, one panel per mixture,
    with the sharing bias drawn as horizontal lines."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.0 * len(results), 4.2), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items(), strict=True):
        labels = list(res["solver_error"])
        keys = list(res["solver_error"][labels[0]])
        width = 0.8 / len(labels)
        pos = np.arange(len(keys))
        for i, lb in enumerate(labels):
            vals = [res["solver_error"][lb][k]["value"] for k in keys]
            errs = [res["solver_error"][lb][k]["value_std"] for k in keys]
            ax.bar(
                pos + (i - (len(labels) - 1) / 2) * width, vals, width, yerr=errs, color=COLORS[i], label=lb, capsize=2
            )
        for i, lb in enumerate(labels[1:], start=1):
            ax.axhline(res["sharing_bias"][lb]["value"], color=COLORS[i], ls="--", lw=1.0, label=f"sharing bias, {lb}")
        ax.set_xticks(pos, keys, rotation=30, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("mean ‖x − x_ref(same model)‖")
        ax.set_title(f"{name}: ODE-solver error vs sharing bias")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_spread(results: dict[str, dict], path: Path) -> list[Path]:
    """Spread ratio ŝ/s (mean over modes) per sampler and model (1 = exact), with ± std and floor."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.2), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items(), strict=True):
        labels = list(res["metrics"])
        keys = list(res["metrics"][labels[0]])
        width = 0.8 / len(labels)
        pos = np.arange(len(keys))
        for i, lb in enumerate(labels):
            cells = [res["metrics"][lb].get(k, {}).get("spread_ratio") for k in keys]  # NaN: not run
            vals = [c["value"] if c else np.nan for c in cells]
            errs = [c["value_std"] if c else np.nan for c in cells]
            ax.bar(
                pos + (i - (len(labels) - 1) / 2) * width,
                vals,
                width,
                yerr=errs,
                color=COLORS[i % len(COLORS)],
                label=lb,
                capsize=1.5,
            )
        floor = res["floor"]["spread_ratio"]
        ax.axhspan(floor["true"] - floor["true_std"], floor["true"] + floor["true_std"], color="k", alpha=0.12)
        ax.axhline(floor["true"], color="k", lw=0.8, label="exact samples (floor ± std)")
        shown = [c["spread_ratio"]["value"] for lb in labels for c in res["metrics"][lb].values()]
        lo, hi = min(shown), max(shown)
        ax.set_ylim(min(lo, floor["true"]) - 0.05, max(hi, floor["true"]) + 0.05)
        ax.set_xticks(pos, keys, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("spread ratio ŝ_k / s_k (mean over modes)")
        ax.set_title(f"{name}: mode width of the samples")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("docs/results"), help="output folder (tables, json, figures/)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every code path (seconds)")
    p.add_argument("--seeds", type=int, default=3, help="number of noise seeds 0..S-1 (>= 1)")
    p.add_argument("--n-samples", type=int, default=None, help="samples per quality cell (default 1000, quick 64)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: shared CPU)")
    p.add_argument("--spacing", choices=SPACINGS, default=None,
                   help="step spacing of every sampler (default: the library's, the integer linspace grid in "
                        "discrete time, time-uniform in continuous time)")
    p.add_argument("--only-samplers", action="store_true", help="only parts 1 and 4 (samplers), discrete time")
    p.add_argument("--no-figures", action="store_true", help="skip the PNGs")
    p.add_argument("--replot", action="store_true", help="only redraw the figures from <out>/analytic.json")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.n_samples is not None and args.n_samples < 16:
        p.error(f"--n-samples must be >= 16, got {args.n_samples}")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = quick_config() if args.quick else full_config()
    if args.n_samples is not None:
        cfg.n_samples = args.n_samples
    seeds = list(range(args.seeds))
    out, figs = args.out, args.out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    if args.replot:
        results = json.loads((out / "analytic.json").read_text())
        write_figures(results, figs)
        return results
    t_begin = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t_begin:7.1f} s] {msg}", flush=True)

    schedule = make_schedule("linear", T=1000)
    specs = discrete_models(cfg)
    results: dict = {
        "spacing": args.spacing,
        "config": {k: v for k, v in vars(cfg).items()},
        "seeds": seeds,
        "quick": args.quick,
        "mixtures": {},
    }
    tables: list[str] = []
    for name, gm in mixtures().items():
        log(f"{name}: samplers (discrete linear, T = 1000)")
        res = {
            "quality": quality_and_solver(
                gm,
                schedule,
                specs,
                cfg.samplers,
                cfg.other_samplers,
                seeds,
                cfg.n_samples,
                cfg.reference_nfe,
                log,
                spacing=args.spacing,
            )
        }
        results["mixtures"][name] = res
        title = f"{name}, discrete linear T=1000, {args.spacing or 'linspace (integer)'} steps"
        tables += [
            quality_table(res["quality"], title),
            solver_table(res["quality"], title),
            paired_table(res["quality"], name),
            per_mode_table(res["quality"], gm, name),
        ]
        if args.only_samplers:
            continue
        log(f"{name}: Lipschitz curves")
        res["lipschitz"] = lipschitz_part(gm, schedule, specs[:3], cfg, seed=0)
        log(f"{name}: Theorem 4.1")
        res["theorem41"] = theorem_part(gm, schedule, cfg, seed=0)
        tables += [
            lipschitz_table(res["lipschitz"], name),
            theorem_table(res["theorem41"], f"{name}, t̃ = {cfg.bound_t_tilde}"),
        ]
    if cfg.continuous and not args.only_samplers:
        log("ring: samplers (continuous linear)")
        cont = make_schedule("linear", continuous=True)
        cspecs = [
            ModelSpec("eps*"),
            ModelSpec("E-TSDM post t̃=0.1 n=5", TimestepSharing(0.1, 5, T=None)),
            ModelSpec("E-TSDM unif t̃=0.1 n=5", TimestepSharing(0.1, 5, T=None), "uniform"),
        ]
        gm = mixtures()["ring"]
        results["continuous_ring"] = quality_and_solver(
            gm, cont, cspecs, cfg.continuous_samplers, [], seeds, cfg.n_samples, None, log, spacing=args.spacing
        )
        tables.append(quality_table(results["continuous_ring"], "ring, continuous linear (t in [0, 1])"))
        tables.append(paired_table(results["continuous_ring"], "ring, continuous linear"))
    results["seconds"] = time.time() - t_begin
    (out / "analytic.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "analytic_tables.md").write_text("\n".join(tables))
    if not args.no_figures:
        log("figures")
        write_figures(results, figs)
    log(f"done: {out / 'analytic.json'}, {out / 'analytic_tables.md'}")
    return results


def write_figures(results: dict, figs: Path) -> None:
    for name, res in results["mixtures"].items():
        if "lipschitz" not in res:  # --only-samplers
            continue
        plot_lipschitz(
            res["lipschitz"], figs / f"analytic_lipschitz_{name}.png",
            title=f"{name}: K(t, t+1) of ε* vs ideal E-TSDM (Fig. 1b analogue)",
        )  # fmt: skip
        plot_theorem(
            res["theorem41"], figs / f"analytic_theorem41_{name}.png", f"{name}: Theorem 4.1, ideal E-TSDM vs ε*"
        )
    quality = {name: res["quality"] for name, res in results["mixtures"].items()}
    plot_solver(quality, figs / "analytic_solver_error.png")
    plot_spread(quality, figs / "analytic_spread.png")


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
