"""How a run maps onto diffusers' objects: the UNet inside its net, the timestep axis an exported
UNet sees, and the scheduler an export ships (used by the export, the model card and
``--sampler diffusers:...``)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DDPMScheduler, EDMEulerScheduler, FlowMatchEulerDiscreteScheduler, UNet2DModel
from torch import nn

from ..conditioning import ConditionMap, TimestepSharing
from ..data import DEFAULT_SR_FACTOR
from ..samplers import INTEGER_SPACINGS, default_spacing
from ..schedules import Schedule
from .clipping import clip_config, resolve_clip
from .store import PRED_TO_DIFFUSERS, LoadedModel


def find_unet(net: nn.Module) -> tuple[nn.Module, float]:
    """The diffusers UNet2DModel inside an etsdm net, and the net's time scale."""
    for m in net.modules():
        if isinstance(m, UNet2DModel):
            return m, float(getattr(net, "time_scale", 1.0) or 1.0)
    raise ValueError(f"{type(net).__name__} holds no diffusers UNet2DModel: only UNet runs can be exported")


def has_ddpm_scheduler(model: LoadedModel) -> bool:
    """A discrete run whose prediction a DDPMScheduler takes (eps, v, x0; not EDM's F on a VP schedule)."""
    return not model.schedule.continuous and model.denoiser.prediction in PRED_TO_DIFFUSERS


def exports_pipeline(model: LoadedModel) -> bool:
    """Whether an export is a ``DDPMPipeline`` folder: a discrete run with a DDPMScheduler
    (:func:`has_ddpm_scheduler`) that is unconditional and on the data itself (DDPMPipeline calls
    the UNet without class labels or a low-resolution input and returns what it samples, undecoded)."""
    return has_ddpm_scheduler(model) and not model.num_classes and model.latents is None and not lowres_channels(model)


def lowres_channels(model: LoadedModel) -> int:
    """Channels C of a super-resolution run's low-resolution input (its UNet takes x and the
    upsampled input concatenated, in_channels = C + C); 0 for any other run."""
    return int(getattr(model.denoiser.net, "cond_channels", 0) or 0)


def sr_sidecar(model: LoadedModel) -> dict[str, Any]:
    """What an export's ``etsdm.json`` records of a super-resolution run (empty for any other):
    ``cond_channels`` (the low-resolution input's channels), ``lowres_upsample`` (how the input is
    brought to full size before the concatenation: ``etsdm.data.transforms.upsample``'s mode, as
    ``etsdm.nets.unet.UNet`` applies it) and ``sr_factor`` (full size / low-resolution size)."""
    channels = lowres_channels(model)
    if not channels:
        return {}
    factor = model.config.data.sr_factor if model.config is not None else None
    return {"cond_channels": channels, "lowres_upsample": model.denoiser.net.lowres_upsample,
            "sr_factor": factor or DEFAULT_SR_FACTOR}


def _export_scheduler(model: LoadedModel) -> Any:
    """The run's discrete schedule as a DDPMScheduler that samples as ``etsdm sample`` does.

    Raises:
        ValueError: the run's prediction has no diffusers ``prediction_type`` (EDM's F on VP)."""
    sched = model.schedule
    if not has_ddpm_scheduler(model):
        raise ValueError(f"prediction {model.denoiser.prediction!r} on the discrete {sched.name} schedule: diffusers' "
                         "discrete schedulers take epsilon, v_prediction or sample outputs; sample it with etsdm")
    return DDPMScheduler(num_train_timesteps=sched.T, trained_betas=sched.betas().tolist(),
                         variance_type="fixed_large", timestep_spacing=export_spacing(model),
                         prediction_type=PRED_TO_DIFFUSERS[model.denoiser.prediction],
                         **clip_config(resolve_clip(model)))


def export_spacing(model: LoadedModel) -> str:
    """The integer ``timestep_spacing`` an export's scheduler gets: the run's ``sample.timestep_spacing``,
    else etsdm's default (``linspace``); a float grid (fractional, logSNR, ...) has no diffusers
    equivalent and falls back to ``linspace`` (the model card says so)."""
    spacing = model.config.sample.timestep_spacing if model.config is not None else None
    spacing = spacing or default_spacing(model.schedule)
    return spacing if spacing in INTEGER_SPACINGS else "linspace"


def axis_factor(schedule: Schedule) -> float:
    """a in the exported UNet's timestep τ = a·net_time(t): T for flow (diffusers' flow-matching
    schedulers pass T·t), 1 otherwise (VP: τ = t; EDM: τ = c_noise = ¼ ln σ, as diffusers' EDM
    schedulers pass it)."""
    return float(schedule.T) if schedule.kind == "flow" else 1.0


def export_axis(model: LoadedModel, time_scale: float) -> tuple[ConditionMap, float]:
    """The condition map and time scale an exported UNet applies to its own timestep argument τ.

    VP: τ = t, the run's map and time scale (as before). EDM / flow: τ = a·net_time(t)
    (:func:`axis_factor`); E-TSDM's f(t) is a step function and net_time is increasing, so
    a·net_time(f(t)) is the sharing map on τ with boundaries a·net_time(t_i) — what the exported
    ETSDMUNet2DModel applies; its time scale is the net's divided by a (flow: 1000/1000 = 1, so a
    flow baseline exports a plain UNet2DModel)."""
    sched, cond = model.schedule, model.denoiser.condition
    if sched.kind == "vp":
        return cond, time_scale
    a = axis_factor(sched)
    if isinstance(cond, TimestepSharing):
        tau = (a * sched.net_time(torch.tensor(cond.boundaries, dtype=torch.float64))).tolist()
        cond = TimestepSharing(boundaries=tau, space=f"{sched.kind}-axis")
    return cond, time_scale / a


def export_scheduler(model: LoadedModel) -> Any:
    """The diffusers scheduler an EDM or flow export ships (None where there is none):

    * EDM with ``prediction: edm``: ``EDMEulerScheduler`` (σ_min, σ_max, σ_data, Karras et al.'s
      ρ = 7 grid, ``prediction_type="epsilon"``: its preconditioning is EDM's F, the same c_skip,
      c_out, c_in and c_noise as etsdm's); the deterministic Euler of EDM Alg. 1 without the Heun
      correction (diffusers has no EDM Heun scheduler) — ``etsdm sample --sampler euler`` on the
      same grid;
    * flow with ``prediction: flow``: ``FlowMatchEulerDiscreteScheduler`` (T, shift 1): Euler on
      t uniform from 1 to 1/T, the velocity ε - x0 — ``etsdm sample --sampler euler``;
    * any other prediction on these processes, and continuous VP: none (``unet/`` and the
      sidecar only; sample with ``etsdm sample``)."""
    sched, pred = model.schedule, model.denoiser.prediction
    if sched.kind == "edm" and pred == "edm":
        return EDMEulerScheduler(sigma_min=sched.t_min, sigma_max=sched.t_max, sigma_data=model.denoiser.sigma_data,
                                 sigma_schedule="karras", rho=7.0, prediction_type="epsilon",
                                 num_train_timesteps=sched.T, final_sigmas_type="zero")
    if sched.kind == "flow" and pred == "flow":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=sched.T, shift=1.0)
    return None
