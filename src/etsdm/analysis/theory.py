"""Schedule theory at a glance: Appendix C.1 (dα/dt at 0), Theorem 3.1 (dσ/dt blows up near 0),
Modified-NS (Appendix D.3.2, Fig. A8) and remap (Appendix D.3.3, Fig. A9).

Conventions: α is the paper's α_t = sqrt(ᾱ_t); SNR = α²/σ². Continuous quantities are in the
normalised time τ ∈ [0, 1] of Eq. (A1)-(A9); discrete curves are over timesteps t = 0..T-1
(t = 0 the first noisy step, DDPM's t = 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..conditioning import Remap
from ..schedules import SCHEDULE_NAMES, make_schedule

MODIFIABLE: tuple[str, ...] = ("linear", "quadratic", "cosine")
NEAR_ZERO: tuple[float, ...] = (1e-4, 1e-3, 1e-2)


def closed_form_dalpha_dt0(name: str, modified: bool, beta_min: float = 0.1, s: float = 0.008) -> float | None:
    """dα/dτ at τ = 0 by Appendix C.1: −β̄_min/2 (Eq. A2), Eq. (A9) for cosine; 0 for Modified-NS;
    None where the paper gives no closed form."""
    if modified:
        return 0.0
    if name in ("linear", "quadratic"):
        return -0.5 * beta_min  # Eq. (A2): dα/dτ|₀ = −½ β(0)
    if name == "cosine":
        return -math.pi / (2 * (1 + s)) * math.tan(s / (1 + s) * math.pi / 2)  # Eq. (A9)
    return None


def _variants(names: Sequence[str]) -> list[tuple[str, bool]]:
    out = []
    for name in names:
        out.append((name, False))
        if name in MODIFIABLE:
            out.append((name, True))
    return out


def schedule_table(
    names: Sequence[str] = SCHEDULE_NAMES, *, T: int = 1000, near: Sequence[float] = NEAR_ZERO
) -> list[dict]:
    """One row per schedule and Modified-NS variant: dα/dτ at 0 (computed and closed form),
    σ_τ and dσ_τ/dτ at the ``near``-zero τ (continuous time), and the discrete first step
    (σ at t = 0, the per-step slope T·σ_0 in τ units), SNR at both ends."""
    rows = []
    for name, modified in _variants(names):
        cont = make_schedule(name, T=T, continuous=True, modified=modified)
        disc = make_schedule(name, T=T, continuous=False, modified=modified)
        tau = torch.tensor(list(near), dtype=torch.float64)
        sigma0 = float(disc.sigma(0.0))
        rows.append(
            {
                "schedule": name,
                "modified": modified,
                "dalpha_dt_0": float(cont.dalpha_dt(0.0)),
                "dalpha_dt_0_closed_form": closed_form_dalpha_dt0(name, modified),
                "tau": tau.tolist(),
                "sigma": cont.sigma(tau).tolist(),
                "dsigma_dt": cont.dsigma_dt(tau).tolist(),
                "discrete_sigma_t0": sigma0,
                "discrete_dsigma_dtau_t0": sigma0 * T,  # (σ_0 − σ_{-1}) / (1/T), σ_{-1} = 0
                "discrete_snr_first": float(disc.snr(0.0)),
                "discrete_snr_last": float(disc.snr(float(T - 1))),
            }
        )
    return rows


def snr_curves(
    names: Sequence[str] = SCHEDULE_NAMES, *, T: int = 1000, modified: bool = False
) -> dict[str, tuple[Tensor, Tensor]]:
    """SNR(t) = α²/σ² at the discrete timesteps t = 0..T-1, per schedule."""
    t = torch.arange(T, dtype=torch.float64)
    out = {}
    for name in names:
        if modified and name not in MODIFIABLE:
            continue
        out[name] = (t, make_schedule(name, T=T, modified=modified).snr(t))
    return out


def snr_ratio_modified(names: Sequence[str] = MODIFIABLE, *, T: int = 1000) -> dict[str, tuple[Tensor, Tensor]]:
    """Fig. A8: SNR of Modified-NS / SNR of the original schedule, at t = 0..T-1."""
    t = torch.arange(T, dtype=torch.float64)
    out = {}
    for name in names:
        if name not in MODIFIABLE:
            raise ValueError(f"Modified-NS exists for {', '.join(MODIFIABLE)}; not {name!r}")
        ratio = make_schedule(name, T=T, modified=True).snr(t) / make_schedule(name, T=T).snr(t)
        out[name] = (t, ratio)
    return out


def remap_snr(
    name: str = "linear", *, T: int = 1000, kind: str = "inverse", big: float | None = None
) -> dict[str, Any]:
    """Fig. A9: the SNR at the T times visited when t is uniform vs when the remapped condition
    λ = f(t) is uniform (f(t) = 1/t or f⁻¹ = sigmoid; Appendix D.3.3), both sorted by time.

    λ is spread evenly over the λ the timesteps take (``Remap.span``; K = ``big``, default
    ``default_remap_k``), and mapped back to the nearest timestep.
    """
    sched = make_schedule(name, T=T)
    remap = Remap(kind, T=T, K=big)
    lo, hi = remap.span()
    t_uniform = torch.arange(T, dtype=torch.float64)
    lam = torch.linspace(lo, hi, T, dtype=torch.float64)
    t_lambda = remap.inverse(lam).round().clamp(0, T - 1).sort().values
    return {
        "schedule": name,
        "remap": kind,
        "lambda_range": [lo, hi],
        "index": list(range(T)),
        "t_uniform_t": t_uniform.tolist(),
        "snr_uniform_t": sched.snr(t_uniform).tolist(),
        "t_uniform_lambda": t_lambda.tolist(),
        "snr_uniform_lambda": sched.snr(t_lambda).tolist(),
    }
