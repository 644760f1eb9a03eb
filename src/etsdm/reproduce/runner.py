"""Which runs a reproduction needs, training them (or reusing finished ones), and the cached
evaluations of each run.

Layout under OUT:

* ``runs/<group>/<arm>-s<seed>/`` — an ordinary etsdm run (``etsdm sample`` etc. accept it);
  ``<group>`` is ``shared`` for a run two or more claims use, else ``claim<id>``. A run whose final
  checkpoint and final outputs exist is reused as it is; a killed one is resumed (bit for bit).
* ``evals/<group>/<arm>-s<seed>/`` — one file per finished evaluation, written atomically:
  ``<plan>.npz`` (the sample pool), ``fid-<plan>.json``, ``lipschitz.json``, ``stability.json``.
  Each JSON records the settings it was computed with; a file with other settings is recomputed.

Pairing: every run of training seed k samples from noise seed 1000 + k and measures K and the
stability with forward noise from the same seed, so the arms of one seed share all noise.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..config import ConfigError, RunConfig, load_config, packaged_configs
from ..latent.folders import cache_root
from ..train.outputs import write_atomic
from .budgets import Budget
from .claims import CLAIMS, STAB_SCALES, Arm, Claim, Family

NOISE_SEED_OFFSET = 1000
BASE_CONFIG = "digits_baseline.yaml"  # every arm is overrides on the packaged digits baseline


class ReproduceError(RuntimeError):
    """A user-facing problem (a run folder holding another run, bad data, a bad plan)."""


# ---------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------
def _literal(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(value.lower(), value)


def parse_plan(spec: str) -> tuple[str, int, dict[str, Any]]:
    """``"dpm-solver-3:20:timestep_spacing=fractional"`` → ("dpm-solver-3", 20, {...}).

    Raises:
        ValueError: not ``sampler:nfe[:option=value,...]``.
    """
    parts = spec.split(":")
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"plan {spec!r} is not sampler:nfe[:option=value,...]")
    options: dict[str, Any] = {}
    for item in ",".join(parts[2:]).split(",") if len(parts) > 2 else []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"plan {spec!r}: option {item!r} is not key=value")
        options[key] = _literal(value)
    return parts[0], int(parts[1]), options


def slug(spec: str) -> str:
    """A file-name-safe form of a plan."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", spec)


# ---------------------------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------------------------
@dataclass
class RunSpec:
    """One training run: an arm, its family's budget, one seed; the measurements it must provide."""

    arm: Arm
    family: Family
    seed: int
    group: str
    name: str
    overrides: tuple[str, ...]
    claims: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)  # budget-resolved: fid:<plan>, lipschitz, stability

    @property
    def key(self) -> str:
        return f"{self.group}/{self.name}-s{self.seed}"

    def run_dir(self, out: Path) -> Path:
        return out / "runs" / self.group / f"{self.name}-s{self.seed}"

    def eval_dir(self, out: Path) -> Path:
        return out / "evals" / self.group / f"{self.name}-s{self.seed}"


def data_overrides(data: str | None) -> tuple[str, ...]:
    """``--data``: digits (None) or an image folder, resized to 16 px (channels inferred)."""
    if data is None or data == "digits":
        return ()
    return ("data.name=folder", f"data.root={data}", "data.resolution=16", "data.holdout=0.2")


def arm_overrides(arm: Arm, budget: Budget, family: Family, seed: int, data: str | None) -> tuple[str, ...]:
    sets = (*data_overrides(data), *budget.families[family].train_overrides(), *arm.overrides, f"train.seed={seed}")
    return tuple(_autoencoder_override(item, budget) for item in sets)


LATENT_KEY = "latent.autoencoder="


def _autoencoder_override(item: str, budget: Budget) -> str:
    """A latent arm's autoencoder config (named beside the packaged configs, where :func:`train_run`
    resolves it); at a budget with ``autoencoder_steps`` a copy trained that many steps, written once
    into etsdm's cache and named by its absolute path."""
    if not item.startswith(LATENT_KEY) or budget.autoencoder_steps is None:
        return item
    source = packaged_configs() / item[len(LATENT_KEY):]
    data = yaml.safe_load(source.read_text())
    data.setdefault("train", {})["steps"] = budget.autoencoder_steps
    text = yaml.safe_dump(data, sort_keys=False)
    derived = cache_root() / "reproduce" / f"{source.stem}-steps{budget.autoencoder_steps}.yaml"
    if not derived.is_file() or derived.read_text() != text:
        derived.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(derived, lambda p: p.write_text(text))
    return LATENT_KEY + str(derived)


def run_config(spec: RunSpec) -> RunConfig:
    """The spec's RunConfig (packaged digits baseline + overrides)."""
    from ..runs import resolve_data

    try:
        cfg = load_config(packaged_configs() / BASE_CONFIG, spec.overrides)
        return resolve_data(cfg)[0]
    except (ConfigError, OSError, ValueError) as err:
        raise ReproduceError(f"{spec.key}: {err}") from None


def plan_runs(budget: Budget, claim_ids: Iterable[str], data: str | None = None) -> list[RunSpec]:
    """Every run the selected claims need at ``budget``, with the measurements each must provide.

    Folders are decided over ALL claims (so a later ``--claims`` selection finds the same runs):
    a run two claims use lives in ``shared``, else in ``claim<id>``; equal configs are one run.
    """
    selected = set(claim_ids)
    uses: dict[tuple[tuple[str, ...], int], RunSpec] = {}
    for claim in CLAIMS.values():
        fam = budget.families[claim.family]
        rows = budget.rows(claim)
        for arm in claim.arms:
            metrics = list(dict.fromkeys(_resolve_metric(m, budget) for m in claim.metrics_of(arm.name, rows)))
            if not metrics:
                continue
            for seed in range(fam.seeds):
                ov = arm_overrides(arm, budget, claim.family, seed, data)
                spec = uses.setdefault((ov, seed), RunSpec(arm, claim.family, seed, "", arm.name, ov))
                spec.claims.append(claim.id)
                if claim.id in selected:
                    spec.metrics += [m for m in metrics if m not in spec.metrics]
    specs = list(uses.values())
    for spec in specs:
        spec.group = "shared" if len(set(spec.claims)) > 1 else f"claim{spec.claims[0]}"
    _disambiguate(specs)
    return [s for s in specs if s.metrics]


SR_KEYS = ("psnr:", "ssim:")  # row metrics of one super-resolution evaluation ("sr:<plan>")


def _resolve_metric(metric: str, budget: Budget) -> str:
    if metric.startswith("fid:"):
        return "fid:" + budget.plan(metric[4:], T=1000)  # ddpm:T: every arm here has T = 1000 steps
    if metric.startswith(SR_KEYS):
        return "sr:" + budget.plan(metric.split(":", 1)[1], T=1000)
    if metric.startswith("K_"):
        return "lipschitz"
    if metric.startswith("stab:"):
        return "stability"
    raise ValueError(f"unknown measurement {metric!r}")


def _disambiguate(specs: list[RunSpec]) -> None:
    """Two different configs with one arm name in one group: the non-main one gets its family as suffix."""
    seen: dict[tuple[str, str, int], tuple[str, ...]] = {}
    for spec in specs:
        k = (spec.group, spec.name, spec.seed)
        if k in seen and seen[k] != spec.overrides:
            spec.name = f"{spec.name}-{spec.family}"
        seen.setdefault((spec.group, spec.name, spec.seed), spec.overrides)


def run_finished(run: Path, steps: int) -> bool:
    """The final checkpoint (step = ``steps``) and the final outputs (its sample grid) exist."""
    from ..train.checkpoint import latest_checkpoint, read_meta

    ckpt = latest_checkpoint(run)
    if ckpt is None:
        return False
    return read_meta(ckpt).get("step") == steps and (run / "samples" / f"step_{steps:08d}.npz").is_file()


def check_same_run(run: Path, cfg: RunConfig) -> None:
    """Refuse a run folder that holds a different run (another budget or version wrote it)."""
    from ..train.trainer import defining_changes

    if not (run / "config.yaml").is_file():
        return
    try:
        old = load_config(run / "config.yaml")
    except ConfigError as err:
        raise ReproduceError(f"{run}/config.yaml is unreadable ({err}); remove {run} or choose another --out") from None
    changes = defining_changes(old, cfg)
    if old.train.steps != cfg.train.steps:
        changes.append(f"train.steps ({old.train.steps} -> {cfg.train.steps})")
    if changes:
        raise ReproduceError(f"{run} holds a different run ({'; '.join(changes[:4])}); another budget wrote it? "
                             "Choose another --out, or remove that run folder")


def train_run(spec: RunSpec, out: Path) -> bool:
    """Train (or resume) ``spec``'s run unless it is finished; True when it trained."""
    from ..train.checkpoint import step_dirs
    from ..train.trainer import Trainer

    cfg = run_config(spec)
    run = spec.run_dir(out)
    check_same_run(run, cfg)
    if run_finished(run, cfg.train.steps):
        return False
    trainer = Trainer(cfg, run, resume=bool(step_dirs(run)), progress=False, base_dir=packaged_configs())
    try:
        trainer.train()
    finally:
        trainer.acc.end_training()
    return True


# ---------------------------------------------------------------------------------------------
# Cached evaluations
# ---------------------------------------------------------------------------------------------
def atomic_json(path: Path, record: dict[str, Any]) -> None:
    from ..train.checkpoint import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1, default=float))


def cached(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The record in ``path`` if it was computed with ``settings`` (else None: recompute)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("settings") == json.loads(json.dumps(settings)) else None


@dataclass
class Context:
    """What every evaluation needs: the output folder, budget, data and the shared FID reference."""

    out: Path
    budget: Budget
    data: str | None = None
    device: str = "cpu"  # where the trained networks sample and are measured (training: accelerate's choice)
    _reference: Any = None

    def reference(self, model: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.nn.Module, str]:
        """(reference images, held-out images, feature net, description) for FID-n of the run's data:
        digits (classifier features) or an image folder (fid-own)."""
        if self._reference is None:
            if model.data_name == "digits":
                self._reference = _digits_reference(self)
            elif model.data_name == "folder" and model.config is not None:
                self._reference = _folder_ref(model)
            else:
                raise ReproduceError(f"{model.source}: FID needs digits or image-folder data, not {model.data_name!r}")
        return self._reference


def _digits_reference(ctx: Context) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module, str]:
    from ..metrics.features import digits_split, load_feature_net, save_feature_net, train_feature_net

    file = ctx.out / "cache" / f"digits_features-e{ctx.budget.feature_epochs}.safetensors"
    if not file.is_file():
        net, report = train_feature_net(epochs=ctx.budget.feature_epochs)
        write_atomic(file, lambda p: save_feature_net(net, p, report))
    net = load_feature_net(file)[0]
    return (digits_split("train")[0], digits_split("test")[0], net,
            f"digits classifier features ({ctx.budget.feature_epochs} epochs); reference: digits train split, "
            "floor: test split")


def _folder_ref(model: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.nn.Module, str]:
    from ..cli.run import _folder_reference  # the reference `etsdm sample --evaluate` uses for a folder run
    from ..metrics.features import train_image_feature_net

    ref = _folder_reference(model.config)
    net = train_image_feature_net(ref.images)[0]  # deterministic (fixed seed)
    return ref.images, ref.held_out, net, f"fid-own (rotation-prediction CNN) on {ref.source}"


def pool_samples(spec: RunSpec, ctx: Context, plan: str, model: Any) -> torch.Tensor:
    """The cached pool of one (run, plan), drawn from noise seed 1000 + training seed."""
    from ..runs import generate

    fam = ctx.budget.families[spec.family]
    file = spec.eval_dir(ctx.out) / f"{slug(plan)}-pool{fam.pool}.npz"
    if file.is_file():
        return torch.from_numpy(np.load(file)["samples"])
    sampler, nfe, options = parse_plan(plan)
    x = generate(model(), fam.pool, sampler=sampler, nfe=nfe, seed=NOISE_SEED_OFFSET + spec.seed,
                 batch=min(fam.pool, 500), device=ctx.device, **options)
    write_atomic(file, lambda p: np.savez(p, samples=x.numpy(), plan=plan, noise_seed=NOISE_SEED_OFFSET + spec.seed))
    return x


def eval_fid(spec: RunSpec, ctx: Context, plan: str, model: Callable[[], Any]) -> dict[str, Any]:
    """FID-n of the run's pool for ``plan`` (mean over eval seeds) and the real-vs-real floor at n."""
    from ..metrics import SampleError, check_samples, fid_with_floor
    from ..runs import describe_sampling

    fam = ctx.budget.families[spec.family]
    settings = {"plan": plan, "pool": fam.pool, "n": fam.n, "eval_seeds": fam.eval_seeds,
                "features": ctx.budget.feature_epochs, "noise_seed": NOISE_SEED_OFFSET + spec.seed}
    path = spec.eval_dir(ctx.out) / f"fid-{slug(plan)}.json"
    hit = cached(path, settings)
    if hit is not None:
        return hit
    sampler, nfe, options = parse_plan(plan)
    sampling = describe_sampling(model(), sampler, nfe, **options)
    try:  # NaN / inf / far out of range: no FID; slight overshoot clamped to [-1, 1]
        x = check_samples(pool_samples(spec, ctx, plan, model), what=f"{spec.name} seed {spec.seed} {plan} samples")[0]
    except SampleError as err:  # the run diverged: a failure of its arm, shown in the report (report.row_result)
        record = {"settings": settings, "diverged": str(err), "fid": None, "floor": None, "sampling": sampling}
        atomic_json(path, record)
        return record
    ref, held, net, source = ctx.reference(model())
    n = min(fam.n, held.shape[0] if held is not None else ref.shape[0] // 2)  # a small folder: fewer held-out
    if n < 2:
        raise ReproduceError(f"FID-n: {source} leaves fewer than 2 real images for the floor; use a larger folder")
    res = fid_with_floor(x, ref, held, net, n=n, seeds=list(range(fam.eval_seeds)))
    record = {"settings": settings, "n": n, "fid": res["fid"], "fid_values": res["fid_values"], "floor": res["floor"],
              "floor_values": res["floor_values"], "features": source, "sampling": sampling}
    atomic_json(path, record)
    return record


def eval_sr(spec: RunSpec, ctx: Context, plan: str, model: Callable[[], Any]) -> dict[str, Any]:
    """PSNR / SSIM (mean over images) of one output per held-out low-resolution input (the first
    ``pool`` test pairs), drawn with ``plan`` from noise seed 1000 + training seed (Fig. A12)."""
    from ..metrics import psnr, ssim
    from ..runs import describe_sampling, generate

    fam = ctx.budget.families[spec.family]
    settings = {"plan": plan, "pairs": fam.pool, "noise_seed": NOISE_SEED_OFFSET + spec.seed}
    path = spec.eval_dir(ctx.out) / eval_file(f"sr:{plan}")
    hit = cached(path, settings)
    if hit is not None:
        return hit
    m = model()
    test = m.dataset("test")
    items = [test[i] for i in range(min(fam.pool, len(test)))]
    highres = torch.stack([it["x0"] for it in items])
    lowres = torch.stack([it["cond"]["lowres"] for it in items])
    sampler, nfe, options = parse_plan(plan)
    record: dict[str, Any] = {"settings": settings, "n": len(items),
                              "sampling": describe_sampling(m, sampler, nfe, **options)}
    x = generate(m, len(items), sampler=sampler, nfe=nfe, seed=NOISE_SEED_OFFSET + spec.seed,
                 batch=min(len(items), 500), device=ctx.device, cond={"lowres": lowres}, **options)
    if not bool(torch.isfinite(x).all()):  # the run diverged: a failure of its arm (report.row_result)
        record["diverged"] = f"{spec.name} seed {spec.seed} {plan}: non-finite outputs"
    else:
        x = x.clamp(-1.0, 1.0)
        p, s = psnr(x, highres), ssim(x, highres)
        record |= {f"psnr:{plan}": float(p.mean()), f"ssim:{plan}": float(s.mean()),
                   "psnr_std": float(p.std()), "ssim_std": float(s.std())}
    atomic_json(path, record)
    return record


def _times(schedule: Any, t_tilde: float) -> tuple[torch.Tensor, float]:
    from ..analysis.lipschitz import default_dt, steps_per_unit

    per = steps_per_unit(schedule)
    steps = int(round(t_tilde * per))
    return torch.arange(steps, dtype=torch.float64) / per, default_dt(schedule)


def eval_lipschitz(spec: RunSpec, ctx: Context, model: Callable[[], Any]) -> dict[str, Any]:
    """K(t, t+1) of Eq. (8) over [0, t̃) (network output, per step), forward noise paired by seed."""
    from ..analysis import lipschitz_curve
    from ..analysis.lipschitz import boundary_jumps, curve_summary, sharing_boundaries
    from ..analysis.stability import default_t_tilde
    from ..conditioning import TimestepSharing

    settings = {"samples": ctx.budget.measure_samples, "noise_seed": NOISE_SEED_OFFSET + spec.seed}
    path = spec.eval_dir(ctx.out) / "lipschitz.json"
    hit = cached(path, settings)
    if hit is not None:
        return hit
    m = model()
    t_tilde = default_t_tilde(m.schedule)
    times, dt = _times(m.schedule, t_tilde)
    x0 = measure_images(m, ctx.budget.measure_samples).to(ctx.device)
    gen = torch.Generator(device=ctx.device).manual_seed(NOISE_SEED_OFFSET + spec.seed)
    curve = lipschitz_curve(m.denoiser, x0, m.schedule, times, generator=gen)
    summary = curve_summary(curve.t, curve.K, curve.dt, t_tilde, sharing_boundaries(m.denoiser.condition))
    # the default sharing's boundaries (t̃, n = 5): the same steps for both arms
    default = TimestepSharing(None if not m.schedule.continuous else t_tilde, 5,
                              T=None if m.schedule.continuous else m.schedule.T)
    jumps = boundary_jumps(curve.t, dt, [float(b) for b in default.boundaries])
    K = curve.K.double()
    tenth = max(1, len(K) // 10)
    record = {"settings": settings, "t": curve.t.tolist(), "K": K.tolist(), "unit": curve.unit,
              "output": curve.output, "t_tilde": t_tilde, "summary": summary,
              "K_mean": float(K.mean()), "K_max": float(K[~jumps].max()),
              "K_boundary": float(K[jumps].mean()) if bool(jumps.any()) else math.nan,
              "K_early": float(K[:tenth].mean()), "K_late": float(K[-tenth:].mean())}
    atomic_json(path, record)
    return record


def eval_stability(spec: RunSpec, ctx: Context, model: Callable[[], Any]) -> dict[str, Any]:
    """Per-pixel MSE of x̂0 at t = t̃ under x_t̃ + N(0, s² I) (Fig. 2), noise paired by seed."""
    from ..analysis.stability import default_t_tilde, perturbation_error

    settings = {"samples": ctx.budget.measure_samples, "noise_seed": NOISE_SEED_OFFSET + spec.seed,
                "scales": list(STAB_SCALES)}
    path = spec.eval_dir(ctx.out) / "stability.json"
    hit = cached(path, settings)
    if hit is not None:
        return hit
    m = model()
    t_tilde = default_t_tilde(m.schedule)
    gen = torch.Generator(device=ctx.device).manual_seed(NOISE_SEED_OFFSET + spec.seed)
    x0 = measure_images(m, ctx.budget.measure_samples).to(ctx.device)
    res = perturbation_error(m.denoiser, x0, m.schedule, t=t_tilde,
                             scales=STAB_SCALES, generator=gen)
    record = {"settings": settings, "t": t_tilde, "metric": res.metric,
              **{f"stab:{s:g}": float(e) for s, e in zip(res.scales, res.error, strict=True)}}
    atomic_json(path, record)
    return record


def measure_images(model: Any, num: int) -> torch.Tensor:
    """The first ``num`` held-out images of the run's data (digits: the test split); for a latent run
    their scaled latents (what the run models: K and stability are measured in latent space, Fig. A10)."""
    from ..data import stack_images

    split = "test" if model.data_name == "digits" or model.config.data.holdout else "train"
    return stack_images(model.dataset(split))[:num]


def eval_file(metric: str) -> str:
    """The result file of one measurement key in a run's eval folder."""
    if metric.startswith(("fid:", "sr:")):
        kind, plan = metric.split(":", 1)
        return f"{kind}-{slug(plan)}.json"
    return f"{metric}.json"


def pending(spec: RunSpec, out: Path, budget: Budget) -> list[str]:
    """The work not yet done for ``spec``: "train" and the evaluations without a result file."""
    todo = [] if run_finished(spec.run_dir(out), budget.families[spec.family].steps) else ["train"]
    for metric in spec.metrics:
        if not (spec.eval_dir(out) / eval_file(metric)).is_file():
            todo.append(metric)
    return todo


def task_seconds(task: str, spec: RunSpec, budget: Budget) -> float:
    """Estimated seconds of one task on one quiet core (see :class:`~.budgets.Budget`)."""
    fam = budget.families[spec.family]
    if task == "train":
        return 2.0 + fam.steps / (budget.steps_per_s * 128 / fam.batch_size)
    if task.startswith(("fid:", "sr:")):
        return 0.5 * fam.eval_seeds + fam.pool * parse_plan(task.split(":", 1)[1])[1] * budget.sample_nfe_s
    if task == "lipschitz":
        return 1.0 + 2 * 100 * budget.measure_samples * budget.sample_nfe_s
    return 1.0


def run_unit(spec: RunSpec, ctx: Context, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``spec`` if needed, then every evaluation it owes (each cached); returns their records.
    ``say(task)`` is called before each task that has work left (the progress line)."""
    from ..runs import load_model

    left = set(pending(spec, ctx.out, ctx.budget))

    def announce(task: str) -> None:
        if say is not None and task in left:
            say(task)

    announce("train")
    trained = False if ctx.budget.train_only else train_run(spec, ctx.out)  # full: trained by accelerate launch
    loaded: list[Any] = []

    def model() -> Any:
        if not loaded:
            loaded.append(load_model(spec.run_dir(ctx.out), device=ctx.device))
        return loaded[0]

    results: dict[str, Any] = {"trained": trained}
    for metric in spec.metrics:
        announce(metric)
        if metric.startswith("fid:"):
            results[metric] = eval_fid(spec, ctx, metric[4:], model)
        elif metric.startswith("sr:"):
            results[metric] = eval_sr(spec, ctx, metric[3:], model)
        elif metric == "lipschitz":
            results[metric] = eval_lipschitz(spec, ctx, model)
        else:
            results[metric] = eval_stability(spec, ctx, model)
    return results


def _fmt(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """A stderr line per task (training a run, one evaluation): which, elapsed, and the time left —
    the estimate of the remaining work scaled by how fast the finished work went against its estimate."""

    def __init__(self, estimates: dict[str, dict[str, float]], enabled: bool = True):
        self.estimates, self.enabled = estimates, enabled
        self.total = sum(sum(v.values()) for v in estimates.values())
        self.done_est, self.t0 = 0.0, time.perf_counter()
        self.current: tuple[str, str] | None = None

    def _line(self, text: str) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        rate = elapsed / self.done_est if self.done_est > 0 else 1.0
        print(f"[reproduce] {text} · elapsed {_fmt(elapsed)} · ETA {_fmt((self.total - self.done_est) * rate)}",
              file=sys.stderr, flush=True)

    def _close(self) -> None:
        if self.current is not None:
            key, task = self.current
            self.done_est += self.estimates[key].get(task, 0.0)
            self.current = None

    def task(self, key: str, task: str) -> None:
        """``task`` of run ``key`` starts (the previous task is finished)."""
        self._close()
        self.current = (key, task)
        i = list(self.estimates).index(key) + 1
        self._line(f"run {i}/{len(self.estimates)} {key}: {'training' if task == 'train' else task}")

    def run_done(self, key: str) -> None:
        """Every task of run ``key`` is finished (parallel mode)."""
        self._close()
        self.done_est += sum(self.estimates[key].values())
        self._line(f"finished {key}")

    def close(self) -> None:
        self._close()


def execute(specs: list[RunSpec], ctx: Context, *, jobs: int = 1, progress: bool = True) -> None:
    """Run every spec's pending work (``jobs`` > 1: that many runs at once, one process and one thread each)."""
    todo = {s.key: (s, pending(s, ctx.out, ctx.budget)) for s in specs}
    todo = {k: v for k, v in todo.items() if v[1]}
    est = {k: {t: task_seconds(t, s, ctx.budget) for t in tasks} for k, (s, tasks) in todo.items()}
    prog = Progress(est, progress)
    if jobs <= 1:
        for key, (spec, _) in todo.items():
            run_unit(spec, ctx, say=lambda task, key=key: prog.task(key, task))
        prog.close()
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
        futures = {pool.submit(run_unit, spec, ctx): key for key, (spec, _) in todo.items()}
        prog._line(f"{len(futures)} runs on {jobs} processes")
        for fut in as_completed(futures):
            fut.result()  # re-raises a worker's error
            prog.run_done(futures[fut])


def _worker_init() -> None:
    torch.set_num_threads(1)


def claim_specs(claim: Claim, specs: list[RunSpec]) -> list[RunSpec]:
    return [s for s in specs if claim.id in s.claims]
