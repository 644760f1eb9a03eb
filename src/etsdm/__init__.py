"""etsdm — Lipschitz singularities in diffusion models and E-TSDM (Yang et al., ICLR 2024).

The public API: schedules, condition maps (E-TSDM's timestep sharing), the Denoiser wrapper,
losses, samplers and the analytic Gaussian mixture. See README.md for the notation.
"""

from . import diffusers_model, losses  # diffusers_model: light; lets diffusers find ETSDMUNet2DModel in exports
from .analytic import GaussianMixture
from .conditioning import ConditionMap, Identity, Remap, TimestepSharing, make_condition_map
from .denoiser import Cond, Denoiser, Estimate
from .guidance import NULL_LABEL, GuidedNet, drop_labels, guided
from .losses import diffusion_loss, sample_timesteps
from .samplers import (
    SAMPLER_REGISTRY,
    SAMPLERS,
    StepInfo,
    evaluation_times,
    init_noise_sigma,
    plan,
    sample,
    singlestep_orders,
    time_grid,
)
from .schedules import (
    ALL_SCHEDULE_NAMES,
    SCHEDULE_NAMES,
    DiscreteSchedule,
    EDMSchedule,
    FlowSchedule,
    Schedule,
    VPSchedule,
    make_schedule,
    schedule_from_config,
)
from .share import SharedTimesteps, share_timesteps

__version__ = "0.1.0"


def __getattr__(name: str):  # PEP 562: the diffusers-backed class without importing diffusers up front
    if name == "ETSDMUNet2DModel":
        from .diffusers_unet import ETSDMUNet2DModel

        return ETSDMUNet2DModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ALL_SCHEDULE_NAMES",
    "Cond",
    "ConditionMap",
    "Denoiser",
    "DiscreteSchedule",
    "EDMSchedule",
    "Estimate",
    "FlowSchedule",
    "GaussianMixture",
    "GuidedNet",
    "Identity",
    "NULL_LABEL",
    "Remap",
    "SAMPLERS",
    "SAMPLER_REGISTRY",
    "SCHEDULE_NAMES",
    "Schedule",
    "SharedTimesteps",
    "StepInfo",
    "TimestepSharing",
    "VPSchedule",
    "diffusers_model",
    "diffusion_loss",
    "drop_labels",
    "guided",
    "evaluation_times",
    "init_noise_sigma",
    "losses",
    "make_condition_map",
    "make_schedule",
    "plan",
    "sample",
    "sample_timesteps",
    "schedule_from_config",
    "share_timesteps",
    "singlestep_orders",
    "time_grid",
]
