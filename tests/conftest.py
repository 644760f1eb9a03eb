"""Shared test fixtures (keep this file small).

* A hypothesis profile without per-example deadlines (CPU timings vary on shared machines) and a
  modest example count, so the property tests stay within the suite's time budget.
* ``ring``: the 8-mode 2-D Gaussian mixture used as analytic ground truth.
* ``single_thread``: run a test module's many tiny tensor ops on one intra-op thread (on a busy
  2-core machine torch's thread pool makes each small op 10-100x slower); restored afterwards.
* etsdm's cache (trained autoencoders, cached latents: $ETSDM_CACHE) is a temporary folder per
  test session, never the user's ~/.cache/etsdm.
"""

from __future__ import annotations

import pytest
import torch
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


@pytest.fixture(scope="module")
def single_thread():
    """Use one torch intra-op thread for the module, then restore the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session", autouse=True)
def private_etsdm_cache(tmp_path_factory):
    """$ETSDM_CACHE -> a fresh temporary folder for the session."""
    patch = pytest.MonkeyPatch()
    patch.setenv("ETSDM_CACHE", str(tmp_path_factory.mktemp("etsdm-cache")))
    yield
    patch.undo()
