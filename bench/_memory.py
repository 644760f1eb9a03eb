"""Peak GPU memory of one call, shared by the bench scripts (run as ``python bench/<script>.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def cuda_peak_mb(fn: Callable[[], Any]) -> float:
    """MiB one call of ``fn`` allocates on the current CUDA device at its peak, beyond what was
    allocated before it (warm it up first, or cuDNN's autotuning is counted)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20
