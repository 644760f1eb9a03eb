"""Paper-style figures (matplotlib, Agg backend): Lipschitz curves (Fig. 1b, A1, A2), perturbation
error bars (Fig. 2), SNR curves, the Modified-NS SNR ratio (Fig. A8), the remap SNR comparison
(Fig. A9), sample grids and 2-D scatter plots.

Every ``plot_*`` function writes a PNG to ``path`` (and a PDF beside it when ``pdf=True``) and
returns the paths written. Discrete timesteps are drawn as DDPM's index t + 1 (1..T), so that
etsdm's t = 0 (the first noisy step) can sit on a log axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

COLORS = ("#1f4e9c", "#d1495b", "#2a9d8f", "#e9a03b", "#6c4ea0", "#555555")


def save_figure(fig, path: str | Path, pdf: bool = False) -> list[Path]:
    """Save ``fig`` as PNG at ``path`` (suffix forced to .png) and optionally as PDF; close it."""
    png = Path(path).with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=150, bbox_inches="tight")
    out = [png]
    if pdf:
        fig.savefig(png.with_suffix(".pdf"), bbox_inches="tight")
        out.append(png.with_suffix(".pdf"))
    plt.close(fig)
    return out


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)


SYMBOLS = {"eps": "ε", "v": "v", "x0": "x0"}


def _curve_axis(curve: dict, continuous: bool | None) -> tuple[float, str]:
    """(factor from the curve's time to its x value, x-axis kind) for one Lipschitz curve: a
    continuous curve per discrete-equivalent step is drawn at t·T, on the discrete axis (DDPM
    index t + 1 of step t ↔ continuous t = (t + 1)/T), as the paper draws Fig. A1 beside Fig. 1b."""
    cont = bool(curve.get("continuous", False)) if continuous is None else continuous
    per = float(curve.get("K_steps_per_time_unit", 1.0)) if cont else 1.0
    if cont and per == 1.0:
        return 1.0, "time"
    return (per, "step-continuous") if cont else (1.0, "step")


def _lipschitz_labels(curves: Sequence[dict], kinds: set[str]) -> tuple[str, str, str]:
    """(title, x label, y label) naming what was differentiated and the unit of K."""
    outputs = " / ".join(dict.fromkeys(SYMBOLS.get(c.get("output", "eps"), "ε") for c in curves))
    network = all(c.get("output_is_network", True) for c in curves)
    title = f"Lipschitz constants K(t, t′) of {'the network output ' if network else ''}{outputs} w.r.t. t (Eq. 8)"
    if kinds == {"time"}:
        return title, "time t (continuous, log scale)", "K(t, t′) per unit of continuous time"
    if "step-continuous" in kinds:  # continuous t drawn at t·T, K per step of 1/T
        return title, "timestep (DDPM index t + 1; continuous t as t·T, log scale)", "K(t, t′) per step of 1/T"
    return title, "timestep (DDPM index t + 1, log scale)", "K(t, t′) per timestep"


def plot_lipschitz(
    curves: Sequence[dict],
    path: str | Path,
    *,
    continuous: bool | None = None,
    yscale: str = "log",
    title: str | None = None,
    pdf: bool = False,
) -> list[Path]:
    """Fig. 1b / A1 / A5: K(t, t + Δt) against t for several models in one figure.

    Each curve is a dict with ``label``, ``t``, ``K`` and optionally ``dt``, ``K_sem``,
    ``boundaries`` (E-TSDM sub-interval boundaries t_0..t_n, drawn as dotted lines over the shaded
    [0, t̃)), ``continuous``, ``K_steps_per_time_unit`` (T for a continuous curve per
    discrete-equivalent step: drawn at t·T on the discrete axis), ``output`` and
    ``output_is_network`` (named in the title). ``continuous`` overrides every curve's flag.
    With ``yscale="log"``, K = 0 (inside a shared sub-interval) cannot be drawn: those points
    are marked on the bottom edge instead; when every K is 0 the axis is linear.
    """
    if yscale == "log" and not any(np.any(np.asarray(c["K"], dtype=float) > 0) for c in curves):
        yscale = "linear"  # nothing positive to put on a log axis (E-TSDM inside one sub-interval)
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    zero_marked = False
    kinds: set[str] = set()
    for i, curve in enumerate(curves):
        color = COLORS[i % len(COLORS)]
        factor, kind = _curve_axis(curve, continuous)
        kinds.add(kind)
        t = np.asarray(curve["t"], dtype=float) + 0.5 * float(curve.get("dt", 0.0))  # K(t, t′) sits at (t + t′)/2
        x = t * factor if kind != "step" else t + 1.0
        k = np.asarray(curve["K"], dtype=float)
        shown = np.where(k > 0, k, np.nan) if yscale == "log" else k
        ax.plot(x, shown, color=color, lw=1.3, label=curve["label"])
        isolated = _isolated(shown)
        ax.plot(x[isolated], shown[isolated], "o", color=color, ms=3.5)
        if curve.get("K_sem") is not None:
            sem = np.asarray(curve["K_sem"], dtype=float)
            ax.fill_between(x, np.maximum(shown - 2 * sem, 1e-300), shown + 2 * sem, color=color, alpha=0.15, lw=0)
        bounds = [b * factor for b in curve.get("boundaries") or []]
        _draw_boundaries(ax, bounds, kind != "step", color, float(x.min()))
        if yscale == "log" and np.any(k == 0):
            ax.plot(
                x[k == 0],
                np.zeros(int((k == 0).sum())),
                "|",
                color=color,
                ms=6,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
                label=None if zero_marked else "K = 0 (shared condition)",
            )
            zero_marked = True
    auto_title, xlabel, ylabel = _lipschitz_labels(curves, kinds)
    ax.set_xscale("log")
    ax.set_yscale(yscale)
    _style(ax, title or auto_title, xlabel, ylabel + (" (log scale)" if yscale == "log" else ""))
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path, pdf)


def _isolated(y: np.ndarray) -> np.ndarray:
    """Finite points whose neighbours are both missing (a line would not show them)."""
    finite = np.isfinite(y)
    left = np.concatenate([[False], finite[:-1]])
    right = np.concatenate([finite[1:], [False]])
    return finite & ~left & ~right


def _draw_boundaries(ax, boundaries: Sequence[float], continuous: bool, color: str, x_min: float) -> None:
    """E-TSDM sub-interval boundaries: dotted lines between the last t of one sub-interval and the
    first of the next (at t_i − ½ in discrete time), over the shaded shared range [0, t̃)."""
    if not boundaries:
        return
    shift = 0.0 if continuous else 0.5  # DDPM index (t + 1) of t_i − ½
    for j, b in enumerate(boundaries[1:]):
        ax.axvline(b + shift, color=color, ls=":", lw=0.9, label="E-TSDM sub-interval boundaries" if j == 0 else None)
    ax.axvspan(max(boundaries[0] + shift, x_min), boundaries[-1] + shift, color=color, alpha=0.06, lw=0)


def plot_stability(
    results: Sequence[dict],
    path: str | Path,
    *,
    reference: int = 0,
    title: str = "Perturbation error of the predicted x0 (Fig. 2)",
    pdf: bool = False,
) -> list[Path]:
    """Fig. 2: grouped bars of the x̂0 perturbation error per scale, one bar per model, each
    labelled with its value and its difference relative to model ``reference``.

    Each result is a dict with ``label``, ``scales``, ``error`` and optionally ``error_std``
    (drawn as error bars: std over seeds) and ``metric`` ("mse" or "rms", named on the y axis).
    """
    scales = list(results[0]["scales"])
    width = 0.8 / len(results)
    ref = np.asarray(results[reference]["error"], dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pos = np.arange(len(scales))
    for i, res in enumerate(results):
        err = np.asarray(res["error"], dtype=float)
        std = res.get("error_std")
        bars = ax.bar(
            pos + (i - (len(results) - 1) / 2) * width,
            err,
            width,
            yerr=None if std is None else np.asarray(std, dtype=float),
            color=COLORS[i % len(COLORS)],
            label=res["label"] + (" (reference)" if i == reference and len(results) > 1 else ""),
            capsize=2,
        )
        tops = err + (0 if std is None else np.asarray(std, dtype=float))  # above the error bar
        for bar, e, r, top in zip(bars, err, ref, tops, strict=True):
            text = f"{e:.3g}" if i == reference else f"{e:.3g}\n({100 * (e / r - 1):+.1f}%)"
            x_mid = bar.get_x() + bar.get_width() / 2
            ax.annotate(
                text, (x_mid, top), ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points"
            )
    ax.set_xticks(pos, [f"{s:g}" for s in scales])
    ax.margins(y=0.18)
    has_std = any(res.get("error_std") is not None for res in results)
    metric = str(results[0].get("metric", "rms")).upper()
    ylabel = f"error of predicted x0 (per-pixel {metric})" + (", ± std over seeds" if has_std else "")
    _style(ax, title, "perturbation standard deviation", ylabel)
    ax.legend(fontsize=8)
    return save_figure(fig, path, pdf)


def plot_snr_curves(curves: dict, path: str | Path, *, title: str = "SNR α²/σ² of each schedule", pdf: bool = False):
    """SNR(t) on a log scale over the discrete timesteps, one line per schedule."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    bases: list[str] = []
    for label, (t, snr) in curves.items():
        base = label.split(" (")[0]
        bases += [] if base in bases else [base]
        ls = "--" if "Modified" in label else "-"
        color = COLORS[bases.index(base) % len(COLORS)]
        ax.plot(np.asarray(t) + 1, np.asarray(snr), ls, color=color, lw=1.3, label=label)
    ax.set_yscale("log")
    _style(ax, title, "timestep (DDPM index t + 1)", "SNR (log scale)")
    ax.legend(fontsize=8)
    return save_figure(fig, path, pdf)


def plot_snr_ratio(ratios: dict, path: str | Path, *, pdf: bool = False) -> list[Path]:
    """Fig. A8: SNR of Modified-NS / SNR of the original schedule against the timestep."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (name, (t, ratio)) in enumerate(ratios.items()):
        ax.plot(np.asarray(t) + 1, np.asarray(ratio), color=COLORS[i % len(COLORS)], lw=1.5, label=name.capitalize())
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    ax.set_yscale("log")
    _style(ax, "Modified-NS / original SNR (Fig. A8)", "timestep (DDPM index t + 1)", "ratio of SNR (log scale)")
    ax.legend(fontsize=8)
    return save_figure(fig, path, pdf)


def plot_remap_snr(data: Sequence[dict], path: str | Path, *, pdf: bool = False) -> list[Path]:
    """Fig. A9: SNR at the T times visited (sorted) when t is uniform vs when λ = f(t) is uniform."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    first = data[0]
    idx = np.asarray(first["index"]) + 1
    ax.plot(idx, first["snr_uniform_t"], color=COLORS[0], lw=1.5, label="uniformly sampling t")
    for i, d in enumerate(data):
        name = "f(t) = 1/t" if d["remap"] == "inverse" else "f⁻¹(λ) = sigmoid(λ)"
        ax.plot(idx, d["snr_uniform_lambda"], color=COLORS[i + 1], lw=1.5, label=f"uniformly sampling λ, {name}")
    ax.set_yscale("log")
    _style(ax, f"Remap: SNR of the visited times, {first['schedule']} schedule (Fig. A9)", "k-th visited time", "SNR")
    ax.legend(fontsize=8)
    return save_figure(fig, path, pdf)


def sample_grid(images: Tensor | np.ndarray, path: str | Path, *, nrow: int | None = None, pdf: bool = False):
    """A grid of images (N, C, H, W) in [-1, 1] (C = 1 or 3) as one PNG, no margins."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"sample_grid needs (N, C, H, W) images with C in (1, 3), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.ones(c, ncol * (h + 1) + 1, nrow * (w + 1) + 1)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = (
            x[i].clamp(-1, 1) + 1
        ) / 2
    fig = plt.figure(figsize=(grid.shape[2] / 12, grid.shape[1] / 12))
    ax = fig.add_axes((0, 0, 1, 1))
    img = (grid[0] if c == 1 else grid.permute(1, 2, 0)).numpy()
    ax.imshow(img, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    ax.axis("off")
    return save_figure(fig, path, pdf)


def scatter_2d(
    samples: Tensor | np.ndarray, path: str | Path, *, means=None, title: str = "samples", pdf: bool = False
):
    """2-D samples as a scatter plot, with the mixture's mode centres when given."""
    x = np.asarray(samples, dtype=float).reshape(len(samples), -1)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, color=COLORS[0], label="samples")
    if means is not None:
        m = np.asarray(means, dtype=float)
        ax.scatter(m[:, 0], m[:, 1], marker="x", color=COLORS[1], label="mode centres")
    ax.set_aspect("equal")
    _style(ax, title, "x₁", "x₂")
    ax.legend(fontsize=8)
    return save_figure(fig, path, pdf)
