"""Loading what the measuring commands measure: ``etsdm.runs.load_model`` when it is available,
and, always, the analytic specs that need no training — each a base and an optional process:

* ``gmm``        — the exact optimum of the 2-D ring Gaussian mixture (8 modes, radius 2, std 0.1):
  the ideal baseline.
* ``gmm:etsdm``  — the exact E-TSDM optimum on the same mixture, posterior weighting (the true
  minimiser of the shared-condition loss), with the process's default sharing
  (:func:`etsdm.conditioning.process_sharing`: VP t̃ = 100 of T = 1000 or 0.1, n = 5).
* ``gmm:etsdm-uniform`` — the same with Eq. (A15)'s uniform weighting.
* process suffix: none (the discrete linear VP schedule, T = 1000, ε-prediction); ``:continuous``
  (continuous-time linear VP, t ∈ [0, 1], where Theorem 3.1's blow-up as t -> 0 is unbounded);
  ``:edm`` (EDM, σ ∈ [0.002, 80], the network outputs EDM's F; sharing uniform in ln σ up to
  σ̃ = 0.342); ``:flow`` (flow matching, velocity prediction; sharing uniform in t up to t̃ = 0.255).

Each analytic spec is :func:`etsdm.analytic.exact_denoiser`: a real Denoiser whose network is the
closed-form optimum for the condition it receives, so the condition map is applied exactly as for
a trained model.

:func:`data_batch` gives the x0 rows a measurement uses together with their conditions (a
super-resolution run's low-resolution inputs, a class-conditional run's labels) and, for a latent
run, the latents the network was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..analytic import GaussianMixture, exact_denoiser
from ..conditioning import process_sharing
from ..denoiser import Denoiser
from ..schedules import Schedule, make_schedule

_BASE_SPECS: tuple[str, ...] = ("gmm", "gmm:etsdm", "gmm:etsdm-uniform")
PROCESS_SUFFIXES: tuple[str, ...] = (":continuous", ":edm", ":flow")
ANALYTIC_SPECS: tuple[str, ...] = _BASE_SPECS + tuple(f"{s}{p}" for p in PROCESS_SUFFIXES for s in _BASE_SPECS)
_PREDICTION = {"edm": "edm", "flow": "flow"}  # the process's own output type; VP: ε


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


def split_spec(spec: str) -> tuple[str, str]:
    """(base, process suffix) of an analytic spec, e.g. ("gmm:etsdm", ":edm")."""
    suffix = next((p for p in PROCESS_SUFFIXES if spec.endswith(p)), "")
    return spec.removesuffix(suffix) if suffix else spec, suffix


def _schedule(suffix: str) -> Schedule:
    if suffix in (":edm", ":flow"):
        return make_schedule(suffix[1:])
    return make_schedule("linear", T=1000, continuous=suffix == ":continuous")


def analytic_model(spec: str) -> AnalyticModel:
    """Build one of :data:`ANALYTIC_SPECS`."""
    if spec not in ANALYTIC_SPECS:
        raise ValueError(f"unknown analytic spec {spec!r}; allowed: {', '.join(ANALYTIC_SPECS)}")
    gmm = reference_mixture()
    base, suffix = split_spec(spec)
    schedule = _schedule(suffix)
    sharing = None if base == "gmm" else process_sharing(schedule)
    weighting = "uniform" if base.endswith("uniform") else "posterior"
    prediction = _PREDICTION.get(schedule.kind, "eps")
    denoiser = exact_denoiser(gmm, schedule, prediction, sharing, weighting=weighting)
    star = {"eps": "ε*", "edm": "F*", "flow": "u*"}[prediction]
    name = {"gmm": f"exact {star} (baseline)", "gmm:etsdm": "exact E-TSDM optimum"}.get(base, "exact E-TSDM (Eq. A15)")
    return AnalyticModel(denoiser, schedule, name, "gmm", gmm, {"spec": spec})


def load(spec: str, *, ema: bool = True, device: str = "cpu") -> Any:
    """A model for ``spec``: ``gmm:etsdm-uniform`` here, anything else by ``etsdm.runs.load_model``
    (run folders, diffusers folders, ``gmm``, ``gmm:etsdm``)."""
    from ..runs import load_model

    if spec in ANALYTIC_SPECS and spec not in ("gmm", "gmm:etsdm"):
        return analytic_model(spec)
    return load_model(spec, ema=ema, device=device)


def data_batch(model: Any, split: str, n: int, seed: int, data: str | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """n data rows x0 (a random subset, fixed by seed) and their conditions ``cond`` (one row per
    x0 row, the network's keyword inputs; ``{}`` for an unconditional model), where the
    measurements (K(t, t′) of Eq. 8, Fig. 2's perturbation error) evaluate the model:

    * the model's own data split: images / vectors; a super-resolution run's high-resolution
      targets with cond ``{"lowres": their low-resolution inputs}``; a class-conditional run's
      images with cond ``{"labels": their classes}`` (items per ``etsdm.data.split_batch``);
    * a latent run (``model.latents`` set): the images encoded to the scaled latents the network
      was trained on (Fig. A10: K in latent space), unless the data set already yields latents;
    * ``data`` when given: a data set name for ``etsdm.data.make_dataset`` (digits, gmm) or an .npz
      file with an array ``samples`` (for a diffusers model, which carries no data set); images
      only, so refused for a model that needs conditions.

    Raises:
        ValueError: ``data`` for a conditional model, or an .npz without ``samples``.
    """
    if data is not None:
        if _conditional(model):
            raise ValueError(f"--data {data}: {getattr(model, 'name', 'the model')} is conditional (its network "
                             "needs the labels / low-resolution inputs of its own data set); leave --data out")
        x0, _ = _rows(_named_data(data, split), n, seed)
        cond = {}
    elif isinstance(model, AnalyticModel):
        x0, cond = model.dataset(split, n, seed), {}
    else:
        x0, cond = _rows(model.dataset(split), n, seed)
    return _encoded(model, x0), cond


def _conditional(model: Any) -> bool:
    """Whether the model's network takes keyword inputs (super-resolution, class labels)."""
    return getattr(model, "data_name", None) == "sr" or bool(getattr(model, "num_classes", 0))


def _rows(data: Any, n: int, seed: int) -> tuple[Tensor, dict[str, Tensor]]:
    """n rows of a tensor or data set (a random subset fixed by ``seed``, all when it holds <= n);
    a data set's items are collated and split into (x0, cond) by ``etsdm.data.split_batch``."""
    from torch.utils.data import default_collate

    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=gen)[:n] if n < len(data) else torch.arange(len(data))
    if isinstance(data, Tensor):
        return data[idx], {}
    from ..data import split_batch

    x0, cond = split_batch(default_collate([data[int(i)] for i in idx]))
    return x0, dict(cond or {})


def _encoded(model: Any, x0: Tensor) -> Tensor:
    """A latent run's images as its scaled latents (``Latents.encode``); other x0 unchanged."""
    latents = getattr(model, "latents", None)
    shape = getattr(model, "shape", None)
    if latents is None or (shape is not None and tuple(x0.shape[1:]) == tuple(shape)):
        return x0
    return latents.encode(x0)


def _named_data(data: str, split: str) -> Any:
    if data.endswith(".npz"):
        import numpy as np

        with np.load(data, allow_pickle=False) as f:
            if "samples" not in f.files:
                raise ValueError(f"--data {data}: no array 'samples' (found {sorted(f.files)})")
            return torch.as_tensor(f["samples"]).float()
    from ..data import make_dataset

    return make_dataset(data, split=split)
