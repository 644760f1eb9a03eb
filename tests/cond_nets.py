"""Networks shared by the conditioning tests (imported by test modules; not a test file)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def cond_net(x: Tensor, c: Tensor, labels: Tensor | None = None, lowres: Tensor | None = None) -> Tensor:
    """Smooth, nonlinear in x, c, the labels and lowres; row-wise and elementwise (no mixing across
    the batch; no BLAS, so frozen values are portable)."""
    c = c.to(x.dtype)[:, None]
    out = 0.6 * torch.tanh(x + 0.05 * c) + 0.3 * torch.sin(3.1 * c) + 0.1 * torch.cos(0.013 * c) * x
    if labels is not None:
        out = out + 0.2 * (labels.to(x.dtype)[:, None] + 1.5) * torch.tanh(0.5 * x + 0.01 * c)
    if lowres is not None:
        out = out + 0.1 * torch.sin(lowres.to(x.dtype) + 0.002 * c) * torch.tanh(x)
    return out


class RecordingNet(nn.Module):
    """net(x, c, **cond) -> scale·w·x (w a trainable 1), recording every cond it is called with."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.scale = scale
        self.calls: list[dict[str, Tensor]] = []

    def forward(self, x: Tensor, c: Tensor, **cond: Tensor) -> Tensor:
        self.calls.append({k: v.detach().clone() for k, v in cond.items()})
        return self.scale * self.w * x
