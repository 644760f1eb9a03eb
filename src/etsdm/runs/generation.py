"""Sampling a loaded model: the run's sampler defaults and conventions, and :func:`generate`."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from ..conditioning import remap_lambda_plan
from ..config import SampleConfig
from ..denoiser import Cond, Denoiser, check_cond, cond_rows
from ..guidance import guided
from ..samplers import describe, init_noise_sigma, sample
from .clipping import auto_clip
from .diffusers_sampler import describe as describe_diffusers
from .diffusers_sampler import generate_diffusers, is_diffusers_sampler
from .store import LoadedModel

SAMPLE_CONVENTIONS = ("timestep_spacing", "denoise_to_zero", "order_plan", "clip")
CLI_SAMPLER, CLI_NFE = "ddim", 50  # `etsdm sample` without --sampler / --nfe on VP runs (unchanged since 0.1)


def default_sampler(model: LoadedModel) -> tuple[str, int]:
    """(sampler, NFE) of ``etsdm sample`` without ``--sampler``: an EDM or flow run's own
    ``sample.sampler`` / ``sample.nfe`` (its config says how it is sampled; the shipped configs:
    Heun 35 NFE = 18 steps on Karras et al.'s grid for EDM, Euler 50 NFE time-uniform for flow);
    DDIM-50 for VP runs, whose ``sample:`` section is the paper's DDPM-1000 preview, and for
    models without a config. The grid then comes from ``sample.timestep_spacing`` as for any run
    (:func:`sample_settings`)."""
    if model.config is not None and model.schedule.kind != "vp":
        return model.config.sample.sampler, model.config.sample.nfe
    return CLI_SAMPLER, CLI_NFE


def sample_settings(model: LoadedModel, sampler: str, nfe: int, **options: Any) -> dict[str, Any]:
    """Sampler keyword arguments for ``model``: the given ones, else the run's ``sample:`` config
    (timestep_spacing, denoise_to_zero, order_plan, clip), else SampleConfig's defaults; clip
    ``auto`` resolved by :func:`auto_clip`. ``spacing`` (older name) counts as timestep_spacing.
    A remap run with ``diffusion.condition.remap_grid: lambda`` gets the λ-uniform grid
    (:func:`~etsdm.conditioning.remap_lambda_plan`) as ``timesteps`` / ``orders`` unless given."""
    out = dict(options)
    cond_cfg = model.config.diffusion.condition if model.config is not None else None
    if cond_cfg is not None and cond_cfg.remap_grid == "lambda" and "timesteps" not in out:
        ignored = {k: out[k] for k in ("timestep_spacing", "spacing") if out.get(k) is not None}
        if ignored or out.get("denoise_to_zero") is False:  # the λ plan sets its grid and ends in the data
            raise ValueError(f"{ignored or {'denoise_to_zero': False}}: a remap run with remap_grid: lambda walks the "
                             "λ-uniform grid (its own steps, a last step into the data); leave these unset")
        ts, orders = remap_lambda_plan(model.denoiser.condition, model.schedule, sampler, nfe)  # Table A5: λ ~ U_λ
        out |= {"timesteps": ts, "orders": orders}
    if out.get("timestep_spacing") is None and out.get("spacing") is not None:
        out["timestep_spacing"] = out.pop("spacing")
    out.pop("spacing", None)
    cfg = model.config.sample if model.config is not None else SampleConfig()
    for key in SAMPLE_CONVENTIONS:
        if out.get(key) is None:
            out[key] = getattr(cfg, key)
    if out["clip"] == "auto":
        out["clip"] = auto_clip(model)
    return out


def describe_sampling(model: LoadedModel, sampler: str, nfe: int, **options: Any) -> dict[str, Any]:
    """What :func:`generate` with these arguments walks, for result tables and sample files: grid
    convention, NFE plan and orders, final-step option, clipping (``etsdm.samplers.describe``)."""
    if is_diffusers_sampler(sampler):  # any diffusers scheduler (etsdm.runs.diffusers_sampler)
        return describe_diffusers(model, sampler, nfe, timestep_spacing=options.get("timestep_spacing"),
                                  clip=options.get("clip"))
    settings = sample_settings(model, sampler, nfe, **options)
    if "timesteps" in settings:  # an explicit (e.g. remap λ-grid) plan: recorded as walked
        orders = list(settings.get("orders") or [1] * (len(settings["timesteps"]) - 1))
        ignored = ("timestep_spacing", "denoise_to_zero", "order_plan", "orders")  # sample() ignores them here
        grid = "remap λ-uniform" if "timesteps" not in options else "explicit"
        return {"sampler": sampler, "nfe": sum(orders) if sampler != "dpm-solver++2m" else len(orders),
                "nfe_requested": nfe, "grid": grid, **{k: v for k, v in settings.items() if k not in ignored},
                "orders": orders}
    return describe(model.schedule, sampler, nfe, **settings)


def sampling_cond(model: LoadedModel, num: int, cond: Cond | None = None) -> dict[str, Tensor]:
    """The network inputs of ``num`` samples of ``model``: ``cond`` (``num`` rows per value), and for a
    class-conditional run without ``cond["labels"]`` the labels arange(num) % num_classes (every
    class in turn).

    Raises:
        ValueError: rows that do not match ``num``; labels for an unconditional run; a
            super-resolution run without ``cond["lowres"]``.
    """
    cond = check_cond(cond, num, "generate")
    if model.num_classes and "labels" not in cond:
        cond["labels"] = torch.arange(num) % model.num_classes
    if "labels" in cond and not model.num_classes:
        raise ValueError(f"{model.name}: cond['labels'] given, but the run is not class-conditional "
                         "(model.num_classes is 0); leave labels out")
    if model.data_name == "sr" and "lowres" not in cond:
        raise ValueError(f"{model.name}: a super-resolution run samples from low-resolution inputs: "
                         "cond={'lowres': (num, C, h, w) images in [-1, 1]}")
    return cond


def sampling_denoiser(model: LoadedModel, guidance: float | None = None) -> Denoiser:
    """The Denoiser :func:`generate` samples: ``model.denoiser``, wrapped with classifier-free
    guidance (:func:`etsdm.guidance.guided`) when the scale — ``guidance``, else the run's
    ``sample.guidance`` — is not 1.

    Raises:
        ValueError: a guidance scale other than 1 on a run that is not class-conditional.
    """
    if guidance is None:
        guidance = model.config.sample.guidance if model.config is not None and model.num_classes else 1.0
    if guidance == 1.0:
        return model.denoiser
    if not model.num_classes:
        raise ValueError(f"{model.name}: guidance {guidance:g} needs a class-conditional run; this one takes 1")
    return guided(model.denoiser, guidance)


@torch.no_grad()
def generate(
    model: LoadedModel, num: int, *, sampler: str = "ddim", nfe: int = 50, seed: int = 0, batch: int = 256,
    device: str | torch.device = "cpu", cond: Cond | None = None, guidance: float | None = None,
    decode: bool = True, progress: bool = False, **sampler_kwargs: Any,
) -> Tensor:
    """``num`` samples from a loaded model (float32, on CPU); reproducible from ``seed``.

    Sampler conventions not given (timestep_spacing, denoise_to_zero, order_plan, clip) come from
    the run's ``sample:`` config, else the defaults, and a remap run with ``remap_grid: lambda``
    walks the λ-uniform grid unless ``timesteps`` are given (:func:`sample_settings`).

    Args:
        cond: the network's inputs, ``num`` rows each (:func:`sampling_cond`): ``labels`` for a
            class-conditional run (default: every class in turn), ``lowres`` (num, C, h, w) for a
            super-resolution run (required).
        guidance: classifier-free guidance scale s (None: the run's ``sample.guidance``; 1 = the
            conditional model, one network call per step).
        decode: a latent run (``model.latents``): decode the samples to images in the data range
            (default) or return the latents themselves (e.g. for analysis in latent space).
    """
    shape = model.shape
    if shape is None:
        raise ValueError(f"{model.name}: sample shape unknown")
    cond = sampling_cond(model, num, cond)
    den = sampling_denoiser(model, guidance)
    g = torch.Generator(device=device).manual_seed(seed)
    if is_diffusers_sampler(sampler):  # any diffusers scheduler, the condition map applied by the Denoiser
        guided_model = model if den is model.denoiser else dataclasses.replace(model, denoiser=den)
        x = generate_diffusers(guided_model, num, sampler, nfe, generator=g, batch=batch, progress=progress,
                               cond=cond or None, **sampler_kwargs)
        return decoded(model, x, decode)
    sampler_kwargs = sample_settings(model, sampler, nfe, **sampler_kwargs)
    ts = sampler_kwargs.get("timesteps")
    scale = init_noise_sigma(model.schedule, ts[0] if ts else None)
    out = []
    for i in range(0, num, batch):
        k = min(batch, num - i)
        noise = torch.randn((k, *shape), generator=g, device=device)
        if scale != 1.0:  # x at t_max: σ_max·z for EDM (VP and flow: z itself)
            noise = noise * scale
        rows = {key: v.to(device) for key, v in cond_rows(cond, slice(i, i + k)).items()}
        x = sample(den, noise, model.schedule, sampler, nfe, generator=g, progress=progress, cond=rows or None,
                   **sampler_kwargs)
        out.append(x.float().cpu())
    return decoded(model, torch.cat(out), decode)


def decoded(model: LoadedModel, x: Tensor, decode: bool = True) -> Tensor:
    """Samples of a latent run decoded to images (float32, CPU); other runs' samples unchanged."""
    if model.latents is None or not decode:
        return x
    return model.latents.decode(x.to(model.latents.device)).float().cpu()
