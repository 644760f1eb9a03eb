"""The Denoiser: a raw network plus its schedule, prediction type and condition map.

``Denoiser(net, schedule, prediction, condition)`` calls ``net(x, c)`` with c = condition(t) —
the only place in etsdm where a condition map is applied — and converts the network's output
(ε, x0 or v) into whatever a caller asks for, at the *physical* time t:

    ε = (x - α x0) / σ,   x0 = (x - σ ε) / α,   v = α ε - σ x0 (Salimans & Ho),
    x0 = α x - σ v,        ε = σ x + α v,         score = -ε / σ.

Samplers and losses therefore never branch on the prediction type or the condition map.
``Denoiser(x, t)`` returns ε, so a Denoiser is also a plain "ε-model" for any sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from .conditioning import ConditionMap, Identity
from .schedules import Schedule

Prediction = Literal["eps", "v", "x0"]
PREDICTIONS: tuple[str, ...] = ("eps", "v", "x0")


class Estimate(NamedTuple):
    """What one network evaluation tells about x at time t."""

    eps: Tensor
    x0: Tensor


def _expand_time(t: Tensor | float, x: Tensor) -> Tensor:
    """t as a float64 tensor of shape (batch,) on x's device."""
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    """Per-example coefficients (batch,) reshaped to broadcast over x, in x's dtype."""
    return v.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


class Denoiser(nn.Module):
    """Wraps ``net(x, c)`` into ε / x0 / v / score at physical time t.

    Args:
        net: the raw network; called as ``net(x, c)`` with c of shape (batch,) in float32.
        schedule: the noise schedule whose α_t, σ_t the conversions use.
        prediction: what ``net`` outputs: ``"eps"``, ``"v"`` or ``"x0"``.
        condition: the condition map (Identity, TimestepSharing, Remap); default Identity.
    """

    def __init__(
        self,
        net: nn.Module | Callable[[Tensor, Tensor], Tensor],
        schedule: Schedule,
        prediction: Prediction = "eps",
        condition: ConditionMap | None = None,
    ):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"Denoiser: prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.condition = condition if condition is not None else Identity()

    # --- the one place the condition map is applied -----------------------------------------
    def net_condition(self, t: Tensor | float, x: Tensor) -> Tensor:
        """The condition c = f(t) the network receives (float32, shape (batch,))."""
        if isinstance(t, (int, float)):  # samplers' fast path: one scalar, one fill on x's device
            c = float(self.condition(torch.tensor(float(t), dtype=torch.float64)))
            return torch.full((x.shape[0],), c, dtype=torch.float32, device=x.device)
        return self.condition(_expand_time(t, x)).to(torch.float32)

    def net_output(self, x: Tensor, t: Tensor | float) -> Tensor:
        """The raw network output at physical time t (ε, v or x0 per ``prediction``)."""
        return self.net(x, self.net_condition(t, x))

    # --- conversions ------------------------------------------------------------------------
    def coefficients(self, t: Tensor | float, x: Tensor) -> tuple[Tensor | float, Tensor | float]:
        """α_t, σ_t shaped to broadcast over x (Python floats when t is a Python number)."""
        if isinstance(t, (int, float)):  # samplers' fast path: one schedule call, then Python math
            log_a = float(self.schedule.log_alpha(float(t)))
            return math.exp(log_a), math.sqrt(-math.expm1(2.0 * log_a))  # as Schedule.alpha / .sigma
        tt = _expand_time(t, x)
        return _bcast(self.schedule.alpha(tt), x), _bcast(self.schedule.sigma(tt), x)

    def estimate(self, x: Tensor, t: Tensor | float) -> Estimate:
        """ε and x0 from a single network evaluation."""
        out = self.net_output(x, t)
        alpha, sigma = self.coefficients(t, x)
        if self.prediction == "eps":
            return Estimate(out, (x - sigma * out) / alpha)
        if self.prediction == "x0":
            return Estimate((x - alpha * out) / sigma, out)
        return Estimate(sigma * x + alpha * out, alpha * x - sigma * out)  # v-prediction

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """ε_θ(x, t): a Denoiser is an ε-model for any sampler."""
        return self.estimate(x, t).eps

    def eps(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self.estimate(x, t).eps

    def x0(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self.estimate(x, t).x0

    def v(self, x: Tensor, t: Tensor | float) -> Tensor:
        est = self.estimate(x, t)
        alpha, sigma = self.coefficients(t, x)
        return alpha * est.eps - sigma * est.x0

    def score(self, x: Tensor, t: Tensor | float) -> Tensor:
        """∇_x log q_t(x) ≈ -ε_θ(x, t) / σ_t."""
        _, sigma = self.coefficients(t, x)
        return -self.eps(x, t) / sigma

    def target(self, x0: Tensor, eps: Tensor, t: Tensor | float) -> Tensor:
        """The regression target of the network's own output type (Eq. 4 / Eq. 9)."""
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        alpha, sigma = self.coefficients(t, x0)
        return alpha * eps - sigma * x0
