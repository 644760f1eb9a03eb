"""Typed run configuration: data, model, schedule, diffusion objective and training.

One :class:`RunConfig` describes a whole run. It is read from YAML (:func:`load_config`), can be
overridden from the command line with ``a.b=value`` strings (:func:`apply_overrides`), and is
written back as YAML beside every checkpoint (:func:`save_config`), so a run can always be rebuilt.

Validation is strict: an unknown key, a value of the wrong type, a string outside its allowed
set or a number outside its range raises :class:`ConfigError` naming the field path
(e.g. ``diffusion.condition.kind``) and what is allowed.

Conventions (see ``etsdm.schedules``): discrete schedules use integer timesteps 0..T-1, so
E-TSDM's t̃ is in timesteps (default T/10: 100 of T = 1000); continuous schedules use t in [0, 1],
so t̃ is a fraction of the time range (default 0.1). ``t_tilde: null`` picks the default for the
schedule's kind (``etsdm.conditioning.default_t_tilde``).

Beyond VP (issue 9): ``schedule.name: edm`` (Karras et al., t = σ in [sigma_min, sigma_max]) and
``schedule.name: flow`` (rectified flow, t in [0, 1]) are continuous-time processes
(``schedule.continuous: true``). Their usual objectives are ``diffusion.prediction: edm`` (EDM's
preconditioning, with ``diffusion.sigma_data``) with ``diffusion.time_sampling: log-normal``
(``p_mean``, ``p_std``), and ``diffusion.prediction: flow`` (the velocity) with uniform or
logit-normal times. E-TSDM on them: ``diffusion.condition.space`` (``etsdm.conditioning``;
t̃ in the process's own time: σ for EDM, t for flow). Which combinations are allowed and why:
:func:`_check_process`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .conditioning import SHARING_SPACES, ConditionMap, make_condition_map
from .denoiser import SIGMA_DATA
from .samplers import SAMPLERS, SPACINGS
from .schedules import Schedule, make_schedule

DEFAULT_CONFIG_NAME = "digits_etsdm.yaml"


class ConfigError(ValueError):
    """An invalid configuration; the message names the field path and the allowed values."""


def _rng(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, help: str = "") -> Any:
    return {"range": (lo, hi, lo_open), "help": help}


def _h(help: str) -> dict[str, Any]:
    return {"help": help}


# ---------------------------------------------------------------------------------------------
# The sections
# ---------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """Which data set, and how it is read (``etsdm.data.make_dataset``)."""

    name: Literal["digits", "gmm", "folder", "sr"] = field(default="digits", metadata=_h("data set"))
    root: str | None = field(default=None, metadata=_h("image folder (folder / sr data)"))
    resolution: int | None = field(default=None, metadata=_rng(1, None, help="image side after resize + crop"))
    channels: int | None = field(default=None, metadata=_rng(1, 4, help="1 = grayscale, 3 = RGB"))
    hflip: bool = field(default=False, metadata=_h("random horizontal flips"))
    skip_bad: bool = field(default=False, metadata=_h("skip (and count) unreadable images instead of failing"))
    sr_factor: int | None = field(default=None, metadata=_rng(1, None, help="super-resolution factor (sr data)"))
    gmm: dict[str, Any] | None = field(default=None, metadata=_h("Gaussian-mixture options (gmm data)"))
    num_samples: int | None = field(default=None, metadata=_rng(1, None, help="data set size (gmm data)"))
    sr_base: Literal["digits", "folder"] | None = field(
        default=None, metadata=_h("sr data: high-resolution source (null: folder if root is set, else digits)")
    )
    holdout: float = field(default=0, metadata=_rng(0, None, help="folder data: test files (count or fraction)"))
    num_workers: int = field(default=0, metadata=_rng(0, None, help="DataLoader worker processes"))
    labels: bool = field(
        default=False, metadata=_h("class labels as a condition (digits: the digit; folder / sr on a folder: one class "
                                   "per subfolder) -> a class-conditional model (model.num_classes)")
    )


@dataclass
class ModelConfig:
    """The backbone (``etsdm.nets.make_net``)."""

    name: Literal["unet", "mlp"] = field(default="unet", metadata=_h("backbone"))
    preset: str = field(default="tiny", metadata=_h("size preset (tiny, small, normal, large, ...)"))
    overrides: dict[str, Any] = field(default_factory=dict, metadata=_h("keyword overrides for make_net"))
    num_classes: int | None = field(
        default=None, metadata=_rng(1, None, help="class-conditional net: number of classes (null: from the data when "
                                    "data.labels, else unconditional); the null label of guidance is extra")
    )


@dataclass
class ScheduleConfig:
    """The noise schedule (``etsdm.schedules.make_schedule``)."""

    name: Literal["linear", "quadratic", "cosine", "cosine-shift", "zero-snr", "edm", "flow"] = field(
        default="linear", metadata=_h("noise schedule (VP), or the process: edm (Karras et al.), flow (rectified flow)")
    )
    continuous: bool = field(
        default=False, metadata=_h("continuous time t in [0, 1] instead of 0..T-1 (edm, flow: must be true)")
    )
    T: int = field(default=1000, metadata=_rng(2, None, help="number of discrete timesteps"))
    modified: bool = field(default=False, metadata=_h("Modified-NS (Appendix D.3.2)"))
    beta_min: float = field(default=0.1, metadata=_rng(0.0, None, help="β̄_min of Eq. A3-A6"))
    beta_max: float = field(default=20.0, metadata=_rng(0.0, None, lo_open=True, help="β̄_max of Eq. A3-A6"))
    s: float = field(default=0.008, metadata=_rng(0.0, None, help="cosine offset s (Eq. A7)"))
    resolution: int = field(default=256, metadata=_rng(1, None, help="cosine-shift: image resolution"))
    base_resolution: int = field(default=64, metadata=_rng(1, None, help="cosine-shift: base resolution"))
    sigma_min: float = field(default=0.002, metadata=_rng(0.0, None, lo_open=True, help="edm: σ_min (Table 1)"))
    sigma_max: float = field(default=80.0, metadata=_rng(0.0, None, lo_open=True, help="edm: σ_max (Table 1)"))


@dataclass
class ConditionConfig:
    """The condition map the Denoiser applies (identity | E-TSDM sharing | remap)."""

    kind: Literal["identity", "etsdm", "remap"] = field(default="identity", metadata=_h("condition map"))
    t_tilde: float | None = field(
        default=None,
        metadata=_rng(0.0, None, lo_open=True, help="E-TSDM t̃ in the process's time (null: T/10 discrete, 0.1 "
                      "continuous VP; edm σ̃ = 0.342, flow t̃ = 0.255: the paper's band end; space vp: 100)"),
    )
    n: int = field(default=5, metadata=_rng(1, None, help="E-TSDM number of sub-intervals"))
    space: Literal[SHARING_SPACES] | None = field(  # type: ignore[valid-type]  # t | log-snr | vp
        default=None,
        metadata=_h("E-TSDM sub-intervals uniform in the process's t (σ for edm), in log-SNR (edm: in c_noise), or "
                    "the paper's VP boundaries carried by log-SNR (null: t for VP / flow, log-snr for edm)"),
    )
    remap: Literal["inverse", "inverse-sigmoid"] = field(default="inverse", metadata=_h("remap function"))
    remap_k: float | None = field(
        default=None,
        metadata=_rng(0.0, None, lo_open=True, help="remap: K bounding λ (null: T for 1/t, log(2T-1) inverse-sigmoid)"),
    )
    remap_grid: Literal["t", "lambda"] = field(
        default="t", metadata=_h("remap: inference grid, the sampler's own (t) or uniform in λ (Table A5)")
    )


@dataclass
class DiffusionConfig:
    """The objective: prediction type, condition map, time sampling, DDPM-r regulariser, and the
    training knobs of diffusers' / kohya's scripts (``etsdm.losses``; they act on the real t, the
    condition map on the sampled t)."""

    prediction: Literal["eps", "v", "x0", "edm", "flow"] = field(
        default="eps", metadata=_h("network output: eps, v, x0, edm (EDM's F, preconditioned), flow (velocity dx/dt)")
    )
    sigma_data: float = field(
        default=SIGMA_DATA, metadata=_rng(0.0, None, lo_open=True, help="prediction edm: EDM's σ_data (data std)")
    )
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    time_sampling: Literal["uniform", "remap-lambda", "logit-normal", "log-normal"] = field(
        default="uniform", metadata=_h("training t density: uniform, logit-normal (logit_mean/std), remap-lambda, "
                                       "log-normal (EDM: ln(σ/α) ~ N(p_mean, p_std²))")
    )
    reg_weight: float = field(default=0.0, metadata=_rng(0.0, None, help="DDPM-r weight (Appendix D.3.1)"))
    logit_mean: float = field(default=0.0, metadata=_h("logit-normal time sampling: mean of logit(u)"))
    logit_std: float = field(default=1.0, metadata=_rng(0.0, None, lo_open=True, help="logit-normal: std"))
    p_mean: float = field(default=-1.2, metadata=_h("log-normal time sampling: mean of ln(σ/α) (EDM's P_mean)"))
    p_std: float = field(
        default=1.2, metadata=_rng(0.0, None, lo_open=True, help="log-normal: std of ln(σ/α) (EDM's P_std)")
    )
    timestep_shift: float = field(
        default=1.0, metadata=_rng(0.0, None, lo_open=True, help="shift s: u <- s·u/(1+(s-1)·u) (SD3/kohya)")
    )
    min_timestep: float | None = field(default=None, metadata=_rng(0.0, None, help="smallest training t (kohya)"))
    max_timestep: float | None = field(default=None, metadata=_rng(0.0, None, help="training t below this (kohya)"))
    snr_gamma: float | None = field(
        default=None, metadata=_rng(0.0, None, lo_open=True, help="Min-SNR-γ loss weight (null: off; 5 typical)")
    )
    noise_offset: float = field(default=0.0, metadata=_rng(0.0, None, help="offset noise (diffusers/kohya)"))
    input_perturbation: float = field(default=0.0, metadata=_rng(0.0, None, help="input perturbation (diffusers)"))

    def density(self) -> Any:
        """The training-time density (``etsdm.losses.TimestepDensity``)."""
        from .losses import TimestepDensity

        return TimestepDensity(self.time_sampling, logit_mean=self.logit_mean, logit_std=self.logit_std,
                               shift=self.timestep_shift, min_timestep=self.min_timestep,
                               max_timestep=self.max_timestep, p_mean=self.p_mean, p_std=self.p_std)

    def loss_knobs(self) -> dict[str, Any]:
        """Keyword arguments of ``etsdm.losses.diffusion_loss`` beyond t and noise."""
        return {"reg_weight": self.reg_weight, "snr_gamma": self.snr_gamma, "noise_offset": self.noise_offset,
                "input_perturbation": self.input_perturbation}


@dataclass
class SampleConfig:
    """How the trainer draws its preview sample grids, and the run's sampling defaults for
    ``etsdm.runs.generate`` (spacing, final step, clipping) and, for EDM and flow runs, for
    ``etsdm sample`` without ``--sampler`` (:func:`etsdm.runs.default_sampler`; VP runs keep the
    CLI's DDIM-50). See etsdm.samplers and docs/samplers.md for the conventions."""

    sampler: Literal[SAMPLERS] = field(  # type: ignore[valid-type]  # every name of etsdm.samplers.SAMPLERS
        default="ddpm", metadata=_h("sampler (the preview's; edm / flow runs: also `etsdm sample`'s default)")
    )
    nfe: int = field(default=1000, metadata=_rng(1, None, help="network evaluations"))
    num: int = field(default=100, metadata=_rng(1, None, help="samples in the grid"))
    batch: int = field(default=500, metadata=_rng(1, None, help="samples per forward batch"))
    timestep_spacing: Literal[SPACINGS] | None = field(  # type: ignore[valid-type]  # etsdm.samplers.SPACINGS
        default=None, metadata=_h("step grid (null: linspace = integer timesteps for discrete schedules, karras for "
                                  "edm, time-uniform for other continuous; fractional: queries between timesteps)"))
    denoise_to_zero: bool | None = field(
        default=None, metadata=_h("last NFE = x̂0 at t_end (null: on for ddpm/ddim, off for DPM-Solvers, Lu et al.)")
    )
    order_plan: Literal["lu", "diffusers"] = field(default="lu", metadata=_h("DPM-Solver NFE split (Lu et al. 3.4)"))
    clip: Literal["auto", "none", "static", "dynamic"] = field(
        default="auto", metadata=_h("x̂0 clipping (auto: static [-1, 1] for images, none for gmm / vectors)")
    )
    guidance: float = field(
        default=1.0, metadata=_rng(0.0, None, help="classifier-free guidance scale s: ε_u + s(ε_c - ε_u) "
                                   "(Ho & Salimans; 1 = the conditional model, 0 = the unconditional one)")
    )


@dataclass
class TrainConfig:
    """Optimisation, EMA, precision, checkpointing and logging."""

    steps: int = field(default=10000, metadata=_rng(0, None, help="optimiser steps"))
    batch_size: int = field(
        default=64, metadata=_rng(1, None, help="global batch per optimiser step (split over processes x grad_accum)")
    )
    lr: float = field(default=1e-4, metadata=_rng(0.0, None, lo_open=True, help="Adam learning rate"))
    adam_betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=_h("Adam β1, β2"))
    weight_decay: float = field(default=0.0, metadata=_rng(0.0, None, help="Adam weight decay"))
    warmup_steps: int = field(default=0, metadata=_rng(0, None, help="linear lr warm-up steps"))
    grad_clip: float | None = field(default=None, metadata=_rng(0.0, None, lo_open=True, help="max grad norm"))
    ema_rate: float = field(default=0.9999, metadata=_rng(0.0, 1.0, help="EMA decay"))
    ema_warmup: bool = field(default=True, metadata=_h("EMA decay min(rate, (1+k)/(10+k))"))
    seed: int = field(default=0, metadata=_rng(0, None, help="random seed"))
    grad_accum: int = field(default=1, metadata=_rng(1, None, help="gradient accumulation micro-batches"))
    mixed_precision: Literal["no", "fp16", "bf16"] = field(default="no", metadata=_h("accelerate mixed precision"))
    checkpoint_every: int = field(default=1000, metadata=_rng(1, None, help="steps between checkpoints"))
    keep_last: int = field(default=3, metadata=_rng(1, None, help="checkpoints kept"))
    log_every: int = field(default=50, metadata=_rng(1, None, help="steps between metric lines"))
    sample_every: int = field(default=0, metadata=_rng(0, None, help="steps between sample grids (0: at end)"))
    tensorboard: bool = field(default=True, metadata=_h("write TensorBoard events"))
    label_dropout: float = field(
        default=0.1, metadata=_rng(0.0, 1.0, help="classifier-free guidance: probability a training label is replaced "
                                   "by the null label (class-conditional runs; 0: no unconditional model)")
    )
    compile: bool = field(default=False, metadata=_h("torch.compile the network for training (opt-in)"))


@dataclass
class LatentConfig:
    """Latent diffusion (Rombach et al. 2022): diffusion on an autoencoder's latents
    (``etsdm.latent``). ``autoencoder: null``: diffusion on the data itself."""

    autoencoder: str | None = field(
        default=None, metadata=_h("an etsdm autoencoder run folder, a local diffusers AutoencoderKL folder, or an "
                                  "autoencoder YAML config (trained once and cached); relative to the config file")
    )
    scaling_factor: float | None = field(
        default=None, metadata=_rng(0.0, None, lo_open=True, help="latents are multiplied by it (null: 1/std of the "
                                    "training latents, as LDM; a diffusers VAE's own scaling_factor if it has one)")
    )
    cache: str | None = field(
        default=None, metadata=_h("latent cache folder (null: $ETSDM_CACHE/latents or ~/.cache/etsdm/latents)")
    )


@dataclass
class RunConfig:
    """Everything a run needs."""

    name: str = field(default="run", metadata=_h("run name (legends, logs)"))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)

    # --- builders ----------------------------------------------------------------------------
    def build_schedule(self) -> Schedule:
        """The noise schedule (the process) of this run."""
        s = self.schedule
        try:
            return make_schedule(
                s.name, T=s.T, continuous=s.continuous, modified=s.modified, beta_min=s.beta_min,
                beta_max=s.beta_max, s=s.s, resolution=s.resolution, base_resolution=s.base_resolution,
                sigma_min=s.sigma_min, sigma_max=s.sigma_max,
            )
        except ValueError as err:
            raise ConfigError(f"schedule: {err}") from None

    def build_condition(self, schedule: Schedule | None = None) -> ConditionMap:
        """The condition map the Denoiser applies (T = None in continuous time); E-TSDM on EDM / flow
        (or with ``space``) is built on the run's process (``etsdm.conditioning.process_sharing``)."""
        c = self.diffusion.condition
        schedule = schedule if schedule is not None else self.build_schedule()
        T = None if self.schedule.continuous else self.schedule.T
        opts: dict[str, Any] = {"n": c.n, "remap": c.remap, "remap_k": c.remap_k, "space": c.space}
        if c.remap_grid != "t" and c.kind != "remap":
            raise ConfigError(f"diffusion.condition.remap_grid: {c.remap_grid!r} needs diffusion.condition.kind: remap")
        if c.space is not None and c.kind != "etsdm":
            raise ConfigError(f"diffusion.condition.space: {c.space!r} applies to diffusion.condition.kind: etsdm only")
        if c.t_tilde is not None:
            whole = (T is not None and c.space in (None, "t")) or c.space == "vp"  # a count of timesteps
            opts["t_tilde"] = int(c.t_tilde) if whole and float(c.t_tilde).is_integer() else c.t_tilde
        try:
            return make_condition_map(c.kind, T=T, schedule=schedule, **opts)
        except ValueError as err:
            raise ConfigError(f"diffusion.condition: {err}") from err


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass with validation
# ---------------------------------------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _check_range(value: float, meta: dict[str, Any], path: str) -> None:
    if "range" not in meta:
        return
    lo, hi, lo_open = meta["range"]
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi)
    if bad:
        left = "(" if lo_open else "["
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf)" if hi is None else f"{hi:g}]"
        raise ConfigError(f"{path}: {value!r} is out of range; allowed {left}{lo_s}, {hi_s}")


def _coerce(value: Any, tp: Any, path: str, meta: dict[str, Any]) -> Any:
    """Check ``value`` against the annotation ``tp`` (coercing strings/ints where safe)."""
    optional, tp = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{path}: may not be null")
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, path)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
        return value
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp in (int, float):
        try:
            if isinstance(value, bool):
                raise TypeError
            num = tp(value)
            if tp is int and float(value) != num:
                raise TypeError
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected {'an integer' if tp is int else 'a number'}, got {value!r}") from None
        _check_range(num, meta, path)
        return num
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{path}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{path}[{i}]", {}) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    return value  # pragma: no cover - every annotation above is handled


def _from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, validating every field."""
    if isinstance(data, cls):
        data = to_dict(data)
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown field {where}{unknown[0]}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        sub = f"{path}.{name}" if path else name
        kwargs[name] = _coerce(value, hints[name], sub, dict(fields[name].metadata))
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass config as plain YAML-able data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(obj)


def validate(cfg: RunConfig) -> RunConfig:
    """Cross-field checks; returns ``cfg``. Raises :class:`ConfigError`."""
    cfg = _from_dict(RunConfig, to_dict(cfg))  # re-run the field checks (e.g. after overrides)
    _check_process(cfg)
    if cfg.schedule.beta_min >= cfg.schedule.beta_max:
        raise ConfigError(f"schedule.beta_min ({cfg.schedule.beta_min}) must be < schedule.beta_max")
    if cfg.schedule.modified and cfg.schedule.name not in ("linear", "quadratic", "cosine"):
        raise ConfigError(f"schedule.modified applies to linear, quadratic, cosine; not {cfg.schedule.name!r}")
    if cfg.diffusion.time_sampling == "remap-lambda" and cfg.diffusion.condition.kind != "remap":
        raise ConfigError("diffusion.time_sampling: 'remap-lambda' needs diffusion.condition.kind: remap")
    d = cfg.data
    if (d.name == "folder" or (d.name == "sr" and d.sr_base == "folder")) and not d.root:
        raise ConfigError(f"data.root: required for data.name={d.name!r} (a folder of images)")
    cfg.build_condition()  # t_tilde / n consistency (raises ConfigError)
    _check_conditional(cfg)
    _check_knobs(cfg)
    _check_sample(cfg)
    for message in _process_warnings(cfg):
        warnings.warn(message, stacklevel=2)
    return cfg


PROCESSES = ("edm", "flow")  # schedule.name values that are not VP schedules
DIFFUSION_DEFAULTS = DiffusionConfig()


def _check_process(cfg: RunConfig) -> None:
    """Which process / objective combinations are allowed (ConfigError naming the field otherwise).

    * ``edm`` and ``flow`` are continuous-time processes: ``schedule.continuous: true``; the VP-only
      fields (``modified``) and EDM's ``sigma_min`` / ``sigma_max`` apply where they mean something.
    * ``prediction: edm`` is allowed on every process: the Denoiser writes EDM's preconditioning in
      the scaled variables x/α, σ/α, so on VP it is EDM's own "VP + EDM preconditioning" (EDM
      Table 1's c_skip, c_out, c_in; the network keeps its VP time input). ``sigma_data`` applies
      to it only.
    * ``prediction: flow`` (the velocity dx/dt) needs a continuous-time schedule: on a discrete
      schedule dα/dt is a one-sided difference that jumps at every timestep (where the sampler
      queries the network), so the target is not a velocity of one process.
    * ``condition.kind: remap`` (Appendix D.3.3) acts on VP's normalised time τ in [0, 1]: VP only.
    * ``time_sampling: log-normal`` takes ``p_mean`` / ``p_std`` and no shift or min / max timestep
      (checked by ``etsdm.losses.TimestepDensity``); ``p_mean`` / ``p_std`` apply to it only.
    * ``input_perturbation`` with ``prediction: edm``: EDM's target F* = (x0 - c_skip x)/c_out depends
      on the network's input x, so "perturb the input, keep the target" has no EDM meaning: refused.
    """
    s, d = cfg.schedule, cfg.diffusion
    if s.name in PROCESSES and not s.continuous:
        raise ConfigError(f"schedule.continuous: schedule.name {s.name!r} is a continuous-time process; "
                          "set schedule.continuous: true")
    if s.name != "edm" and (s.sigma_min, s.sigma_max) != (ScheduleConfig.sigma_min, ScheduleConfig.sigma_max):
        raise ConfigError(f"schedule.sigma_min / sigma_max apply to schedule.name: edm only, not {s.name!r}")
    if s.name == "edm" and not s.sigma_min < s.sigma_max:
        raise ConfigError(f"schedule.sigma_min ({s.sigma_min}) must be < schedule.sigma_max ({s.sigma_max})")
    if d.prediction == "flow" and not s.continuous:
        raise ConfigError("diffusion.prediction: 'flow' (the velocity dx/dt) needs a continuous-time schedule "
                          "(schedule.continuous: true, or schedule.name: edm | flow); allowed here: eps, v, x0, edm")
    if d.prediction != "edm" and d.sigma_data != DIFFUSION_DEFAULTS.sigma_data:
        raise ConfigError(f"diffusion.sigma_data applies to diffusion.prediction: edm only, not {d.prediction!r}")
    if d.condition.kind == "remap" and s.name in PROCESSES:
        raise ConfigError(f"diffusion.condition.kind: 'remap' acts on VP's normalised time; schedule.name {s.name!r} "
                          "allows identity, etsdm")
    lognormal = (d.p_mean, d.p_std) != (DIFFUSION_DEFAULTS.p_mean, DIFFUSION_DEFAULTS.p_std)
    if lognormal and d.time_sampling != "log-normal":
        raise ConfigError(f"diffusion.p_mean / p_std apply to diffusion.time_sampling: log-normal only, "
                          f"not {d.time_sampling!r}")
    if d.input_perturbation and d.prediction == "edm":
        raise ConfigError("diffusion.input_perturbation: not with diffusion.prediction: edm (its target depends on "
                          "the network's input); allowed with eps, v, x0, flow")


def _process_warnings(cfg: RunConfig) -> list[str]:
    """Allowed but probably unintended: the prediction type leaves α = 0 or unscaled inputs."""
    s, pred = cfg.schedule.name, cfg.diffusion.prediction
    out = []
    if s in ("zero-snr", "flow") and pred == "eps":
        where = "the last step" if s == "zero-snr" else "t = 1"
        out.append(f"diffusion.prediction: eps with schedule.name: {s}: α = 0 at {where}, so x̂0 = (x - σε)/α is "
                   "undefined (α is floored at 2^-12, amplifying ε's errors ~4096x); "
                   + ("Lin et al. (2023) use v" if s == "zero-snr" else "flow matching predicts the velocity (flow)"))
    if s == "edm" and pred != "edm":
        out.append(f"diffusion.prediction: {pred} with schedule.name: edm feeds the network x = x0 + σε unscaled "
                   f"(std up to σ_max = {cfg.schedule.sigma_max:g}); EDM scales it by c_in (prediction: edm)")
    return out


def _check_sample(cfg: RunConfig) -> None:
    """The preview sampler's plan (``sample:``) builds, so a bad one fails at load, not mid-training."""
    from .conditioning import remap_lambda_plan
    from .samplers import plan

    s, schedule = cfg.sample, cfg.build_schedule()
    lambda_grid = cfg.diffusion.condition.remap_grid == "lambda"  # Table A5: λ ~ U_λ at inference
    if lambda_grid and s.timestep_spacing is not None:
        raise ConfigError(f"sample.timestep_spacing: {s.timestep_spacing!r} is not used by the remap λ-uniform grid "
                          "(diffusion.condition.remap_grid: lambda); leave it null")
    try:
        if lambda_grid:
            remap_lambda_plan(cfg.build_condition(), schedule, s.sampler, s.nfe)
        else:
            plan(schedule, s.sampler, s.nfe, timestep_spacing=s.timestep_spacing, denoise_to_zero=s.denoise_to_zero,
                 order_plan=s.order_plan)
    except ValueError as err:
        raise ConfigError(f"sample: {err}") from None


def class_conditional(cfg: RunConfig) -> bool:
    """Whether the run's network takes class labels (``data.labels`` or ``model.num_classes``)."""
    return cfg.data.labels or cfg.model.num_classes is not None


def _check_conditional(cfg: RunConfig) -> None:
    """Class labels, guidance and latents fit the data and the backbone."""
    d, m = cfg.data, cfg.model
    if d.labels and d.name == "gmm":
        raise ConfigError("data.labels: gmm data has no class labels; allowed with digits, folder, sr")
    if class_conditional(cfg) and m.name != "unet":
        raise ConfigError(f"model.name: {m.name!r} takes no class labels; use model.name: unet with data.labels")
    if m.num_classes is not None and not d.labels:
        raise ConfigError("model.num_classes: set data.labels: true too (the labels come from the data)")
    if cfg.sample.guidance != 1.0 and not class_conditional(cfg):
        raise ConfigError(f"sample.guidance: {cfg.sample.guidance:g} needs a class-conditional run "
                          "(data.labels: true); an unconditional run takes 1")
    if cfg.latent.autoencoder is not None and d.name not in ("digits", "folder"):
        raise ConfigError(f"latent.autoencoder: latent diffusion runs on image data (digits, folder), not {d.name!r}")
    if cfg.latent.autoencoder is None and (cfg.latent.scaling_factor, cfg.latent.cache) != (None, None):
        raise ConfigError("latent.scaling_factor / latent.cache apply only with latent.autoencoder set")


def _check_knobs(cfg: RunConfig) -> None:
    """The training-time density is valid, and warn where it makes E-TSDM a no-op."""
    from .losses import knob_warnings

    try:
        density = cfg.diffusion.density()
        schedule = cfg.build_schedule()
        density.bounds(schedule)  # min_timestep < max_timestep within the schedule's range
        if cfg.diffusion.condition.kind == "etsdm":
            for message in knob_warnings(cfg.build_condition(), schedule, density):
                warnings.warn(message, stacklevel=3)
    except ValueError as err:
        raise ConfigError(f"diffusion: {err}") from None


def from_dict(data: dict[str, Any]) -> RunConfig:
    """A validated :class:`RunConfig` from plain data (missing fields take their defaults)."""
    return validate(_from_dict(RunConfig, data))


# ---------------------------------------------------------------------------------------------
# YAML and overrides
# ---------------------------------------------------------------------------------------------
def configs_dir() -> Path:
    """The repository's ``configs/`` folder (experiment YAML files; absent in an installed wheel)."""
    return Path(__file__).resolve().parents[2] / "configs"


def packaged_configs() -> Path:
    """The toy configs shipped inside the package (``etsdm/configs/``: digits and gmm, baseline and
    E-TSDM). They are the only copy: the repository's ``configs/<name>.yaml`` are links to them."""
    return Path(str(resources.files("etsdm") / "configs"))


def default_config_path() -> Path:
    """The config ``etsdm train`` uses without CONFIG: E-TSDM on digits, however etsdm is installed."""
    path = packaged_configs() / DEFAULT_CONFIG_NAME
    if not path.is_file():  # a broken install: never fall back to the (baseline) dataclass defaults
        raise ConfigError(f"the default config {path} is missing from the installed package; reinstall etsdm")
    return path


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(p: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file; an empty file or a key given twice is an error."""
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {p}: not valid YAML ({err})") from err
    if data is None:
        raise ConfigError(f"config file {p} is empty (no fields); give at least one section, e.g. `data: {{name: "
                          "digits}`, or omit CONFIG for the default E-TSDM job")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: expected a mapping of sections at the top level, "
                          f"got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config (None: the packaged E-TSDM-on-digits config) and apply ``a.b=value`` overrides.

    Raises:
        ConfigError: a missing, empty or invalid file (named), or a bad field / override.
    """
    p = default_config_path() if path is None else Path(path)
    data = _read_yaml(p)
    if "autoencoder" in data:  # etsdm.latent.AutoencoderConfig's own section
        raise ConfigError(f"{p}: an autoencoder config (its `autoencoder:` section); `etsdm train {p.name}` trains "
                          "it, or name it in a diffusion config's latent.autoencoder")
    for item in overrides:
        set_path(data, item)
    try:
        return from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{p}: {err}") from None


def set_path(data: dict[str, Any], item: str, root: type = RunConfig) -> None:
    """Apply one ``a.b.c=value`` override to nested plain data (value parsed as YAML); field names
    are checked against the dataclass ``root`` (a run's config, or e.g. an autoencoder config)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. train.steps=100")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty field name")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    cls: Any = root
    node = data
    for i, part in enumerate(parts):
        path = ".".join(parts[: i + 1])
        if cls is not None:
            names = [f.name for f in dataclasses.fields(cls)]
            if part not in names:
                raise ConfigError(f"unknown field {path}; allowed: {', '.join(names)}")
            tp = _is_optional(_hints(cls)[part])[1]
            cls = tp if dataclasses.is_dataclass(tp) else None
        if i == len(parts) - 1:
            node[part] = value
        else:
            if not isinstance(node.get(part), dict):
                node[part] = {} if node.get(part) is None else to_dict(node[part])
            node = node[part]


def dump_config(cfg: RunConfig) -> str:
    """The config as YAML text (every field, in declaration order)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the full config as YAML."""
    Path(path).write_text(dump_config(cfg))


def field_help(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str]]:
    """(path, help) for every leaf field: the reference for ``--set``."""
    out = []
    for f in dataclasses.fields(cls):
        tp = _is_optional(_hints(cls)[f.name])[1]
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out += field_help(tp, path + ".")
        else:
            out.append((path, f.metadata.get("help", "")))
    return out


def _describe_type(tp: Any, meta: dict[str, Any]) -> str:
    """A field's type and allowed values, as ``etsdm train --fields`` prints them."""
    optional, tp = _is_optional(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        text = "one of " + "|".join(map(str, typing.get_args(tp)))
    elif tp is bool:
        text = "true|false"
    elif tp in (int, float):
        text = "integer" if tp is int else "number"
        if "range" in meta:
            lo, hi, lo_open = meta["range"]
            text += f" in {'(' if lo_open else '['}{'-inf' if lo is None else f'{lo:g}'}, "
            text += "inf)" if hi is None else f"{hi:g}]"
    elif origin is tuple:
        text = "[" + ", ".join(_describe_type(a, {}) for a in typing.get_args(tp)) + "]"
    elif origin is dict:
        text = "mapping"
    else:
        text = getattr(tp, "__name__", str(tp)).replace("str", "string")
    return text + (" or null" if optional else "")


def field_reference(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(path, type and allowed values, help) for every leaf field: what ``--fields`` prints."""
    out = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = _is_optional(hints[f.name])[1]
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out += field_reference(tp, path + ".")
        else:
            out.append((path, _describe_type(hints[f.name], dict(f.metadata)), f.metadata.get("help", "")))
    return out
