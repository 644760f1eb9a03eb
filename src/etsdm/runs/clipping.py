"""x̂0 clipping of a run: which one it samples with (:func:`resolve_clip`, :func:`auto_clip`) and
the same clipping as diffusers scheduler settings (:func:`clip_config`)."""

from __future__ import annotations

from typing import Any

import torch

from ..samplers import CLIPS, DYNAMIC_PERCENTILE
from .store import LoadedModel

IMAGE_DATA = ("digits", "folder", "sr")
NO_MAX = float(torch.finfo(torch.float32).max)  # etsdm's dynamic threshold s has no upper bound


def auto_clip(model: LoadedModel) -> str:
    """x̂0 clipping per data kind: ``static`` ([-1, 1]) for image data, as the DDPM / ADM code the
    paper builds on does at every step (``clip_denoised=True``); ``none`` for gmm / vector data
    and latents, which are unbounded."""
    if model.config is not None and model.config.latent.autoencoder is not None:  # latents: unbounded
        return "none"
    shape = model.shape
    image = model.data_name in IMAGE_DATA or (model.data_name is None and shape is not None and len(shape) == 3)
    return "static" if image else "none"


def resolve_clip(model: LoadedModel, clip: str | None = None) -> str:
    """x̂0 clipping: ``clip``, else the run's ``sample.clip``; ``auto`` -> :func:`auto_clip`."""
    if clip is None:
        clip = model.config.sample.clip if model.config is not None else "auto"
    return auto_clip(model) if clip == "auto" else clip


def clip_config(clip: str) -> dict[str, Any]:
    """etsdm's x̂0 clipping as diffusers scheduler settings: ``static`` -> ``clip_sample`` to [-1, 1];
    ``dynamic`` -> ``thresholding`` (Saharia et al.: s = the 0.995 quantile of |x̂0| per sample, s >= 1,
    x̂0 -> clamp(x̂0, -s, s)/s, as etsdm.samplers does; diffusers' cap ``sample_max_value`` lifted).

    Raises:
        ValueError: ``clip`` is not one of etsdm's clippings (they are named).
    """
    if clip not in CLIPS:
        raise ValueError(f"clip {clip!r}: allowed {', '.join(CLIPS)}")
    return {"clip_sample": clip == "static", "clip_sample_range": 1.0, "thresholding": clip == "dynamic",
            "dynamic_thresholding_ratio": DYNAMIC_PERCENTILE, "sample_max_value": NO_MAX}
