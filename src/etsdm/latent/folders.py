"""Autoencoder folders on disk: recognising a diffusers ``AutoencoderKL`` folder, loading it with no
download, publishing a finished folder atomically, and where etsdm's cache lives.

A folder is an AutoencoderKL when its ``config.json`` has ``"_class_name": "AutoencoderKL"`` and a
weights file beside it (``diffusion_pytorch_model.safetensors`` or ``.bin``). A diffusers pipeline
folder (``model_index.json`` + ``vae/``, e.g. a local Stable Diffusion) resolves to its ``vae/``.
An etsdm autoencoder run (:func:`etsdm.latent.train_autoencoder`) is such a folder plus
:data:`SIDECAR`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from diffusers import AutoencoderKL

from ..train.checkpoint import fsync_dir, fsync_file

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


def temporary_folder(final: Path) -> Path:
    """The folder a writer of ``final`` fills before :func:`publish_folder` (one per process)."""
    return final.with_name(f".{final.name}.tmp{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Remove the temporary folders of ``final`` left by killed writers (their process is gone)."""
    removed = []
    for tmp in final.parent.glob(f".{final.name}.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def publish_folder(tmp: Path, final: Path, *, replace: bool) -> bool:
    """Rename the finished folder ``tmp`` to ``final`` in one step, so ``final`` is either absent or
    whole. ``replace``: an existing ``final`` is swapped out (and removed); else it is kept, ``tmp``
    removed, and False returned (another process published first)."""
    for f in tmp.rglob("*"):
        if f.is_file():
            fsync_file(f)
    if final.exists() and replace:
        old = final.with_name(f".{final.name}.old{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        try:
            os.rename(tmp, final)  # fails on an existing non-empty folder: the first writer wins
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return False
    fsync_dir(final.parent)
    return True
