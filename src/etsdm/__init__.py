"""etsdm — Lipschitz singularities in diffusion models and E-TSDM (Yang et al., ICLR 2024).

The public API: schedules, condition maps (E-TSDM's timestep sharing), the Denoiser wrapper,
losses, samplers and the analytic Gaussian mixture. See README.md for the notation.
"""

from . import losses
from .analytic import GaussianMixture
from .conditioning import ConditionMap, Identity, Remap, TimestepSharing, make_condition_map
from .denoiser import Denoiser, Estimate
from .losses import diffusion_loss, sample_timesteps
from .samplers import SAMPLERS, StepInfo, plan, sample, singlestep_orders, time_grid
from .schedules import SCHEDULE_NAMES, DiscreteSchedule, Schedule, make_schedule, schedule_from_config

__version__ = "0.1.0"

__all__ = [
    "ConditionMap",
    "Denoiser",
    "DiscreteSchedule",
    "Estimate",
    "GaussianMixture",
    "Identity",
    "Remap",
    "SAMPLERS",
    "SCHEDULE_NAMES",
    "Schedule",
    "StepInfo",
    "TimestepSharing",
    "diffusion_loss",
    "losses",
    "make_condition_map",
    "make_schedule",
    "plan",
    "sample",
    "sample_timesteps",
    "schedule_from_config",
    "singlestep_orders",
    "time_grid",
]
