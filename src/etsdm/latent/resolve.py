"""``resolve_autoencoder``: a config's ``latent.autoencoder`` string to an AutoencoderKL folder.

The spec is one of

* an etsdm autoencoder run folder (:func:`etsdm.latent.train_autoencoder`'s output),
* a local diffusers AutoencoderKL folder (or a pipeline folder with ``vae/``; nothing is
  downloaded),
* an autoencoder YAML: trained once into ``<cache>/autoencoders/<name>-<hash>/`` and reused after.
  ``<hash>`` (:func:`cache_hash`): the sha256 of the validated config, so comments, key order and
  spelled-out defaults do not matter, and of the images it trains on (:func:`images_fingerprint`),
  so an edited image folder trains a new autoencoder instead of reusing a stale one. A file lock
  makes concurrent resolvers train it once; the folder is renamed into place when complete, so a
  killed run leaves none (the next writer removes its temporary folder).

A relative spec is taken relative to ``base_dir`` (the config file's folder) when given.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..config import DataConfig, to_dict
from ..data import scan_images
from .autoencoder import SIDECAR_FORMAT, train_autoencoder
from .config import is_autoencoder_config, load_autoencoder_config
from .dataset import files_digest
from .folders import autoencoder_folder, cache_root, is_autoencoder_folder


def images_fingerprint(data: DataConfig) -> str | None:
    """What the autoencoder key knows of the images beyond the data section: for an image folder,
    :func:`~etsdm.latent.dataset.files_digest` of every image under ``data.root`` (relative path,
    size and modification time of each: one directory walk and one stat per file, milliseconds for
    thousands of images, where hashing their contents would read the whole data set at every
    resolve); None for the digits embedded in the package (its name and options fix the images)."""
    if data.name != "folder":
        return None
    root = Path(data.root).expanduser()
    return files_digest(scan_images(root), root=root)


def cache_hash(path: str | Path) -> str:
    """16 hex digits of the sha256 of the validated autoencoder config, the sidecar format and
    :func:`images_fingerprint` of its data: a new hash (a new training) when any of them changes."""
    cfg = load_autoencoder_config(path)
    record = {"format": SIDECAR_FORMAT, "config": to_dict(cfg)}
    images = images_fingerprint(cfg.data)
    if images is not None:  # digits: the hash of earlier versions, whose cached autoencoders stay valid
        record["images"] = images
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def trained_folder(path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Where the autoencoder of YAML ``path`` is (or will be) cached."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", load_autoencoder_config(path).name)
    return cache_root(cache_dir) / "autoencoders" / f"{name}-{cache_hash(path)}"


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released by the OS if the process dies
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def train_cached(path: str | Path, cache_dir: str | Path | None = None, *, device: str = "cpu",
                 progress: bool = False) -> Path:
    """The cached autoencoder of YAML ``path``, trained now (on ``device``) if it is not there yet."""
    final = trained_folder(path, cache_dir)
    if is_autoencoder_folder(final):
        return final
    with _locked(final.with_name(f".{final.name}.lock")):
        if not is_autoencoder_folder(final):  # another process may have finished while we waited
            if final.exists():  # not ours to judge by name: keep it aside, never delete it
                os.replace(final, final.with_name(f"{final.name}.broken{os.getpid()}"))
            train_autoencoder(path, final, device=device, progress=progress)
    return final


def resolve_autoencoder(spec: str | Path, base_dir: Path | None = None, *, cache_dir: str | Path | None = None,
                        device: str = "cpu", progress: bool = False) -> Path:
    """The AutoencoderKL folder ``spec`` names (see the module docstring); ``device`` and
    ``progress`` apply when a YAML spec is trained (``train_autoencoder``).

    Raises:
        FileNotFoundError: nothing at the spec's path (the resolved path is named).
        ValueError: a file that is not an autoencoder YAML, or a folder that is not an AutoencoderKL.
        ConfigError: an invalid autoencoder YAML (file and field named).
    """
    p = Path(spec).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    if p.is_file():
        if not is_autoencoder_config(p):
            raise ValueError(f"autoencoder {p}: a file, but not an autoencoder YAML (no top-level `autoencoder:` "
                             "section); give an autoencoder YAML, an etsdm autoencoder run or a diffusers "
                             "AutoencoderKL folder")
        return train_cached(p, cache_dir, device=device, progress=progress)
    if not p.exists():
        raise FileNotFoundError(f"autoencoder {p}: no such file or folder (latent.autoencoder {str(spec)!r}"
                                + (f", relative to {base_dir}" if base_dir is not None else "") + ")")
    return autoencoder_folder(p)
