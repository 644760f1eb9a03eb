"""Classifier-free guidance (Ho & Salimans 2022) for class-conditional networks.

Training drops each class label to :data:`NULL_LABEL` with probability p (:func:`drop_labels`,
config ``train.label_dropout``), so one network learns the conditional output out_c = net(x, c, y)
and the unconditional one out_u = net(x, c, NULL_LABEL). Sampling mixes them with the guidance
scale s (diffusers' ``guidance_scale`` convention):

    out = out_u + s · (out_c − out_u)        (Ho & Salimans Eq. 6 with w = s − 1)

s = 1 is the conditional network itself (one call, bitwise), s = 0 the unconditional one; any
other s is one batched call of 2B rows, the second half with labels -> NULL_LABEL (every other
cond input, e.g. a low-resolution image, is kept). :class:`GuidedNet` is just a network
``net(x, c, **cond)``, so :func:`guided` wraps a Denoiser's net and every sampler, the precomputed
path and :class:`etsdm.compiled.CapturedSampler` included, runs it unchanged. Guidance on the raw
output equals guidance on ε (and on x̂0): at fixed x and t each conversion of the Denoiser is
affine in the output, ε̂ = a x + b out, so a x + b (out_u + s(out_c − out_u)) =
ε̂_u + s (ε̂_c − ε̂_u). E-TSDM shares the time condition c = f(t) only: both halves see the same c,
the labels are untouched by the condition map.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .denoiser import Denoiser

NULL_LABEL = -1  # "no label": the unconditional input of classifier-free guidance


def drop_labels(labels: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Each label replaced by :data:`NULL_LABEL` with probability ``p`` (independently), for training
    the unconditional model alongside the conditional one. p = 0 returns ``labels`` itself and
    p = 1 all NULL_LABEL, neither drawing random numbers; otherwise one uniform draw per label
    from ``generator`` (on the generator's device).

    Raises:
        ValueError: p outside [0, 1], or labels not an integer tensor.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop_labels: p (train.label_dropout) must be in [0, 1], got {p!r}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"drop_labels: labels must be an integer tensor (int64 class indices), got {labels.dtype}")
    if p == 0.0:
        return labels
    if p == 1.0:
        return torch.full_like(labels, NULL_LABEL)
    device = generator.device if generator is not None else labels.device
    drop = torch.rand(labels.shape, generator=generator, device=device).to(labels.device) < p
    return torch.where(drop, torch.full_like(labels, NULL_LABEL), labels)


class GuidedNet(nn.Module):
    """``net(x, c, **cond)`` with classifier-free guidance at scale s (module docstring).

    Args:
        net: the class-conditional raw network, called ``net(x, c, labels=..., **rest)``.
        scale: the guidance scale s (finite); 1 = the conditional net, 0 = the unconditional one.

    Raises:
        ValueError: a non-finite scale; at call time (s != 1) a cond without ``labels``.
    """

    def __init__(self, net: nn.Module | Callable[..., Tensor], scale: float):
        super().__init__()
        if not math.isfinite(float(scale)):
            raise ValueError(f"GuidedNet: the guidance scale (sample.guidance) must be finite, got {scale!r}")
        self.net = net
        self.scale = float(scale)

    def forward(self, x: Tensor, c: Tensor, **cond: Tensor) -> Tensor:
        if self.scale == 1.0:  # the conditional network, one call
            return self.net(x, c, **cond)
        labels = cond.get("labels")
        if labels is None:
            raise ValueError(f"GuidedNet: guidance scale {self.scale:g} needs cond['labels'] (class labels, "
                             f"{NULL_LABEL} = none); only scale 1 runs without them")
        null = torch.full_like(labels, NULL_LABEL)
        if self.scale == 0.0:  # the unconditional network, one call
            return self.net(x, c, **{**cond, "labels": null})
        both = {key: torch.cat([value, value]) for key, value in cond.items()}
        both["labels"] = torch.cat([labels, null])
        c = torch.as_tensor(c, device=x.device)
        out = self.net(torch.cat([x, x]), torch.cat([c, c]) if c.ndim else c, **both)
        out_c, out_u = out.chunk(2)
        return out_u + self.scale * (out_c - out_u)  # Ho & Salimans Eq. 6, w = s - 1


def guided(denoiser: Denoiser, scale: float) -> Denoiser:
    """A copy of ``denoiser`` (same class, schedule, prediction, condition map, σ_data) whose net is
    ``GuidedNet(denoiser.net, scale)``; ``denoiser`` itself is not changed."""
    return denoiser.with_net(GuidedNet(denoiser.net, scale))
