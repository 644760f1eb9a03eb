"""Exponential moving average of a network's weights, kept apart from the trained weights.

    θ_ema ← d θ_ema + (1 - d) θ,   d = min(rate, (1 + k) / (10 + k)) with warm-up, else d = rate,

where k is the number of EMA updates so far (Table A1: rate 0.9999). The warm-up lets a short run's
EMA follow the weights early instead of staying near the random initialisation. Floating-point
buffers (e.g. normalisation statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """An EMA copy of ``model`` (a separate module in eval mode, no gradients).

    Args:
        model: the trained network (unwrapped: not a DDP wrapper).
        rate: the EMA decay ``d`` upper bound, in [0, 1].
        warmup: use d = min(rate, (1 + k)/(10 + k)).
    """

    def __init__(self, model: nn.Module, rate: float = 0.9999, warmup: bool = True):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"EMA rate must be in [0, 1], got {rate}")
        self.rate = rate
        self.warmup = warmup
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._source: nn.Module | None = None  # the model the cached tensor lists below belong to
        self._pairs: tuple[list[torch.Tensor], ...] = ([], [], [], [])

    def _tensors(self, model: nn.Module) -> tuple[list[torch.Tensor], ...]:
        """EMA and model parameters and buffers, listed once per model (a module-tree walk costs
        about a millisecond per step on a UNet; the tensors are updated in place, so the lists stay valid)."""
        if self._source is not model:
            ema_p = list(self.module.parameters())
            cur_p = [p.detach() for p in model.parameters()]
            if len(ema_p) != len(cur_p):
                raise ValueError("EMA.update: the model's parameters do not match the EMA copy")
            self._pairs = (ema_p, cur_p, list(self.module.buffers()), list(model.buffers()))
            self._source = model
        return self._pairs

    def decay(self) -> float:
        """The decay d of the next update."""
        if not self.warmup:
            return self.rate
        k = self.num_updates
        return min(self.rate, (1.0 + k) / (10.0 + k))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights."""
        d = self.decay()
        ema_p, cur_p, ema_b, cur_b = self._tensors(model)
        cur_p = [p if p.dtype == q.dtype else p.to(q.dtype) for p, q in zip(cur_p, ema_p, strict=True)]
        torch._foreach_lerp_(ema_p, cur_p, 1.0 - d)  # θ_ema + (1-d)(θ - θ_ema)
        for b_ema, b in zip(ema_b, cur_b, strict=True):
            b_ema.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        self.module.load_state_dict(state)
        self.num_updates = num_updates
