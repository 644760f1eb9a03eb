"""The model card (README.md) of an exported diffusers folder: what the model is, its E-TSDM
settings, the training steps, the run's full config and the command that made the folder."""

from __future__ import annotations

from pathlib import Path

from ..config import dump_config
from .clipping import resolve_clip
from .diffusers_parts import (
    export_axis,
    export_scheduler,
    export_spacing,
    exports_pipeline,
    find_unet,
    has_ddpm_scheduler,
    lowres_channels,
    sr_sidecar,
)
from .generation import default_sampler
from .store import LoadedModel


def condition_summary(config: dict) -> str:
    """One line for a condition map's config (``ConditionMap.config()``)."""
    kind = config.get("kind", "identity")
    if kind == "etsdm":
        return (f"E-TSDM timestep sharing (Eq. 9): t̃ = {config['t_tilde']:g}, n = {config['n']} — every t in "
                f"[0, t̃) is fed to the network as the left end of its sub-interval; t >= t̃ unchanged")
    if kind == "remap":
        return f"remap (Appendix D.3.3): λ = {config['remap']}(t), |λ| <= K = {config['remap_k']:g}"
    return "identity (baseline: the network sees t)"


def model_card(model: LoadedModel, command: str) -> str:
    """The README.md text for an export of ``model``."""
    cond = model.denoiser.condition.config()
    _, unet_scale = export_axis(model, find_unet(model.denoiser.net)[1])
    applies = cond.get("kind", "identity") != "identity" or unet_scale != 1.0
    cls = "ETSDMUNet2DModel" if applies else "UNet2DModel"
    steps = "unknown" if model.step is None else str(model.step)
    pipe = exports_pipeline(model)
    lines = [
        "---", "library_name: diffusers", "tags:", "- etsdm",
        "- class-conditional" if model.num_classes else "- unconditional-image-generation",
        *(["- latent-diffusion"] if model.latents is not None else []),
        *(["- super-resolution"] if lowres_channels(model) else []),
        *(["- e-tsdm"] if cond.get("kind") == "etsdm" else []), "---", "",
        f"# {model.name}", "",
        "A diffusion model trained with etsdm (\"Lipschitz Singularities in Diffusion "
        "Models\", Yang et al., ICLR 2024).", "",
        "| | |", "|---|---|",
        f"| condition map | {condition_summary(cond)} |",
        f"| UNet class | `{cls}`" + (" (applies the condition map in its forward)" if applies else "") + " |",
        f"| schedule | {model.schedule!r} |",
        f"| prediction | {model.denoiser.prediction} |",
        f"| training steps | {steps} |",
        *_sr_row(model), "",
    ]
    if pipe:
        lines += _use_with_diffusers(model, applies)
    elif has_ddpm_scheduler(model):  # class labels, latents or a low-res input: the DDPMScheduler loop by hand
        lines += _use_components(model, cls)
    elif (scheduler := export_scheduler(model)) is not None:
        lines += _use_process_scheduler(model, type(scheduler).__name__)
    else:
        lines += ["`unet/` only: no diffusers scheduler samples this process and prediction type; sample it "
                  "with `etsdm sample <this folder>`.", ""]
    lines += ["## Command", "", "```", command, "```", ""]
    if model.config is not None:
        lines += ["Trained with `etsdm train config.yaml` on this config:", "", "```yaml",
                  dump_config(model.config).rstrip(), "```", ""]
    return "\n".join(lines)


def sampling_notes(model: LoadedModel) -> list[str]:
    """Which timesteps the exported pipelines walk and the ``etsdm sample`` line that gives the same
    samples (same generator seed), as bullet lines."""
    cfg = model.config
    spacing, clip, T = export_spacing(model), resolve_clip(model), model.schedule.T
    run_spacing = (cfg.sample.timestep_spacing if cfg is not None else None) or spacing
    cond = cfg.diffusion.condition if cfg is not None else None
    lam_grid = cond is not None and cond.kind == "remap" and cond.remap_grid == "lambda"
    clip_text = {"static": "`clip_sample` to [-1, 1]", "none": "none",
                 "dynamic": "`thresholding` (Saharia et al.'s dynamic thresholding, ratio 0.995)"}[clip]
    ddpm = ("--sampler diffusers:DDPMScheduler --nfe N" if lam_grid
            else f"--sampler ddpm --nfe N --timestep-spacing {spacing}")
    notes = [f"- The scheduler is a `DDPMScheduler` with the run's exact β table (T = {T}), "
             f"timestep_spacing `{spacing}`, `variance_type=\"fixed_large\"` and x̂0 clipping {clip_text}.",
             f"- `DDPMPipeline` walks its N timesteps, then the data: the same timesteps and samples as "
             f"`etsdm sample <this folder> {ddpm}`.",
             f"- `DDIMPipeline` evaluates at the scheduler's N timesteps but steps each t to t − T//N. That is "
             f"etsdm's DDIM grid for `leading` (and `trailing` when N divides {T}); for `linspace` it is not. "
             f"The same samples as the pipeline: `etsdm sample <this folder> --sampler diffusers:DDIMScheduler "
             f"--nfe N`" + ("." if lam_grid else
             "; etsdm's DDIM (`--sampler ddim --timestep-spacing leading`) equals `DDIMPipeline` with "
             "`DDIMScheduler.from_pretrained(\"<this folder>\", subfolder=\"scheduler\", "
             "timestep_spacing=\"leading\")`.")]
    if run_spacing != spacing:
        notes.append(f"- The run samples on the float `{run_spacing}` grid, which diffusers' schedulers cannot "
                     f"express; the pipelines use `{spacing}` (`--timestep-spacing {spacing}` above).")
    if lam_grid:
        notes.append("- `etsdm sample --sampler ddpm|ddim` on this remap run walks a λ-uniform grid (`remap_grid: "
                     "lambda`, Table A5), which a DDPMScheduler cannot express; the pipelines walk the integer grid "
                     "above, as the `diffusers:` samplers do.")
    return notes


def _use_with_diffusers(model: LoadedModel, applies: bool) -> list[str]:
    return ["## Use with diffusers", "", "```python",
            *(["import etsdm  # registers ETSDMUNet2DModel with diffusers"] if applies else []),
            "from diffusers import DDIMPipeline, DiffusionPipeline", "",
            'pipe = DiffusionPipeline.from_pretrained("<this folder>")  # a DDPMPipeline',
            "images = pipe(batch_size=4, num_inference_steps=50).images",
            'ddim = DDIMPipeline.from_pretrained("<this folder>")',
            "images = ddim(batch_size=4, num_inference_steps=50, use_clipped_model_output=True).images",
            "```", "", *sampling_notes(model),
            "- `use_clipped_model_output=True` makes diffusers' DDIM recompute ε̂ from the clipped x̂0, as ADM "
            "and etsdm do.", ""]


def _use_process_scheduler(model: LoadedModel, scheduler: str) -> list[str]:
    """How to sample an EDM / flow export with diffusers' own scheduler (no pipeline: diffusers has
    no unconditional EDM / flow-matching pipeline for a UNet2DModel)."""
    edm = model.schedule.kind == "edm"
    timestep = ("c_noise = ¼ ln σ (the scheduler's timesteps), fed c_noise · time scale and the shared σ"
                if edm else f"{model.schedule.T}·t (the scheduler's timesteps)")
    init = "scheduler.sigmas[0]" if edm else "1.0"
    return ["## Use with diffusers", "", f"The UNet takes timestep {timestep}; `scheduler/` is a `{scheduler}`. "
            "No pipeline class samples it; the loop is four lines:", "", "```python",
            "import etsdm  # registers ETSDMUNet2DModel", "import torch",
            f"from diffusers import {scheduler}", *_sr_import(model),
            "from etsdm.diffusers_model import ETSDMUNet2DModel", "",
            'unet = ETSDMUNet2DModel.from_pretrained("<this folder>", subfolder="unet")  # or UNet2DModel if plain',
            f'scheduler = {scheduler}.from_pretrained("<this folder>", subfolder="scheduler")',
            "scheduler.set_timesteps(50)",
            *_sr_lines(model),
            f"x = torch.randn({_batch(model)}, {model.shape[0] if model.shape else 'C'}, H, W) * {init}",
            "for t in scheduler.timesteps:",
            f"    out = unet({_unet_input(model, 'scheduler.scale_model_input(x, t)')}, t).sample",
            "    x = scheduler.step(out, t, x).prev_sample", "```", "",
            "- This is Euler on the run's grid: `etsdm sample <this folder> --sampler euler --nfe 50 --clip none"
            + (" --timestep-spacing karras`" if edm else " --timestep-spacing time-uniform`")
            + " gives the same samples from the same initial noise"
            + (" (start from σ_max·noise: diffusers' `init_noise_sigma` is sqrt(σ_max² + 1))." if edm else "."),
            f"- The run's own sampler (`etsdm sample <this folder>`): {_run_sampler(model)}.", ""]


def _use_components(model: LoadedModel, cls: str) -> list[str]:
    """How to sample a class-conditional, latent or super-resolution export with diffusers' components
    (``unet/``, ``scheduler/``, ``vae/``): no diffusers pipeline passes class labels or a low-resolution
    input to a UNet2DModel or decodes a DDPM's latents."""
    k, latent = model.num_classes, model.latents is not None
    guidance = model.config.sample.guidance if model.config is not None else 1.0
    shape = model.shape or ("C", "H", "W")
    x_in = _unet_input(model, "x")
    call = f"unet({x_in}, t, class_labels=y).sample" if k else f"unet({x_in}, t).sample"
    lines = ["## Use with diffusers", ""]
    if k:
        lines += [f"Class-conditional: `class_labels` in 0..{k - 1}; index {k} is the null label (classifier-free "
                  f"guidance's unconditional input). The run samples at guidance scale {guidance:g}: "
                  "out = out_u + s·(out_c − out_u).", ""]
    if latent:
        lines += [f"Latent diffusion: the UNet samples scaled latents {tuple(shape)}; `vae/` (an AutoencoderKL, "
                  f"scaling factor {model.latents.scaling_factor:.6g}) decodes them: images = vae.decode(x / "
                  "scaling_factor).sample.", ""]
    own = cls == "ETSDMUNet2DModel"
    lines += ["```python", *(["import etsdm  # registers ETSDMUNet2DModel"] if own else []), "import torch",
              f"from diffusers import {'AutoencoderKL, ' if latent else ''}DDPMScheduler"
              + ("" if own else ", UNet2DModel"),
              *_sr_import(model), *(["from etsdm.diffusers_model import ETSDMUNet2DModel"] if own else []), "",
              f'unet = {cls}.from_pretrained("<this folder>", subfolder="unet")',
              'scheduler = DDPMScheduler.from_pretrained("<this folder>", subfolder="scheduler")',
              "scheduler.set_timesteps(50)", *_sr_lines(model),
              f"x = torch.randn({_batch(model)}, {', '.join(map(str, shape))})",
              *([f"y = torch.arange({_batch(model)}) % {k}"] if k else []),
              "for t in scheduler.timesteps:", f"    out = {call}",
              "    x = scheduler.step(out, t, x).prev_sample"]
    if latent:
        lines += ['vae = AutoencoderKL.from_pretrained("<this folder>", subfolder="vae")',
                  "images = vae.decode(x / vae.config.scaling_factor).sample.clamp(-1, 1)"]
    lines += ["```", ""]
    if lowres_channels(model):
        lines += ["- After `torch.manual_seed(S)` these are the samples of `etsdm sample <this folder> --lowres LOWRES "
                  "--sampler diffusers:DDPMScheduler --nfe 50 --seed S` (LOWRES: an .npz or a folder of PNGs; "
                  "etsdm clamps its outputs to [-1, 1])."]
    lines += [f"- The run's own sampler (`etsdm sample <this folder>`): {_run_sampler(model)}"
              + (f", guidance {guidance:g}" if k else "") + (", decoded" if latent else "") + ".", ""]
    return lines


def _sr_row(model: LoadedModel) -> list[str]:
    """The model card's table row of a super-resolution run (none for other runs)."""
    sr = sr_sidecar(model)
    if not sr:
        return []
    c = sr["cond_channels"]
    return [f"| super-resolution | ×{sr['sr_factor']}: the UNet's input is x and the low-resolution input upsampled "
            f"({sr['lowres_upsample']}) to full size, concatenated on the channels: in_channels = {c} + {c} |"]


def _sr_import(model: LoadedModel) -> list[str]:
    return ["from etsdm.data.transforms import upsample"] if lowres_channels(model) else []


def _sr_lines(model: LoadedModel) -> list[str]:
    """The loop's preamble for a super-resolution run: the low-resolution input brought to full size
    as etsdm.nets.unet.UNet does in training (none for other runs)."""
    sr = sr_sidecar(model)
    if not sr:
        return []
    _, h, w = model.shape or ("C", "H", "W")
    lo = f"{h // sr['sr_factor']}, {w // sr['sr_factor']}" if isinstance(h, int) else "h, w"
    return [f"# lowres: (B, {sr['cond_channels']}, {lo}) low-resolution images in [-1, 1], B = the batch",
            f'up = upsample(lowres, ({h}, {w}), "{sr["lowres_upsample"]}")  # bicubic overshoot clamped to [-1, 1]']


def _batch(model: LoadedModel) -> str:
    return "len(lowres)" if lowres_channels(model) else "4"


def _unet_input(model: LoadedModel, x: str) -> str:
    """The UNet's input in the card's loop: x, and for super-resolution x with the upsampled low-res input."""
    return f"torch.cat([{x}, up], 1)" if lowres_channels(model) else x


def _run_sampler(model: LoadedModel) -> str:
    sampler, nfe = default_sampler(model)
    return f"{sampler}, {nfe} NFE"


def write_model_card(folder: Path, model: LoadedModel, command: str) -> Path:
    """Write ``folder/README.md``."""
    path = Path(folder) / "README.md"
    path.write_text(model_card(model, command))
    return path
