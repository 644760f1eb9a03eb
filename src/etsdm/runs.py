"""Runs as objects: build a run's pieces from its config, load a trained model, export / import.

* :func:`build_dataset`, :func:`build_net`, :func:`build_denoiser` turn a
  :class:`~etsdm.config.RunConfig` into the data set, the raw network and the Denoiser (which
  applies the run's condition map: E-TSDM lives there and nowhere else).
* :func:`load_model` accepts

  - a run directory (its ``latest`` checkpoint) or one checkpoint directory inside it;
  - a diffusers ``UNet2DModel`` / ``ETSDMUNet2DModel`` folder (``config.json`` + weights), a
    diffusers pipeline folder (``unet/`` and ``scheduler/``), or a run written by ``etsdm import``.
    The schedule comes from an ``etsdm.json`` sidecar if present, else from
    ``scheduler_config.json`` (diffusers' own table, so identical), else DDPM's linear schedule;
    the prediction type likewise; the condition map is the identity unless the sidecar (or an
    ETSDMUNet2DModel's own config) says otherwise;
  - ``"gmm"`` / ``"gmm:etsdm"``: the exact ε* of the analytic Gaussian mixture (8-mode ring), or
    the exact E-TSDM optimum (Theorem 4.1, t̃ = 100, n = 5), wrapped as a Denoiser, on the discrete
    linear schedule; with ``:continuous`` appended, on the continuous one (t̃ = 0.1).

* :func:`export_diffusers` writes a run as a diffusers pipeline folder (a ``DDPMPipeline``: the
  UNet — an :class:`~etsdm.diffusers_unet.ETSDMUNet2DModel` that applies the condition map itself
  unless the map is the identity — a ``DDPMScheduler`` with the run's exact β table, ``etsdm.json``
  and a model card); :func:`import_diffusers` does the reverse.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .analytic import GaussianMixture, exact_denoiser
from .conditioning import (
    ConditionMap,
    Identity,
    TimestepSharing,
    make_condition_map,
    process_sharing,
    remap_lambda_plan,
)
from .config import ConfigError, RunConfig, from_dict, load_config
from .denoiser import Denoiser
from .diffusers_sampling import is_diffusers_sampler
from .samplers import INTEGER_SPACINGS, default_spacing
from .schedules import DiscreteSchedule, Schedule, schedule_from_config
from .train.checkpoint import CheckpointError, checkpoint_problem, fallback_note, load_weights, read_meta, step_dirs

SIDECAR = "etsdm.json"
UNET_CLASSES = ("UNet2DModel", "ETSDMUNet2DModel")  # the latter applies its condition map itself
GMM_SPECS = ("gmm", "gmm:etsdm", "gmm:continuous", "gmm:etsdm:continuous")
_PRED_FROM_DIFFUSERS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
_PRED_TO_DIFFUSERS = {v: k for k, v in _PRED_FROM_DIFFUSERS.items()}


# ---------------------------------------------------------------------------------------------
# Building a run's pieces
# ---------------------------------------------------------------------------------------------
def resolve_data(cfg: RunConfig) -> tuple[RunConfig, str]:
    """``cfg`` with an image folder's null data.channels / data.resolution filled in from its images
    (:func:`etsdm.data.infer_format`), and a note saying what was inferred ("" if nothing was)."""
    import dataclasses

    from .data import infer_format

    d = cfg.data
    folder = d.name == "folder" or (d.name == "sr" and (d.sr_base == "folder" or (d.sr_base is None and d.root)))
    if not folder or not d.root or (d.channels is not None and d.resolution is not None):
        return cfg, ""
    fmt = infer_format(d.root, channels=d.channels, resolution=d.resolution)
    data = dataclasses.replace(d, channels=fmt.channels, resolution=fmt.resolution)
    return dataclasses.replace(cfg, data=data), fmt.note


def build_dataset(cfg: RunConfig, split: str = "train"):
    """The run's data set for ``split`` (``etsdm.data.make_dataset``)."""
    from .data import make_dataset

    d = cfg.data
    extra: dict[str, Any] = {}
    if d.sr_base is not None:
        extra["sr_base"] = d.sr_base
    if d.holdout:
        extra["holdout"] = int(d.holdout) if float(d.holdout).is_integer() else d.holdout
    return make_dataset(
        d.name, split=split, root=d.root, resolution=d.resolution, channels=d.channels,
        hflip=d.hflip if split == "train" else False, skip_bad=d.skip_bad, sr_factor=d.sr_factor, gmm=d.gmm,
        num_samples=d.num_samples, seed=cfg.train.seed, **extra,
    )


def dataset_shape(ds: Any) -> tuple[int, ...]:
    """Shape of one x0 of a data set: (C, H, W) or (D,)."""
    from .data import data_shape

    return tuple(data_shape(ds))


def net_time_scale(schedule: Schedule) -> float:
    """The backbone's ``time_scale``: the multiplier of its time input c = ``schedule.net_time(t)``
    before the sinusoidal embedding, chosen so that c·time_scale spans T units (1000) over the
    sampler's range, as a discrete VP timestep 0..T-1 does — the embedding's frequencies (1 down to
    1e-4 rad per unit) then resolve the process as they resolve VP time:

    * discrete VP: 1 (c is the timestep itself);
    * continuous VP and flow: T (t in [0, 1]; the diffusers convention of flow schedulers, whose
      timesteps are T·t);
    * EDM: T / (c_noise(σ_max) - c_noise(σ_min)) with c_noise = ¼ ln σ: 1000 / 2.65 = 377 for
      σ in [0.002, 80], so c_noise in [-1.55, 1.10] becomes [-585, 415]. At time_scale 1 (EDM's own
      code) the embedding's phases would move by at most 2.65 rad over the whole range, the lower
      frequencies not at all.
    """
    if not schedule.continuous:
        return 1.0
    if schedule.kind == "edm":
        span = float(schedule.net_time(schedule.t_max) - schedule.net_time(schedule.t_min))
        return float(schedule.T) / span
    return float(schedule.T)


def build_net(cfg: RunConfig, shape: tuple[int, ...]) -> nn.Module:
    """The raw network for data of ``shape`` ((C, H, W) images or (D,) vectors).

    Continuous-time processes give the backbone ``time_scale`` = :func:`net_time_scale` (unless
    ``model.overrides`` sets it), so its timestep embedding is spread as for discrete timesteps.
    """
    from .nets import make_net

    m = cfg.model
    opts = dict(m.overrides)
    if cfg.schedule.continuous:
        opts.setdefault("time_scale", net_time_scale(cfg.build_schedule()))
    if m.name == "mlp":  # vectors (D,), or images flattened to D = C·H·W
        if cfg.data.name == "sr":
            raise ConfigError("model.name: 'mlp' takes no low-resolution input; use model.name: unet for sr data")
        return make_net("mlp", preset=m.preset, dim=math.prod(shape), **opts)
    if len(shape) != 3:
        raise ConfigError(f"model.name: 'unet' needs image data (C, H, W), got shape {shape}; use model.name: mlp")
    cond = shape[0] if cfg.data.name == "sr" else 0
    return make_net("unet", preset=m.preset, in_channels=shape[0], out_channels=shape[0], resolution=shape[1],
                    cond_channels=cond, **opts)


def build_denoiser(cfg: RunConfig, net: nn.Module | Any, schedule: Schedule | None = None) -> Denoiser:
    """Denoiser(net, schedule, prediction, condition map, σ_data) of the run (training, previews and
    every loaded run build it here)."""
    schedule = schedule if schedule is not None else cfg.build_schedule()
    return Denoiser(net, schedule, prediction=cfg.diffusion.prediction, condition=cfg.build_condition(schedule),
                    sigma_data=cfg.diffusion.sigma_data)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A model ready to sample or analyse.

    Attributes:
        denoiser: the Denoiser (eval mode; the run's condition map applied inside).
        schedule: its noise schedule.
        config: the run's :class:`RunConfig` (None for a foreign diffusers model).
        name: a short label for legends.
        data_name: "digits" | "gmm" | "folder" | "sr" | None.
        source: the path or spec it was loaded from; step: the training step (None if unknown).
        mixture: the exact data distribution ("gmm" specs); shape: the shape of one sample.
        notes: what a caller should tell the user (e.g. incomplete newer checkpoints were skipped).
    """

    denoiser: Denoiser
    schedule: Schedule
    config: RunConfig | None
    name: str
    data_name: str | None
    source: str = ""
    step: int | None = None
    mixture: GaussianMixture | None = None
    shape: tuple[int, ...] | None = None
    notes: list[str] = field(default_factory=list)

    def dataset(self, split: str = "test"):
        """Rebuild the run's data set (``split``: "train" or "test")."""
        if self.config is None:
            raise ValueError(f"{self.name}: no etsdm config, so no data set to rebuild")
        return build_dataset(self.config, split)


def is_run_dir(path: Path) -> bool:
    return (path / "checkpoints").is_dir() or (path / "config.yaml").is_file() and not (path / "meta.json").exists()


def is_checkpoint_dir(path: Path) -> bool:
    return (path / "meta.json").is_file() and (path / "model.safetensors").is_file()


def _diffusers_unet_dir(path: Path) -> Path | None:
    for cand in (path, path / "unet", path / "diffusers", path / "diffusers" / "unet"):
        cfg = cand / "config.json"
        if cfg.is_file():
            try:
                if json.loads(cfg.read_text()).get("_class_name") in UNET_CLASSES:
                    return cand
            except json.JSONDecodeError:
                continue
    return None


def load_model(spec: str | Path, *, ema: bool = True, device: str | torch.device = "cpu",
               config: RunConfig | None = None) -> LoadedModel:
    """Load a trained model (see the module docstring for what ``spec`` may be).

    Args:
        spec: run dir, checkpoint dir, diffusers folder, or one of :data:`GMM_SPECS`.
        ema: use the EMA weights (default) when the checkpoint has them.
        device: where the network lives.
        config: for "gmm" specs only: a RunConfig whose schedule / data.gmm / condition (t̃, n) to use.

    Raises:
        FileNotFoundError: no such path, or a run without checkpoints. ValueError: unrecognised folder.
    """
    s = str(spec)
    if s in GMM_SPECS:
        return _load_gmm(s, config, device)
    path = Path(s)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run, checkpoint or diffusers folder (or use 'gmm' / 'gmm:etsdm')")
    if is_checkpoint_dir(path):
        return _load_checkpoint(path, ema=ema, device=device)
    unet_dir = _diffusers_unet_dir(path)
    if unet_dir is not None:
        return _load_diffusers(path, unet_dir, device=device)
    if is_run_dir(path):
        return _load_run(path, ema=ema, device=device)
    raise ValueError(f"{path}: not an etsdm run, checkpoint, or diffusers UNet2DModel folder")


def _load_gmm(spec: str, config: RunConfig | None, device: str | torch.device) -> LoadedModel:
    from .data.gmm import make_mixture

    if config is None:
        continuous = spec.endswith(":continuous")
        config = from_dict({"name": spec, "data": {"name": "gmm"}, "model": {"name": "mlp"},
                            "schedule": {"continuous": continuous}})
    cfg = config
    etsdm = spec.startswith("gmm:etsdm")
    schedule = cfg.build_schedule()
    mixture = make_mixture(cfg.data.gmm)
    c = cfg.diffusion.condition
    sharing = process_sharing(schedule, c.t_tilde, c.n, c.space) if etsdm else None
    den = exact_denoiser(mixture, schedule, cfg.diffusion.prediction, sharing).to(device).eval()
    return LoadedModel(den, schedule, cfg, spec, "gmm", source=spec, mixture=mixture, shape=(mixture.dim,))


def rebuild_net(cfg: RunConfig, shape: tuple[int, ...]) -> nn.Module:
    """The raw network of a config, with fresh weights (seeded like training for determinism)."""
    torch.manual_seed(cfg.train.seed)
    return build_net(cfg, shape)


def _load_run(run: Path, *, ema: bool, device: str | torch.device) -> LoadedModel:
    """The newest checkpoint of a run that is complete and loads; older ones if newer are broken
    (the returned model's ``notes`` say so).

    Raises:
        FileNotFoundError: no checkpoint yet. CheckpointError: none loads (every broken file named).
    """
    skipped: list[str] = []
    for ckpt in reversed(step_dirs(run)):
        try:
            model = _load_checkpoint(ckpt, ema=ema, device=device)
        except CheckpointError as err:
            skipped.append(str(err))
            continue
        note = fallback_note(ckpt, skipped)
        model.notes.extend([note] if note else [])
        return model
    if skipped:
        raise CheckpointError(f"{run}: no complete checkpoint ({'; '.join(skipped)})")
    raise FileNotFoundError(f"{run}: run directory has no complete checkpoint yet")


def _load_checkpoint(ckpt: Path, *, ema: bool, device: str | torch.device) -> LoadedModel:
    """Raises CheckpointError (naming the file) if the checkpoint is incomplete or unreadable."""
    problem = checkpoint_problem(ckpt)
    if problem:
        raise CheckpointError(problem)
    try:
        cfg = load_config(ckpt / "config.yaml")
    except ConfigError as err:
        raise CheckpointError(f"{ckpt / 'config.yaml'}: unreadable ({err})") from None
    meta = read_meta(ckpt)
    shape = tuple(meta["data_shape"]) if "data_shape" in meta else dataset_shape(build_dataset(cfg, "train"))
    net = build_net(cfg, shape)
    net.load_state_dict(load_weights(ckpt, ema=ema))
    net.to(device).eval().requires_grad_(False)
    den = build_denoiser(cfg, net).eval()
    run_dir = ckpt.parent.parent
    return LoadedModel(den, den.schedule, cfg, cfg.name if cfg.name != "run" else run_dir.name, cfg.data.name,
                       source=str(ckpt), step=int(meta["step"]), shape=shape)


class DiffusersNet(nn.Module):
    """A diffusers UNet2DModel as etsdm's net(x, c): timestep = c · time_scale."""

    def __init__(self, unet: nn.Module, time_scale: float = 1.0):
        super().__init__()
        self.unet = unet
        self.time_scale = time_scale

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        from .diffusers_unet import unet_at_condition  # an ETSDMUNet2DModel's own map is not applied twice

        return unet_at_condition(self.unet, x, c * self.time_scale if self.time_scale != 1.0 else c)


def _scheduler_config(path: Path) -> dict[str, Any] | None:
    for folder in (path, path / "scheduler", path / "diffusers", path / "diffusers" / "scheduler"):
        cand = folder / "scheduler_config.json"
        if cand.is_file():
            return json.loads(cand.read_text())
    return None


def _sidecar(path: Path, unet_dir: Path) -> dict[str, Any]:
    for cand in (path / SIDECAR, unet_dir / SIDECAR, unet_dir.parent / SIDECAR):
        if cand.is_file():
            return json.loads(cand.read_text())
    return {}


def schedule_from_diffusers(sched_cfg: dict[str, Any] | None) -> Schedule:
    """A DiscreteSchedule with exactly diffusers' ᾱ table (DDPMScheduler built from the config)."""
    from diffusers import DDPMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
            "rescale_betas_zero_snr")
    cfg = {k: v for k, v in (sched_cfg or {}).items() if k in keys}
    sch = DDPMScheduler(**cfg)
    abar = sch.alphas_cumprod.to(torch.float64)
    return DiscreteSchedule(abar.clamp(max=1 - 1e-12), name=f"diffusers-{sch.config.beta_schedule}")


def _load_diffusers(path: Path, unet_dir: Path, *, device: str | torch.device) -> LoadedModel:
    from diffusers import UNet2DModel

    from .diffusers_unet import ETSDMUNet2DModel

    own = json.loads((unet_dir / "config.json").read_text()).get("_class_name") == "ETSDMUNet2DModel"
    unet = (ETSDMUNet2DModel if own else UNet2DModel).from_pretrained(str(unet_dir))
    side = _sidecar(path, unet_dir)
    sched_cfg = _scheduler_config(path)
    if "schedule" in side:
        schedule = schedule_from_config(side["schedule"])
    else:
        schedule = schedule_from_diffusers(sched_cfg)
    if own and schedule.kind == "vp":  # the map and time scale the UNet applies in diffusers are etsdm's
        side |= {"condition": unet.config.etsdm_condition, "time_scale": unet.config.etsdm_time_scale}
    # EDM / flow: the UNet's own map acts on diffusers' timestep axis (export_axis); the sidecar keeps
    # the map on physical time and the net's time scale, which the Denoiser applies
    prediction = side.get("prediction") or _PRED_FROM_DIFFUSERS.get((sched_cfg or {}).get("prediction_type", "epsilon"),
                                                                     "eps")
    cond_cfg = dict(side.get("condition") or {"kind": "identity"})
    kind = cond_cfg.pop("kind", "identity")
    condition = make_condition_map(kind, T=None if schedule.continuous else schedule.T, schedule=schedule, **cond_cfg)
    net = DiffusersNet(unet, float(side.get("time_scale", 1.0))).to(device).eval().requires_grad_(False)
    cfg = None
    if "config" in side:
        try:
            cfg = from_dict(side["config"])
        except ConfigError:
            cfg = None
    sigma_data = cfg.diffusion.sigma_data if cfg is not None else float(side.get("sigma_data", 0.5))
    den = Denoiser(net, schedule, prediction=prediction, condition=condition, sigma_data=sigma_data).eval()
    size = unet.config.sample_size
    size = size if isinstance(size, int) else size[0]
    return LoadedModel(den, schedule, cfg, side.get("name", path.name), cfg.data.name if cfg else None,
                       source=str(path), shape=(unet.config.in_channels, size, size))


# ---------------------------------------------------------------------------------------------
# Export / import
# ---------------------------------------------------------------------------------------------
def find_unet(net: nn.Module) -> tuple[nn.Module, float]:
    """The diffusers UNet2DModel inside an etsdm net, and the net's time scale."""
    from diffusers import UNet2DModel

    for m in net.modules():
        if isinstance(m, UNet2DModel):
            return m, float(getattr(net, "time_scale", 1.0) or 1.0)
    raise ValueError(f"{type(net).__name__} holds no diffusers UNet2DModel: only UNet runs can be exported")


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
    if model.config.data.name == "sr":
        raise ValueError("super-resolution runs take a low-resolution input: export is for unconditional UNets")
    unet, time_scale = find_unet(model.denoiser.net)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.*"):  # temporaries of an export killed earlier
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _save_pipeline(tmp, model, unet, time_scale)
        _write_sidecar(tmp, model, time_scale)
        from .model_card import write_model_card

        write_model_card(tmp, model, command or f"etsdm export {spec} {out}")
        _ordinary_modes(tmp)  # safetensors and mkdtemp create 0600 / 0700
        _swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _swap_into_place(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``; an existing ``out`` is moved aside first and removed only once
    ``new`` is in place (a failure puts it back), so ``out`` always holds a whole export."""
    old = out.parent / f".{out.name}.old{os.getpid()}"
    if out.exists():
        out.rename(old)
    try:
        new.rename(out)
    except BaseException:
        if old.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def has_ddpm_scheduler(model: LoadedModel) -> bool:
    """A discrete run whose prediction a DDPMScheduler takes (eps, v, x0; not EDM's F on a VP schedule)."""
    return not model.schedule.continuous and model.denoiser.prediction in _PRED_TO_DIFFUSERS


def _export_scheduler(model: LoadedModel) -> Any:
    """The run's discrete schedule as a DDPMScheduler that samples as ``etsdm sample`` does.

    Raises:
        ValueError: the run's prediction has no diffusers ``prediction_type`` (EDM's F on VP)."""
    from diffusers import DDPMScheduler

    from .diffusers_sampling import clip_config

    sched = model.schedule
    if not has_ddpm_scheduler(model):
        raise ValueError(f"prediction {model.denoiser.prediction!r} on the discrete {sched.name} schedule: diffusers' "
                         "discrete schedulers take epsilon, v_prediction or sample outputs; sample it with etsdm")
    return DDPMScheduler(num_train_timesteps=sched.T, trained_betas=sched.betas().tolist(),
                         variance_type="fixed_large", timestep_spacing=export_spacing(model),
                         prediction_type=_PRED_TO_DIFFUSERS[model.denoiser.prediction],
                         **clip_config(resolve_clip(model)))


def export_spacing(model: LoadedModel) -> str:
    """The integer ``timestep_spacing`` an export's scheduler gets: the run's ``sample.timestep_spacing``,
    else etsdm's default (``linspace``); a float grid (fractional, logSNR, ...) has no diffusers
    equivalent and falls back to ``linspace`` (the model card says so)."""
    spacing = model.config.sample.timestep_spacing if model.config is not None else None
    spacing = spacing or default_spacing(model.schedule)
    return spacing if spacing in INTEGER_SPACINGS else "linspace"


def resolve_clip(model: LoadedModel, clip: str | None = None) -> str:
    """x̂0 clipping: ``clip``, else the run's ``sample.clip``; ``auto`` -> :func:`auto_clip`."""
    if clip is None:
        clip = model.config.sample.clip if model.config is not None else "auto"
    return auto_clip(model) if clip == "auto" else clip


def _save_pipeline(folder: Path, model: LoadedModel, unet: nn.Module, time_scale: float) -> None:
    """``DDPMPipeline(unet, scheduler).save_pretrained``; an ETSDMUNet2DModel unless the map is the
    identity (and the time scale 1); no pipeline for continuous time: ``unet/``, and for EDM / flow
    runs the diffusers scheduler of their process in ``scheduler/`` (:func:`export_scheduler`)."""
    from diffusers import DDPMPipeline

    from .diffusers_unet import ETSDMUNet2DModel

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
    DDPMPipeline(unet=unet, scheduler=_export_scheduler(model)).save_pretrained(str(folder))


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
    from diffusers import EDMEulerScheduler, FlowMatchEulerDiscreteScheduler

    sched, pred = model.schedule, model.denoiser.prediction
    if sched.kind == "edm" and pred == "edm":
        return EDMEulerScheduler(sigma_min=sched.t_min, sigma_max=sched.t_max, sigma_data=model.denoiser.sigma_data,
                                 sigma_schedule="karras", rho=7.0, prediction_type="epsilon",
                                 num_train_timesteps=sched.T, final_sigmas_type="zero")
    if sched.kind == "flow" and pred == "flow":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=sched.T, shift=1.0)
    return None


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
        "sigma_data": model.denoiser.sigma_data, "config": _plain(model.config),
        "note": "unet/ applies the condition map itself (ETSDMUNet2DModel; `import etsdm` before loading with "
                "diffusers) unless it is a plain UNet2DModel (identity map, time_scale 1)",
    }
    if sched.kind != "vp":
        side["unet_timestep"] = ("c_noise = 1/4 ln sigma (diffusers' EDM schedulers' timesteps)" if sched.kind == "edm"
                                 else f"{sched.T} t (diffusers' flow-matching schedulers' timesteps)")
    (out / SIDECAR).write_text(json.dumps(side, indent=2))


def _plain(cfg: RunConfig) -> dict[str, Any]:
    from .config import to_dict

    return to_dict(cfg)


def import_diffusers(src: str | Path, out_run: str | Path, *, condition: dict[str, Any] | None = None,
                     prediction: str | None = None, name: str | None = None) -> Path:
    """Copy a diffusers UNet2DModel folder into an etsdm run folder ``out_run`` that
    :func:`load_model` (and every ``etsdm`` command) accepts; options override the sidecar."""
    src = Path(src)
    unet_dir = _diffusers_unet_dir(src) if src.exists() else None
    if unet_dir is None:
        raise ValueError(f"{src}: no diffusers UNet2DModel folder (config.json with _class_name UNet2DModel)")
    out = Path(out_run)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not empty")
    if condition is not None:
        _check_condition(src, unet_dir, condition)
    # Built in a temporary folder beside OUT and renamed at the end: a failure (or a kill: its
    # leftover is removed by the next import) never leaves a half-made run that blocks a retry.
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.importing*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.importing{os.getpid()}"
    try:
        _write_import(src, unet_dir, tmp, condition=condition, prediction=prediction, name=name)
        try:
            load_model(tmp)  # fail now, not later, if it does not load
        except Exception as err:  # diffusers raises OSError / SafetensorError / RuntimeError for bad weights
            raise ValueError(f"{src}: the UNet does not load, nothing was imported ({err})") from None
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _check_condition(src: Path, unet_dir: Path, condition: dict[str, Any]) -> None:
    """Build the condition map ``condition`` on the source's schedule (its T): a bad option (e.g. a
    t_tilde that is not a whole number of timesteps) is reported as such, before anything is written."""
    side = _sidecar(src, unet_dir)
    schedule = (schedule_from_config(side["schedule"]) if "schedule" in side
                else schedule_from_diffusers(_scheduler_config(src)))
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
    sched_cfg = _scheduler_config(src)
    if sched_cfg is not None:
        (dest / "scheduler_config.json").write_text(json.dumps(sched_cfg, indent=2))
    side = _sidecar(src, unet_dir)
    if condition is not None:
        side["condition"] = condition
        unet_cfg = json.loads((dest / "config.json").read_text())
        if unet_cfg.get("_class_name") == "ETSDMUNet2DModel":  # the map diffusers applies follows too
            (dest / "config.json").write_text(json.dumps(unet_cfg | {"etsdm_condition": condition}, indent=2))
    if prediction is not None:
        side["prediction"] = prediction
    side["name"] = name or side.get("name") or src.name
    (out / SIDECAR).write_text(json.dumps(side, indent=2))


# ---------------------------------------------------------------------------------------------
# Sampling helpers
# ---------------------------------------------------------------------------------------------
SAMPLE_CONVENTIONS = ("timestep_spacing", "denoise_to_zero", "order_plan", "clip")
IMAGE_DATA = ("digits", "folder", "sr")
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


def auto_clip(model: LoadedModel) -> str:
    """x̂0 clipping per data kind: ``static`` ([-1, 1]) for image data, as the DDPM / ADM code the
    paper builds on does at every step (``clip_denoised=True``); ``none`` for gmm / vector data,
    which is unbounded."""
    shape = model.shape
    image = model.data_name in IMAGE_DATA or (model.data_name is None and shape is not None and len(shape) == 3)
    return "static" if image else "none"


def sample_settings(model: LoadedModel, sampler: str, nfe: int, **options: Any) -> dict[str, Any]:
    """Sampler keyword arguments for ``model``: the given ones, else the run's ``sample:`` config
    (timestep_spacing, denoise_to_zero, order_plan, clip), else SampleConfig's defaults; clip
    ``auto`` resolved by :func:`auto_clip`. ``spacing`` (older name) counts as timestep_spacing.
    A remap run with ``diffusion.condition.remap_grid: lambda`` gets the λ-uniform grid
    (:func:`~etsdm.conditioning.remap_lambda_plan`) as ``timesteps`` / ``orders`` unless given."""
    from .config import SampleConfig

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
    from .samplers import describe

    if is_diffusers_sampler(sampler):  # any diffusers scheduler (etsdm.diffusers_sampling)
        from . import diffusers_sampling

        return diffusers_sampling.describe(model, sampler, nfe, timestep_spacing=options.get("timestep_spacing"),
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


@torch.no_grad()
def generate(
    model: LoadedModel, num: int, *, sampler: str = "ddim", nfe: int = 50, seed: int = 0, batch: int = 256,
    device: str | torch.device = "cpu", lowres: Tensor | None = None, progress: bool = False, **sampler_kwargs: Any,
) -> Tensor:
    """``num`` samples from a loaded model (float32, on CPU); reproducible from ``seed``.

    Sampler conventions not given (timestep_spacing, denoise_to_zero, order_plan, clip) come from
    the run's ``sample:`` config, else the defaults, and a remap run with ``remap_grid: lambda``
    walks the λ-uniform grid unless ``timesteps`` are given (:func:`sample_settings`).

    ``lowres`` (super-resolution runs): the (num, C, h, w) low-resolution inputs.
    """
    from .samplers import init_noise_sigma, sample

    shape = model.shape
    if shape is None:
        raise ValueError(f"{model.name}: sample shape unknown")
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    den = model.denoiser
    if is_diffusers_sampler(sampler):  # any diffusers scheduler, the condition map applied by the Denoiser
        from .diffusers_sampling import generate_diffusers

        return generate_diffusers(model, num, sampler, nfe, generator=g, batch=batch, progress=progress,
                                  **sampler_kwargs)
    sampler_kwargs = sample_settings(model, sampler, nfe, **sampler_kwargs)
    ts = sampler_kwargs.get("timesteps")
    scale = init_noise_sigma(model.schedule, ts[0] if ts else None)
    for i in range(0, num, batch):
        k = min(batch, num - i)
        noise = torch.randn((k, *shape), generator=g, device=device)
        if scale != 1.0:  # x at t_max: σ_max·z for EDM (VP and flow: z itself)
            noise = noise * scale
        if lowres is not None:
            net = functools.partial(den.net, lowres=lowres[i : i + k].to(device))
            den_b = Denoiser(net, den.schedule, den.prediction, den.condition, sigma_data=den.sigma_data)
        else:
            den_b = den
        x = sample(den_b, noise, model.schedule, sampler, nfe, generator=g, progress=progress, **sampler_kwargs)
        out.append(x.float().cpu())
    return torch.cat(out)
