"""A run's pieces from its config: the data set, the raw network, the Denoiser, shapes.

:func:`build_dataset`, :func:`build_net` and :func:`build_denoiser` turn a
:class:`~etsdm.config.RunConfig` into the data set, the raw network and the Denoiser (which applies
the run's condition map: E-TSDM lives there and nowhere else). What they depend on is resolved here
too: a class-conditional run's ``model.num_classes`` from its data (:func:`resolve_classes`), a
latent run's autoencoder, latents and scaling factor (:func:`run_latents`,
:func:`build_latent_dataset`, :func:`resolve_latents`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..config import ConfigError, RunConfig, class_conditional
from ..data import data_shape, infer_format, make_dataset
from ..denoiser import Denoiser
from ..latent import LatentDataset, Latents, resolve_autoencoder
from ..latent.dataset import data_key, latent_training_set
from ..nets import make_net
from ..schedules import Schedule


def resolve_data(cfg: RunConfig) -> tuple[RunConfig, str]:
    """``cfg`` with an image folder's null data.channels / data.resolution filled in from its images
    (:func:`etsdm.data.infer_format`), and a note saying what was inferred ("" if nothing was)."""
    d = cfg.data
    folder = d.name == "folder" or (d.name == "sr" and (d.sr_base == "folder" or (d.sr_base is None and d.root)))
    if not folder or not d.root or (d.channels is not None and d.resolution is not None):
        return cfg, ""
    fmt = infer_format(d.root, channels=d.channels, resolution=d.resolution)
    data = dataclasses.replace(d, channels=fmt.channels, resolution=fmt.resolution)
    return dataclasses.replace(cfg, data=data), fmt.note


def build_image_dataset(cfg: RunConfig, split: str = "train") -> Dataset:
    """The run's data itself for ``split`` (``etsdm.data.make_dataset``): images or vectors, also for
    a latent run (whose images are what :func:`build_dataset` encodes; FID references)."""
    d = cfg.data
    extra: dict[str, Any] = {}
    if d.sr_base is not None:
        extra["sr_base"] = d.sr_base
    if d.holdout:
        extra["holdout"] = int(d.holdout) if float(d.holdout).is_integer() else d.holdout
    return make_dataset(
        d.name, split=split, root=d.root, resolution=d.resolution, channels=d.channels,
        hflip=d.hflip if split == "train" else False, skip_bad=d.skip_bad, sr_factor=d.sr_factor, gmm=d.gmm,
        num_samples=d.num_samples, seed=cfg.train.seed, labels=d.labels, **extra,
    )


def build_dataset(cfg: RunConfig, split: str = "train", *, latents: Latents | None = None,
                  base_dir: Path | None = None) -> Dataset:
    """What the run's network models, for ``split``: the data (:func:`build_image_dataset`), or
    for a latent run (``latent.autoencoder``) the scaled latents of its images
    (:func:`build_latent_dataset`; ``latents`` / ``base_dir`` as there)."""
    if cfg.latent.autoencoder is None:
        return build_image_dataset(cfg, split)
    return build_latent_dataset(cfg, split, latents=latents, base_dir=base_dir)[1]


def run_latents(cfg: RunConfig, base_dir: Path | None = None, device: str | torch.device = "cpu") -> Latents | None:
    """The autoencoder of a latent run (None for a run on the data itself): ``latent.autoencoder``
    resolved relative to ``base_dir`` (the config file's folder; an autoencoder YAML is trained once
    into etsdm's cache root — ``latent.cache`` holds latents only), with ``latent.scaling_factor``
    (None: the folder's own, else fitted later), on ``device`` (where it encodes and decodes)."""
    spec = cfg.latent.autoencoder
    if spec is None:
        return None
    folder = resolve_autoencoder(spec, base_dir)
    return Latents.load(folder, cfg.latent.scaling_factor, device=device)


def build_latent_dataset(cfg: RunConfig, split: str = "train", *, latents: Latents | None = None,
                         base_dir: Path | None = None) -> tuple[Latents, LatentDataset]:
    """A latent run's training data for ``split``: its images encoded once (the latent cache,
    ``latent.cache``), scaled by the scaling factor — ``latents``' own (a loaded run's), else
    ``latent.scaling_factor``, else 1/std of these latents (LDM) — with the images' class labels when
    ``data.labels``. Returns (the autoencoder with its resolved factor, the data set).

    Args:
        latents: the autoencoder to encode with (default: :func:`run_latents` of ``cfg``).
        base_dir: the config file's folder, for a relative ``latent.autoencoder``.
    """
    if latents is None:
        latents = run_latents(cfg, base_dir)
    if latents is None:
        raise ConfigError("latent.autoencoder: not set, so the run has no latents (build_image_dataset)")
    images = build_image_dataset(cfg, split)
    return latent_training_set(latents, images, key=data_key(cfg.data, split, images), cache_dir=cfg.latent.cache,
                               labels=cfg.data.labels)


def resolve_latents(cfg: RunConfig, latents: Latents) -> RunConfig:
    """``cfg`` with ``latent.scaling_factor`` set to the one ``latents`` uses (the trainer writes it
    into the run's saved config.yaml, so the run samples and decodes with the factor it trained on)."""
    return dataclasses.replace(cfg, latent=dataclasses.replace(cfg.latent, scaling_factor=latents.scaling_factor))


def dataset_shape(ds: Any) -> tuple[int, ...]:
    """Shape of one x0 of a data set: (C, H, W) or (D,)."""
    return tuple(data_shape(ds))


def net_time_scale(schedule: Schedule) -> float:
    """The backbone's ``time_scale``: the multiplier of its time input c = ``schedule.net_time(t)``
    before the sinusoidal embedding, chosen so that c·time_scale spans T units (1000) over the
    sampler's range, as a discrete VP timestep 0..T-1 does — the embedding's frequencies (1 down to
    1e-4 rad per unit) then resolve the process as they resolve VP time:

    * discrete VP: 1 (c is the timestep itself);
    * continuous VP and flow: T (t in [0, 1]; the diffusers convention of flow schedulers, whose
      timesteps are T·t);
    * EDM: T / (c_noise(σ_max) - c_noise(σ_min)) with c_noise = ¼ ln σ: 1000 / 2.65 = 377 for
      σ in [0.002, 80], so c_noise in [-1.55, 1.10] becomes [-585, 415]. At time_scale 1 (EDM's own
      code) the embedding's phases would move by at most 2.65 rad over the whole range, the lower
      frequencies not at all.
    """
    if not schedule.continuous:
        return 1.0
    if schedule.kind == "edm":
        span = float(schedule.net_time(schedule.t_max) - schedule.net_time(schedule.t_min))
        return float(schedule.T) / span
    return float(schedule.T)


def build_net(cfg: RunConfig, shape: tuple[int, ...]) -> nn.Module:
    """The raw network for data of ``shape`` ((C, H, W) images or (D,) vectors).

    Continuous-time processes give the backbone ``time_scale`` = :func:`net_time_scale` (unless
    ``model.overrides`` sets it), so its timestep embedding is spread as for discrete timesteps.
    """
    m = cfg.model
    opts = dict(m.overrides)
    if cfg.schedule.continuous:
        opts.setdefault("time_scale", net_time_scale(cfg.build_schedule()))
    if m.name == "mlp":  # vectors (D,), or images flattened to D = C·H·W
        if cfg.data.name == "sr":
            raise ConfigError("model.name: 'mlp' takes no low-resolution input; use model.name: unet for sr data")
        return make_net("mlp", preset=m.preset, dim=math.prod(shape), **opts)
    if len(shape) != 3:
        raise ConfigError(f"model.name: 'unet' needs image data (C, H, W), got shape {shape}; use model.name: mlp")
    if class_conditional(cfg) and m.num_classes is None:
        raise ConfigError("model.num_classes: null is resolved from the data set's classes before the network is "
                          "built (etsdm.runs.resolve_classes); set it, or build the run with the Trainer")
    cond = shape[0] if cfg.data.name == "sr" else 0
    return make_net("unet", preset=m.preset, in_channels=shape[0], out_channels=shape[0], resolution=shape[1],
                    cond_channels=cond, num_classes=m.num_classes or 0, **opts)


def resolve_classes(cfg: RunConfig, dataset: Any) -> RunConfig:
    """``cfg`` with ``model.num_classes`` taken from a labelled data set (``data.labels``): the
    number its items' ``cond["labels"]`` range over (digits: 10; folder: its class subfolders). The
    trainer writes the resolved number into the run's saved config.yaml; unlabelled runs are
    returned unchanged.

    Raises:
        ConfigError: the data set has no classes, or model.num_classes differs from its number.
    """
    if not cfg.data.labels:
        return cfg
    k = getattr(dataset, "num_classes", None)
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"data.labels: the {cfg.data.name!r} data set has no class labels (num_classes)")
    m = cfg.model.num_classes
    if m is not None and m != k:
        raise ConfigError(f"model.num_classes: {m}, but the data set has {k} classes; set it to {k} or null")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=k))


def rebuild_net(cfg: RunConfig, shape: tuple[int, ...]) -> nn.Module:
    """The raw network of a config, with fresh weights (seeded like training for determinism)."""
    torch.manual_seed(cfg.train.seed)
    return build_net(cfg, shape)


def build_denoiser(cfg: RunConfig, net: nn.Module | Any, schedule: Schedule | None = None) -> Denoiser:
    """Denoiser(net, schedule, prediction, condition map, σ_data) of the run (training, previews and
    every loaded run build it here)."""
    schedule = schedule if schedule is not None else cfg.build_schedule()
    return Denoiser(net, schedule, prediction=cfg.diffusion.prediction, condition=cfg.build_condition(schedule),
                    sigma_data=cfg.diffusion.sigma_data)
