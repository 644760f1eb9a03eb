"""Any diffusers scheduler as an etsdm sampler: ``--sampler diffusers:<SchedulerClass>``.

For solvers etsdm does not implement (UniPC, Euler, Heun, DPM++ SDE, ...). The scheduler is built
from the run's exact discrete schedule (the β table, prediction type, x̂0 clipping -- dynamic as
diffusers' ``thresholding`` -- and integer timestep spacing that ``etsdm export`` writes,
:func:`etsdm.runs.diffusers_parts._export_scheduler`) with
``SchedulerClass.from_config``, and driven by diffusers' own loop::

    x = noise · init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(net_output(scheduler.scale_model_input(x, t), t), t, x).prev_sample

where ``net_output`` is the run's Denoiser: the network sees the condition f(t) (E-TSDM's shared
timestep), exactly as in etsdm's own samplers. ``nfe`` is passed as ``num_inference_steps``;
schedulers that evaluate the network twice per step (Heun, DPM2, DPM++ SDE) spend up to 2·nfe
evaluations (:func:`describe` reports the count). DDIM's step is called with
``use_clipped_model_output=True`` so that, as in etsdm (and ADM), ε̂ is recomputed from the
clipped x̂0. EDM and flow runs build the scheduler from their process's own scheduler config
(:func:`etsdm.runs.export_scheduler`: EDMEulerScheduler's σ range, σ_data and ρ = 7 grid;
FlowMatchEulerDiscreteScheduler's T), e.g. ``diffusers:EDMDPMSolverMultistepScheduler``; their
loop feeds the Denoiser the physical time (EDM: the scheduler's σ, whose c_in and c_noise the
Denoiser applies itself; flow: timestep / T). Continuous VP runs have no diffusers scheduler and
are refused.

Conditional runs (issue 10): ``cond`` (the network's keyword inputs: class labels, the
low-resolution image of a super-resolution run; one row per sample) reaches every network
evaluation, ``net_output(x, t, **cond)``, exactly as in etsdm's samplers; guidance is the
Denoiser's net (:func:`etsdm.guidance.guided`).
"""

from __future__ import annotations

import inspect
from typing import Any

import diffusers
import torch
from diffusers import SchedulerMixin
from torch import Tensor
from tqdm.auto import tqdm

from ..denoiser import Cond, check_cond, cond_rows
from ..samplers import INTEGER_SPACINGS
from .clipping import clip_config, resolve_clip
from .diffusers_parts import _export_scheduler, export_scheduler
from .store import LoadedModel

PREFIX = "diffusers:"
EXAMPLES = ("DDIMScheduler", "UniPCMultistepScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
            "HeunDiscreteScheduler", "DPMSolverMultistepScheduler", "DPMSolverSDEScheduler")


def is_diffusers_sampler(name: str) -> bool:
    return name.startswith(PREFIX)


def scheduler_class(name: str) -> type:
    """The diffusers scheduler class named by ``diffusers:<Class>`` (or ``<Class>``).

    Raises:
        ValueError: no such scheduler class in diffusers, or its optional dependency is missing.
    """
    cls_name = name[len(PREFIX):] if is_diffusers_sampler(name) else name
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, SchedulerMixin):
        raise ValueError(f"--sampler {name!r}: diffusers has no scheduler class {cls_name!r}; e.g. "
                         + ", ".join(PREFIX + e for e in EXAMPLES))
    try:
        cls()  # a dummy class (missing optional dependency) raises ImportError here
    except ImportError as err:
        raise ValueError(f"--sampler {name!r}: {' '.join(str(err).split())}") from None
    except Exception:  # noqa: BLE001 - a scheduler needing arguments is fine; from_config supplies them
        pass
    return cls


def build_scheduler(model: LoadedModel, name: str, *, timestep_spacing: str | None = None,
                    clip: str | None = None) -> Any:
    """The scheduler ``name`` on the run's discrete schedule (see the module doc)."""
    if model.schedule.continuous:
        process = export_scheduler(model)
        if process is None:
            raise ValueError(f"--sampler {name}: diffusers has no scheduler for this continuous-time run "
                             f"({model.schedule.name}, prediction {model.denoiser.prediction}); use etsdm's samplers")
        return scheduler_class(name).from_config(dict(process.config))
    base = dict(_export_scheduler(model).config)
    if timestep_spacing is not None:
        if timestep_spacing not in INTEGER_SPACINGS:
            raise ValueError(f"--sampler {name}: timestep spacing {timestep_spacing!r} is not one of diffusers' "
                             f"({', '.join(INTEGER_SPACINGS)})")
        base["timestep_spacing"] = timestep_spacing
    if clip is not None:
        base |= clip_config(resolve_clip(model, clip))
    scheduler = scheduler_class(name).from_config(base)
    if base["thresholding"] and not scheduler.config.get("thresholding"):
        raise ValueError(f"--sampler {name}: this scheduler has no dynamic thresholding; use clip static or none")
    return scheduler


def _step_kwargs(scheduler: Any, generator: torch.Generator | None, eta: float) -> dict[str, Any]:
    params = inspect.signature(scheduler.step).parameters
    out: dict[str, Any] = {}
    if "generator" in params:
        out["generator"] = generator
    if "use_clipped_model_output" in params:
        out["use_clipped_model_output"] = True
    if "eta" in params:
        out["eta"] = eta
    return out


@torch.no_grad()
def sample_diffusers(model: LoadedModel, noise: Tensor, name: str, nfe: int, *,
                     generator: torch.Generator | None = None, timestep_spacing: str | None = None,
                     clip: str | None = None, eta: float = 0.0, progress: bool = False,
                     cond: Cond | None = None) -> Tensor:
    """Samples from ``noise`` with the diffusers scheduler ``name`` (module doc); ``cond``: the
    network's keyword inputs, one row per row of ``noise``, handed to every evaluation."""
    cond = check_cond(cond, noise.shape[0], "sample_diffusers")

    scheduler = build_scheduler(model, name, timestep_spacing=timestep_spacing, clip=clip)
    scheduler.set_timesteps(nfe, device=noise.device)
    den = model.denoiser
    x = noise * getattr(scheduler, "init_noise_sigma", 1.0)  # flow-matching schedulers have none: 1
    kwargs = _step_kwargs(scheduler, generator, eta)
    kind = model.schedule.kind
    for i, t in enumerate(tqdm(scheduler.timesteps, disable=not progress, desc=name, leave=False)):
        if kind == "vp":
            out = den.net_output(scheduler.scale_model_input(x, t), float(t), **cond)  # the net sees f(t)
        else:  # the physical time; the Denoiser applies EDM's c_in, c_noise (and f) itself
            if hasattr(scheduler, "scale_model_input"):
                scheduler.scale_model_input(x, t)  # unused (c_in is the Denoiser's); EDM schedulers expect the call
            phys = float(scheduler.sigmas[i]) if kind == "edm" else float(t) / model.schedule.T
            out = den.net_output(x, phys, **cond)
        x = scheduler.step(out.to(x.dtype), t, x, **kwargs).prev_sample
    return x


def generate_diffusers(model: LoadedModel, num: int, name: str, nfe: int, *, generator: torch.Generator,
                       batch: int = 256, progress: bool = False, cond: Cond | None = None,
                       **options: Any) -> Tensor:
    """``num`` samples in batches, the initial noise of each batch drawn from ``generator`` as
    :func:`etsdm.runs.generate` draws it (float32, on CPU). ``cond``: the network's keyword inputs
    for all ``num`` samples (``num`` rows; each batch gets its rows, on the generator's device).
    Options: timestep_spacing, clip, eta (others, e.g. etsdm's DPM-Solver options, do not apply and
    are ignored)."""
    assert model.shape is not None
    cond = check_cond(cond, num, "generate_diffusers")
    opts = {k: options.get(k) for k in ("timestep_spacing", "clip")}
    out = []
    for i in range(0, num, batch):
        k = min(batch, num - i)
        noise = torch.randn((k, *model.shape), generator=generator, device=generator.device)
        rows = {key: value.to(noise.device) for key, value in cond_rows(cond, slice(i, i + k)).items()}
        x = sample_diffusers(model, noise, name, nfe, generator=generator, eta=options.get("eta") or 0.0,
                             progress=progress, cond=rows, **opts)
        out.append(x.float().cpu())
    return torch.cat(out)


def describe(model: LoadedModel, name: str, nfe: int, *, timestep_spacing: str | None = None,
             clip: str | None = None) -> dict[str, Any]:
    """What :func:`sample_diffusers` runs: the class, its timesteps (network evaluations) and settings."""
    scheduler = build_scheduler(model, name, timestep_spacing=timestep_spacing, clip=clip)
    scheduler.set_timesteps(nfe)
    ts = [round(float(t), 4) for t in scheduler.timesteps]
    cfg = scheduler.config
    clip = "dynamic" if cfg.get("thresholding") else "static" if cfg.get("clip_sample") else "none"
    return {"sampler": name, "num_inference_steps": nfe, "network_evaluations": len(ts),
            "timestep_spacing": cfg.get("timestep_spacing"), "clip": clip,
            "prediction_type": cfg.get("prediction_type"), "timesteps": ts}
