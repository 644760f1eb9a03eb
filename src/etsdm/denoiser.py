"""The Denoiser: a raw network plus its schedule, prediction type and condition map.

``Denoiser(net, schedule, prediction, condition)`` calls ``net(x, c)`` with
c = schedule.net_time(condition(t)) — the only place in etsdm where a condition map is applied —
and converts the network's output into whatever a caller asks for, at the *physical* time t of
any process x = α x0 + σ ε (schedules.py):

    ε = (x - α x0) / σ,   x0 = (x - σ ε) / α,   v = α ε - σ x0 (Salimans & Ho),
    x0 = (α x - σ v)/r², ε = (σ x + α v)/r²  (r² = α² + σ², 1 for VP),   score = -ε / σ.

Two more output types (issue 9):

* ``"edm"`` — Karras et al. (2022) preconditioning (Table 1), written for any process in the
  scaled variables x̃ = x/α, σ̃ = σ/α (EDM itself: α = 1): the network sees c_in x̃ and c_noise and
  outputs F, with D = x̂0 = c_skip x̃ + c_out F,
  c_skip = σ_d²/(σ̃² + σ_d²), c_out = σ̃ σ_d / sqrt(σ̃² + σ_d²), c_in = 1/sqrt(σ̃² + σ_d²).
  Its regression target F* = (x0 - c_skip x̃)/c_out makes the plain MSE EDM's weighted loss
  λ(σ)·||D - x0||² with λ = 1/c_out² (EDM Eq. 8 / Table 1).
* ``"flow"`` — the velocity u = dx/dt = α' x0 + σ' ε (flow matching: u = ε - x0); inverted with
  det = α σ' - σ α': x0 = (σ' x - σ u)/det, ε = (α u - α' x)/det.

Samplers and losses therefore never branch on the prediction type or the condition map.
``Denoiser(x, t)`` returns ε, so a Denoiser is also a plain "ε-model" for any sampler.

Conditioning (issue 10): every evaluation takes ``**cond``, the keyword inputs of the raw network
(``labels``: class indices, :data:`etsdm.guidance.NULL_LABEL` for none; ``lowres``: the
super-resolution input), one row per example of x, handed on as ``net(x, c, **cond)``. The
condition map acts on the time alone (E-TSDM shares the time condition, never the class); the
Denoiser stores no cond (k-diffusion's ``extra_args``): callers thread it through each call.

Precomputation for samplers (issue 11): at fixed t every conversion above is linear in (x, out) and
the network input is a multiple of x, so a sampler computes once per plan :meth:`Denoiser.linear`
(Python floats: input scale, ε̂ and x̂0 coefficients — these same formulas evaluated on unit inputs)
and once per call :meth:`Denoiser.conditions` (one condition-map call for all its times; on a CPU
the previous call's condition tensors are handed out again when nothing they depend on changed), and
then evaluates ``net(scale · x, c, **cond)``: exactly ``net_output`` / ``estimate`` at those times, without a
condition-map or schedule call per step.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, NamedTuple, TypeAlias

import torch
from torch import Tensor, nn

from .conditioning import ConditionMap, Identity
from .schedules import Schedule

Prediction = Literal["eps", "v", "x0", "edm", "flow"]
PREDICTIONS: tuple[str, ...] = ("eps", "v", "x0", "edm", "flow")
SIGMA_DATA = 0.5  # EDM's σ_data (Table 1)
Cond: TypeAlias = Mapping[str, Tensor]  # the raw network's keyword inputs, one row per example


def check_cond(cond: Cond | None, batch: int, where: str) -> dict[str, Tensor]:
    """``cond`` as a plain dict (empty for None), each value a tensor with ``batch`` rows along dim 0.

    Raises:
        ValueError: a value that is not a tensor, or whose first dimension is not ``batch``; the
            message names ``where`` and the key.
    """
    if not cond:
        return {}
    for key, value in cond.items():
        if not isinstance(value, Tensor) or value.ndim == 0 or value.shape[0] != batch:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{where}: cond[{key!r}] must be a tensor with one row per example ({batch} rows "
                             f"along dim 0), got {shape}")
    return dict(cond)


def cond_rows(cond: Cond, index: Tensor | slice) -> dict[str, Tensor]:
    """The rows ``index`` of every cond tensor (rows matched to the x0 rows an analysis evaluates)."""
    return {key: value[index] for key, value in cond.items()}


def repeat_cond(cond: Cond, times: int) -> dict[str, Tensor]:
    """Every cond tensor stacked ``times`` times along dim 0 (rows of ``torch.cat([x] * times)``)."""
    return {key: torch.cat([value] * times) for key, value in cond.items()}


class Estimate(NamedTuple):
    """What one network evaluation tells about x at time t."""

    eps: Tensor
    x0: Tensor


class Linear(NamedTuple):
    """A Denoiser at one time as a linear map (Python floats, :meth:`Denoiser.linear`): the network
    sees ``scale · x``; from its output ``out``, ε̂ = eps_x·x + eps_out·out and
    x̂0 = x0_x·x + x0_out·out."""

    scale: float
    eps_x: float
    eps_out: float
    x0_x: float
    x0_out: float


class _ConditionRows(NamedTuple):
    """A Denoiser's condition tensors from its last CPU :meth:`Denoiser.conditions` call: the values
    c (float32, one per time), one (batch,) row per value (views of one matrix) and what they were
    made from (``source``: map, its state_key(), schedule, times tensor and its version; or None)."""

    source: tuple | None
    values: Tensor
    matrix: Tensor  # (times, batch)
    rows: tuple[Tensor, ...]  # its rows
    inference: bool

    def fits(self, batch: int, inference: bool) -> bool:
        return self.inference == inference and self.matrix.shape[1] == batch

    def same_source(self, source: tuple) -> bool:
        """Identity for the objects (map, schedule, times), equality for the map's state and version."""
        mine = self.source
        return (mine is not None and mine[0] is source[0] and mine[1] == source[1] and mine[2] is source[2]
                and mine[3] is source[3] and mine[4] == source[4])

    def intact(self) -> bool:
        """The rows still hold their values (a network may write into its input)."""
        return torch.equal(self.matrix, self.values.reshape(-1, 1).expand_as(self.matrix))


@functools.cache
def _states_its_call(cls: type) -> bool:
    """Whether ``cls``'s ``state_key`` covers its ``__call__``: both defined by the same class (a
    subclass that overrides ``__call__`` only may read state its parent's key does not name)."""
    owner = next((c for c in cls.__mro__ if "__call__" in vars(c)), None)
    return owner is not None and "state_key" in vars(owner)


_ROWS_CACHE_MAX = 1 << 20  # float32 elements (4 MB) of condition rows a Denoiser keeps for its next call


def _expand_time(t: Tensor | float, x: Tensor) -> Tensor:
    """t as a float64 tensor of shape (batch,) on x's device."""
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    """Per-example coefficients (batch,) reshaped to broadcast over x, in x's dtype."""
    return v.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


class Denoiser(nn.Module):
    """Wraps ``net(x, c, **cond)`` into ε / x0 / v / score at physical time t.

    Args:
        net: the raw network; called as ``net(x, c, **cond)`` with c of shape (batch,) in float32
            and the caller's cond (none: ``net(x, c)``).
        schedule: the noise schedule whose α_t, σ_t the conversions use.
        prediction: what ``net`` outputs: ``"eps"``, ``"v"``, ``"x0"``, ``"edm"`` (F of EDM's
            preconditioning) or ``"flow"`` (the velocity dx/dt).
        condition: the condition map (Identity, TimestepSharing, Remap); default Identity.
        sigma_data: EDM's σ_data (``"edm"`` only).
    """

    def __init__(
        self,
        net: nn.Module | Callable[..., Tensor],
        schedule: Schedule,
        prediction: Prediction = "eps",
        condition: ConditionMap | None = None,
        *,
        sigma_data: float = SIGMA_DATA,
    ):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"Denoiser: prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if not sigma_data > 0:
            raise ValueError(f"Denoiser: sigma_data must be > 0, got {sigma_data!r}")
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.condition = condition if condition is not None else Identity()
        self.sigma_data = float(sigma_data)

    def with_net(self, net: nn.Module | Callable[..., Tensor]) -> Denoiser:
        """A copy of this Denoiser (same class, schedule, prediction, condition map, σ_data) around
        another raw network (a guided or compiled wrapper of this one, say); ``self`` is unchanged."""
        out = copy.copy(self)
        out._modules = dict(self._modules)  # the copy's own module table: setting .net leaves self's
        out.net = net
        return out

    # --- the one place the condition map is applied -----------------------------------------
    def net_condition(self, t: Tensor | float, x: Tensor) -> Tensor:
        """The condition c = net_time(f(t)) the network receives (float32, shape (batch,))."""
        if isinstance(t, (int, float)):  # one scalar, one fill on x's device
            c = float(self.schedule.net_time(self.condition(torch.tensor(float(t), dtype=torch.float64))))
            return torch.full((x.shape[0],), c, dtype=torch.float32, device=x.device)
        return self.schedule.net_time(self.condition(_expand_time(t, x))).to(torch.float32)

    def conditions(self, times: Sequence[float] | Tensor, x: Tensor) -> list[Tensor]:
        """:meth:`net_condition` at each of ``times`` (numbers, or a 1-D CPU float64 tensor), made at
        once: one condition-map call on all of them, then one (batch,) float32 tensor per time on x's
        device — what a sampler makes before its loop. A subclass with its own ``net_condition`` gets
        it called per time.

        On a CPU the previous call's tensors are handed out again (:class:`_ConditionRows`; making
        100 of them costs ~45 µs, a sampler step with a cheap network ~2 µs): without a map call when
        the map states its parameters (``state_key``, as the built-in maps do) and the map, its
        state, the schedule and the ``times`` tensor are the same as then; else when the map's values
        are equal. Never when the network wrote into them, the batch size or the inference mode differ."""
        if type(self).net_condition is not Denoiser.net_condition:
            return [self.net_condition(float(t), x) for t in times]
        t64 = times if isinstance(times, Tensor) else torch.tensor([float(t) for t in times], dtype=torch.float64)
        if x.device.type != "cpu":  # fills (no host-to-device copy, so a CUDA graph can capture them)
            c = self.schedule.net_time(self.condition(t64)).to(torch.float32)
            return [torch.full((x.shape[0],), v, dtype=torch.float32, device=x.device) for v in c.tolist()]
        batch, inference = x.shape[0], torch.is_inference_mode_enabled()
        source = self._condition_source(t64)
        cached: _ConditionRows | None = self.__dict__.get("_rows_cache")
        usable = cached is not None and cached.fits(batch, inference)
        if usable and source is not None and cached.same_source(source) and cached.intact():
            return list(cached.rows)
        c = self.schedule.net_time(self.condition(t64)).to(torch.float32)
        if usable and torch.equal(cached.values, c) and cached.intact():
            matrix, rows = cached.matrix, cached.rows
        else:
            matrix = c.reshape(-1, 1).expand(-1, batch).contiguous()
            rows = matrix.unbind(0)
        if 0 < matrix.numel() <= _ROWS_CACHE_MAX:  # kept outside nn.Module's registries
            self.__dict__["_rows_cache"] = _ConditionRows(source, c, matrix, rows, inference)
        return list(rows)

    def _condition_source(self, t64: Tensor) -> tuple | None:
        """What the condition map's values on ``t64`` depend on, when the map states its parameters."""
        if not _states_its_call(type(self.condition)) or t64.is_inference():  # (no version counter)
            return None
        return self.condition, self.condition.state_key(), self.schedule, t64, t64._version

    def net_output(self, x: Tensor, t: Tensor | float, c: Tensor | None = None, **cond: Tensor) -> Tensor:
        """The raw network output at physical time t (ε, v, x0, EDM's F or the velocity); ``c``: the
        condition at t made beforehand (:meth:`conditions`), else :meth:`net_condition` makes it;
        ``cond``: the network's keyword inputs (labels, lowres), passed on untouched."""
        alpha, sigma = self.coefficients(t, x) if self.prediction == "edm" else (1.0, 1.0)
        return self.net(self._net_input(x, alpha, sigma), self.net_condition(t, x) if c is None else c, **cond)

    def _net_input(self, x, alpha, sigma):
        """What the network sees: c_in · x/α for ``"edm"`` (EDM Table 1 in x̃ = x/α), else x."""
        if self.prediction == "edm":
            return self._edm_coefficients(alpha, sigma)[2] * (x / alpha)
        return x

    # --- conversions ------------------------------------------------------------------------
    def coefficients(self, t: Tensor | float, x: Tensor) -> tuple[Tensor | float, Tensor | float]:
        """α_t, σ_t shaped to broadcast over x (Python floats when t is a Python number)."""
        if isinstance(t, (int, float)):  # one schedule call, then Python math
            if self.schedule.kind == "vp":
                log_a = float(self.schedule.log_alpha(float(t)))
                return math.exp(log_a), math.sqrt(-math.expm1(2.0 * log_a))  # as VPSchedule.alpha / .sigma
            return float(self.schedule.alpha(float(t))), float(self.schedule.sigma(float(t)))
        tt = _expand_time(t, x)
        return _bcast(self.schedule.alpha(tt), x), _bcast(self.schedule.sigma(tt), x)

    def _derivatives(self, t: Tensor | float, x: Tensor) -> tuple[Tensor | float, Tensor | float]:
        """α'_t, σ'_t (the flow velocity's coefficients), shaped like :meth:`coefficients`."""
        if isinstance(t, (int, float)):
            return float(self.schedule.dalpha_dt(float(t))), float(self.schedule.dsigma_dt(float(t)))
        tt = _expand_time(t, x)
        return _bcast(self.schedule.dalpha_dt(tt), x), _bcast(self.schedule.dsigma_dt(tt), x)

    def _edm_coefficients(self, alpha, sigma):
        """EDM's c_skip, c_out, c_in (Table 1) at σ̃ = σ/α."""
        s, sd2 = sigma / alpha, self.sigma_data**2
        root = (s * s + sd2) ** 0.5
        return sd2 / (s * s + sd2), s * self.sigma_data / root, 1.0 / root

    def _convert(self, x, out, alpha, sigma, da, ds) -> Estimate:
        """(ε̂, x̂0) from the network output at coefficients α, σ (α', σ' for ``"flow"``); tensors or
        Python floats alike (:meth:`linear` evaluates it on unit inputs)."""
        if self.prediction == "eps":
            return Estimate(out, (x - sigma * out) / alpha)
        if self.prediction == "x0":
            return Estimate((x - alpha * out) / sigma, out)
        if self.prediction == "edm":
            c_skip, c_out, _ = self._edm_coefficients(alpha, sigma)
            x0 = c_skip * (x / alpha) + c_out * out  # D(x̃; σ̃) (EDM Eq. 7)
            return Estimate((x - alpha * x0) / sigma, x0)
        if self.prediction == "flow":
            det = alpha * ds - sigma * da
            return Estimate((alpha * out - da * x) / det, (ds * x - sigma * out) / det)
        if self.schedule.kind == "vp":  # v-prediction, r² = 1
            return Estimate(sigma * x + alpha * out, alpha * x - sigma * out)
        r2 = alpha * alpha + sigma * sigma
        return Estimate((sigma * x + alpha * out) / r2, (alpha * x - sigma * out) / r2)

    def estimate(self, x: Tensor, t: Tensor | float, c: Tensor | None = None, **cond: Tensor) -> Estimate:
        """ε and x0 from a single network evaluation (``c``, ``cond``: as for :meth:`net_output`)."""
        out = self.net_output(x, t, *(() if c is None else (c,)), **cond)  # subclasses may override (x, t)
        alpha, sigma = self.coefficients(t, x)
        da, ds = self._derivatives(t, x) if self.prediction == "flow" else (math.nan, math.nan)
        return self._convert(x, out, alpha, sigma, da, ds)

    def linear(self, alpha: float, sigma: float, dalpha: float = math.nan, dsigma: float = math.nan) -> Linear:
        """The Denoiser at a time with coefficients α, σ (α', σ': ``"flow"`` only) as a :class:`Linear`
        map: :meth:`net_output` is ``net(scale · x, c)`` and :meth:`estimate` is linear in (x, out)
        there. The same formulas (``_net_input``, ``_convert``) evaluated on unit inputs.

        Raises:
            ValueError: α = 0 or σ = 0 where the conversion divides by it.
        """
        try:
            unit_x = self._convert(1.0, 0.0, alpha, sigma, dalpha, dsigma)
            unit_out = self._convert(0.0, 1.0, alpha, sigma, dalpha, dsigma)
            scale = float(self._net_input(1.0, alpha, sigma))
        except ZeroDivisionError as err:
            raise ValueError(f"Denoiser.linear: {self.prediction!r} conversion at alpha={alpha}, sigma={sigma} "
                             "divides by zero") from err
        return Linear(scale, float(unit_x.eps), float(unit_out.eps), float(unit_x.x0), float(unit_out.x0))

    def forward(self, x: Tensor, t: Tensor | float, **cond: Tensor) -> Tensor:
        """ε_θ(x, t): a Denoiser is an ε-model for any sampler."""
        return self.estimate(x, t, **cond).eps

    def eps(self, x: Tensor, t: Tensor | float, **cond: Tensor) -> Tensor:
        return self.estimate(x, t, **cond).eps

    def x0(self, x: Tensor, t: Tensor | float, **cond: Tensor) -> Tensor:
        return self.estimate(x, t, **cond).x0

    def v(self, x: Tensor, t: Tensor | float, **cond: Tensor) -> Tensor:
        est = self.estimate(x, t, **cond)
        alpha, sigma = self.coefficients(t, x)
        return alpha * est.eps - sigma * est.x0

    def velocity(self, x: Tensor, t: Tensor | float, **cond: Tensor) -> Tensor:
        """dx/dt = α' x̂0 + σ' ε̂, the probability-flow ODE's drift in t (flow matching's u)."""
        est = self.estimate(x, t, **cond)
        da, ds = self._derivatives(t, x)
        return da * est.x0 + ds * est.eps

    def score(self, x: Tensor, t: Tensor | float, **cond: Tensor) -> Tensor:
        """∇_x log q_t(x) ≈ -ε_θ(x, t) / σ_t."""
        _, sigma = self.coefficients(t, x)
        return -self.eps(x, t, **cond) / sigma

    def target(self, x0: Tensor, eps: Tensor, t: Tensor | float) -> Tensor:
        """The regression target of the network's own output type (Eq. 4 / Eq. 9; EDM's F*)."""
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        if self.prediction == "flow":
            da, ds = self._derivatives(t, x0)
            return da * x0 + ds * eps
        alpha, sigma = self.coefficients(t, x0)
        if self.prediction == "edm":
            # F* = (x0 - c_skip x̃)/c_out with x̃ = x0 + σ̃ ε, rearranged so that it stays accurate as
            # σ̃ -> 0 (1 - c_skip and c_out both vanish there): (σ̃ x0 - σ_d² ε) / (σ_d sqrt(σ̃² + σ_d²))
            s, sd = sigma / alpha, self.sigma_data
            return (s * x0 - sd * sd * eps) / (sd * (s * s + sd * sd) ** 0.5)
        return alpha * eps - sigma * x0
