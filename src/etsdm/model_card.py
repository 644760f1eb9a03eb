"""The model card (README.md) of an exported diffusers folder: what the model is, its E-TSDM
settings, the training steps, the run's full config and the command that made the folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runs import LoadedModel


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
    from .config import dump_config

    cond = model.denoiser.condition.config()
    applies = cond.get("kind", "identity") != "identity"
    cls = "ETSDMUNet2DModel" if applies else "UNet2DModel"
    steps = "unknown" if model.step is None else str(model.step)
    pipe = model.schedule.continuous is False
    lines = [
        "---", "library_name: diffusers", "tags:", "- etsdm", "- unconditional-image-generation",
        *(["- e-tsdm"] if cond.get("kind") == "etsdm" else []), "---", "",
        f"# {model.name}", "",
        "A diffusion model trained with etsdm (\"Lipschitz Singularities in Diffusion "
        "Models\", Yang et al., ICLR 2024).", "",
        "| | |", "|---|---|",
        f"| condition map | {condition_summary(cond)} |",
        f"| UNet class | `{cls}`" + (" (applies the condition map in its forward)" if applies else "") + " |",
        f"| schedule | {model.schedule!r} |",
        f"| prediction | {model.denoiser.prediction} |",
        f"| training steps | {steps} |", "",
    ]
    if pipe:
        lines += _use_with_diffusers(model, applies)
    else:
        lines += ["Continuous-time model: `unet/` only (diffusers' schedulers are discrete); sample it with "
                  "`etsdm sample <this folder>`.", ""]
    lines += ["## Command", "", "```", command, "```", ""]
    if model.config is not None:
        lines += ["Trained with `etsdm train config.yaml` on this config:", "", "```yaml",
                  dump_config(model.config).rstrip(), "```", ""]
    return "\n".join(lines)


def sampling_notes(model: LoadedModel) -> list[str]:
    """Which timesteps the exported pipelines walk and the ``etsdm sample`` line that gives the same
    samples (same generator seed), as bullet lines."""
    from .runs import export_spacing, resolve_clip

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


def write_model_card(folder: Path, model: LoadedModel, command: str) -> Path:
    """Write ``folder/README.md``."""
    path = Path(folder) / "README.md"
    path.write_text(model_card(model, command))
    return path
