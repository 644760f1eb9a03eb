"""Run folders, checkpoints and diffusers folders as :class:`LoadedModel`: :func:`load_model` accepts

* a run directory (its ``latest`` checkpoint) or one checkpoint directory inside it;
* a diffusers ``UNet2DModel`` / ``ETSDMUNet2DModel`` folder (``config.json`` + weights), a
  diffusers pipeline folder (``unet/`` and ``scheduler/``), or a run written by ``etsdm import``.
  The schedule comes from an ``etsdm.json`` sidecar if present, else from
  ``scheduler_config.json`` (diffusers' own table, so identical), else DDPM's linear schedule;
  the prediction type likewise; the condition map is the identity unless the sidecar (or an
  ETSDMUNet2DModel's own config) says otherwise; a super-resolution export (sidecar
  ``cond_channels``) loads as etsdm's :class:`~etsdm.nets.unet.UNet`, which takes ``lowres=``;
* ``"gmm"`` / ``"gmm:etsdm"``: the exact ε* of the analytic Gaussian mixture (8-mode ring), or
  the exact E-TSDM optimum (Theorem 4.1, t̃ = 100, n = 5), wrapped as a Denoiser, on the discrete
  linear schedule; with ``:continuous`` appended, on the continuous one (t̃ = 0.1).

Which kind a path is, is sniffed here (:func:`is_run_dir`, :func:`is_checkpoint_dir`, a
``config.json`` naming a UNet class).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DModel
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..analytic import GaussianMixture, exact_denoiser
from ..conditioning import make_condition_map, process_sharing
from ..config import ConfigError, RunConfig, from_dict, load_config
from ..data.gmm import make_mixture
from ..denoiser import Denoiser
from ..diffusers_unet import ETSDM_KEYS, ETSDMUNet2DModel, unet_at_condition
from ..guidance import NULL_LABEL
from ..latent import Latents
from ..nets.unet import UNet
from ..schedules import DiscreteSchedule, Schedule, schedule_from_config
from ..train.checkpoint import CheckpointError, checkpoint_problem, fallback_note, load_weights, read_meta, step_dirs
from .build import build_dataset, build_denoiser, build_image_dataset, build_net, dataset_shape

SIDECAR = "etsdm.json"
AUTOENCODER_DIR = "autoencoder"  # a latent run's copy of its autoencoder: <run>/autoencoder/
VAE_DIR = "vae"  # ... and in a diffusers export, beside unet/ (diffusers' name)
UNET_CLASSES = ("UNet2DModel", "ETSDMUNet2DModel")  # the latter applies its condition map itself
GMM_SPECS = ("gmm", "gmm:etsdm", "gmm:continuous", "gmm:etsdm:continuous")
PRED_FROM_DIFFUSERS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
PRED_TO_DIFFUSERS = {v: k for k, v in PRED_FROM_DIFFUSERS.items()}


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
        num_classes: the class labels the network takes (``cond["labels"]`` in 0..num_classes-1;
            0 = unconditional).
        latents: a latent run's autoencoder and scaling factor (``<run>/autoencoder/``): the model
            samples latents of ``shape``, :func:`etsdm.runs.generate` decodes them; None otherwise.
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
    num_classes: int = 0
    latents: Latents | None = None

    def dataset(self, split: str = "test") -> Dataset:
        """Rebuild what the run models for ``split`` ("train" or "test"): its data, or for a latent
        run its images' latents, scaled as in training (encoded by the run's own autoencoder)."""
        return build_dataset(self._config(), split, latents=self.latents)

    def image_dataset(self, split: str = "test") -> Dataset:
        """Rebuild the run's data itself (a latent run's images; FID references)."""
        return build_image_dataset(self._config(), split)

    def _config(self) -> RunConfig:
        if self.config is None:
            raise ValueError(f"{self.name}: no etsdm config, so no data set to rebuild")
        return self.config


def is_run_dir(path: Path) -> bool:
    return (path / "checkpoints").is_dir() or (path / "config.yaml").is_file() and not (path / "meta.json").exists()


def is_checkpoint_dir(path: Path) -> bool:
    return (path / "meta.json").is_file() and (path / "model.safetensors").is_file()


def diffusers_unet_dir(path: Path) -> Path | None:
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
    unet_dir = diffusers_unet_dir(path)
    if unet_dir is not None:
        return _load_diffusers(path, unet_dir, device=device)
    if is_run_dir(path):
        return _load_run(path, ema=ema, device=device)
    raise ValueError(f"{path}: not an etsdm run, checkpoint, or diffusers UNet2DModel folder")


def _load_gmm(spec: str, config: RunConfig | None, device: str | torch.device) -> LoadedModel:
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
    run_dir = ckpt.parent.parent
    latents = run_autoencoder(run_dir, cfg, device)
    shape = (tuple(meta["data_shape"]) if "data_shape" in meta
             else dataset_shape(build_dataset(cfg, "train", latents=latents)))
    net = build_net(cfg, shape)
    net.load_state_dict(load_weights(ckpt, ema=ema))
    net.to(device).eval().requires_grad_(False)
    den = build_denoiser(cfg, net).eval()
    return LoadedModel(den, den.schedule, cfg, cfg.name if cfg.name != "run" else run_dir.name, cfg.data.name,
                       source=str(ckpt), step=int(meta["step"]), shape=shape, num_classes=cfg.model.num_classes or 0,
                       latents=latents)


def run_autoencoder(run_dir: Path, cfg: RunConfig, device: str | torch.device = "cpu") -> Latents | None:
    """A latent run's autoencoder, ``<run>/autoencoder/`` (copied there by the trainer), with the
    scaling factor of its saved config; None for a run on the data itself.

    Raises:
        CheckpointError: a latent run without its autoencoder folder (named).
    """
    if cfg.latent.autoencoder is None:
        return None
    folder = run_dir / AUTOENCODER_DIR
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: missing; a latent run (latent.autoencoder) keeps its autoencoder there")
    return Latents.load(folder, cfg.latent.scaling_factor, device=device)


class DiffusersNet(nn.Module):
    """A diffusers UNet2DModel as etsdm's net(x, c, labels=None): timestep = c · time_scale; a
    class-conditional UNet (``num_class_embeds`` = K + 1, as etsdm exports it) takes labels in
    0..K-1 or NULL_LABEL, which is its last embedding, K."""

    def __init__(self, unet: nn.Module, time_scale: float = 1.0):
        super().__init__()
        self.unet = unet
        self.time_scale = time_scale
        self.num_classes = max(0, (unet.config.num_class_embeds or 0) - 1)  # the null label is extra

    def forward(self, x: Tensor, c: Tensor, labels: Tensor | None = None) -> Tensor:
        c = c * self.time_scale if self.time_scale != 1.0 else c
        if labels is None and not self.num_classes:
            return unet_at_condition(self.unet, x, c)
        if labels is None or not self.num_classes:
            raise ValueError(f"{type(self.unet).__name__}: labels= {'missing' if labels is None else 'given'}, but the "
                             f"UNet takes {self.num_classes or 'no'} classes")
        index = torch.where(labels == NULL_LABEL, torch.full_like(labels, self.num_classes), labels)
        if isinstance(self.unet, ETSDMUNet2DModel):  # its own map skipped: the Denoiser applied it
            return self.unet.forward_at_condition(x, c, index)
        return self.unet(x, c, class_labels=index).sample


def scheduler_config(path: Path) -> dict[str, Any] | None:
    for folder in (path, path / "scheduler", path / "diffusers", path / "diffusers" / "scheduler"):
        cand = folder / "scheduler_config.json"
        if cand.is_file():
            return json.loads(cand.read_text())
    return None


def read_sidecar(path: Path, unet_dir: Path) -> dict[str, Any]:
    for cand in (path / SIDECAR, unet_dir / SIDECAR, unet_dir.parent / SIDECAR):
        if cand.is_file():
            return json.loads(cand.read_text())
    return {}


def schedule_from_diffusers(sched_cfg: dict[str, Any] | None) -> Schedule:
    """A DiscreteSchedule with exactly diffusers' ᾱ table (DDPMScheduler built from the config)."""
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
            "rescale_betas_zero_snr")
    cfg = {k: v for k, v in (sched_cfg or {}).items() if k in keys}
    sch = DDPMScheduler(**cfg)
    abar = sch.alphas_cumprod.to(torch.float64)
    return DiscreteSchedule(abar.clamp(max=1 - 1e-12), name=f"diffusers-{sch.config.beta_schedule}")


def _load_diffusers(path: Path, unet_dir: Path, *, device: str | torch.device) -> LoadedModel:
    own = json.loads((unet_dir / "config.json").read_text()).get("_class_name") == "ETSDMUNet2DModel"
    unet = (ETSDMUNet2DModel if own else UNet2DModel).from_pretrained(str(unet_dir))
    side = read_sidecar(path, unet_dir)
    sched_cfg = scheduler_config(path)
    if "schedule" in side:
        schedule = schedule_from_config(side["schedule"])
    else:
        schedule = schedule_from_diffusers(sched_cfg)
    if own and schedule.kind == "vp":  # the map and time scale the UNet applies in diffusers are etsdm's
        side |= {"condition": unet.config.etsdm_condition, "time_scale": unet.config.etsdm_time_scale}
    # EDM / flow: the UNet's own map acts on diffusers' timestep axis (export_axis); the sidecar keeps
    # the map on physical time and the net's time scale, which the Denoiser applies
    prediction = side.get("prediction") or PRED_FROM_DIFFUSERS.get((sched_cfg or {}).get("prediction_type", "epsilon"),
                                                                     "eps")
    cond_cfg = dict(side.get("condition") or {"kind": "identity"})
    kind = cond_cfg.pop("kind", "identity")
    condition = make_condition_map(kind, T=None if schedule.continuous else schedule.T, schedule=schedule, **cond_cfg)
    net = exported_net(unet, side).to(device).eval().requires_grad_(False)
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
    vae = unet_dir.parent / VAE_DIR
    latents = Latents.load(vae, side.get("scaling_factor"), device=device) if vae.is_dir() else None
    channels = unet.config.in_channels - int(side.get("cond_channels") or 0)  # SR: x, then the low-res input
    data_name = cfg.data.name if cfg else ("sr" if side.get("cond_channels") else None)
    return LoadedModel(den, schedule, cfg, side.get("name", path.name), data_name, source=str(path),
                       shape=(channels, size, size), num_classes=net.num_classes, latents=latents)


def exported_net(unet: UNet2DModel, side: dict[str, Any]) -> nn.Module:
    """etsdm's net(x, c, **cond) around an exported UNet: a super-resolution export (sidecar
    ``cond_channels`` > 0) as :class:`~etsdm.nets.unet.UNet` (``lowres=`` upsampled by the sidecar's
    ``lowres_upsample`` and concatenated as in training; its UNet2DModel plain, since the Denoiser
    applies the condition map), any other as :class:`DiffusersNet`."""
    time_scale = float(side.get("time_scale", 1.0))
    cond_channels = int(side.get("cond_channels") or 0)
    if not cond_channels:
        return DiffusersNet(unet, time_scale)
    return UNet(plain_unet(unet), time_scale=time_scale, cond_channels=cond_channels,
                lowres_upsample=side.get("lowres_upsample", "bicubic"))


def plain_unet(unet: UNet2DModel) -> UNet2DModel:
    """An ETSDMUNet2DModel's weights as a plain UNet2DModel (the same tensors), which takes the
    condition c as it is; a plain UNet2DModel unchanged."""
    if not isinstance(unet, ETSDMUNet2DModel):
        return unet
    kwargs = {k: v for k, v in dict(unet.config).items() if not k.startswith("_") and k not in ETSDM_KEYS}
    with torch.device("meta"):
        plain = UNet2DModel(**kwargs)
    plain.load_state_dict(unet.state_dict(keep_vars=True), assign=True)
    return plain.train(unet.training)
