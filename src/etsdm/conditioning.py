"""Condition maps: physical time t  ->  the timestep condition the network sees.

The :class:`~etsdm.denoiser.Denoiser` applies one of these maps, and it is the only place that
does, so training and every sampler give the network the same condition for the same t.

* :class:`Identity` — the baseline: the network sees t.
* :class:`TimestepSharing` — E-TSDM, f_T of Eq. (9) / Algorithms A1-A2: [0, t̃) is split into n
  equal sub-intervals and every t in a sub-interval is mapped to its left endpoint; t >= t̃ is
  unchanged. Discrete default t̃ = 100, n = 5 (0..19 -> 0, 20..39 -> 20, ..., 80..99 -> 80);
  continuous default t̃ = 0.1 of [0, 1].
* :class:`Remap` — Appendix D.3.3: λ = f(t) with f(t) = 1/t or f⁻¹(λ) = sigmoid(λ)
  ("inverse-sigmoid", f = logit). It acts on normalised time τ in (0, 1]: τ = (t + 1)/T for
  discrete timesteps (DDPM's t/T), τ = t for continuous time.

All maps are vectorised (tensor in, tensor out, same shape) and also accept a Python number.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

RemapKind = Literal["inverse", "inverse-sigmoid"]


class ConditionMap(Protocol):
    """Maps physical time to the network's condition."""

    def __call__(self, t: Tensor) -> Tensor: ...

    def config(self) -> dict[str, Any]: ...


class Identity:
    """The baseline map c = t."""

    def __call__(self, t: Tensor) -> Tensor:
        return t

    def config(self) -> dict[str, Any]:
        return {"kind": "identity"}

    def __repr__(self) -> str:
        return "Identity()"


class TimestepSharing:
    """E-TSDM's f_T (Eq. 9): share the left endpoint of each of n sub-intervals of [0, t̃).

    Args:
        t_tilde: length t̃ of the shared interval [0, t̃), in the schedule's time unit.
        n: number of equal sub-intervals.
        T: number of discrete timesteps (time range 0..T-1), or ``None`` for continuous time
            t in [0, 1].

    Raises:
        ValueError: n < 1, t̃ outside (0, T] (or (0, 1]), or, in discrete time, t̃ not a
            multiple of n (sub-intervals must hold whole timesteps).
    """

    def __init__(self, t_tilde: float = 100, n: int = 5, *, T: int | None = 1000):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"TimestepSharing: n must be an integer >= 1, got {n!r}")
        upper = 1.0 if T is None else float(T)
        if not 0 < t_tilde <= upper:
            unit = "continuous time [0, 1]" if T is None else f"timesteps 0..{T - 1}"
            raise ValueError(f"TimestepSharing: t_tilde must be in (0, {upper:g}] for {unit}, got {t_tilde!r}")
        if T is not None:
            if float(t_tilde) != int(t_tilde) or int(t_tilde) % n != 0:
                raise ValueError(
                    f"TimestepSharing: in discrete time t_tilde must be an integer multiple of n "
                    f"(got t_tilde={t_tilde!r}, n={n}); e.g. t_tilde=100, n=5"
                )
            t_tilde = int(t_tilde)
        self.t_tilde = t_tilde
        self.n = n
        self.T = T
        self.delta = t_tilde / n  # Δt = t̃ / n
        self.boundaries = [i * self.delta for i in range(n + 1)]  # T = {t_0, ..., t_n}

    def __call__(self, t: Tensor | float) -> Tensor:
        # f_T(t) = max{t_{i-1} in T : t_{i-1} <= t} for t < t̃, t otherwise   (Eq. 9, Alg. A1 l.5-9).
        # Evaluated in float64 on the value of t (a Python number becomes a float64 tensor) and
        # returned in t's dtype. floor(t / Δt) can land one below the true index when t sits on a
        # boundary t_i = i Δt (e.g. 3 · (0.1/7) / (0.1/7) < 3 in floating point): corrected below.
        t = t if isinstance(t, Tensor) else torch.as_tensor(t, dtype=torch.float64)
        t64 = t.to(torch.float64)
        i = torch.floor(t64 / self.delta).clamp(0, self.n - 1)
        i = i + (((i + 1) * self.delta <= t64) & (i < self.n - 1)).to(i.dtype)
        i = i - ((i * self.delta > t64) & (i > 0)).to(i.dtype)
        return torch.where(t64 < self.t_tilde, i * self.delta, t64).to(t.dtype)

    def config(self) -> dict[str, Any]:
        return {"kind": "etsdm", "t_tilde": self.t_tilde, "n": self.n}

    def __repr__(self) -> str:
        return f"TimestepSharing(t_tilde={self.t_tilde}, n={self.n}, T={self.T})"


class Remap:
    """The remap alternative (Appendix D.3.3): the network sees λ = f(τ).

    ``kind="inverse"``: f(τ) = 1/τ, τ = f⁻¹(λ) = 1/λ. ``kind="inverse-sigmoid"``:
    f(τ) = logit(τ), f⁻¹(λ) = sigmoid(λ). τ is normalised time in (0, 1] (see module doc).
    """

    def __init__(self, kind: RemapKind = "inverse", *, T: int | None = 1000):
        if kind not in ("inverse", "inverse-sigmoid"):
            raise ValueError(f"Remap: kind must be 'inverse' or 'inverse-sigmoid', got {kind!r}")
        self.kind = kind
        self.T = T

    def normalised(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        return (t + 1.0) / self.T if self.T is not None else t

    def physical(self, tau: Tensor) -> Tensor:
        return tau * self.T - 1.0 if self.T is not None else tau

    def __call__(self, t: Tensor) -> Tensor:
        tau = self.normalised(t)
        return 1.0 / tau if self.kind == "inverse" else torch.logit(tau)

    def inverse(self, lam: Tensor) -> Tensor:
        """Physical time t whose condition is λ."""
        lam = torch.as_tensor(lam)
        tau = 1.0 / lam if self.kind == "inverse" else torch.sigmoid(lam)
        return self.physical(tau)

    def lambda_range(self, big: float = 1000.0) -> tuple[float, float]:
        """The [λ_lo, λ_hi] used for uniform-λ sampling (K = ``big`` bounds the infinite end)."""
        tau_min = 1.0 / self.T if self.T is not None else 1e-5
        if self.kind == "inverse":
            return 1.0, min(big, 1.0 / tau_min)
        return max(-big, math.log(tau_min / (1 - tau_min))), big

    def config(self) -> dict[str, Any]:
        return {"kind": "remap", "remap": self.kind}

    def __repr__(self) -> str:
        return f"Remap({self.kind!r}, T={self.T})"


def make_condition_map(kind: str = "identity", *, T: int | None = 1000, **options: Any) -> ConditionMap:
    """Build a condition map from its config: kind in identity | etsdm | remap."""
    if kind == "identity":
        return Identity()
    if kind == "etsdm":
        return TimestepSharing(options.get("t_tilde", 100 if T else 0.1), options.get("n", 5), T=T)
    if kind == "remap":
        return Remap(options.get("remap", "inverse"), T=T)
    raise ValueError(f"unknown condition map {kind!r}; allowed: identity, etsdm, remap")
