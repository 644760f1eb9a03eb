"""Training objectives: Eq. (4) (baseline) and Eq. (9) (E-TSDM) are the same code — the condition
map lives in the :class:`~etsdm.denoiser.Denoiser` — plus the DDPM-r regulariser (Appendix D.3.1).

    L(θ) = E_{t, x0, ε} || net(α_t x0 + σ_t ε, f(t)) - target ||²,

with target ε (ε-prediction), v = α ε - σ x0 (v-prediction) or x0. Losses are per example (the
mean over the example's dimensions); callers reduce. Time sampling:

* discrete: t uniform on {0, ..., T-1} (Alg. A1 line 4, shifted by one);
* continuous: t ~ U(t_eps, 1);
* ``"remap-lambda"``: the condition λ ~ U_λ of a :class:`~etsdm.conditioning.Remap` (Table A5:
  U[0, K] for 1/t, U[-K, K] for inverse-sigmoid) and t = f⁻¹(λ) (Appendix D.3.3); in discrete time
  the timestep whose λ is nearest, in continuous time f⁻¹(λ) clipped to [t_eps, 1].

Training knobs of diffusers' / kohya's training scripts (names as theirs), all acting on the
*physical* t — the condition map is applied to the sampled t inside the Denoiser, so E-TSDM
composes with each of them unchanged:

* timestep density: u in (0, 1) ``"uniform"`` or ``"logit-normal"`` (u = sigmoid(N(logit_mean,
  logit_std²)), SD3 / kohya ``logit_normal``), then ``shift`` s: u <- s·u / (1 + (s - 1)·u) (SD3's
  and kohya's shift, s > 1 favours noisier t), then t = min + u·(max - min) over
  [``min_timestep``, ``max_timestep``) (kohya's names; discrete: floored to an integer timestep);
* ``snr_gamma`` (Min-SNR-γ, Hang et al. 2023; diffusers ``--snr_gamma``, kohya ``--min_snr_gamma``):
  per-example weight min(SNR(t), γ)/SNR(t) for ε-, min(SNR, γ)/(SNR + 1) for v-, min(SNR, γ) for
  x0-prediction, with the SNR of the real t (never of the condition f(t));
* ``noise_offset`` (diffusers / kohya): ε <- ε + offset·n, n ~ N(0, 1) per example and channel;
* ``input_perturbation`` (diffusers; kohya ``ip_noise_gamma``): x_t = α x0 + σ (ε + γ_ip·n) while the
  target keeps ε (Ning et al. 2023).

Interactions with E-TSDM (:func:`knob_warnings` checks the first two): a ``min_timestep`` >= t̃
leaves no training t in [0, t̃), where f_T acts, yet sampling still feeds those shared conditions —
never trained; a density with (almost) no mass below t̃ does the same. Min-SNR-γ with
ε-prediction weights small t by γ/SNR(t) (~5e-4 at t = 0 of the linear schedule, γ = 5): it
down-weights exactly the band E-TSDM acts on, so that band trains slowly (``etsdm schedules
--config`` draws the weight).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .conditioning import ConditionMap, Remap, TimestepSharing
from .denoiser import Denoiser
from .schedules import Schedule

TimeSampling = Literal["uniform", "remap-lambda", "logit-normal"]
TIME_SAMPLINGS: tuple[str, ...] = ("uniform", "remap-lambda", "logit-normal")
NOOP_MASS = 1e-3  # knob_warnings: below this probability of t < t̃, E-TSDM's band is (almost) never trained


@dataclass(frozen=True)
class TimestepDensity:
    """Where training times come from (see the module doc): u ~ uniform or logit-normal on (0, 1),
    shifted, spread over [min_timestep, max_timestep) (None: the whole range)."""

    sampling: TimeSampling = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    min_timestep: float | None = None
    max_timestep: float | None = None

    def __post_init__(self) -> None:
        if self.sampling not in TIME_SAMPLINGS:
            raise ValueError(f"unknown time sampling {self.sampling!r}; allowed: {', '.join(TIME_SAMPLINGS)}")
        if not self.logit_std > 0 or not self.shift > 0:
            raise ValueError(f"logit_std and shift must be > 0, got {self.logit_std}, {self.shift}")
        if self.sampling == "remap-lambda" and not self.is_default_range():
            raise ValueError("time sampling 'remap-lambda' takes no shift / min_timestep / max_timestep")

    def is_default_range(self) -> bool:
        return self.shift == 1.0 and self.min_timestep is None and self.max_timestep is None

    def bounds(self, schedule: Schedule, t_eps: float = 1e-5) -> tuple[float, float]:
        """[lo, hi): discrete 0..T (hi exclusive), continuous [t_eps, 1]."""
        lo_d, hi_d = (t_eps, 1.0) if schedule.continuous else (0.0, float(schedule.T))
        lo = lo_d if self.min_timestep is None else max(lo_d, float(self.min_timestep))
        hi = hi_d if self.max_timestep is None else min(hi_d, float(self.max_timestep))
        if not lo < hi:
            raise ValueError(f"min_timestep ({self.min_timestep}) must be < max_timestep ({self.max_timestep}) "
                             f"within the schedule's range [{lo_d:g}, {hi_d:g}]")
        return lo, hi

    def _shift(self, u: Tensor) -> Tensor:
        s = self.shift
        return u if s == 1.0 else s * u / (1.0 + (s - 1.0) * u)  # SD3 / kohya shift

    def sample_u(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n values of u in (0, 1), float64, after the shift."""
        if self.sampling == "logit-normal":
            z = torch.randn(n, generator=generator, dtype=torch.float64)
            return self._shift(torch.sigmoid(self.logit_mean + self.logit_std * z))
        return self._shift(torch.rand(n, generator=generator, dtype=torch.float64))

    def cdf_u(self, x: Tensor) -> Tensor:
        """P(u <= x) after the shift (inverse shift u = x / (s - (s - 1) x))."""
        x = torch.as_tensor(x, dtype=torch.float64).clamp(0.0, 1.0)
        s = self.shift
        x = x if s == 1.0 else x / (s - (s - 1.0) * x)
        if self.sampling == "logit-normal":
            z = (torch.logit(x) - self.logit_mean) / self.logit_std
            return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))  # Φ(z); logit(0) = -inf -> 0, logit(1) = inf -> 1
        return x

    def prob_below(self, schedule: Schedule, t: float, t_eps: float = 1e-5) -> float:
        """P(training time < t) (the mass of [0, t) of the density)."""
        lo, hi = self.bounds(schedule, t_eps)
        if schedule.continuous:
            return float(self.cdf_u(torch.tensor((t - lo) / (hi - lo), dtype=torch.float64)))
        lo_i, hi_i = int(math.ceil(lo)), int(math.ceil(hi))  # integer timesteps lo_i .. hi_i - 1
        return float(self.cdf_u(torch.tensor((math.ceil(t) - lo_i) / (hi_i - lo_i), dtype=torch.float64)))

    def pmf(self, schedule: Schedule, t_eps: float = 1e-5) -> tuple[Tensor, Tensor]:
        """(t, density): discrete, P(t = k) for k = 0..T-1; continuous, the pdf on 1001 log-spaced t."""
        lo, hi = self.bounds(schedule, t_eps)
        if schedule.continuous:
            t = torch.logspace(math.log10(lo), math.log10(hi), 1001, dtype=torch.float64)  # fine near t = 0
            cdf = self.cdf_u((t - lo) / (hi - lo))
            return t, torch.gradient(cdf, spacing=(t,))[0]
        k = torch.arange(schedule.T, dtype=torch.float64)
        lo_i, hi_i = int(math.ceil(lo)), int(math.ceil(hi))
        edges = ((k - lo_i) / (hi_i - lo_i), (k + 1 - lo_i) / (hi_i - lo_i))
        return k, self.cdf_u(edges[1]) - self.cdf_u(edges[0])


def sample_timesteps(
    denoiser: Denoiser,
    n: int,
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    sampling: TimeSampling = "uniform",
    t_eps: float = 1e-5,
    density: TimestepDensity | None = None,
) -> Tensor:
    """n training times (float64) for the Denoiser's schedule (integers in discrete time).

    ``density`` (logit-normal, shift, min/max timestep) replaces ``sampling`` when given; the
    default (uniform over the whole range) draws exactly as before (``torch.randint``)."""
    sched = denoiser.schedule
    density = density if density is not None else TimestepDensity(sampling)
    sampling = density.sampling
    if sampling != "remap-lambda" and not (sampling == "uniform" and density.is_default_range()):
        lo, hi = density.bounds(sched, t_eps)
        t = lo + (hi - lo) * density.sample_u(n, generator)
        if not sched.continuous:  # integer timesteps lo .. hi-1
            t = t.floor().clamp(math.ceil(lo), math.ceil(hi) - 1)
        return t.to(device)
    if sampling == "remap-lambda":
        cond = denoiser.condition
        if not isinstance(cond, Remap):
            raise ValueError("time sampling 'remap-lambda' needs a Remap condition map")
        lo, hi = cond.lambda_range()
        lam = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)  # λ ~ U_λ
        t = cond.inverse(lam).clamp(t_eps, 1.0) if sched.continuous else cond.timestep(lam)
        return t.to(device)
    if sched.continuous:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return (t_eps + (1.0 - t_eps) * u).to(device)
    return torch.randint(0, sched.T, (n,), generator=generator).to(torch.float64).to(device)


def diffuse(denoiser: Denoiser, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t = α_t x0 + σ_t ε (Eq. 1)."""
    alpha, sigma = denoiser.coefficients(t, x0)
    return alpha * x0 + sigma * noise


@dataclass
class LossOutput:
    """Per-example loss terms (shape (batch,)); ``total`` is what to minimise."""

    total: Tensor
    mse: Tensor
    reg: Tensor | None
    t: Tensor


def _per_example(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1).mean(1)


def min_snr_weight(snr: Tensor, gamma: float, prediction: str = "eps") -> Tensor:
    """Min-SNR-γ loss weight (Hang et al. 2023) of a loss on the ``prediction`` output:
    min(SNR, γ)/SNR (ε; 1 where SNR = 0), min(SNR, γ)/(SNR + 1) (v), min(SNR, γ) (x0) — the weights
    of diffusers' training scripts (``compute_snr``; ε and v there)."""
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":
        return torch.where(snr > 0, clipped / snr.clamp(min=torch.finfo(snr.dtype).tiny), torch.ones_like(snr))
    if prediction == "v":
        return clipped / (snr + 1.0)
    return clipped


def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, 1) of ``shape`` drawn on the generator's device (any), returned on ``like``'s device."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=device).to(like.device)


def offset_noise(noise: Tensor, offset: float, generator: torch.Generator | None = None) -> Tensor:
    """ε + offset·n with n ~ N(0, 1) constant over each example's spatial dims (per channel for
    images (B, C, ...), per example for vectors (B, D)) — diffusers' / kohya's ``noise_offset``."""
    shape = (noise.shape[0], noise.shape[1], *([1] * (noise.ndim - 2))) if noise.ndim > 2 else (noise.shape[0], 1)
    return noise + offset * _randn(shape, noise, generator)


def knob_warnings(condition: ConditionMap, schedule: Schedule, density: TimestepDensity,
                  t_eps: float = 1e-5) -> list[str]:
    """Settings that make E-TSDM a no-op in training (empty list: none). With a sharing map f_T,
    a training density with no (or < 0.1 %) mass in [0, t̃) never trains the shared conditions the
    sampler then feeds the network for every t < t̃."""
    if not isinstance(condition, TimestepSharing):
        return []
    t_tilde = condition.t_tilde
    if density.min_timestep is not None and density.min_timestep >= t_tilde:
        return [f"diffusion.min_timestep={density.min_timestep:g} >= E-TSDM's t̃={t_tilde:g}: no training t falls in "
                f"[0, t̃) where the condition map acts, so E-TSDM trains nothing there, yet sampling feeds the "
                f"network its shared conditions for t < t̃ (never trained); lower min_timestep or drop E-TSDM"]
    if density.sampling == "remap-lambda":
        return []
    mass = density.prob_below(schedule, t_tilde, t_eps)
    if mass < NOOP_MASS:
        return [f"the training timestep density puts {mass:.2g} of its mass in [0, t̃={t_tilde:g}) where E-TSDM acts "
                f"(uniform: {t_tilde / (1.0 if schedule.continuous else schedule.T):.2g}): E-TSDM is almost a no-op "
                f"in training while sampling still uses the shared conditions"]
    return []


def diffusion_loss(
    denoiser: Denoiser,
    x0: Tensor,
    *,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    sampling: TimeSampling = "uniform",
    t_eps: float = 1e-5,
    reg_weight: float = 0.0,
    reg_dt: float | None = None,
    density: TimestepDensity | None = None,
    snr_gamma: float | None = None,
    noise_offset: float = 0.0,
    input_perturbation: float = 0.0,
) -> LossOutput:
    """The denoising loss of Eq. (4) / Eq. (9), per example, with the optional DDPM-r term.

    DDPM-r (Appendix D.3.1) adds ``reg_weight`` · K(t, t') with the finite difference of Eq. (8),
    K = ||out(x_t, t) - out(x_t, t')||₂ / Δt per example, t' = t + Δt (Δt = 1 discrete, 1e-3
    continuous by default; t' is clipped into range). It costs a second forward pass.

    Knobs (module doc): ``density`` for the drawn t; ``snr_gamma`` weights the MSE by Min-SNR-γ of
    the real t (``mse`` stays unweighted, ``total`` is weighted); ``noise_offset`` changes ε (input
    and target); ``input_perturbation`` changes only the input's noise. Their extra noise is drawn
    from ``generator`` after ε.
    """
    sched = denoiser.schedule
    if t is None:
        n = x0.shape[0]
        t = sample_timesteps(denoiser, n, device=x0.device, generator=generator, sampling=sampling, t_eps=t_eps,
                             density=density)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    if noise_offset:
        noise = offset_noise(noise, noise_offset, generator)  # the target is the offset noise too
    noisy = noise
    if input_perturbation:  # Ning et al. (2023): perturb the input's noise, not the target
        noisy = noise + input_perturbation * _randn(tuple(noise.shape), noise, generator)
    x_t = diffuse(denoiser, x0, t, noisy)
    out = denoiser.net_output(x_t, t)  # the condition map acts here, on the sampled t
    mse = _per_example((out - denoiser.target(x0, noise, t)) ** 2)
    weighted = mse
    if snr_gamma is not None:  # weight from the SNR of the real t, not of f(t)
        weighted = mse * min_snr_weight(sched.snr(t).to(mse.dtype), snr_gamma, denoiser.prediction)
    if reg_weight == 0.0:
        return LossOutput(weighted, mse, None, t)
    dt = reg_dt if reg_dt is not None else (1e-3 if sched.continuous else 1.0)
    t_prime = torch.where(t + dt <= sched.t_max, t + dt, t - dt)  # backwards at the top end
    out_prime = denoiser.net_output(x_t, t_prime)
    k = (out - out_prime).reshape(x0.shape[0], -1).norm(dim=1) / dt  # K(t, t') of Eq. (8)
    return LossOutput(weighted + reg_weight * k, mse, k, t)
