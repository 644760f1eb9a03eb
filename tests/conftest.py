"""Shared test fixtures (keep this file small).

* A hypothesis profile without per-example deadlines (CPU timings vary on shared machines) and a
  modest example count, so the property tests stay within the suite's time budget.
* ``ring``: the 8-mode 2-D Gaussian mixture used as analytic ground truth.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from etsdm import GaussianMixture

settings.register_profile(
    "etsdm", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile("etsdm")


@pytest.fixture(scope="session")
def ring() -> GaussianMixture:
    """8 modes of std 0.1 on a circle of radius 2 (the usual 2-D toy benchmark)."""
    return GaussianMixture.ring(k=8, radius=2.0, std=0.1)
