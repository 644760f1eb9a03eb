"""Mean ± std over seeds, the one summary every etsdm metric reports."""

from __future__ import annotations

import math
from collections.abc import Sequence


def summarize(name: str, values: Sequence[float]) -> dict:
    """``{name: mean, name_std: std (sample, ddof=1; 0 for one value), name_values: [...]}``."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError(f"{name}: no values to summarize")
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {name: mean, f"{name}_std": std, f"{name}_values": vals}


def format_pm(mean: float, std: float, digits: int = 4) -> str:
    """'mean ± std' with ``digits`` significant digits."""
    return f"{mean:.{digits}g} ± {std:.2g}"
