"""``etsdm train | sample | export | import``: train a run, sample it, move it to and from diffusers.

The commands only map flags onto :mod:`etsdm.config`, :mod:`etsdm.train` and :mod:`etsdm.runs`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch
from torch import Tensor

from ..data import DEFAULT_SR_FACTOR
from ..samplers import SAMPLERS, SPACINGS


def _fail(err: Exception) -> click.ClickException:
    return click.ClickException(str(err))


# Above this many parameters intra-op threads pay off; below it one thread is at most ~1.5x slower on
# an idle CPU, while N threads on a CPU another process uses are slowed many-fold (measured on the
# default digits UNet, 0.2M parameters, 2 busy cores: 11.9 steps/s on 1 thread, 0.8-1.5 on 2).
SMALL_MODEL = 20_000_000
THREADS_HELP = ("CPU threads for torch: a number, or 'auto' = 1 for a small model (< 20M parameters, every toy "
                "config: never slowed many-fold when another process takes a core), else all cores when the "
                "machine is idle and 1 when it is busy (load average >= cores - 0.5). The choice is printed.")


def _set_threads(threads: str, model=None) -> str:
    """Apply --threads (see THREADS_HELP), for ``model`` once it is built; say what runs and why."""
    import os

    import torch

    if threads != "auto":
        n = int(threads) if threads.isdigit() else 0
        if n < 1:
            raise click.BadParameter(f"{threads!r}: expected 'auto' or a positive integer", param_hint="--threads")
        why = "--threads"
    else:
        cores, load = os.cpu_count() or 1, os.getloadavg()[0]
        params = sum(p.numel() for p in model.parameters()) if model is not None else None
        if params is not None and params < SMALL_MODEL:
            n, why = 1, f"auto: small model, {params / 1e6:.2g}M parameters"
        elif load >= cores - 0.5:
            n, why = 1, f"auto: busy CPU, load {load:.1f} on {cores} cores"
        else:
            n, why = cores, f"auto: idle CPU, {cores} cores"
    ctx = click.get_current_context(silent=True)
    if ctx is not None and "etsdm.threads_before" not in ctx.meta:  # a command sets threads for its own run only
        ctx.meta["etsdm.threads_before"] = before = torch.get_num_threads()
        ctx.call_on_close(lambda: torch.set_num_threads(before))  # in-process callers (tests, notebooks) keep theirs
    torch.set_num_threads(n)
    return f"torch CPU threads: {n} ({why})"


def _sampler_name(ctx: click.Context, param: click.Parameter, name: str | None) -> str | None:
    """--sampler: one of etsdm's samplers or diffusers:<SchedulerClass> (checked before any work);
    None: the run's default (``etsdm.runs.default_sampler``)."""
    from ..diffusers_sampling import is_diffusers_sampler, scheduler_class

    if name is None or name in SAMPLERS:
        return name
    if is_diffusers_sampler(name):
        try:
            scheduler_class(name)
        except ValueError as err:
            raise click.BadParameter(str(err)) from None
        return name
    raise click.BadParameter(f"{name!r} is not one of {', '.join(SAMPLERS)} or diffusers:<SchedulerClass>")


def _device_option(ctx: click.Context, param: click.Parameter, device: str) -> str:
    """--device: a torch device that exists on this machine, checked before any work."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise click.BadParameter(f"{device!r} is not a torch device; use cpu, cuda, cuda:N or mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if dev.type not in available:
        raise click.BadParameter(f"{device!r}: etsdm runs on cpu, cuda or mps, not {dev.type}")
    if not available[dev.type]:
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a build without CUDA")
        raise click.BadParameter(f"{device!r}: no {dev.type.upper()} device on this machine ({build}); "
                                 "use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise click.BadParameter(f"{device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _claim_outputs(paths: list[Path], force: bool) -> None:
    """Before any work: refuse to overwrite existing outputs without --force (with it, remove them so
    no stale file describes other results), and check that their folder is writable."""
    import os
    import shutil
    import tempfile

    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise click.UsageError(f"{', '.join(map(str, existing))} already exist(s); pass --force to replace, "
                               "or choose another --out")
    folder = paths[0].parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".etsdm-write-test-"):
            pass
        for p in existing:
            if p.is_dir():  # a folder of PNGs this command writes (super-resolution outputs)
                shutil.rmtree(p)
            else:
                os.remove(p)
    except OSError as err:
        raise click.ClickException(f"cannot write to {folder}: {err.strerror or err}; choose another --out") from None


def _sample_out(run: str, out: Path | None, sampler: str, nfe: int, seed: int) -> Path:
    """--out of ``sample``, or its default: RUN/samples/<sampler>-<nfe>-seed<seed>.npz for a run
    folder, ./samples/<spec>-<sampler>-<nfe>-seed<seed>.npz for an analytic spec (gmm, gmm:etsdm)."""
    if out is not None:
        return out if out.suffix == ".npz" else out.with_name(out.name + ".npz")  # numpy would append it
    sampler = sampler.replace(":", "-")  # diffusers:<Class>: no colon in file names
    if Path(run).is_dir():
        return Path(run) / "samples" / f"{sampler}-{nfe}-seed{seed}.npz"
    return Path("samples") / f"{run.replace(':', '-')}-{sampler}-{nfe}-seed{seed}.npz"


@click.command("train")
@click.argument("config", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. --set train.steps=500 --set diffusion.condition.kind=identity.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default: runs/<config name>).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its newest complete checkpoint, bit for bit. --set may change "
                   "only what stops, logs or previews the run (train.steps, logging / checkpoint / preview "
                   "frequency, sample.*); other changes are refused, listed by field.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit without training.")
@click.option("--fields", is_flag=True, help="List every config field (for --set) and exit.")
@click.option("--threads", default="auto", help=THREADS_HELP)
def train_cmd(config: Path | None, overrides: tuple[str, ...], out: Path | None, resume: bool, progress: bool,
              print_config: bool, fields: bool, threads: str) -> None:
    """Train a diffusion model (baseline or E-TSDM) from CONFIG.

    Without CONFIG: E-TSDM (t̃ = 100, n = 5) on the embedded sklearn digits, a few minutes on a
    laptop CPU. An autoencoder CONFIG (a YAML with a top-level `autoencoder:` section, e.g.
    configs/ae_digits.yaml) trains that AutoencoderKL into OUT instead, for latent runs
    (latent.autoencoder: OUT). Writes OUT/config.yaml, metrics.jsonl, tb/, checkpoints/ (safetensors), a sample
    grid samples/step_*.png and loss.png. Several GPUs, same flags:
    `accelerate launch --num_processes 4 $(which etsdm) train CONFIG`.
    """
    from ..config import ConfigError, dump_config, field_reference, load_config
    from ..runs import resolve_data
    from ..train.checkpoint import CheckpointWriteError, step_dirs
    from ..train.trainer import NonFiniteLossError, Trainer

    if fields:
        for path, kind, text in field_reference():
            click.echo(f"{path:32s} {kind:40s} {text}")
        return
    if config is not None and _is_autoencoder_config(config):
        _set_threads(threads)
        _train_autoencoder(config, overrides, out, resume=resume, progress=progress, print_config=print_config)
        return
    if resume and out is None:
        raise click.UsageError("--resume needs --out RUN_DIR (the run to continue)")
    if resume and config is None and (out / "config.yaml").is_file():
        config = out / "config.yaml"
    try:
        cfg = load_config(config, overrides)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="CONFIG / --set") from None
    try:  # an image folder's channels / resolution, where null, from its images
        cfg, inferred = resolve_data(cfg)
    except (OSError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint="data.root") from None
    if inferred:
        click.echo(f"data: {inferred}", err=True)
    if print_config:
        click.echo(dump_config(cfg), nl=False)
        return
    out = out or Path("runs") / (config.stem if config else "digits_etsdm")
    if not resume and step_dirs(out):
        raise click.UsageError(f"{out} already holds checkpoints: pass --resume to continue it, or another --out")
    _set_threads(threads)
    t0 = time.perf_counter()
    try:
        # base_dir: a relative latent.autoencoder (e.g. ae_digits.yaml) is found beside the config file
        trainer = Trainer(cfg, out, resume=resume, progress=progress,
                          base_dir=config.parent if config is not None else None)
        for note in trainer.notes:  # e.g. a resume that falls back past an incomplete checkpoint
            click.echo(f"note: {note}", err=True)
        click.echo(_set_threads(threads, trainer.net))  # now that the model's size is known
        try:
            result = trainer.train()
        finally:
            trainer.acc.end_training()  # lets a multi-process (gloo / nccl) run exit instead of hanging
    except (NonFiniteLossError, CheckpointWriteError, FileNotFoundError, ValueError) as err:
        raise _fail(err) from None
    except OSError as err:  # e.g. the disk filled up while logging or writing the sample grid
        raise click.ClickException(f"{err}; continue from the last complete checkpoint with --resume") from None
    if result.trained == 0:
        done = "wrote its missing final outputs" if result.outputs_written else "its outputs are complete"
        click.echo(f"nothing to train: {out} is already at step {result.step} (train.steps={cfg.train.steps}); "
                   f"{done}; checkpoint: {result.last_checkpoint}")
    else:
        click.echo(f"trained {result.trained} steps (to step {result.step}) in {time.perf_counter() - t0:.0f} s; "
                   f"run: {out}; checkpoint: {result.last_checkpoint}")
    grids = sorted((out / "samples").glob("step_*.png"))
    if grids:
        click.echo(f"samples: {grids[-1]}   loss curve: {out / 'loss.png'}")


def _is_autoencoder_config(config: Path) -> bool:
    from ..latent import is_autoencoder_config

    return is_autoencoder_config(config)


def _train_autoencoder(config: Path, overrides: tuple[str, ...], out: Path | None, *, resume: bool, progress: bool,
                       print_config: bool) -> None:
    """``etsdm train AE_CONFIG``: train the autoencoder (``etsdm.latent.train_autoencoder``) into
    OUT (default runs/<config name>); --set and --print-config as for diffusion configs."""
    from ..config import ConfigError
    from ..latent import load_autoencoder_config, train_autoencoder
    from ..latent.config import dump_autoencoder_config

    if resume:
        raise click.UsageError(f"--resume: {config} is an autoencoder config, trained in one go (no checkpoints to "
                               "continue); train it again into a new --out")
    try:
        cfg = load_autoencoder_config(config, overrides)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="CONFIG / --set") from None
    if print_config:
        click.echo(dump_autoencoder_config(cfg), nl=False)
        return
    out = out or Path("runs") / config.stem
    t0 = time.perf_counter()
    try:
        path = train_autoencoder(cfg, out, device="auto", progress=progress)
    except (FileExistsError, RuntimeError, ConfigError, OSError, ValueError) as err:
        raise _fail(err) from None
    click.echo(f"trained the autoencoder of {config} ({cfg.train.steps} steps) in {time.perf_counter() - t0:.0f} s: "
               f"{path}; use it with latent.autoencoder: {path}")


@click.command("sample")
@click.argument("run", type=str)
@click.option("--sampler", default=None, callback=_sampler_name,
              metavar="[" + "|".join(SAMPLERS) + "|diffusers:CLASS]",
              help="Sampler: etsdm's own, or any diffusers scheduler, e.g. diffusers:UniPCMultistepScheduler "
                   "(built on the run's β table; the condition map applied as always). Default: an EDM or flow "
                   "run's own sample.sampler (and sample.nfe unless --nfe), e.g. heun / euler; ddim for VP runs.")
@click.option("--nfe", type=click.IntRange(min=1), default=None,
              help="Network evaluations per sample. Default: 50, or the run's sample.nfe with its default sampler.")
@click.option("--num", type=click.IntRange(min=1), default=None,
              help="Number of samples (default 100; super-resolution: one per --lowres input, else the first 100 "
                   "test rows).")
@click.option("--lowres", type=click.Path(exists=True, path_type=Path), default=None,
              help="Super-resolution runs: the low-resolution inputs, one output each in input order: an `etsdm "
                   "sr-pairs` folder (its pairs.npz), an .npz (array lowres / samples / images) or a folder of PNGs "
                   "(sorted names), at h = H / sr_factor or H. Default: the test split's.")
@click.option("--labels", default=None,
              help="Class-conditional runs: the class of every sample (e.g. 3) or classes to cycle through "
                   "(e.g. 0,1,2). Default: cycle over all classes.")
@click.option("--guidance", type=float, default=None,
              help="Class-conditional runs: classifier-free guidance scale s, ε_u + s(ε_c − ε_u) (1: the conditional "
                   "model, 0: the unconditional one). Default: the run's sample.guidance.")
@click.option("--seed", type=int, default=0, help="Seed of the initial noise (and of ancestral noise).")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output .npz (a PNG grid <out>.png beside it); default RUN/samples/<sampler>-<nfe>-seed<seed>.npz "
                   "(./samples/<spec>-<sampler>-<nfe>-seed<seed>.npz for gmm specs).")
@click.option("--force", is_flag=True, help="Replace existing output files (and a stale <out>.eval.json).")
@click.option("--batch", type=click.IntRange(min=1), default=256, help="Samples per network batch.")
@click.option("--ema/--no-ema", default=True, help="Use the EMA weights.")
@click.option("--timestep-spacing", "--spacing", "spacing", type=click.Choice(("auto", *SPACINGS)), default="auto",
              show_default=True,
              help="Step grid. auto: the run's sample.timestep_spacing, else linspace for discrete schedules (integer "
                   "timesteps, diffusers' rounding; also leading, trailing), karras for EDM (Karras et al.'s ρ = 7 "
                   "grid), time-uniform for other continuous ones. fractional: uniform float times, i.e. a "
                   "discrete model queried between its trained timesteps (what the official dpm-solver code does).")
@click.option("--denoise-to-zero/--no-denoise-to-zero", "denoise_to_zero", default=None,
              help="Spend the last NFE on x̂0 at t_end (a final denoising step into the data). Default: on for "
                   "ddpm/ddim (their last step lands on the data), off for the DPM-Solvers (Lu et al.).")
@click.option("--order-plan", type=click.Choice(("lu", "diffusers")), default=None,
              help="DPM-Solver NFE split: lu (Lu et al. Sec. 3.4; NFE 20 -> orders 3,3,3,3,3,3,2) or diffusers "
                   "(its lower-order-final list). Default: the run's sample.order_plan, else lu.")
@click.option("--clip", type=click.Choice(("auto", "none", "static", "dynamic")), default=None,
              help="x̂0 clipping at every step. auto: static ([-1, 1], as the DDPM/ADM code the paper builds on) "
                   "for image data, none for gmm/vector data; dynamic: Saharia et al.'s thresholding (p = 0.995). "
                   "Default: the run's sample.clip, else auto.")
@click.option("--eta", type=click.FloatRange(min=0), default=0.0, help="DDIM η (0 = deterministic).")
@click.option("--device", default="cpu", callback=_device_option, help="torch device: cpu, cuda, cuda:N or mps.")
@click.option("--threads", default="auto", help=THREADS_HELP)
@click.option("--evaluate", "evaluate", is_flag=True,
              help="Evaluate the samples right away against the run's data (digits: FID-n with its real-vs-real "
                   "floor; image folder: FID-n in a small CNN trained on its training images, floor from its "
                   "held-out images; gmm: the exact mixture metrics), over --eval-seeds; writes <out>.eval.json.")
@click.option("--eval-seeds", default="0,1,2", help="Comma-separated seeds of the metrics' random draws.")
def sample_cmd(run: str, sampler: str | None, nfe: int | None, num: int | None, lowres: Path | None,
               labels: str | None, guidance: float | None, seed: int, out: Path | None, force: bool, batch: int,
               ema: bool, spacing: str, denoise_to_zero: bool | None, order_plan: str | None, clip: str | None,
               eta: float, device: str, threads: str, evaluate: bool, eval_seeds: str) -> None:
    """Draw samples from RUN (a run dir, checkpoint dir, diffusers folder, or gmm / gmm:etsdm).

    The run's own condition map (E-TSDM or not) is applied automatically by its Denoiser. Without
    --sampler an EDM or flow run is sampled as its config says (sample.sampler, sample.nfe,
    sample.timestep_spacing: Heun 35 NFE on the Karras grid / Euler 50 NFE in the shipped configs);
    a VP run with DDIM, 50 NFE.
    Writes the samples (float32, [-1, 1] for images) as .npz and a PNG grid; the .npz records the
    sampling conventions (grid, NFE plan and orders, final step, clipping) as JSON in `sampling`.

    Conditional and latent runs: a super-resolution run makes one output per low-resolution input
    (--lowres, else its test split), in order, also as a PNG folder <out>/NNNNN.png; the .npz holds
    the inputs (lowres) and, where known, the high-resolution targets (targets) for `etsdm evaluate`.
    A class-conditional run cycles over its classes (--labels, --guidance; the .npz holds labels).
    A latent run's samples are decoded to images.
    """
    import json

    import numpy as np

    from ..metrics.image import write_png_folder
    from ..runs import CLI_NFE, default_sampler, describe_sampling, generate, load_model
    from ..train.outputs import save_samples_png, write_atomic

    _set_threads(threads)
    try:  # parsed before sampling, so a typo never costs the samples
        seeds = [int(v) for v in eval_seeds.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{eval_seeds!r} is not a comma-separated list of integers",
                                 param_hint="--eval-seeds") from None
    try:
        model = load_model(run, ema=ema, device=device)
    except (FileNotFoundError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint="RUN") from None
    for note in model.notes:  # e.g. an incomplete newest checkpoint was skipped
        click.echo(f"note: {note}", err=True)
    if sampler is None:  # the run's own sampler (EDM / flow), else DDIM-50
        sampler, run_nfe = default_sampler(model)
        nfe = nfe if nfe is not None else run_nfe
    nfe = nfe if nfe is not None else CLI_NFE
    inputs = generation_inputs(model, num, lowres, labels)
    _check_guidance(model, guidance)
    reference = run_reference(model, inputs.targets) if evaluate else None  # known before sampling
    out = _sample_out(run, out, sampler, nfe, seed)
    pngs = out.with_suffix("") if model.data_name == "sr" else None  # one PNG per SR output
    _claim_outputs([out, out.with_suffix(".png"), out.with_suffix(".eval.json"), *([pngs] if pngs else [])], force)
    click.echo(_set_threads(threads, model.denoiser.net))
    kwargs = {"eta": eta} if sampler == "ddim" else {}
    kwargs |= {"timestep_spacing": None if spacing == "auto" else spacing, "denoise_to_zero": denoise_to_zero,
               "order_plan": order_plan, "clip": clip}
    try:  # the plan is checked before sampling (e.g. more NFE than integer timesteps)
        sampling = describe_sampling(model, sampler, nfe, **kwargs)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    sampling |= _conditioning_record(model, inputs, guidance)
    click.echo("sampling: " + ", ".join(f"{k}={v}" for k, v in sampling.items() if k != "timesteps"))
    try:  # e.g. guidance with a diffusers scheduler
        x = generate(model, inputs.num, sampler=sampler, nfe=nfe, seed=seed, batch=batch, device=device,
                     cond=inputs.cond, guidance=guidance, progress=True, **kwargs)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    if x.ndim == 4:
        x = x.clamp(-1, 1)  # images: the sampler may overshoot the data range slightly
    arrays = {"samples": x.numpy(), **{k: v.numpy() for k, v in (inputs.cond or {}).items()}}
    if inputs.targets is not None:
        arrays["targets"] = inputs.targets.numpy()
    write_atomic(out, lambda p: np.savez_compressed(p, **arrays, sampler=sampler, nfe=nfe, seed=seed,
                                                    sampling=json.dumps(sampling)))
    png = save_samples_png(x, out.with_suffix(".png"))
    if pngs is not None:
        write_png_folder(x, pngs)
    click.echo(f"{inputs.num} samples -> {out}  grid -> {png}" + (f"  images -> {pngs}/" if pngs else ""))
    diverged = int((~torch.isfinite(x.reshape(len(x), -1))).any(1).sum())
    if diverged:  # saved as they are (to inspect), but said: no metric of them means anything
        click.echo(f"warning: {diverged} of {inputs.num} samples contain NaN or inf (the model or sampler diverged)",
                   err=True)
    if evaluate:
        _evaluate_now(x, reference, out, seeds, sampling)


def _check_guidance(model: Any, guidance: float | None) -> None:
    if guidance is not None and not getattr(model, "num_classes", 0):
        raise click.BadParameter(f"{model.name} is not class-conditional; --guidance applies to runs trained with "
                                 "data.labels: true", param_hint="--guidance")


def _conditioning_record(model: Any, inputs: GenerationInputs, guidance: float | None) -> dict[str, Any]:
    """What the samples were conditioned on, for the .npz's `sampling` record."""
    record: dict[str, Any] = {}
    if inputs.cond:
        record["conditioned_on"] = f"{', '.join(sorted(inputs.cond))}: {inputs.source}"
    if getattr(model, "num_classes", 0):
        run_scale = model.config.sample.guidance if model.config is not None else 1.0
        record["guidance"] = run_scale if guidance is None else guidance
    if getattr(model, "latents", None) is not None:
        record["decoded"] = "latents decoded by the run's autoencoder"
    return record


def _folder_reference(cfg):
    """An image-folder run's FID reference: its training images (no flips), and its held-out
    images (data.holdout) for the real-vs-real floor."""
    import dataclasses

    from ..data import stack_images
    from ..metrics.evaluate import MAX_REFERENCE_IMAGES, ImageSet
    from ..runs import build_image_dataset

    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, hflip=False))
    images = stack_images(build_image_dataset(cfg, "train"), MAX_REFERENCE_IMAGES)  # a latent run's images too
    held = stack_images(build_image_dataset(cfg, "test"), MAX_REFERENCE_IMAGES) if cfg.data.holdout else None
    source = f"{len(images)} training images of {cfg.data.root}"
    if held is None:
        source += " (data.holdout = 0: the floor splits them)"
    return ImageSet(images, held, source)


def run_reference(model: Any, targets: Tensor | None = None) -> Any:
    """The reference a run's samples are evaluated against (``evaluate_samples``): digits ->
    "digits" (FID-n in the digits features), gmm -> its mixture, an image folder -> its images
    (:func:`_folder_reference`), super-resolution -> the high-resolution ``targets`` of the
    inputs (PSNR / SSIM). Class-conditional and latent runs: the same, on the (decoded) images."""
    if model.data_name == "sr":
        if targets is None:
            raise click.UsageError("these low-resolution inputs come without their high-resolution images; "
                                   "evaluate the output with `etsdm evaluate OUTPUT --targets HR_DIR_OR_NPZ`")
        return targets
    if model.data_name == "digits":
        return "digits"
    if model.data_name == "gmm":
        return model.mixture if model.mixture is not None else model.dataset("test").mixture
    if model.data_name == "folder" and model.config is not None:
        return _folder_reference(model.config)
    raise click.UsageError(
        f"a run's own reference is known for digits, gmm, image-folder and sr runs; for {model.data_name!r} data "
        "use `etsdm evaluate SAMPLES --ref ...`"
    )


def _evaluate_now(x: Tensor, reference: Any, out: Path, seeds: list[int], sampling: dict | None = None) -> None:
    """The metrics of ``etsdm evaluate`` against the run's own reference (:func:`run_reference`)."""
    import json

    from ..metrics.evaluate import evaluate_samples, format_results
    from ..train.checkpoint import atomic_write_text

    try:
        results = evaluate_samples(x, reference, seeds=seeds)
    except ValueError as err:  # SampleError (NaN / inf samples) or a metric that does not fit
        raise _fail(err) from None
    for line in format_results(results):
        click.echo(line)
    path = out.with_suffix(".eval.json")
    record = results if sampling is None else {**results, "sampling": sampling}  # the conventions beside the numbers
    atomic_write_text(path, json.dumps(record, indent=2, default=float))
    click.echo(f"metrics -> {path}")


# --------------------------------------------------------------------------------------------
# Conditional runs: what each sample is generated from (super-resolution inputs, class labels)
# --------------------------------------------------------------------------------------------
SR_INPUT_KEYS = ("lowres", "samples", "images", "x")  # arrays --lowres reads from an .npz, in this order
TARGET_KEYS = ("highres", "targets", "samples", "images", "x")  # arrays --targets reads, in this order
BICUBIC_FILE = "bicubic.npz"  # `etsdm sr-pairs`: the upsampled inputs as samples (the baseline to beat)


@dataclass
class GenerationInputs:
    """What ``num`` samples of a run are generated from: ``cond`` (the network's keyword inputs,
    one row per sample; None for an unconditional run), the high-resolution ``targets`` of a
    super-resolution run where known (PSNR / SSIM), and where the inputs came from."""

    num: int
    cond: dict[str, Tensor] | None = None
    targets: Tensor | None = None
    source: str = ""


def generation_inputs(model: Any, num: int | None, lowres: Path | None = None, labels: str | None = None
                      ) -> GenerationInputs:
    """The inputs of ``etsdm sample`` / ``etsdm evaluate RUN`` for ``model`` (see the options
    --num, --lowres, --labels); errors name the option and what it allows."""
    sr, classes = model.data_name == "sr", int(getattr(model, "num_classes", 0) or 0)
    if lowres is not None and not sr:
        raise click.BadParameter(f"{model.name} is not a super-resolution run (data: {model.data_name}); "
                                 "--lowres applies to sr runs only", param_hint="--lowres")
    if labels is not None and not classes:
        raise click.BadParameter(f"{model.name} is not class-conditional (no model.num_classes); --labels applies "
                                 "to runs trained with data.labels: true", param_hint="--labels")
    if sr:
        return _sr_inputs(model, num, lowres)
    num = DEFAULT_NUM if num is None else num
    if classes:
        chosen = _class_list(labels, classes)
        rows = torch.tensor([chosen[i % len(chosen)] for i in range(num)], dtype=torch.int64)  # cycle over them
        return GenerationInputs(num, {"labels": rows}, source=f"labels {labels or 'cycling over all classes'}")
    return GenerationInputs(num)


DEFAULT_NUM = 100  # `etsdm sample` without --num


def _class_list(labels: str | None, classes: int) -> list[int]:
    """--labels: one class index or comma-separated ones (None: every class 0..classes-1)."""
    if labels is None:
        return list(range(classes))
    try:
        chosen = [int(v) for v in labels.split(",") if v.strip()]
    except ValueError:
        chosen = []
    if not chosen or not all(0 <= c < classes for c in chosen):
        raise click.BadParameter(f"{labels!r}: expected class indices in 0..{classes - 1}, one (e.g. 3) or "
                                 "comma-separated (e.g. 0,1,2)", param_hint="--labels")
    return chosen


def _sr_inputs(model: Any, num: int | None, lowres: Path | None) -> GenerationInputs:
    """Low-resolution inputs of a super-resolution run: the given file / folder (all rows, or the
    first ``num``), else the first ``num`` (default 100) rows of its test split, whose
    high-resolution images are the targets."""
    if lowres is None:
        from torch.utils.data import default_collate

        from ..data import split_batch

        test = _dataset(model, "test")
        num = min(DEFAULT_NUM if num is None else num, len(test))
        x0, cond = split_batch(default_collate([test[i] for i in range(num)]))
        return GenerationInputs(num, dict(cond), x0, f"the first {num} rows of the test split")
    from ..metrics.image import read_image_set

    try:
        inputs, where = read_image_set(lowres, SR_INPUT_KEYS, pair_key="lowres")
    except (OSError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint="--lowres") from None
    _check_lowres(model, inputs, where)
    num = len(inputs) if num is None else min(num, len(inputs))
    targets = _pair_targets(lowres)
    return GenerationInputs(num, {"lowres": inputs[:num]}, None if targets is None else targets[:num], where)


def _check_lowres(model: Any, inputs: Tensor, where: str) -> None:
    """Low-resolution inputs fit the run: (N, C, h, w) with the run's channels, h = H / sr_factor
    (or H: already upsampled), values in [-1, 1]."""
    c, h, _ = model.shape
    factor = (model.config.data.sr_factor or DEFAULT_SR_FACTOR) if model.config is not None else None
    sizes = sorted({h // factor, h}) if factor else [s for s in range(1, h + 1) if h % s == 0]
    allowed = " or ".join(f"({c}, {s}, {s})" for s in sizes)
    if inputs.ndim != 4 or inputs.shape[1] != c or inputs.shape[2] != inputs.shape[3] or inputs.shape[2] not in sizes:
        raise click.BadParameter(f"{where}: images of shape {tuple(inputs.shape[1:])}; {model.name} takes "
                                 f"low-resolution inputs {allowed}", param_hint="--lowres")
    if not torch.isfinite(inputs).all() or inputs.abs().max() > 1.0 + 1e-4:
        raise click.BadParameter(f"{where}: values must be finite and in [-1, 1] (etsdm's image scale)",
                                 param_hint="--lowres")


def _pair_targets(lowres: Path) -> Tensor | None:
    """The high-resolution images paired with --lowres, where it holds them (an `etsdm sr-pairs`
    folder or pairs .npz); None otherwise."""
    import numpy as np

    from ..metrics.image import PAIRS_FILE

    path = lowres / PAIRS_FILE if lowres.is_dir() else lowres
    if path.suffix != ".npz" or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return torch.as_tensor(data["highres"]).float() if "highres" in data.files else None


def _dataset(model: Any, split: str):
    try:
        return model.dataset(split)
    except (OSError, ValueError) as err:
        raise click.ClickException(f"{model.name}: cannot rebuild its {split} split ({err})") from None


@click.command("sr-pairs", short_help="The held-out LR/HR test pairs of a super-resolution run (PNGs + pairs.npz).")
@click.argument("source", metavar="RUN_OR_CONFIG", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write: lowres/NNNNN.png, highres/NNNNN.png, pairs.npz.")
@click.option("--num", type=click.IntRange(min=1), default=None, help="The first N test rows (default: all).")
@click.option("--force", is_flag=True, help="Replace the pairs an earlier call wrote in --out.")
def sr_pairs_cmd(source: Path, out: Path, num: int | None, force: bool) -> None:
    """Write the held-out low-/high-resolution pairs of a super-resolution RUN_OR_CONFIG (a run
    folder or an sr config YAML): the test split in order, as OUT/lowres/NNNNN.png (h x w),
    OUT/highres/NNNNN.png (H x W) and OUT/pairs.npz (arrays lowres, highres: float32 in [-1, 1];
    the PNGs are 8-bit copies); OUT/bicubic.npz holds the inputs upsampled (bicubic) as the network
    sees them: the baseline output every SR model should beat, for `etsdm evaluate`.

    The Fig. A12 comparison in three commands: `etsdm sr-pairs RUN --out P`, `etsdm sample RUN
    --lowres P` (one output per input, in order) and `etsdm evaluate OUTPUT --metric psnr,ssim
    --targets P`.
    """
    import shutil

    import numpy as np

    from ..metrics.image import PAIRS_FILE, write_png_folder
    from ..train.outputs import write_atomic

    cfg = _sr_config(source)
    lowres, highres, upsampled = _test_pairs(cfg, num)
    parts = [out / "lowres", out / "highres", out / PAIRS_FILE, out / BICUBIC_FILE]
    if any(p.exists() for p in parts):
        if not force:
            raise click.UsageError(f"{out} already holds SR pairs; pass --force to replace them, or another --out")
        for p in parts:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
    write_png_folder(lowres, out / "lowres")
    write_png_folder(highres, out / "highres")
    write_atomic(out / PAIRS_FILE, lambda p: np.savez_compressed(
        p, lowres=lowres.numpy(), highres=highres.numpy(), sr_factor=highres.shape[-1] // lowres.shape[-1],
        config=cfg.name))
    write_atomic(out / BICUBIC_FILE, lambda p: np.savez_compressed(p, samples=upsampled.numpy()))
    click.echo(f"{len(lowres)} test pairs {tuple(lowres.shape[1:])} -> {tuple(highres.shape[1:])}: "
               f"{out / 'lowres'}, {out / 'highres'}, {out / PAIRS_FILE}; the upsampled inputs (the baseline "
               f"to beat): {out / BICUBIC_FILE}")


def _sr_config(source: Path):
    """The RunConfig of a run / checkpoint folder (its config.yaml) or a config YAML; sr data only."""
    from ..config import ConfigError, load_config
    from ..runs import resolve_data

    path = source / "config.yaml" if source.is_dir() else source
    if not path.is_file():
        raise click.BadParameter(f"{source}: no config.yaml (give a run folder or an sr config YAML)",
                                 param_hint="RUN_OR_CONFIG")
    try:
        cfg, _ = resolve_data(load_config(path))
    except (ConfigError, OSError, ValueError) as err:
        raise click.BadParameter(f"{path}: {err}", param_hint="RUN_OR_CONFIG") from None
    if cfg.data.name != "sr":
        raise click.BadParameter(f"{path}: data.name is {cfg.data.name!r}; sr-pairs needs a super-resolution "
                                 "config (data.name: sr)", param_hint="RUN_OR_CONFIG")
    return cfg


def _test_pairs(cfg, num: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """(low-res (N, C, h, w), high-res (N, C, H, W), low-res upsampled to (N, C, H, W) as the network
    sees it) of the first ``num`` test rows, in order."""
    from ..runs import build_dataset

    try:
        test = build_dataset(cfg, "test")
    except (OSError, ValueError) as err:
        raise click.ClickException(f"cannot build the test split of {cfg.name}: {err}") from None
    rows = range(len(test) if num is None else min(num, len(test)))
    items = [test[i] for i in rows]
    return (torch.stack([it["lowres_small"] for it in items]), torch.stack([it["x0"] for it in items]),
            torch.stack([it["cond"]["lowres"] for it in items]))


@click.command("export")
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--ema/--no-ema", default=True, help="Export the EMA weights.")
@click.option("--force", is_flag=True, help="Replace an earlier export in OUT_DIR (whole: no stray files remain).")
def export_cmd(run: Path, out_dir: Path, ema: bool, force: bool) -> None:
    """Export RUN as a diffusers pipeline folder OUT_DIR (model_index.json, unet/, scheduler/,
    etsdm.json, a model card README.md).

    An E-TSDM (or remap) run's UNet is an ETSDMUNet2DModel that applies the condition map itself:
    after `import etsdm`, DiffusionPipeline.from_pretrained(OUT_DIR) samples it correctly. A
    baseline run's UNet stays a plain UNet2DModel. `etsdm import` reads the folder back.

    Class-conditional, latent (+ vae/) and super-resolution runs get unet/ + scheduler/ without
    model_index.json (no diffusers pipeline feeds labels, decodes latents or takes a low-resolution
    input); the model card shows their sampling loop.
    """
    from ..runs import export_diffusers

    try:
        path = export_diffusers(run, out_dir, ema=ema, overwrite=force)
    except (OSError, ValueError) as err:  # existing / unwritable OUT_DIR (FileExistsError, PermissionError, ...)
        raise _fail(err) from None
    click.echo(f"diffusers folder: {path}")


@click.command("import")
@click.argument("diffusers_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--condition", type=click.Choice(["identity", "etsdm", "remap"]), default=None,
              help="Condition map the model was trained with (default: from etsdm.json, else identity).")
@click.option("--t-tilde", type=float, default=None, help="E-TSDM t̃ (with --condition etsdm).")
@click.option("--n", "n", type=click.IntRange(min=1), default=5, help="E-TSDM number of sub-intervals.")
@click.option("--prediction", type=click.Choice(["eps", "v", "x0", "edm", "flow"]), default=None,
              help="What the UNet predicts (default: from the scheduler config's prediction_type).")
@click.option("--name", default=None, help="Label for legends (default: the folder name).")
def import_cmd(diffusers_dir: Path, out_run: Path, condition: str | None, t_tilde: float | None, n: int,
               prediction: str | None, name: str | None) -> None:
    """Import a diffusers UNet2DModel folder as an etsdm run OUT_RUN that every command accepts."""
    from ..runs import import_diffusers

    if t_tilde is not None and condition != "etsdm":
        raise click.UsageError("--t-tilde is E-TSDM's t̃: it needs --condition etsdm")
    cond = None
    if condition == "etsdm":
        cond = {"kind": "etsdm", "n": n, **({"t_tilde": t_tilde} if t_tilde is not None else {})}
    elif condition is not None:
        cond = {"kind": condition}
    try:
        path = import_diffusers(diffusers_dir, out_run, condition=cond, prediction=prediction, name=name)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        raise _fail(err) from None
    click.echo(f"etsdm run: {path}")


def register(group: click.Group) -> None:
    """Add train, sample, sr-pairs, export and import to ``group``."""
    for cmd in (train_cmd, sample_cmd, sr_pairs_cmd, export_cmd, import_cmd):
        group.add_command(cmd)
