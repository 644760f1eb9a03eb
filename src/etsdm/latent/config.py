"""The autoencoder config: data, the ``AutoencoderKL`` architecture and its training.

An autoencoder YAML is recognised by its top-level ``autoencoder:`` section
(:func:`is_autoencoder_config`); a diffusion run's YAML has none. Validation reuses
``etsdm.config``'s machinery: an unknown key, a wrong type or a number out of range raises
:class:`~etsdm.config.ConfigError` naming the field (e.g. ``autoencoder.block_out_channels``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..config import ConfigError, DataConfig, _from_dict, _h, _read_yaml, _rng, set_path, to_dict

LATENT_DATA = ("digits", "folder")  # image data sets an autoencoder can be trained on


@dataclass
class AutoencoderArchConfig:
    """The diffusers ``AutoencoderKL`` (one ``DownEncoderBlock2D`` / ``UpDecoderBlock2D`` per level:
    each level after the first halves the side, so the latent side is H / 2^(levels - 1))."""

    block_out_channels: list[int] = field(
        default_factory=lambda: [32, 64], metadata=_h("channels per level (length = number of levels)")
    )
    layers_per_block: int = field(default=1, metadata=_rng(1, None, help="ResNet layers per level"))
    latent_channels: int = field(default=2, metadata=_rng(1, None, help="channels of the latent z"))
    norm_num_groups: int = field(default=8, metadata=_rng(1, None, help="GroupNorm groups (divide every level's "
                                                                        "channels)"))
    mid_block_attention: bool = field(default=True, metadata=_h("self-attention in the middle blocks (diffusers' "
                                                                "default)"))
    reconstruction: Literal["l1", "mse"] = field(
        default="l1", metadata=_h("reconstruction loss per image, summed over pixels (LDM: l1 + LPIPS + GAN)")
    )
    kl_weight: float = field(
        default=1e-6, metadata=_rng(0.0, None, help="weight of KL(q(z|x) || N(0, I)) per image (LDM: 1e-6)")
    )


@dataclass
class AutoencoderTrainConfig:
    """Adam on the reconstruction + KL loss (Rombach et al. 2022, Eq. 25 without LPIPS and GAN)."""

    steps: int = field(default=1500, metadata=_rng(1, None, help="optimiser steps"))
    batch_size: int = field(default=64, metadata=_rng(1, None, help="images per step"))
    lr: float = field(default=1e-3, metadata=_rng(0.0, None, lo_open=True, help="Adam learning rate"))
    seed: int = field(default=0, metadata=_rng(0, None, help="random seed (weights, batches, posterior samples)"))
    log_every: int = field(default=100, metadata=_rng(1, None, help="steps between metrics.jsonl lines"))


@dataclass
class AutoencoderConfig:
    """Everything :func:`etsdm.latent.train_autoencoder` needs."""

    name: str = field(default="autoencoder", metadata=_h("name (the cache folder of a YAML spec starts with it)"))
    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: AutoencoderArchConfig = field(default_factory=AutoencoderArchConfig)
    train: AutoencoderTrainConfig = field(default_factory=AutoencoderTrainConfig)


def _check(cfg: AutoencoderConfig) -> AutoencoderConfig:
    """Cross-field checks (ConfigError naming the field)."""
    a, d = cfg.autoencoder, cfg.data
    chans = a.block_out_channels
    if not isinstance(chans, list) or not chans or not all(isinstance(c, int) and c >= 1 for c in chans):
        raise ConfigError(f"autoencoder.block_out_channels: expected a non-empty list of positive integers, "
                          f"got {chans!r}")
    bad = [c for c in chans if c % a.norm_num_groups]
    if bad:
        raise ConfigError(f"autoencoder.norm_num_groups: {a.norm_num_groups} must divide every entry of "
                          f"autoencoder.block_out_channels {chans} (not {bad})")
    if d.name not in LATENT_DATA:
        raise ConfigError(f"data.name: an autoencoder trains on image data; allowed: {', '.join(LATENT_DATA)}, "
                          f"not {d.name!r}")
    if d.name == "folder" and not d.root:
        raise ConfigError("data.root: required for data.name: folder (a folder of images)")
    if d.hflip:
        raise ConfigError("data.hflip: not supported for autoencoder training (and a latent cache stores one "
                          "encoding per image); set data.hflip: false")
    return cfg


def autoencoder_config(data: dict[str, Any] | AutoencoderConfig) -> AutoencoderConfig:
    """A validated :class:`AutoencoderConfig` from plain data (missing fields take their defaults)."""
    return _check(_from_dict(AutoencoderConfig, data))


def load_autoencoder_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> AutoencoderConfig:
    """Read and validate an autoencoder YAML, after ``a.b=value`` overrides. Raises ConfigError
    naming the file and the field."""
    p = Path(path)
    data = _read_yaml(p)
    try:
        for item in overrides:
            set_path(data, item, AutoencoderConfig)
        return autoencoder_config(data)
    except ConfigError as err:
        raise ConfigError(f"{p}: {err}") from None


def is_autoencoder_config(path: str | Path) -> bool:
    """Whether ``path`` is a YAML file whose top level has an ``autoencoder:`` key."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() not in (".yaml", ".yml"):
        return False
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "autoencoder" in data


def dump_autoencoder_config(cfg: AutoencoderConfig) -> str:
    """The config as YAML text (every field, in declaration order)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
