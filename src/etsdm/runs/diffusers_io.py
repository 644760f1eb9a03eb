"""Export to and import from diffusers folders.

:func:`export_diffusers` writes a run as a diffusers pipeline folder (a ``DDPMPipeline``: the UNet
— an :class:`~etsdm.diffusers_unet.ETSDMUNet2DModel` that applies the condition map itself unless
the map is the identity — a ``DDPMScheduler`` with the run's exact β table, ``etsdm.json`` and a
model card); :func:`import_diffusers` does the reverse.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from diffusers import DDPMPipeline
from torch import nn

from ..conditioning import Identity, make_condition_map
from ..config import to_dict
from ..diffusers_unet import ETSDMUNet2DModel
from ..folders import publish_folder, staged_folder
from ..schedules import schedule_from_config
from .diffusers_parts import (
    _export_scheduler,
    export_axis,
    export_scheduler,
    exports_pipeline,
    find_unet,
    has_ddpm_scheduler,
    sr_sidecar,
)
from .model_card import write_model_card
from .store import (
    SIDECAR,
    VAE_DIR,
    LoadedModel,
    diffusers_unet_dir,
    load_model,
    read_sidecar,
    schedule_from_diffusers,
    scheduler_config,
)


def export_diffusers(spec: str | Path, out_dir: str | Path, *, ema: bool = True, overwrite: bool = False,
                     command: str | None = None) -> Path:
    """Write a run as a diffusers pipeline folder: ``model_index.json`` (a ``DDPMPipeline``),
    ``unet/``, ``scheduler/``, the ``etsdm.json`` sidecar and a model card ``README.md``.

    An existing non-empty ``out_dir`` is an error unless ``overwrite`` and it is an earlier export
    (it has an etsdm.json); then it is replaced whole (no stray files of the old export remain).
    The new folder is written beside it and moved into place, with ordinary file modes (0644); the
    old one is removed only after that (temporaries left by a killed export are cleaned up).

    The UNet: a run with a condition map (E-TSDM, remap) is an
    :class:`~etsdm.diffusers_unet.ETSDMUNet2DModel`, which applies the map in its forward, so
    ``DiffusionPipeline.from_pretrained(out_dir)`` (after ``import etsdm``) samples it correctly;
    a baseline run stays a plain ``UNet2DModel``. The scheduler (discrete schedules) is a
    DDPMScheduler with the run's exact β table (``trained_betas``), prediction type,
    ``variance_type="fixed_large"`` (Eq. 10's η_t² = β_t, etsdm's ddpm default), x̂0 clipping as
    ``etsdm sample`` does by default (dynamic as diffusers' ``thresholding``) and the run's integer
    ``timestep_spacing`` (:func:`export_spacing`; default ``linspace``, as ``etsdm sample``), so
    DDPMPipeline walks ``etsdm sample --sampler ddpm``'s timesteps; the model card says what
    DDIMPipeline walks (:func:`etsdm.model_card.sampling_notes`); continuous-time runs get none
    (diffusers' schedulers are discrete) and their exact schedule lives in the sidecar. ``command``
    goes into the model card (default: the equivalent ``etsdm export`` line).
    """
    out = Path(out_dir)
    _check_export_target(out, overwrite)
    model = load_model(spec, ema=ema)
    if model.config is None:
        raise ValueError(f"{spec}: not an etsdm run")
    unet, time_scale = find_unet(model.denoiser.net)
    with staged_folder(out) as tmp:  # temporaries of an export killed earlier are removed first
        _save_pipeline(tmp, model, unet, time_scale)
        _write_sidecar(tmp, model, time_scale)
        write_model_card(tmp, model, command or f"etsdm export {spec} {out}")
        _ordinary_modes(tmp)  # safetensors creates 0600
        publish_folder(tmp, out, replace=True)  # the old export goes only once the new one is in place
    return out


def _save_pipeline(folder: Path, model: LoadedModel, unet: nn.Module, time_scale: float) -> None:
    """``DDPMPipeline(unet, scheduler).save_pretrained``; an ETSDMUNet2DModel unless the map is the
    identity (and the time scale 1); no pipeline for continuous time: ``unet/``, and for EDM / flow
    runs the diffusers scheduler of their process in ``scheduler/`` (:func:`export_scheduler`); a
    class-conditional or latent run gets ``unet/`` and ``scheduler/`` without a pipeline
    (:func:`exports_pipeline`), a latent run its autoencoder in ``vae/`` too. A super-resolution
    run likewise: its UNet (in_channels = C + cond_channels, as trained) takes x and the upsampled
    low-resolution input concatenated, which no pipeline feeds; the sidecar says how (:func:`sr_sidecar`)."""
    if model.latents is not None:
        model.latents.save(folder / VAE_DIR)  # config.json holds the scaling factor (and the sidecar says it)
    cond, sched = model.denoiser.condition, model.schedule
    axis_cond, unet_scale = export_axis(model, time_scale)
    if not isinstance(cond, Identity) or unet_scale != 1.0:
        unet = ETSDMUNet2DModel.from_unet(unet, axis_cond, num_train_timesteps=None if sched.continuous else sched.T,
                                          time_scale=unet_scale)
    if not has_ddpm_scheduler(model):  # continuous time, or EDM's F on a discrete VP schedule
        unet.save_pretrained(str(folder / "unet"))
        scheduler = export_scheduler(model)
        if scheduler is not None:
            scheduler.save_pretrained(str(folder / "scheduler"))
        return
    if not exports_pipeline(model):  # labels, latents, SR input: DDPMPipeline passes / decodes none
        unet.save_pretrained(str(folder / "unet"))
        _export_scheduler(model).save_pretrained(str(folder / "scheduler"))
        return
    DDPMPipeline(unet=unet, scheduler=_export_scheduler(model)).save_pretrained(str(folder))


def _check_export_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{out}: already holds files (an earlier export?); pass --force (overwrite=True) to "
                              "replace it, or choose another folder")
    if not (out / SIDECAR).is_file():
        raise FileExistsError(f"{out}: holds files but is not an etsdm export (no {SIDECAR}); refusing to replace it")


def _ordinary_modes(folder: Path) -> None:
    """Give a written folder the modes of ordinary files and folders (0666 / 0777 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _write_sidecar(out: Path, model: LoadedModel, time_scale: float) -> None:
    sched = model.schedule
    side = {
        "name": model.name, "schedule": sched.config(), "prediction": model.denoiser.prediction,
        "condition": model.denoiser.condition.config(), "time_scale": time_scale, "step": model.step,
        "sigma_data": model.denoiser.sigma_data, "config": to_dict(model.config),
        "note": "unet/ applies the condition map itself (ETSDMUNet2DModel; `import etsdm` before loading with "
                "diffusers) unless it is a plain UNet2DModel (identity map, time_scale 1)",
    }
    if model.num_classes:
        side |= {"num_classes": model.num_classes, "null_label_index": model.num_classes,
                 "guidance": model.config.sample.guidance if model.config is not None else 1.0}
    if model.latents is not None:
        side["scaling_factor"] = model.latents.scaling_factor
    side |= sr_sidecar(model)  # super-resolution: cond_channels, lowres_upsample, sr_factor
    if sched.kind != "vp":
        side["unet_timestep"] = ("c_noise = 1/4 ln sigma (diffusers' EDM schedulers' timesteps)" if sched.kind == "edm"
                                 else f"{sched.T} t (diffusers' flow-matching schedulers' timesteps)")
    (out / SIDECAR).write_text(json.dumps(side, indent=2))


def import_diffusers(src: str | Path, out_run: str | Path, *, condition: dict[str, Any] | None = None,
                     prediction: str | None = None, name: str | None = None) -> Path:
    """Copy a diffusers UNet2DModel folder into an etsdm run folder ``out_run`` that
    :func:`load_model` (and every ``etsdm`` command) accepts; options override the sidecar."""
    src = Path(src)
    unet_dir = diffusers_unet_dir(src) if src.exists() else None
    if unet_dir is None:
        raise ValueError(f"{src}: no diffusers UNet2DModel folder (config.json with _class_name UNet2DModel)")
    out = Path(out_run)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not empty")
    if condition is not None:
        _check_condition(src, unet_dir, condition)
    # Built in a temporary folder beside OUT and renamed at the end: a failure (or a kill: its
    # leftover is removed by the next import) never leaves a half-made run that blocks a retry.
    with staged_folder(out) as tmp:
        _write_import(src, unet_dir, tmp, condition=condition, prediction=prediction, name=name)
        try:
            load_model(tmp)  # fail now, not later, if it does not load
        except Exception as err:  # diffusers raises OSError / SafetensorError / RuntimeError for bad weights
            raise ValueError(f"{src}: the UNet does not load, nothing was imported ({err})") from None
        if not publish_folder(tmp, out, replace=False):  # an empty OUT counts as absent
            raise FileExistsError(f"{out}: another process wrote it first")
    return out


def _check_condition(src: Path, unet_dir: Path, condition: dict[str, Any]) -> None:
    """Build the condition map ``condition`` on the source's schedule (its T): a bad option (e.g. a
    t_tilde that is not a whole number of timesteps) is reported as such, before anything is written."""
    side = read_sidecar(src, unet_dir)
    schedule = (schedule_from_config(side["schedule"]) if "schedule" in side
                else schedule_from_diffusers(scheduler_config(src)))
    opts = dict(condition)
    kind = opts.pop("kind", "identity")
    try:
        make_condition_map(kind, T=None if schedule.continuous else schedule.T, schedule=schedule, **opts)
    except (TypeError, ValueError) as err:
        raise ValueError(f"condition {condition}: {err}") from None


def _write_import(src: Path, unet_dir: Path, out: Path, *, condition: dict[str, Any] | None,
                  prediction: str | None, name: str | None) -> None:
    dest = out / "diffusers"
    shutil.copytree(unet_dir, dest)
    if (unet_dir.parent / VAE_DIR).is_dir():  # a latent export's autoencoder follows
        shutil.copytree(unet_dir.parent / VAE_DIR, out / VAE_DIR)
    sched_cfg = scheduler_config(src)
    if sched_cfg is not None:
        (dest / "scheduler_config.json").write_text(json.dumps(sched_cfg, indent=2))
    side = read_sidecar(src, unet_dir)
    if condition is not None:
        side["condition"] = condition
        unet_cfg = json.loads((dest / "config.json").read_text())
        if unet_cfg.get("_class_name") == "ETSDMUNet2DModel":  # the map diffusers applies follows too
            (dest / "config.json").write_text(json.dumps(unet_cfg | {"etsdm_condition": condition}, indent=2))
    if prediction is not None:
        side["prediction"] = prediction
    side["name"] = name or side.get("name") or src.name
    (out / SIDECAR).write_text(json.dumps(side, indent=2))
