"""Checkpoints: atomic, self-describing, verified before use.

Layout of a run directory::

    RUN/config.yaml                 the full config of the run
    RUN/metrics.jsonl               one JSON object per logged step
    RUN/checkpoints/step_00001000/  model.safetensors, ema.safetensors (weights),
                                    state.pt (optimiser, lr scheduler, RNG states: tensors and
                                    plain types only, loaded with ``weights_only=True``),
                                    config.yaml, meta.json (step, EMA updates, data shape, and the
                                    byte size of every other file: the checkpoint's manifest)
    RUN/checkpoints/latest          the name of the newest checkpoint written (a hint for people)

Writing: every file, meta.json last, goes into ``.tmp_step_K_PID/`` and is fsynced; the folder is
then renamed into place (``os.replace``, the parent folder fsynced) and ``latest`` rewritten the same
way. A kill at any moment leaves either the complete checkpoint or a ``.tmp_*`` leftover, which the
next write (and the next training start) removes; a failed write (e.g. disk full) removes its own.

Reading: :func:`pick_checkpoint` returns the newest checkpoint that passes :func:`checkpoint_problem`
(meta.json parses, every file of the manifest has its recorded size, safetensors headers cover their
files) together with what is wrong with each newer one, so callers fall back *and say so*. A file that
still fails to load raises :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..folders import fsync_dir, fsync_file, publish_folder

CKPT_DIR = "checkpoints"
LATEST = "latest"
PREFIX = "step_"
TMP_PREFIX = ".tmp_"  # .tmp_step_K_PID: a checkpoint being written
OLD_PREFIX = ".old_"  # .old_step_K_PID: a checkpoint being replaced by a re-save of the same step
WEIGHTS = ("model.safetensors", "ema.safetensors")
REQUIRED = ("model.safetensors", "state.pt", "config.yaml")  # besides meta.json


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated or unreadable; the message names the file."""


class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint failed (e.g. the disk is full); the partial write was removed."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``path`` so that it holds either its old or its new text, never a part (tmp + fsync + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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


# --- reading ------------------------------------------------------------------------------------
def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is incomplete (its header promises more bytes than it has), or None."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{path} is truncated ({size} bytes)"
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            return f"{path} is truncated ({size} bytes, header alone needs {8 + n})"
        try:
            header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError):
            return f"{path} has a corrupt header"
    if 8 + n + end > size:
        return f"{path} is truncated ({size} bytes of {8 + n + end})"
    return None


def checkpoint_problem(ckpt: str | Path) -> str | None:
    """What makes a checkpoint unusable, naming the file (None: complete).

    Cheap (stats, safetensors headers, the zip directory of state.pt; no tensor is read): meta.json
    must parse and hold a step; every file of its manifest must exist with the recorded size (older
    checkpoints without a manifest: model.safetensors, state.pt and config.yaml must exist);
    safetensors files must be as long as their headers say.
    """
    ckpt = Path(ckpt)
    meta_path = ckpt / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        return f"{meta_path} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{meta_path} is empty" if meta_path.stat().st_size == 0 else f"{meta_path} is unreadable ({err})"
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        return f"{meta_path} holds no step"
    files: dict[str, int | None] = meta.get("files") or {  # no manifest (older checkpoints): what must be there
        name: None for name in (*REQUIRED, "ema.safetensors") if name in REQUIRED or (ckpt / name).exists()}
    for name, size in files.items():
        path = ckpt / name
        if not path.is_file():
            return f"{path} is missing"
        actual = path.stat().st_size
        if size is not None and actual != size:
            return f"{path} is truncated or damaged ({actual} bytes, {size} were written)"
        if name.endswith(".safetensors") and (problem := _safetensors_problem(path)):
            return problem
        if name.endswith(".pt") and not zipfile.is_zipfile(path):  # torch.save's zip: its directory is at the end
            return f"{path} is truncated or damaged (no zip directory at its end)"
    return None


def step_dirs(run_dir: str | Path) -> list[Path]:
    """Every ``step_*`` folder of a run, complete or not, oldest first."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def pick_checkpoint(run_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint of a run (None if there is none), and what is wrong with each
    newer, incomplete one (newest first), for the caller to report."""
    skipped: list[str] = []
    for cand in reversed(step_dirs(run_dir)):
        problem = checkpoint_problem(cand)
        if problem is None:
            return cand, skipped
        skipped.append(problem)
    return None, skipped


def fallback_note(chosen: Path | None, skipped: list[str]) -> str | None:
    """A one-line account of a fallback (None when the newest checkpoint was used)."""
    if not skipped:
        return None
    using = f"using {chosen.name}" if chosen is not None else "no complete checkpoint left"
    return f"skipped {len(skipped)} incomplete checkpoint(s) ({'; '.join(skipped)}); {using}"


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    return [p for p in step_dirs(run_dir) if checkpoint_problem(p) is None]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, None if there is none (see :func:`pick_checkpoint`)."""
    return pick_checkpoint(run_dir)[0]


def read_meta(ckpt: str | Path) -> dict[str, Any]:
    path = Path(ckpt) / "meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint metadata ({err})") from None


def load_weights(ckpt: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Model (or EMA, when present and ``ema``) weights of a checkpoint."""
    ckpt = Path(ckpt)
    f = ckpt / ("ema.safetensors" if ema and (ckpt / "ema.safetensors").exists() else "model.safetensors")
    try:
        return load_file(str(f), device=str(device))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{f}: unreadable weights ({err})") from None


def load_state(ckpt: str | Path) -> dict[str, Any]:
    """Optimiser / scheduler / RNG states (``weights_only=True``: no arbitrary unpickling)."""
    f = Path(ckpt) / "state.pt"
    try:
        return torch.load(f, weights_only=True, map_location="cpu")
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{f}: unreadable training state ({str(err).splitlines()[0]})") from None


# --- writing ------------------------------------------------------------------------------------
def remove_partial_writes(run_dir: str | Path) -> list[Path]:
    """Delete what killed or failed checkpoint writes left behind (``.tmp_*`` folders, pointer
    temporaries); put back a checkpoint whose re-save was cut between its two renames. Returns
    what was removed. Only the main process writes checkpoints, so nothing else is writing."""
    root = Path(run_dir) / CKPT_DIR
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for p in sorted(root.iterdir()):
        if p.name.startswith(OLD_PREFIX) and p.is_dir():
            name = p.name[len(OLD_PREFIX) :].rsplit("_", 1)[0]
            if not (root / name).exists():
                os.replace(p, root / name)
                continue
        if p.name.startswith((TMP_PREFIX, OLD_PREFIX, f".{LATEST}.tmp")):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


def _write_file(path: Path, write: Callable[[Path], object]) -> int:
    write(path)
    fsync_file(path)
    return path.stat().st_size


def _write_files(tmp: Path, step: int, *, model: nn.Module, ema: nn.Module | None, ema_updates: int,
                 state: dict[str, Any], config_yaml: str, meta: dict[str, Any]) -> None:
    """Every file of a checkpoint into ``tmp``, each fsynced; meta.json (with the manifest) last."""
    tmp.mkdir()
    files = {"model.safetensors": _write_file(tmp / "model.safetensors",
                                              lambda p: save_file(state_dict_for_save(model), str(p)))}
    if ema is not None:
        files["ema.safetensors"] = _write_file(tmp / "ema.safetensors",
                                               lambda p: save_file(state_dict_for_save(ema), str(p)))
    files["state.pt"] = _write_file(tmp / "state.pt", lambda p: torch.save(state, p))
    files["config.yaml"] = _write_file(tmp / "config.yaml", lambda p: p.write_text(config_yaml))
    record = {"step": step, "ema_updates": ema_updates, **meta, "files": files}
    _write_file(tmp / "meta.json", lambda p: p.write_text(json.dumps(record)))
    fsync_dir(tmp)


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` folder to ``final`` (replacing a checkpoint of the same step, which
    waits in ``.old_<name>_<pid>`` between the two renames: :func:`remove_partial_writes` puts it back)."""
    publish_folder(tmp, final, replace=True, aside=final.with_name(f"{OLD_PREFIX}{final.name}_{os.getpid()}"))


def _point_latest(root: Path, name: str) -> None:
    atomic_write_text(root / LATEST, name)


def _prune(run_dir: Path, keep: Path, keep_last: int) -> None:
    for old in checkpoint_dirs(run_dir)[:-keep_last]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


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
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, prune to ``keep_last``.

    ``meta``: extra meta.json entries (e.g. the data shape), written before the rename like the rest.

    Raises:
        CheckpointWriteError: an OSError (disk full, permissions) while writing or renaming; a
            partial checkpoint is removed, the previous ones are untouched.
    """
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    remove_partial_writes(run_dir)
    name = f"{PREFIX}{step:08d}"
    final = root / name
    tmp = root / f"{TMP_PREFIX}{name}_{os.getpid()}"
    try:
        _write_files(tmp, step, model=model, ema=ema, ema_updates=ema_updates, state=state,
                     config_yaml=config_yaml, meta=meta or {})
    except Exception as err:  # a kill (BaseException) leaves tmp to the next remove_partial_writes
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise CheckpointWriteError(f"writing checkpoint {final} failed: {err}") from err
        raise
    try:
        _publish(tmp, final)
        _point_latest(root, name)
    except OSError as err:
        raise CheckpointWriteError(f"publishing checkpoint {final} failed: {err}") from err
    _prune(Path(run_dir), final, keep_last)
    return final
