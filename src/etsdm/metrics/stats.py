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


# A spread below this fraction of the mean is floating-point noise (e.g. identical subsets per seed).
NOISE_REL = 1e-6


def format_pm(mean: float, std: float, digits: int = 4) -> str:
    """'mean ± std': the mean to ``digits`` significant digits, the spread to 2; a spread below
    :data:`NOISE_REL` of the mean is printed as 0 (it is rounding noise, not a spread)."""
    if math.isfinite(mean) and math.isfinite(std) and abs(std) <= NOISE_REL * abs(mean):
        std = 0.0
    return f"{mean:.{digits}g} ± {std:.2g}"
