"""Condition maps: physical time t  ->  the timestep condition the network sees.

The :class:`~etsdm.denoiser.Denoiser` applies one of these maps, and it is the only place that
does, so training and every sampler give the network the same condition for the same t.

* :class:`Identity` — the baseline: the network sees t.
* :class:`TimestepSharing` — E-TSDM, f_T of Eq. (9) / Algorithms A1-A2: [0, t̃) is split into n
  sub-intervals and every t in a sub-interval is mapped to its left endpoint; t >= t̃ is
  unchanged. Discrete default t̃ = T/10 (100 of T = 1000), n = 5 (0..19 -> 0, 20..39 -> 20, ...,
  80..99 -> 80); continuous default t̃ = 0.1 of [0, 1] (:func:`default_t_tilde`). In discrete
  time the boundaries are the integers t_i = round(i·t̃/n) (halves round up), so n need not
  divide t̃ (Fig. 5a keeps t̃/n ≈ 20 for t̃ = 150, 250); when n | t̃ they are exactly i·t̃/n.
* :class:`Remap` — Appendix D.3.3: λ = f(t) with f(t) = 1/t or f⁻¹(λ) = sigmoid(λ)
  ("inverse-sigmoid", f = logit), clamped so that λ stays finite (see the class). It acts on
  normalised time τ in [0, 1]: τ = (t + 1)/T for discrete timesteps (DDPM's t/T), τ = t for
  continuous time. :func:`remap_lambda_plan` is its λ-uniform inference grid (Table A5, "λ ~ U_λ"
  at inference).

Beyond VP (EDM, flow matching; issue 9) the map still takes and returns *physical* time; the
Denoiser then feeds the network ``schedule.net_time`` of it (c_noise = ¼ ln σ for EDM, t for flow).
The paper does not say how it shared time for EDM (Appendix D.4), so :func:`sharing_boundaries`
offers the natural choices of where the n sub-intervals lie (``space``):

* ``"t"`` — uniform in the process's own time (VP: t, the paper's choice; EDM: σ; flow: t);
* ``"log-snr"`` — uniform in λ = log(α/σ) (EDM: uniform in ln σ, i.e. in c_noise, the network's
  own input);
* ``"vp"`` — the paper's own boundaries round(i·t̃/n) on the discrete linear VP schedule (T = 1000)
  carried over by equal log-SNR (t̃ then counts VP timesteps, default 100).

Default (:func:`default_sharing`): cells uniform in the *network's own time input* — ``"t"`` for VP
and flow, ``"log-snr"`` for EDM (c_noise is linear in ln σ) — which is what the paper does for VP;
and, for EDM and flow, a band ending at the paper's noise level: the log-SNR of linear VP at
t = 100 (σ/α = 0.342: EDM σ̃ = 0.342, flow t̃ = 0.255). VP keeps t̃ = T/10.

All maps are vectorised (tensor in, tensor out, same shape) and also accept a Python number.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .schedules import Schedule

RemapKind = Literal["inverse", "inverse-sigmoid"]
SharingSpace = Literal["t", "log-snr", "vp"]
SHARING_SPACES: tuple[str, ...] = ("t", "log-snr", "vp")
PAPER_T_TILDE, PAPER_T = 100, 1000  # the paper's band: t̃ = 100 of T = 1000, linear VP (Sec. 5.3.2)
CONTINUOUS_T = 1000  # continuous time borrows the discrete defaults of T = 1000 (t_min = 1e-3 = 1/T)


def default_t_tilde(T: int | None) -> float:
    """E-TSDM's default t̃, a tenth of the time range: round(T/10) timesteps (at least 1), or
    0.1 in continuous time (T = None). The paper's t̃ = 100 of T = 1000 (Sec. 5.3.2)."""
    if T is None:
        return 0.1
    return max(1, (T + 5) // 10)  # T/10, halves rounded up


class ConditionMap(Protocol):
    """Maps physical time to the network's condition."""

    def __call__(self, t: Tensor) -> Tensor: ...

    def config(self) -> dict[str, Any]: ...

    # Optional: ``state_key() -> tuple``, everything the map's values depend on besides t (cheap,
    # compared with ==), defined by the same class as ``__call__`` (a subclass overriding only
    # ``__call__`` is not trusted with its parent's key). It lets a Denoiser reuse the condition
    # tensors of its last sampler call without calling the map again (Denoiser.conditions).


class Identity:
    """The baseline map c = t."""

    def __call__(self, t: Tensor) -> Tensor:
        return t

    def config(self) -> dict[str, Any]:
        return {"kind": "identity"}

    def state_key(self) -> tuple:
        return ("identity",)

    def __repr__(self) -> str:
        return "Identity()"


class TimestepSharing:
    """E-TSDM's f_T (Eq. 9): share the left endpoint of each of n sub-intervals of [0, t̃).

    Args:
        t_tilde: length t̃ of the shared interval [0, t̃), in the schedule's time unit (a whole
            number of timesteps in discrete time); ``None``: :func:`default_t_tilde`.
        n: number of sub-intervals.
        T: number of discrete timesteps (time range 0..T-1), or ``None`` for continuous time
            t in [0, 1].

    Boundaries t_0 < ... < t_n: i·t̃/n in continuous time; in discrete time the integers
    round(i·t̃/n) (halves up), so every sub-interval holds round(t̃/n) or so whole timesteps and
    n need not divide t̃ (e.g. t̃ = 150, n = 7: 0, 21, 43, 64, 86, 107, 129, 150).

    Raises:
        ValueError: n < 1, t̃ outside (0, T] (or (0, 1]), or, in discrete time, t̃ not a whole
            number of timesteps (continuous time is asked for with ``T=None``) or n > t̃ (a
            sub-interval would hold no timestep).
    """

    def __init__(self, t_tilde: float | None = None, n: int = 5, *, T: int | None = 1000,
                 boundaries: list[float] | None = None, space: str | None = None):
        # boundaries: explicit physical t_0 < ... < t_n (then t_tilde is only recorded, in ``space``'s unit)
        self.space = space
        if boundaries is not None:  # explicit physical boundaries t_0 < ... < t_n (EDM, flow: sharing_boundaries)
            self._set_boundaries([float(b) for b in boundaries])
            self.configured_t_tilde = t_tilde if t_tilde is not None else self.t_tilde  # in the space's unit
            return
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"TimestepSharing: n must be an integer >= 1, got {n!r}")
        t_tilde = default_t_tilde(T) if t_tilde is None else t_tilde
        upper = 1.0 if T is None else float(T)
        if not 0 < t_tilde <= upper:
            unit = "continuous time [0, 1] (T=None)" if T is None else f"timesteps 0..{T - 1}"
            raise ValueError(f"TimestepSharing: t_tilde must be in (0, {upper:g}] for {unit}, got {t_tilde!r}")
        self.n, self.T = n, T
        if T is None:
            self.t_tilde: float = t_tilde
            self.boundaries: list[float] = [i * (t_tilde / n) for i in range(n + 1)]  # T = {t_0, ..., t_n}
        else:
            self.t_tilde = self._whole_timesteps(t_tilde, n, T)
            k = int(self.t_tilde)
            self.boundaries = [(2 * i * k + n) // (2 * n) for i in range(n + 1)]  # t_i = ⌊i·t̃/n + 1/2⌋
        self.delta = self.t_tilde / n  # nominal Δt = t̃ / n (exact cell length when n | t̃)
        self._tables()

    def _tables(self) -> None:
        """The boundaries as float64 tensors, made once (a map call then costs ~9 µs, not ~16)."""
        with torch.inference_mode(False):  # a normal tensor (with a version counter) in any mode
            self._all = torch.tensor(self.boundaries, dtype=torch.float64, device="cpu")  # not a meta-device context's
        self._left = self._all[:-1]

    def _set_boundaries(self, b: list[float]) -> None:
        if len(b) < 2 or any(not math.isfinite(v) for v in b) or any(v >= w for v, w in zip(b, b[1:], strict=False)):
            raise ValueError(f"TimestepSharing: boundaries must be >= 2 finite, strictly increasing times, got {b}")
        self.n, self.T, self.boundaries = len(b) - 1, None, b
        self.t_tilde = b[-1]
        self.delta = (b[-1] - b[0]) / self.n
        self._tables()

    @staticmethod
    def _whole_timesteps(t_tilde: float, n: int, T: int) -> int:
        if float(t_tilde) != int(t_tilde):
            raise ValueError(
                f"TimestepSharing: t_tilde={t_tilde!r} is not a whole number of timesteps (discrete time, T={T}); "
                f"for continuous time t in [0, 1] pass T=None, e.g. TimestepSharing(0.1, 5, T=None)"
            )
        if n > int(t_tilde):
            raise ValueError(
                f"TimestepSharing: n={n} sub-intervals do not fit in t_tilde={int(t_tilde)} timesteps "
                f"(each needs at least one); need n <= t_tilde"
            )
        return int(t_tilde)

    def _index(self, t64: Tensor) -> Tensor:
        """i with t_i <= t < t_{i+1}: the count of left endpoints t_0..t_{n-1} that are <= t, minus one."""
        left = self._left.to(t64.device)
        return (torch.searchsorted(left, t64.contiguous(), right=True) - 1).clamp(0, self.n - 1)

    def __call__(self, t: Tensor | float) -> Tensor:
        # f_T(t) = max{t_{i-1} in T : t_{i-1} <= t} for t < t̃, t otherwise   (Eq. 9, Alg. A1 l.5-9).
        # Compared in float64 with the stored boundary values themselves (a Python number becomes a
        # float64 tensor), so a t sitting on a boundary is never placed one cell too low; returned
        # in t's dtype.
        t = t if isinstance(t, Tensor) else torch.as_tensor(t, dtype=torch.float64)
        t64 = t.to(torch.float64)
        left = self._all.to(t.device)[self._index(t64)]
        return torch.where(t64 < self.t_tilde, left, t64).to(t.dtype)

    def state_key(self) -> tuple:
        """What __call__ reads besides t: t̃, n and the boundary table (by identity and version)."""
        return "etsdm", self.t_tilde, self.n, id(self._all), self._all._version

    def cell_width(self, t: float) -> float:
        """Length t_{i+1} - t_i of the sub-interval holding t < t̃ (Δt itself in continuous time)."""
        if self.T is None and self.space is None:
            return self.delta
        i = int(self._index(torch.tensor([float(t)], dtype=torch.float64))[0])
        return float(self.boundaries[i + 1] - self.boundaries[i])

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"kind": "etsdm", "t_tilde": self.t_tilde, "n": self.n}
        if self.space is not None:
            cfg.update(space=self.space, t_tilde=self.configured_t_tilde)
        return cfg

    def __repr__(self) -> str:
        if self.space is not None:
            return f"TimestepSharing(space={self.space!r}, boundaries={[round(b, 6) for b in self.boundaries]})"
        return f"TimestepSharing(t_tilde={self.t_tilde}, n={self.n}, T={self.T})"


def paper_band_lambda() -> float:
    """λ = log(α/σ) where the paper's band ends: linear VP (discrete, T = 1000) at t = t̃ = 100."""
    from .schedules import make_schedule

    return float(make_schedule("linear", T=PAPER_T).lambda_(float(PAPER_T_TILDE)))


def default_sharing(schedule: Schedule) -> tuple[SharingSpace, float]:
    """The default (space, t̃) of E-TSDM on a process (module docstring): VP ("t", T/10 or 0.1);
    flow ("t", t at the paper's band end); EDM ("log-snr", σ at the paper's band end)."""
    if schedule.kind == "vp":
        return "t", default_t_tilde(None if schedule.continuous else schedule.T)
    t_end = float(schedule.t_from_lambda(paper_band_lambda()))
    return ("log-snr" if schedule.kind == "edm" else "t"), t_end


def sharing_boundaries(schedule: Schedule, t_tilde: float, n: int, space: SharingSpace) -> list[float]:
    """The n + 1 physical boundaries of E-TSDM's sub-intervals on ``schedule`` (module docstring).

    The band runs from the data end to t̃: from t_data (VP, flow; σ = 0) or from σ_min (EDM, whose
    c_noise = ¼ ln σ is -∞ at σ = 0) for ``"t"``; from ``schedule.t_min`` for ``"log-snr"`` (λ is
    +∞ at the data); ``"vp"`` maps the paper's integer boundaries round(i·t̃/n) of linear VP."""
    if space not in SHARING_SPACES:
        raise ValueError(f"E-TSDM space must be one of {', '.join(SHARING_SPACES)}, got {space!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"E-TSDM: n must be an integer >= 1, got {n!r}")
    if space == "vp":
        from .schedules import make_schedule

        vp = TimestepSharing(t_tilde, n, T=PAPER_T)
        lam = make_schedule("linear", T=PAPER_T).lambda_(torch.tensor(vp.boundaries, dtype=torch.float64))
        return schedule.t_from_lambda(lam).tolist()
    lo = schedule.t_min if (space == "log-snr" or schedule.kind == "edm") else schedule.t_data
    if not lo < t_tilde <= schedule.t_max:
        raise ValueError(f"E-TSDM: t_tilde must be in ({lo:g}, {schedule.t_max:g}] for schedule {schedule.name!r} "
                         f"(space {space!r}), got {t_tilde!r}")
    if space == "t":
        return [lo + i * (t_tilde - lo) / n for i in range(n + 1)]
    lam = torch.linspace(float(schedule.lambda_(lo)), float(schedule.lambda_(t_tilde)), n + 1, dtype=torch.float64)
    b = schedule.t_from_lambda(lam).tolist()
    b[0], b[-1] = lo, float(t_tilde)  # exact ends
    return b


def process_sharing(schedule: Schedule, t_tilde: float | None = None, n: int = 5,
                    space: SharingSpace | None = None) -> TimestepSharing:
    """E-TSDM on any process: VP with space "t" is exactly :class:`TimestepSharing` (the paper);
    otherwise sub-intervals from :func:`sharing_boundaries` (defaults: :func:`default_sharing`)."""
    default_space, default_tilde = default_sharing(schedule)
    space = default_space if space is None else space
    if schedule.kind == "vp" and space == "t":
        return TimestepSharing(t_tilde, n, T=None if schedule.continuous else schedule.T)
    if t_tilde is None:
        t_tilde = PAPER_T_TILDE if space == "vp" else default_tilde
    return TimestepSharing(t_tilde, n, boundaries=sharing_boundaries(schedule, t_tilde, n, space), space=space)


def default_remap_k(kind: RemapKind, T: int | None) -> float:
    """The default K bounding the remap condition λ (Table A5: "K is a large number to avoid
    infinity"), the largest |λ| the time grid needs, so no two timesteps share a λ:

    * ``inverse``: K = T = f(τ = 1/T), the condition of t = 0 (1000 for T = 1000);
    * ``inverse-sigmoid``: K = logit(1 - 1/(2T)) = log(2T - 1) (7.6 for T = 1000): λ = ±K at
      half a timestep beyond the grid's ends, so τ = 1 (t = T-1), where logit is infinite, gets
      λ = K and U[-K, K] is symmetric about the grid.

    Continuous time uses T = 1000 (its t_min = 1e-3 = 1/T).
    """
    T = CONTINUOUS_T if T is None else T
    return float(T) if kind == "inverse" else math.log(2 * T - 1)


class Remap:
    """The remap alternative (Appendix D.3.3): the network sees λ = f(τ), clamped to be finite.

    ``kind="inverse"``: f(τ) = min(1/τ, K), λ in [1, K]; f⁻¹(λ) = 1/λ (τ <= 1).
    ``kind="inverse-sigmoid"``: f(τ) = clamp(logit(τ), -K, K), λ in [-K, K]; f⁻¹(λ) = sigmoid(λ).
    τ is normalised time in [0, 1] (module doc); K is :func:`default_remap_k` unless given. The
    clamp is what makes τ = 0 (both maps) and τ = 1 (inverse-sigmoid) finite; with the default K
    it touches no timestep except t = T-1 of inverse-sigmoid (λ = K).

    Raises:
        ValueError: unknown kind, K <= 0, or K <= 1 for ``inverse`` (f >= 1 everywhere).
    """

    def __init__(self, kind: RemapKind = "inverse", *, T: int | None = 1000, K: float | None = None):
        if kind not in ("inverse", "inverse-sigmoid"):
            raise ValueError(f"Remap: kind must be 'inverse' or 'inverse-sigmoid', got {kind!r}")
        self.kind: RemapKind = kind
        self.T = T
        self.K = default_remap_k(kind, T) if K is None else float(K)
        if not math.isfinite(self.K) or self.K <= (1.0 if kind == "inverse" else 0.0):
            low = "1 (f(τ) = 1/τ >= 1)" if kind == "inverse" else "0"
            raise ValueError(f"Remap: K (remap_k) must be a finite number > {low}, got {K!r}")

    def state_key(self) -> tuple:
        return "remap", self.kind, self.T, self.K

    def normalised(self, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return (t.to(torch.float64) + 1.0) / self.T if self.T is not None else t.to(torch.float64)

    def physical(self, tau: Tensor) -> Tensor:
        return tau * self.T - 1.0 if self.T is not None else tau

    def __call__(self, t: Tensor | float) -> Tensor:
        tau = self.normalised(t).clamp(0.0, 1.0)
        if self.kind == "inverse":
            lam = 1.0 / tau.clamp(min=1.0 / self.K)  # λ = min(1/τ, K): τ = 0 -> K
        else:
            lam = torch.logit(tau).clamp(-self.K, self.K)  # logit(0) = -inf -> -K, logit(1) = inf -> K
        dtype = t.dtype if isinstance(t, Tensor) and t.is_floating_point() else torch.float64
        return lam.to(dtype)

    def inverse(self, lam: Tensor | float) -> Tensor:
        """Physical time t (real-valued) whose condition is λ; λ outside the range is clamped
        (inverse: λ < 1 gives τ = 1, the end of time)."""
        lam = torch.as_tensor(lam, dtype=torch.float64).to(torch.float64)
        if self.kind == "inverse":
            tau = (1.0 / lam.clamp(0.0, self.K)).clamp(max=1.0)  # 1/0 = inf -> τ = 1
        else:
            tau = torch.sigmoid(lam.clamp(-self.K, self.K))
        return self.physical(tau)

    def lambda_range(self) -> tuple[float, float]:
        """U_λ of Table A5, the range of λ for uniform-λ training: [0, K] for 1/t, [-K, K] for
        inverse-sigmoid."""
        return (0.0 if self.kind == "inverse" else -self.K), self.K

    def span(self) -> tuple[float, float]:
        """(min, max) of λ over the time range (discrete: t = 0..T-1; continuous: τ in [1/K, 1]
        for 1/t, everything for inverse-sigmoid): where an inference grid uniform in λ runs."""
        if self.kind == "inverse":
            return 1.0, self.K if self.T is None else float(self(torch.tensor(0.0)))
        lo = -self.K if self.T is None else float(self(torch.tensor(0.0)))
        return lo, self.K

    def timestep(self, lam: Tensor) -> Tensor:
        """Discrete time: the timestep 0..T-1 whose λ is nearest to each λ (float64)."""
        if self.T is None:
            raise ValueError("Remap.timestep is for discrete time (T is None here); use Remap.inverse")
        grid = self(torch.arange(self.T, dtype=torch.float64))  # λ_t, monotone
        flip = self.kind == "inverse"  # 1/τ decreases with t
        asc = grid.flip(0) if flip else grid
        lam = torch.as_tensor(lam, dtype=torch.float64).to(torch.float64)
        hi = torch.searchsorted(asc, lam.contiguous()).clamp(1, self.T - 1)
        nearer_lo = (lam - asc[hi - 1]) <= (asc[hi] - lam)
        i = torch.where(nearer_lo, hi - 1, hi)
        return (self.T - 1 - i if flip else i).to(torch.float64)

    def config(self) -> dict[str, Any]:
        return {"kind": "remap", "remap": self.kind, "remap_k": self.K}

    def __repr__(self) -> str:
        return f"Remap({self.kind!r}, T={self.T}, K={self.K:g})"


def remap_lambda_times(remap: Remap, schedule: Schedule, steps: int) -> list[float]:
    """``steps + 1`` times from t_max to t_min uniform in λ = f(t) (Table A5, "λ ~ U_λ" at
    inference): λ_j evenly from f(t_max) to f(t_min), t_j = f⁻¹(λ_j); in discrete time each λ_j
    goes to its nearest timestep and repeats are dropped, so the grid may have fewer points."""
    if steps < 1:
        raise ValueError(f"remap_lambda_times needs steps >= 1, got {steps}")
    ends = torch.tensor([schedule.t_max, schedule.t_min], dtype=torch.float64)
    lam_ends = remap(ends)
    lam = torch.linspace(float(lam_ends[0]), float(lam_ends[1]), steps + 1, dtype=torch.float64)
    t = remap.timestep(lam) if remap.T is not None else remap.inverse(lam)
    t[0], t[-1] = ends[0], ends[1]  # exact end points
    times: list[float] = []
    for v in t.tolist():
        if not times or v < times[-1]:
            times.append(v)
    return times


ONE_STEP_SAMPLERS = ("ddpm", "ddim", "dpm-solver-1", "dpm-solver++2m")


def remap_lambda_plan(
    remap: ConditionMap, schedule: Schedule, sampler: str, nfe: int
) -> tuple[list[float], list[int]]:
    """The ``(timesteps, orders)`` for :func:`etsdm.samplers.sample` on the λ-uniform grid:
    nfe - 1 steps from t_max to t_min (:func:`remap_lambda_times`) and a last step into the data,
    as the samplers' own plans with ``denoise_to_zero``. Discrete time may use fewer evaluations.

    Raises:
        ValueError: ``remap`` not a :class:`Remap`, a singlestep DPM-Solver-2/3 (its intermediate
            points need their own grid), or nfe < 2.
    """
    if not isinstance(remap, Remap):
        raise ValueError(f"the λ-uniform grid needs a Remap condition map, got {remap!r}")
    if sampler not in ONE_STEP_SAMPLERS:
        raise ValueError(f"the remap λ-uniform grid runs with {', '.join(ONE_STEP_SAMPLERS)}; not {sampler!r}")
    if nfe < 2:
        raise ValueError(f"the remap λ-uniform grid needs nfe >= 2, got {nfe}")
    times = remap_lambda_times(remap, schedule, nfe - 1) + [schedule.t_data]
    steps = len(times) - 1
    orders = [1] * steps if sampler != "dpm-solver++2m" else [1] + [2] * (steps - 2) + [1]
    return times, orders


def make_condition_map(kind: str = "identity", *, T: int | None = 1000, schedule: Schedule | None = None,
                       **options: Any) -> ConditionMap:
    """Build a condition map from its config: kind in identity | etsdm | remap.

    Options: ``t_tilde`` (None: :func:`default_t_tilde`), ``n`` (etsdm), ``space`` (etsdm on a given
    ``schedule``: :func:`process_sharing`; needed for EDM / flow); ``remap``, ``remap_k``
    (None: :func:`default_remap_k`) (remap).
    """
    if kind == "identity":
        return Identity()
    if kind == "etsdm" and (options.get("space") is not None or (schedule is not None and schedule.kind != "vp")):
        if schedule is None:
            raise ValueError("E-TSDM with a 'space' needs the schedule: make_condition_map(..., schedule=...)")
        return process_sharing(schedule, options.get("t_tilde"), options.get("n", 5), options.get("space"))
    if kind == "etsdm":
        return TimestepSharing(options.get("t_tilde"), options.get("n", 5), T=T)
    if kind == "remap":
        return Remap(options.get("remap", "inverse"), T=T, K=options.get("remap_k"))
    raise ValueError(f"unknown condition map {kind!r}; allowed: identity, etsdm, remap")

