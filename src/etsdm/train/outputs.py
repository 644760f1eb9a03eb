"""What a person looks at: sample grids (PIL), 2-D scatter plots and loss curves (matplotlib).

Every file is written to a temporary name beside its target and renamed into place, so a kill
never leaves a truncated grid, .npz or curve that looks finished.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path (same suffix, so writers pick the format) renamed to ``path`` on success."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` and rename tmp to ``path``: ``path`` holds the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_path(path) as tmp:
        write(tmp)
    return path


def save_samples_npz(x: Tensor, path: str | Path) -> Path:
    """Samples as ``path`` (.npz, key ``samples``), written atomically."""
    return write_atomic(Path(path), lambda p: np.savez_compressed(p, samples=x.detach().cpu().numpy()))


def image_grid(x: Tensor, nrow: int | None = None, pad: int | None = None, upscale: int | None = None) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> an (H', W', C) uint8 grid with mid-grey padding, nearest
    upscaling of small images (8x8 digits become 64x64) so a person can read them."""
    x = x.detach().float().cpu().clamp(-1, 1).add(1).div(2)  # denormalise to [0, 1]
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    up = upscale or max(1, 64 // max(h, w))
    if up > 1:
        x = x.repeat_interleave(up, 2).repeat_interleave(up, 3)
        h, w = h * up, w * up
    pad = pad if pad is not None else max(1, min(h, w) // 16)
    rows = math.ceil(n / nrow)
    grid = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), 0.5)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = x[i]
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return arr[..., 0] if c == 1 else arr[..., :3]


def save_samples_png(x: Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Images (N, C, H, W) as a PNG grid; vectors (N, D) as a scatter of the first two coordinates."""
    path = Path(path)
    if x.ndim == 4:
        from PIL import Image

        return write_atomic(path, lambda p: Image.fromarray(image_grid(x, nrow)).save(p))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = x.detach().float().cpu().reshape(len(x), -1).numpy()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(v[:, 0], v[:, 1] if v.shape[1] > 1 else np.zeros(len(v)), s=2, alpha=0.5)
    ax.set_aspect("equal")
    ax.set_title(f"{len(v)} samples")
    write_atomic(path, lambda p: fig.savefig(p, dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_loss_curve(metrics: str | Path, path: str | Path) -> Path:
    """Training loss against step (log scale) from a metrics.jsonl file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, loss = [], []
    for line in Path(metrics).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if isinstance(rec, dict) and "loss" in rec:
            steps.append(rec["step"])
            loss.append(rec["loss"])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(steps, loss, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over the logging window)")
    ax.grid(True, alpha=0.3)
    write_atomic(Path(path), lambda p: fig.savefig(p, dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return Path(path)
