"""Paired seed statistics: is a baseline-vs-E-TSDM difference real, or inside the seed spread?

Each training seed gives one value per arm, with the sampling noise shared between the arms (same
noise seed), so the natural unit is the per-seed difference d_s = E-TSDM_s − baseline_s. Its mean
gets a two-sided Student-t interval with k − 1 degrees of freedom (k seeds):

    d̄ ± t_{1−α/2, k−1} · s_d / √k

and a verdict from one written rule: *reproduced* when the interval excludes 0 in the direction
the paper reports, *reversed* when it excludes 0 the other way, *not resolved* when it contains 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from scipy import stats

Direction = Literal["lower", "higher"]
VERDICT_RULE = (
    "reproduced: the 95% interval of the mean paired difference (E-TSDM − baseline) excludes 0 in the "
    "paper's direction; reversed: it excludes 0 in the other direction; not resolved: it contains 0"
)


@dataclass(frozen=True)
class PairedDifference:
    """Mean of E-TSDM − baseline over paired seeds with its t-interval."""

    mean: float
    low: float
    high: float
    std: float
    k: int
    confidence: float
    differences: tuple[float, ...]

    def to_dict(self) -> dict:
        return {**asdict(self), "differences": list(self.differences), "interval": "student-t, paired by seed"}


def paired_difference(
    baseline: Sequence[float], etsdm: Sequence[float], *, confidence: float = 0.95
) -> PairedDifference:
    """Mean paired difference ``etsdm − baseline`` and its two-sided Student-t interval.

    Raises:
        ValueError: the arms have different lengths, fewer than 2 seeds, or ``confidence`` ∉ (0, 1).
    """
    if len(baseline) != len(etsdm):
        raise ValueError(f"paired seeds: {len(baseline)} baseline values but {len(etsdm)} E-TSDM values")
    if len(baseline) < 2:
        raise ValueError(f"a paired interval needs at least 2 seeds per arm, got {len(baseline)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = [float(e) - float(b) for b, e in zip(baseline, etsdm, strict=True)]
    k = len(d)
    mean = sum(d) / k
    std = math.sqrt(sum((v - mean) ** 2 for v in d) / (k - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, k - 1)) * std / math.sqrt(k)
    return PairedDifference(mean, mean - half, mean + half, std, k, confidence, tuple(d))


def verdict(diff: PairedDifference, paper_direction: Direction) -> str:
    """'reproduced', 'reversed' or 'not resolved' (see :data:`VERDICT_RULE`).

    ``paper_direction``: the sign the paper reports for E-TSDM − baseline — "lower" for FID,
    Lipschitz constants and perturbation errors, "higher" for PSNR/SSIM.
    """
    if paper_direction not in ("lower", "higher"):
        raise ValueError(f"paper_direction must be 'lower' or 'higher', got {paper_direction!r}")
    if diff.low <= 0 <= diff.high:
        return "not resolved"
    better = diff.high < 0 if paper_direction == "lower" else diff.low > 0
    return "reproduced" if better else "reversed"
