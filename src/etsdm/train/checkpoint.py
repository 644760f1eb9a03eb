"""Checkpoints: atomic, self-describing, safe to load.

Layout of a run directory::

    RUN/config.yaml                 the full config of the run
    RUN/metrics.jsonl               one JSON object per logged step
    RUN/checkpoints/step_00001000/  model.safetensors, ema.safetensors (weights),
                                    state.pt (optimiser, lr scheduler, RNG states: tensors and
                                    plain types only, loaded with ``weights_only=True``),
                                    meta.json (step, EMA updates), config.yaml
    RUN/checkpoints/latest          the name of the newest complete checkpoint

A checkpoint is written into a temporary sibling directory and moved into place with
``os.replace``; ``latest`` is rewritten the same way only afterwards. A kill at any moment
therefore leaves ``latest`` pointing at a complete checkpoint. Only the last K are kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

CKPT_DIR = "checkpoints"
LATEST = "latest"
PREFIX = "step_"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def state_dict_for_save(module: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of a module's tensors, with shared storage broken (safetensors)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU / CUDA, numpy, Python) as tensors and plain types."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": _py_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py_state_to_plain(st: tuple) -> list:
    return [st[0], list(st[1]), st[2]]


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "meta.json").exists())


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``latest`` points at (or the newest complete one), None if there is none."""
    root = Path(run_dir) / CKPT_DIR
    pointer = root / LATEST
    if pointer.is_file():
        cand = root / pointer.read_text().strip()
        if (cand / "meta.json").exists():
            return cand
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: nn.Module,
    ema: nn.Module | None,
    ema_updates: int,
    state: dict[str, Any],
    config_yaml: str,
    keep_last: int = 3,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, prune to ``keep_last``."""
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"{PREFIX}{step:08d}"
    final = root / name
    tmp = root / f".tmp_{name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(state_dict_for_save(model), str(tmp / "model.safetensors"))
    if ema is not None:
        save_file(state_dict_for_save(ema), str(tmp / "ema.safetensors"))
    torch.save(state, tmp / "state.pt")
    (tmp / "config.yaml").write_text(config_yaml)
    (tmp / "meta.json").write_text(json.dumps({"step": step, "ema_updates": ema_updates}))
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        old = root / f".old_{name}_{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _atomic_write_text(root / LATEST, name)
    for old in checkpoint_dirs(run_dir)[:-keep_last]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_meta(ckpt: Path) -> dict[str, Any]:
    return json.loads((Path(ckpt) / "meta.json").read_text())


def load_weights(ckpt: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Model (or EMA, when present and ``ema``) weights of a checkpoint."""
    ckpt = Path(ckpt)
    f = ckpt / ("ema.safetensors" if ema and (ckpt / "ema.safetensors").exists() else "model.safetensors")
    return load_file(str(f), device=str(device))


def load_state(ckpt: str | Path) -> dict[str, Any]:
    """Optimiser / scheduler / RNG states (``weights_only=True``: no arbitrary unpickling)."""
    return torch.load(Path(ckpt) / "state.pt", weights_only=True, map_location="cpu")
