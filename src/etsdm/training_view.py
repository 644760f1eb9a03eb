"""See what you configured: a run's condition map f(t), its training-time density and loss weight.

:func:`training_view` evaluates, for a :class:`~etsdm.config.RunConfig` (or a config file, run,
checkpoint or exported folder: :func:`config_of`), on the schedule's timesteps:

* ``condition``: what the network is fed, f(t) (Eq. 9 for E-TSDM; λ for remap; t for the baseline);
* ``density``: the probability of each training t (the pdf in continuous time) under
  ``diffusion.time_sampling`` / logit-normal / shift / min-max (``etsdm.losses.TimestepDensity``;
  remap-lambda by sampling);
* ``weight``: the loss weight of each t (Min-SNR-γ of the real t, else 1), and ``effective``:
  density x weight, normalised — where the training signal goes;
* the shares of density and effective weight in E-TSDM's band [0, t̃), and :func:`etsdm.losses.
  knob_warnings`.

:func:`plot_training_view` draws the three panels; ``etsdm schedules --config X`` writes them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from .conditioning import TimestepSharing
from .config import ConfigError, RunConfig, from_dict, load_config
from .denoiser import Denoiser
from .losses import TimestepDensity, knob_warnings, min_snr_loss_weight, sample_timesteps

REMAP_DRAWS = 200_000  # remap-lambda: the density of t is estimated from this many draws


def config_of(source: str | Path) -> RunConfig:
    """The RunConfig of a YAML file, a run or checkpoint folder (config.yaml), or an exported
    diffusers folder (etsdm.json). Raises ConfigError naming the path if there is none."""
    path = Path(source)
    if path.is_file():
        return load_config(path)
    if (path / "config.yaml").is_file():  # a run or one of its checkpoints
        return load_config(path / "config.yaml")
    side = path / "etsdm.json"
    if side.is_file() and "config" in json.loads(side.read_text()):
        return from_dict(json.loads(side.read_text())["config"])
    raise ConfigError(f"{path}: no config here (a YAML file, a run folder with config.yaml, or an etsdm export "
                      "with etsdm.json)")


def _density(cfg: RunConfig, den: Denoiser, density: TimestepDensity) -> tuple[torch.Tensor, torch.Tensor]:
    sched = den.schedule
    if density.sampling != "remap-lambda":
        return density.pmf(sched)
    t = sample_timesteps(den, REMAP_DRAWS, generator=torch.Generator().manual_seed(0), density=density)
    if sched.continuous:  # a histogram on log-spaced bins (as TimestepDensity.pmf's grid)
        lo, hi = density.bounds(sched)
        edges = torch.logspace(math.log10(lo), math.log10(hi), 1001, dtype=torch.float64)
        counts = torch.bincount(torch.bucketize(t, edges[1:-1]), minlength=1000).to(torch.float64)
        return (edges[1:] * edges[:-1]).sqrt(), counts / (REMAP_DRAWS * edges.diff())
    counts = torch.bincount(t.long(), minlength=sched.T).to(torch.float64)
    return torch.arange(sched.T, dtype=torch.float64), counts / REMAP_DRAWS


def _share_below(density: TimestepDensity, sched: Any, band: float | None, masses: torch.Tensor) -> float | None:
    """P(t < t̃): exact from the density's CDF, or the share of the remap-lambda draws."""
    if band is None:
        return None
    return float(masses.sum()) if density.sampling == "remap-lambda" else density.prob_below(sched, band)


def training_view(cfg: RunConfig, label: str = "") -> dict[str, Any]:
    """The curves and numbers of the module doc, as plain lists / floats (JSON-ready)."""
    sched, cond = cfg.build_schedule(), cfg.build_condition()
    d = cfg.diffusion
    density = d.density()
    den = Denoiser(lambda x, c: x, sched, d.prediction, cond)
    t, p = _density(cfg, den, density)
    weight = (min_snr_loss_weight(sched, t, d.snr_gamma, d.prediction, d.sigma_data) if d.snr_gamma is not None
              else torch.ones_like(t))
    dt = torch.gradient(t)[0] if sched.continuous else torch.ones_like(t)  # pdf -> probability per grid point
    mass = p * dt / (p * dt).sum()
    effective = p * weight / (p * weight * dt).sum()  # normalised: a pmf (discrete) or a pdf (continuous)
    band = float(cond.t_tilde) if isinstance(cond, TimestepSharing) else None
    below = (t < band) if band is not None else torch.zeros_like(t, dtype=torch.bool)
    return {
        "label": label or cfg.name, "continuous": sched.continuous, "schedule": sched.name,
        "condition_kind": cond.config()["kind"], "condition_config": cond.config(),
        "t": t.tolist(), "condition": cond(t).tolist(), "density": p.tolist(), "weight": weight.tolist(),
        "effective": effective.tolist(), "t_tilde": band, "snr_gamma": d.snr_gamma, "prediction": d.prediction,
        "time_sampling": d.time_sampling,
        "density_share_below_t_tilde": _share_below(density, sched, band, mass[below]),
        "effective_share_below_t_tilde": float((effective * dt)[below].sum()) if band is not None else None,
        "warnings": knob_warnings(cond, sched, density),
    }


def condition_label(config: dict[str, Any]) -> str:
    """A short name of a condition map's config."""
    if config["kind"] == "etsdm":
        return f"E-TSDM f_T: t̃ = {config['t_tilde']:g}, n = {config['n']}"
    if config["kind"] == "remap":
        return f"remap λ = {'1/t' if config['remap'] == 'inverse' else 'logit(t)'}, K = {config['remap_k']:.3g}"
    return "identity (baseline)"


def describe(view: dict[str, Any]) -> list[str]:
    """Console lines for a view."""
    weight = f"Min-SNR-γ = {view['snr_gamma']:g}" if view["snr_gamma"] else "uniform"
    lines = [f"{view['label']}: condition {condition_label(view['condition_config'])}, "
             f"time sampling {view['time_sampling']}, loss weight {weight}"]
    if view["t_tilde"] is not None:
        lines.append(f"  E-TSDM band [0, {view['t_tilde']:g}): {100 * view['density_share_below_t_tilde']:.3g}% of the "
                     f"training times, {100 * view['effective_share_below_t_tilde']:.3g}% of the loss weight")
    return lines + [f"  warning: {w}" for w in view["warnings"]]


def plot_training_view(view: dict[str, Any], path: str | Path, *, pdf: bool = False) -> list[Path]:
    """Three panels: f(t) against t; the training-time density; the loss weight and density x weight."""
    import numpy as np

    from .plotting import COLORS, _style, plt, save_figure

    t = np.asarray(view["t"])
    x = t if view["continuous"] else t + 1  # DDPM index t + 1, so t = 0 sits on the log axis
    xlabel = "t (continuous, log)" if view["continuous"] else "timestep (DDPM index t + 1, log)"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    cond = np.asarray(view["condition"])
    remap = view["condition_kind"] == "remap"
    # on the log axis, continuous f(t) = 0 (the first sub-interval) is drawn at the smallest t
    y = cond if remap else (np.maximum(cond, x[0]) if view["continuous"] else cond + 1)
    axes[0].plot(x, y, color=COLORS[1], lw=1.6, label="f(t)")
    if not remap:
        axes[0].plot(x, x, color="k", lw=0.7, ls=":", label="identity")
        axes[0].set_yscale("log")
    _style(axes[0], f"condition map: {condition_label(view['condition_config'])}", xlabel,
           "λ = f(t)" if remap else ("f(t)" if view["continuous"] else "f(t) + 1"))
    axes[1].plot(x, view["density"], color=COLORS[0], lw=1.4)
    _style(axes[1], f"training-time density ({view['time_sampling']})", xlabel,
           "pdf" if view["continuous"] else "P(t)")
    axes[1].set_ylim(0, 1.25 * max(view["density"]))  # room for the note
    axes[2].plot(x, view["weight"], color=COLORS[2], lw=1.4, label="loss weight w(t)")
    ax2 = axes[2].twinx()
    ax2.plot(x, view["effective"], color=COLORS[3], lw=1.4, label="density x weight (normalised)")
    ax2.set_ylabel("density x weight, normalised")
    weight_name = f"Min-SNR-γ = {view['snr_gamma']:g} ({view['prediction']})" if view["snr_gamma"] else "uniform"
    _style(axes[2], f"loss weight: {weight_name}", xlabel, "w(t)")
    if view["snr_gamma"]:
        axes[2].set_yscale("log")
    else:
        axes[2].set_ylim(0, 1.25 * max(view["weight"]))
    ax2.set_ylim(0, 1.25 * max(view["effective"]))
    lines = axes[2].get_lines() + ax2.get_lines()
    axes[2].legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="lower right")
    for ax in axes:
        ax.set_xscale("log")
        if view["t_tilde"] is not None:
            edge = view["t_tilde"] if view["continuous"] else view["t_tilde"] + 0.5
            ax.axvspan(x[0], edge, color=COLORS[1], alpha=0.08, lw=0)
    if view["t_tilde"] is not None:
        axes[1].text(0.02, 0.95, f"P(t < t̃) = {view['density_share_below_t_tilde']:.3g}", transform=axes[1].transAxes,
                     va="top", fontsize=9, bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
        axes[2].text(0.02, 0.95, f"weight share t < t̃: {view['effective_share_below_t_tilde']:.3g}",
                     transform=axes[2].transAxes, va="top", fontsize=9,
                     bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{view['label']} — shaded: E-TSDM's band [0, t̃)" if view["t_tilde"] is not None else view["label"],
                 y=1.03)
    fig.subplots_adjust(wspace=0.38)  # (not tight_layout: a second full draw; savefig crops the margins)
    return save_figure(fig, path, pdf)
