"""Stability of the x0 prediction under input perturbations (Section 4, Fig. 2).

At t = t̃ (default 100 in discrete time, 0.1 in continuous VP time; EDM / flow: the default band end
of ``etsdm.conditioning.default_sharing``) draw x_t̃ = α x0 + σ ε from the
forward process of the model's data, add Gaussian noise of scale s, and measure how far the
predicted x̂0 moves:

    error(s) = E_{x_t̃, z} [ MSE( x̂0(x_t̃ + s z, t̃), x̂0(x_t̃, t̃) ) ],   z ~ N(0, I),

where MSE is the mean over the example's elements (pixels) of the squared difference (metric
``"mse"``, the default), or its square root, the RMS (metric ``"rms"``, on the scale of a pixel
value in [-1, 1]). The paper's Fig. 2 errors grow like s² (0.0049, 0.026, 0.090, 0.175 at
s = 0.05, 0.1, 0.2, 0.3), as a squared error does for a locally linear x̂0 and an RMS (∝ s)
does not: we read them as the per-pixel MSE. Relative differences of MSE are about twice those
of RMS ((1 + r)² − 1 for a ratio 1 + r of RMS). The same x_t̃ and the same unit perturbation z
are used for every scale (common random numbers), so the error grows smoothly with s. Several
runs are compared by the relative difference error_run / error_ref − 1 (the "+42.0%" labels of
Fig. 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .. import conditioning
from ..denoiser import Cond, check_cond, cond_rows, repeat_cond
from ..schedules import Schedule
from .lipschitz import as_x0_fn

DEFAULT_SCALES: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)
METRICS: dict[str, str] = {
    "mse": "mean over examples of the per-pixel mean squared change of x̂0 (the paper's Fig. 2 scale)",
    "rms": "mean over examples of the per-pixel root-mean-square change of x̂0",
}


def default_t_tilde(schedule: Schedule) -> float:
    """The default E-TSDM t̃ of the process (:func:`etsdm.conditioning.default_sharing`: VP T/10 or
    0.1; EDM σ̃ = 0.342, flow t̃ = 0.255, the paper's band end in log-SNR)."""
    return float(conditioning.default_sharing(schedule)[1])


@dataclass
class StabilityResult:
    """Perturbation error of x̂0 per scale.

    Attributes:
        t: the time t̃ at which x is perturbed.
        scales: perturbation standard deviations s.
        error: mean over examples of the per-example MSE (or RMS) change of x̂0, one per scale.
        error_std: standard deviation of the per-example error over examples.
        n_samples: number of examples.
        metric: "mse" or "rms" (:data:`METRICS`).
    """

    t: float
    scales: list[float]
    error: Tensor
    error_std: Tensor
    n_samples: int
    metric: str = "mse"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "scales": self.scales,
            "error": self.error.tolist(),
            "error_std": self.error_std.tolist(),
            "n_samples": self.n_samples,
            "metric": self.metric,
            "metric_definition": METRICS[self.metric],
            **self.meta,
        }


@torch.no_grad()
def perturbation_error(
    model: Any,
    x0: Tensor,
    schedule: Schedule,
    *,
    t: float | None = None,
    scales: Sequence[float] = DEFAULT_SCALES,
    generator: torch.Generator | None = None,
    batch_size: int = 512,
    metric: str = "mse",
    cond: Cond | None = None,
) -> StabilityResult:
    """The error of x̂0 caused by perturbing x_t̃ with N(0, s² I), for each scale s (Fig. 2).

    Args:
        model: a Denoiser / loaded run (x̂0 from its own prediction), or an ε-callable.
        x0: N data samples (N, ...).
        schedule: the model's schedule.
        t: the time t̃ (default :func:`default_t_tilde`).
        scales: the perturbation standard deviations (> 0).
        generator: for ε of the forward process and the perturbation z.
        batch_size: examples per model call.
        metric: "mse" (default, per-pixel mean squared change) or "rms" (its square root).
        cond: the network's keyword inputs (class labels, the low-resolution image), one row per x0
            row; every perturbed copy of an example gets its example's row. None: none.

    Raises:
        ValueError: t outside (t_data, t_max], a scale <= 0, an unknown metric, cond rows not
            matching x0.
    """
    t = default_t_tilde(schedule) if t is None else float(t)
    if not schedule.t_data < t <= schedule.t_max:
        raise ValueError(f"t must be in ({schedule.t_data:g}, {schedule.t_max:g}], got {t:g}")
    scales = [float(s) for s in scales]
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {scales}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    cond = check_cond(cond, x0.shape[0], "perturbation_error")
    x0_fn = as_x0_fn(model, schedule)
    n = x0.shape[0]
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    tt = torch.full((n,), t, dtype=torch.float64, device=x0.device)
    x_t = schedule.diffuse(x0, tt, eps)  # Eq. (1)
    errors = torch.empty(len(scales), n, dtype=torch.float64)
    chunk = max(1, batch_size // (len(scales) + 1))
    for lo in range(0, n, chunk):
        xs, zs = x_t[lo : lo + chunk], z[lo : lo + chunk]
        k = xs.shape[0]
        batch = torch.cat([xs] + [xs + s * zs for s in scales])  # clean + one copy per scale
        rows = repeat_cond(cond_rows(cond, slice(lo, lo + chunk)), len(scales) + 1)  # rows of `batch`
        pred = x0_fn(batch, tt[:1].expand(batch.shape[0]), **rows).to(torch.float64).reshape(len(scales) + 1, k, -1)
        mse = (pred[1:] - pred[:1]).pow(2).mean(-1)  # per example: mean over pixels of the squared change
        errors[:, lo : lo + k] = (mse if metric == "mse" else mse.sqrt()).cpu()
    return StabilityResult(
        t=t, scales=scales, error=errors.mean(1), error_std=errors.std(1), n_samples=n, metric=metric
    )


def relative_difference(error: Tensor | Sequence[float], reference: Tensor | Sequence[float]) -> Tensor:
    """error / reference − 1, elementwise (e.g. +0.42 = 42% larger than the reference run)."""
    error = torch.as_tensor(error, dtype=torch.float64)
    reference = torch.as_tensor(reference, dtype=torch.float64)
    return error / reference - 1.0
