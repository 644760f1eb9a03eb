"""Autoencoder folders on disk: recognising a diffusers ``AutoencoderKL`` folder, loading it with no
download, and where etsdm's cache lives (folders are published whole by :mod:`etsdm.folders`).

A folder is an AutoencoderKL when its ``config.json`` has ``"_class_name": "AutoencoderKL"`` and a
weights file beside it (``diffusion_pytorch_model.safetensors`` or ``.bin``). A diffusers pipeline
folder (``model_index.json`` + ``vae/``, e.g. a local Stable Diffusion) resolves to its ``vae/``.
An etsdm autoencoder run (:func:`etsdm.latent.train_autoencoder`) is such a folder plus
:data:`SIDECAR`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from diffusers import AutoencoderKL

SIDECAR = "etsdm_autoencoder.json"  # etsdm's record beside an autoencoder it trained
WEIGHTS_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
CACHE_ENV = "ETSDM_CACHE"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """etsdm's cache folder: ``cache_dir``, else $ETSDM_CACHE, else ~/.cache/etsdm."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "etsdm"


def _class_name(folder: Path) -> str | None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return config.get("_class_name") if isinstance(config, dict) else None


def autoencoder_folder(path: str | Path) -> Path:
    """The AutoencoderKL folder at ``path`` (or its pipeline's ``vae/``).

    Raises:
        FileNotFoundError: ``path`` does not exist, or has no weights file (named).
        ValueError: ``path`` is not an AutoencoderKL folder (says what it found).
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"autoencoder {folder}: no such folder")
    if not folder.is_dir():
        raise ValueError(f"autoencoder {folder}: not a folder (expected a diffusers AutoencoderKL folder)")
    if not (folder / "config.json").is_file() and (folder / "model_index.json").is_file():
        folder = folder / "vae"
    name = _class_name(folder)
    if name != "AutoencoderKL":
        found = "no readable config.json" if name is None else f"config.json _class_name {name!r}"
        raise ValueError(f"autoencoder {folder}: not a diffusers AutoencoderKL folder ({found})")
    if not any((folder / w).is_file() for w in WEIGHTS_FILES):
        raise FileNotFoundError(f"autoencoder {folder}: no weights file ({' or '.join(WEIGHTS_FILES)})")
    return folder


def is_autoencoder_folder(path: str | Path) -> bool:
    """Whether :func:`autoencoder_folder` accepts ``path``."""
    try:
        autoencoder_folder(path)
    except (FileNotFoundError, ValueError):
        return False
    return True


def load_vae(folder: str | Path) -> AutoencoderKL:
    """``AutoencoderKL.from_pretrained`` on a local folder only (never downloads), float32, eval."""
    folder = autoencoder_folder(folder)
    vae = AutoencoderKL.from_pretrained(folder, local_files_only=True)
    return vae.float().eval()
