"""Any diffusers scheduler as an etsdm sampler: ``--sampler diffusers:<SchedulerClass>``.

The public names of :mod:`etsdm.runs.diffusers_sampler` (where they live, with the module doc:
how the scheduler is built from a run and driven) and :func:`etsdm.runs.clipping.clip_config`.
They live under :mod:`etsdm.runs` because building a scheduler needs a loaded run; this module
only re-exports them (it imports :mod:`etsdm.runs`, which never imports it: no cycle).
"""

from __future__ import annotations

from .runs.clipping import NO_MAX, clip_config
from .runs.diffusers_sampler import (
    EXAMPLES,
    PREFIX,
    build_scheduler,
    describe,
    generate_diffusers,
    is_diffusers_sampler,
    sample_diffusers,
    scheduler_class,
)

__all__ = [
    "EXAMPLES",
    "NO_MAX",
    "PREFIX",
    "build_scheduler",
    "clip_config",
    "describe",
    "generate_diffusers",
    "is_diffusers_sampler",
    "sample_diffusers",
    "scheduler_class",
]
