"""Loading what the measuring commands measure: ``etsdm.runs.load_model`` when it is available,
and, always, the analytic specs that need no training:

* ``gmm``        — the exact ε* of the 2-D ring Gaussian mixture (8 modes, radius 2, std 0.1) on
  the discrete linear schedule (T = 1000): the ideal baseline.
* ``gmm:etsdm``  — the exact E-TSDM optimum on the same mixture (t̃ = 100, n = 5), posterior
  weighting (the true minimiser of the shared-condition loss).
* ``gmm:etsdm-uniform`` — the same with Eq. (A15)'s uniform weighting.
* ``...:continuous`` (``gmm:continuous``, ``gmm:etsdm:continuous``,
  ``gmm:etsdm-uniform:continuous``) — the same on the continuous-time linear schedule
  (t ∈ [0, 1], t̃ = 0.1, n = 5), where Theorem 3.1's blow-up as t -> 0 is unbounded.

Each analytic spec is a real :class:`~etsdm.denoiser.Denoiser` whose "network" is the closed form
evaluated at the condition it receives, so the condition map is applied exactly as for a
trained model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..analytic import GaussianMixture
from ..conditioning import Identity, TimestepSharing
from ..denoiser import Denoiser
from ..schedules import Schedule, make_schedule

_BASE_SPECS: tuple[str, ...] = ("gmm", "gmm:etsdm", "gmm:etsdm-uniform")
ANALYTIC_SPECS: tuple[str, ...] = _BASE_SPECS + tuple(f"{s}:continuous" for s in _BASE_SPECS)


def reference_mixture() -> GaussianMixture:
    """The mixture of the default ``gmm`` data set (the 8-mode ring, radius 2, std 0.1)."""
    from ..data import make_mixture

    return make_mixture(None)


@dataclass
class AnalyticModel:
    """The subset of ``etsdm.runs.LoadedModel`` the measuring commands use."""

    denoiser: Denoiser
    schedule: Schedule
    name: str
    data_name: str
    mixture: GaussianMixture
    config: dict[str, Any] = field(default_factory=dict)

    def dataset(self, split: str = "train", n: int = 4096, seed: int = 0) -> Tensor:
        """Exact mixture samples (float64); split only changes the seed (train 0, test 1)."""
        offset = {"train": 0, "test": 1}.get(split, 2)
        return self.mixture.sample(n, torch.Generator().manual_seed(seed * 3 + offset))


class _ClosedForm(torch.nn.Module):
    """net(x, c): ε* at time c, or the shared E-TSDM optimum of the sub-interval starting at c."""

    def __init__(self, gmm: GaussianMixture, schedule: Schedule, sharing: TimestepSharing | None, weighting: str):
        super().__init__()
        self.model = gmm.eps_model(schedule, sharing, weighting)  # type: ignore[arg-type]

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.model(x, c.to(torch.float64))


class _Float64Denoiser(Denoiser):
    """Hands the closed form its condition in float64 (no float32 rounding of t), so that K at a
    tiny Δt in continuous time stays exact."""

    def net_condition(self, t: Tensor | float, x: Tensor) -> Tensor:
        tt = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        return self.condition(tt.expand(x.shape[0]) if tt.ndim == 0 else tt).to(torch.float64)


def analytic_model(spec: str) -> AnalyticModel:
    """Build one of :data:`ANALYTIC_SPECS`."""
    if spec not in ANALYTIC_SPECS:
        raise ValueError(f"unknown analytic spec {spec!r}; allowed: {', '.join(ANALYTIC_SPECS)}")
    gmm = reference_mixture()
    continuous = spec.endswith(":continuous")
    base = spec.removesuffix(":continuous")
    schedule = make_schedule("linear", T=1000, continuous=continuous)
    sharing = None if base == "gmm" else TimestepSharing(0.1, 5, T=None) if continuous else TimestepSharing(100, 5)
    weighting = "uniform" if base.endswith("uniform") else "posterior"
    net = _ClosedForm(gmm, schedule, sharing, weighting)
    denoiser = _Float64Denoiser(net, schedule, "eps", condition=sharing or Identity())
    name = {"gmm": "exact ε* (baseline)", "gmm:etsdm": "exact E-TSDM optimum"}.get(base, "exact E-TSDM (Eq. A15)")
    return AnalyticModel(denoiser, schedule, name, "gmm", gmm, {"spec": spec})


def load(spec: str, *, ema: bool = True, device: str = "cpu") -> Any:
    """A model for ``spec``: ``gmm:etsdm-uniform`` here, anything else by ``etsdm.runs.load_model``
    (run folders, diffusers folders, ``gmm``, ``gmm:etsdm``)."""
    from ..runs import load_model

    if spec in ANALYTIC_SPECS and spec not in ("gmm", "gmm:etsdm"):
        return analytic_model(spec)
    return load_model(spec, ema=ema, device=device)


def data_tensor(model: Any, split: str, n: int, seed: int, data: str | None = None) -> Tensor:
    """n data samples as one tensor (random subset, fixed by seed): of the model's own data, or of
    ``data`` when given — a data set name for ``etsdm.data.make_dataset`` (digits, gmm) or an .npz
    file with an array ``samples`` (for a diffusers model, which carries no data set)."""
    if data is not None:
        data = _named_data(data, split)
    elif isinstance(model, AnalyticModel):
        return model.dataset(split, n, seed)
    else:
        data = model.dataset(split)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=gen)[:n] if n < len(data) else torch.arange(len(data))
    if isinstance(data, Tensor):
        return data[idx]
    items = [data[int(i)] for i in idx]
    items = [item["x0"] if isinstance(item, dict) else item for item in items]  # SR pairs: the target
    items = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
    return torch.stack(items)


def _named_data(data: str, split: str) -> Any:
    if data.endswith(".npz"):
        import numpy as np

        with np.load(data, allow_pickle=False) as f:
            if "samples" not in f.files:
                raise ValueError(f"--data {data}: no array 'samples' (found {sorted(f.files)})")
            return torch.as_tensor(f["samples"]).float()
    from ..data import make_dataset

    return make_dataset(data, split=split)
