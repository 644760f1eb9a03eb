"""The Trainer: Eq. (4) / Eq. (9) minimised with Adam on Hugging Face ``accelerate``.

The same code runs on a CPU, one GPU, or several GPUs under ``accelerate launch`` (DDP), with
mixed precision and gradient accumulation from the config. The loss is
:func:`etsdm.losses.diffusion_loss` through the run's :class:`~etsdm.denoiser.Denoiser`, so
E-TSDM is only the Denoiser's condition map (Alg. A1 line 5-9): nothing here knows about it.

Determinism: the batch of micro-step k (:class:`StepBatchSampler`), the training times, the noise
and the global torch RNG of step k are all seeded from (seed, rank, k). A run stopped after step k
and resumed from its checkpoint therefore continues bit for bit like an uninterrupted run (CPU),
whatever the number of processes.

Crash safety: checkpoints are atomic and verified (:mod:`.checkpoint`); ``resume`` takes the newest
complete one (reporting, then deleting, any newer incomplete ones), drops metrics.jsonl lines past
it, and refuses config changes that would make the continued run a different run
(:data:`RESUMABLE` lists what may change). A resumed run that has nothing left to train still
writes its final outputs (loss curve, sample grid) if a kill cut them short.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import runs
from ..config import ConfigError, RunConfig, dump_config, load_config, to_dict
from ..data import split_batch
from ..denoiser import Cond, Denoiser
from ..guidance import drop_labels
from ..losses import LossOutput, diffusion_loss, sample_timesteps
from .checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    atomic_write_text,
    checkpoint_problem,
    fallback_note,
    latest_checkpoint,
    load_state,
    load_weights,
    read_meta,
    remove_partial_writes,
    rng_state,
    save_checkpoint,
    set_rng_state,
    step_dirs,
)
from .ema import EMA
from .outputs import plot_loss_curve, save_samples_npz, save_samples_png
from .sampler import StepBatchSampler

IN_MEMORY_BYTES = 2**30  # data sets up to 1 GiB without random augmentation are stacked into one tensor
# Config fields a resume may change: they stop, log, checkpoint or preview the run, but do not change
# the weights it computes (data order, times and noise are seeded per step, not per worker). Every
# other field defines the run; changing one on resume is refused (train a new run instead).
RESUMABLE = ("train.steps", "train.checkpoint_every", "train.keep_last", "train.log_every", "train.sample_every",
             "train.tensorboard", "data.num_workers", "sample.")


class InMemory(torch.utils.data.Dataset):
    """A data set's items stacked into tensors; a batch is one fancy-indexing op per tensor
    (:meth:`batches` for the Trainer, ``__getitems__`` for a DataLoader), not ``batch_size`` Python
    calls and a collate. Same items, same order, same shape (a Tensor, or ``{"x0", "cond"}`` when
    the items are labelled)."""

    def __init__(self, items: Tensor, cond: dict[str, Tensor] | None = None):
        self.items = items
        self.cond = cond or {}

    def __len__(self) -> int:
        return self.items.shape[0]

    def __getitem__(self, i: int) -> Tensor | dict[str, Any]:
        return self._item(i)

    def __getitems__(self, indices: list[int]) -> Tensor | dict[str, Any]:
        return self._item(torch.as_tensor(indices, device=self.items.device))

    def _item(self, index: int | Tensor) -> Tensor | dict[str, Any]:
        if not self.cond:
            return self.items[index]
        return {"x0": self.items[index], "cond": {k: v[index] for k, v in self.cond.items()}}

    def batches(self, sampler: StepBatchSampler) -> Iterator[Tensor | dict[str, Any]]:
        """The batches of ``sampler``'s micro-steps, read straight from the stacked tensors: the
        items ``DataLoader(self, batch_sampler=sampler)`` gives, without its per-batch machinery."""
        for step in itertools.count(sampler.start):
            yield self._item(sampler.index_tensor(step).to(self.items.device, non_blocking=True))

    def to(self, device: torch.device) -> InMemory:
        """Kept on the training device: no per-step copy."""
        self.items = self.items.to(device)
        self.cond = {k: v.to(device) for k, v in self.cond.items()}
        return self


def _maybe_in_memory(ds: Any, cfg: RunConfig) -> Any:
    """Stack a small, augmentation-free data set of tensors or labelled tensors (digits, gmm) into memory."""
    if cfg.data.hflip or cfg.data.name not in ("digits", "gmm") or isinstance(ds, InMemory):
        return ds
    x0, cond = split_batch(ds[0])
    if len(ds) * x0.numel() * x0.element_size() > IN_MEMORY_BYTES:
        return ds
    items = [split_batch(ds[i]) for i in range(len(ds))]
    stacked = {k: torch.stack([c[k] for _, c in items]) for k in cond}
    out = InMemory(torch.stack([x for x, _ in items]), stacked)
    for name in ("num_classes", "class_names"):  # a labelled data set's classes
        if hasattr(ds, name):
            setattr(out, name, getattr(ds, name))
    return out


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving the bad weights."""


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns (``trained``: steps trained by this call;
    ``outputs_written``: the final loss curve and sample grid were written by this call)."""

    run_dir: Path
    step: int
    last_checkpoint: Path | None
    final_loss: float | None
    seconds: float
    trained: int = 0
    outputs_written: bool = False


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def defining_changes(old: RunConfig, new: RunConfig) -> list[str]:
    """The fields outside :data:`RESUMABLE` where ``new`` differs from ``old``, as "field (old -> new)"."""
    a, b = _flat(to_dict(old)), _flat(to_dict(new))
    return [f"{k} ({a.get(k, 'unset')} -> {b.get(k, 'unset')})" for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k) and not k.startswith(RESUMABLE)]


def _seed_for(seed: int, rank: int, step: int, stream: int) -> int:
    """A distinct 63-bit seed for each (seed, rank, step, stream)."""
    return ((seed * 1_000_003 + step) * 64 + rank * 4 + stream) % (2**63 - 1)


def _seed_global_rngs(seed: int, device: torch.device) -> None:
    """Seed the global generators a training step draws from: the CPU's (augmentations in this
    process, dropout on the CPU) and the training device's (dropout there). ``torch.manual_seed``
    also queues a seed for every backend not yet initialised (CUDA, XPU, MTIA on a CPU run), each
    with a formatted stack trace: 0.29 ms a step on the 2-core CPU (docs/results/speed_cpu.md §2)."""
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):  # the GPU this process trains on
            torch.cuda.manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)  # other backends (mps, xpu, ...): every generator, as before


def _record_step(line: str) -> float:
    """The step of a metrics.jsonl line; +inf for a line a kill cut short (so it is dropped)."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return math.inf
    return rec["step"] if isinstance(rec, dict) and isinstance(rec.get("step"), int) else math.inf


def _read_checkpoint(ckpt: Path) -> dict[str, Any]:
    """Everything a resume needs from ``ckpt``, read in full before anything is applied.

    Raises:
        CheckpointError: a file is missing, truncated or unreadable (the message names it).
    """
    problem = checkpoint_problem(ckpt)
    if problem:
        raise CheckpointError(problem)
    try:
        config = load_config(ckpt / "config.yaml")
    except (ConfigError, OSError) as err:
        raise CheckpointError(f"{ckpt / 'config.yaml'}: unreadable ({err})") from None
    has_ema = (ckpt / "ema.safetensors").exists()
    return {"meta": read_meta(ckpt), "config": config, "model": load_weights(ckpt, ema=False),
            "ema": load_weights(ckpt, ema=True) if has_ema else None, "state": load_state(ckpt)}


class Trainer:
    """Train one run.

    Args:
        cfg: the run's config.
        run_dir: output folder (config.yaml, metrics.jsonl, checkpoints/, samples/, tb/).
        resume: continue from the run's latest checkpoint (error if there is none).
        net, dataset: inject a network / data set instead of building them from ``cfg``.
        base_dir: the config file's folder: a relative ``latent.autoencoder`` is resolved there.
        accelerator: an existing Accelerator (default: one built from ``cfg.train``).
        progress: show a tqdm bar (main process only).
    """

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path,
        *,
        resume: bool = False,
        net: nn.Module | None = None,
        dataset: Any = None,
        accelerator: Accelerator | None = None,
        progress: bool = True,
        base_dir: str | Path | None = None,
    ):
        self.run_dir = Path(run_dir)
        tc = cfg.train
        self.acc = accelerator or Accelerator(mixed_precision=tc.mixed_precision,
                                              gradient_accumulation_steps=tc.grad_accum)
        self.progress = progress and self.acc.is_main_process
        self.latents = self._autoencoder(cfg, resume, base_dir)
        if dataset is not None:
            self.dataset, self.shape = dataset, tuple(split_batch(dataset[0])[0].shape)
        else:
            if self.latents is not None:
                self.latents, dataset = runs.build_latent_dataset(cfg, "train", latents=self.latents)
                cfg = runs.resolve_latents(cfg, self.latents)
            else:
                dataset = runs.build_dataset(cfg, "train")
            self.dataset = _maybe_in_memory(dataset, cfg)
            self.shape = runs.dataset_shape(self.dataset)
        # model.num_classes from the data (data.labels): the saved config.yaml holds the resolved number
        self.cfg = cfg = runs.resolve_classes(cfg, self.dataset)
        torch.manual_seed(tc.seed)  # identical initial weights on every rank
        raw = net if net is not None else runs.build_net(cfg, self.shape)
        self.schedule = cfg.build_schedule()
        self.ema = EMA(raw, tc.ema_rate, tc.ema_warmup)
        opt = torch.optim.Adam(raw.parameters(), lr=tc.lr, betas=tuple(tc.adam_betas), weight_decay=tc.weight_decay)
        warm = tc.warmup_steps
        self.lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / warm) if warm else 1.0)
        world = self.acc.num_processes * tc.grad_accum
        if tc.batch_size % world:
            raise ValueError(f"train.batch_size ({tc.batch_size}) must be divisible by processes x train.grad_accum "
                             f"({self.acc.num_processes} x {tc.grad_accum})")
        self.micro_batch = tc.batch_size // world
        self.step = 0
        self.notes: list[str] = []  # what a resume fell back from / will delete, for the caller to show
        self._discard: list[Path] = []  # incomplete checkpoints newer than the one resumed from
        if resume:
            self._resume(raw, opt)
        self.net, self.opt = self.acc.prepare(raw, opt)
        self.raw_net = self.acc.unwrap_model(self.net)  # unwrapped once: unwrap_model walks the module tree
        if tc.compile:  # the training network only; the EMA copy and the sampling nets stay eager
            self.net = torch.compile(self.net)
        if resume:
            self.opt.load_state_dict(self._resume_opt_state)
            if self._resume_scaler_state and getattr(self.acc, "scaler", None) is not None:
                self.acc.scaler.load_state_dict(self._resume_scaler_state)  # fp16 loss scale
            del self._resume_opt_state, self._resume_scaler_state
        self.ema.module.to(self.acc.device)
        # The Denoiser calls the (possibly DDP-wrapped or compiled) network through self._call_net,
        # so the condition map and DDP's gradient hooks both apply.
        self.denoiser: Denoiser = runs.build_denoiser(cfg, self._call_net, self.schedule)
        self.gen_t = torch.Generator()  # training times (CPU: sample_timesteps draws on CPU)
        self.gen_noise = torch.Generator(device=self.acc.device)
        self.gen_labels = torch.Generator()  # label dropout for classifier-free guidance (CPU)
        self.writer = None

    # --- pieces ---------------------------------------------------------------------------------
    def _autoencoder(self, cfg: RunConfig, resume: bool, base_dir: str | Path | None) -> Any:
        """A latent run's autoencoder (None otherwise): on resume the run's own copy
        (``<run>/autoencoder/``, with the factor it trained with), else ``latent.autoencoder``
        resolved relative to ``base_dir`` (copied into the run when training starts)."""
        if resume and cfg.latent.autoencoder is not None and (self.run_dir / runs.AUTOENCODER_DIR).is_dir():
            return runs.run_autoencoder(self.run_dir, cfg, self.acc.device)
        return runs.run_latents(cfg, Path(base_dir) if base_dir is not None else None, self.acc.device)

    def _call_net(self, x: Tensor, c: Tensor, **cond: Tensor) -> Tensor:
        return self.net(x, c, **cond)

    def _resume(self, raw: nn.Module, opt: torch.optim.Optimizer) -> None:
        """Load the newest checkpoint that is complete and loads; note (and later delete) newer ones."""
        skipped: list[str] = []
        for ckpt in reversed(step_dirs(self.run_dir)):
            try:
                loaded = _read_checkpoint(ckpt)
                break
            except CheckpointError as err:
                skipped.append(str(err))
                self._discard.append(ckpt)
        else:
            detail = f" ({'; '.join(skipped)})" if skipped else ""
            raise FileNotFoundError(f"--resume: {self.run_dir} has no complete checkpoint{detail}")
        if skipped:
            self.notes.append(f"{fallback_note(ckpt, skipped)}; resuming from step {loaded['meta']['step']}, "
                              "the incomplete checkpoint(s) will be deleted")
        changes = defining_changes(loaded["config"], self.cfg)
        if changes:
            raise ConfigError(
                f"--resume cannot change what defines the run {self.run_dir} (its {ckpt.name}/config.yaml): "
                f"{', '.join(changes)}. A resume may change only {', '.join(RESUMABLE)}*; "
                "train a new run (another --out) to change the others")
        meta, state = loaded["meta"], loaded["state"]
        raw.load_state_dict(loaded["model"])
        if loaded["ema"] is not None:
            self.ema.load_state_dict(loaded["ema"], meta["ema_updates"])
        self._resume_opt_state = state["optimizer"]
        self._resume_scaler_state = state.get("scaler")
        self.lr_sched.load_state_dict(state["lr_scheduler"])
        set_rng_state(state["rng"])
        self.step = int(meta["step"])

    def _prepare_run_dir(self) -> None:
        """Main process, before training: clear what kills left behind, write config.yaml."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        remove_partial_writes(self.run_dir)
        for ckpt in self._discard:
            shutil.rmtree(ckpt, ignore_errors=True)
        self._truncate_metrics()
        atomic_write_text(self.run_dir / "config.yaml", dump_config(self.cfg))
        if self.latents is not None and not (self.run_dir / runs.AUTOENCODER_DIR).is_dir():
            self.latents.save(self.run_dir / runs.AUTOENCODER_DIR)  # the run decodes with its own copy

    def _truncate_metrics(self) -> None:
        """Keep the metrics.jsonl lines up to the current step: a killed run's later lines (and a
        line cut by the kill) go, so the loss curve never steps back."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        lines = path.read_text().splitlines()
        keep = [line for line in lines if _record_step(line) <= self.step]
        if keep != lines:
            atomic_write_text(path, "".join(line + "\n" for line in keep))

    def _loader(self) -> Iterable[Any]:
        tc = self.cfg.train
        sampler = StepBatchSampler(len(self.dataset), self.micro_batch, seed=tc.seed, rank=self.acc.process_index,
                                   world_size=self.acc.num_processes, start=self.step * tc.grad_accum)
        if isinstance(self.dataset, InMemory):  # small: kept on the training device, no per-step copy
            return self.dataset.to(self.acc.device).batches(sampler)
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.cfg.data.num_workers,
                          pin_memory=self.acc.device.type == "cuda", persistent_workers=False)

    def loss(self, x0: Tensor, micro_step: int, cond: Cond | None = None) -> LossOutput:
        """The per-example loss of one micro-batch (times, noise and label dropout seeded by the
        micro-step); ``cond``: the network's inputs of its rows (class labels, the low-resolution
        image), labels dropped to NULL_LABEL with probability ``train.label_dropout`` (Ho &
        Salimans' classifier-free guidance training)."""
        rank, seed = self.acc.process_index, self.cfg.train.seed
        self.gen_t.manual_seed(_seed_for(seed, rank, micro_step, 0))
        self.gen_noise.manual_seed(_seed_for(seed, rank, micro_step, 1))
        cond = dict(cond or {})
        if "labels" in cond:
            self.gen_labels.manual_seed(_seed_for(seed, rank, micro_step, 3))
            cond["labels"] = drop_labels(cond["labels"], self.cfg.train.label_dropout, self.gen_labels)
        d = self.cfg.diffusion
        t = sample_timesteps(self.denoiser, x0.shape[0], device=x0.device, generator=self.gen_t,
                             density=d.density())  # time_sampling, logit-normal, shift, min/max timestep
        noise = torch.randn(x0.shape, generator=self.gen_noise, device=x0.device, dtype=x0.dtype)
        # reg_weight, snr_gamma, noise_offset, input_perturbation (their extra noise from gen_noise)
        return diffusion_loss(self.denoiser, x0, t=t, noise=noise, generator=self.gen_noise, cond=cond or None,
                              **d.loss_knobs())

    def _checkpoint(self) -> Path | None:
        self.acc.wait_for_everyone()
        path = None
        if self.acc.is_main_process:
            scaler = getattr(self.acc, "scaler", None)
            state = {"optimizer": self.opt.state_dict(), "lr_scheduler": self.lr_sched.state_dict(), "rng": rng_state(),
                     "scaler": scaler.state_dict() if scaler is not None else None}
            path = save_checkpoint(self.run_dir, self.step, model=self.raw_net,
                                   ema=self.ema.module, ema_updates=self.ema.num_updates, state=state,
                                   config_yaml=dump_config(self.cfg), keep_last=self.cfg.train.keep_last,
                                   meta={"data_shape": list(self.shape)})
        self.acc.wait_for_everyone()
        return path

    def _log(self, record: dict[str, Any]) -> None:
        if not self.acc.is_main_process:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"train/{k}", v, record["step"])

    def _open_writer(self) -> None:
        if self.cfg.train.tensorboard and self.acc.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"))

    # --- the loop -------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        """Train to ``cfg.train.steps``; checkpoint, log, preview samples; return a summary."""
        tc = self.cfg.train
        if self.acc.is_main_process:
            self._prepare_run_dir()
        self.acc.wait_for_everyone()
        self._open_writer()
        self.net.train()
        start, t0 = self.step, time.perf_counter()
        last_ckpt = latest_checkpoint(self.run_dir)
        window: list[float] = []
        window_t, final_loss = time.perf_counter(), None
        bar = tqdm(total=tc.steps, initial=start, desc="train", disable=not self.progress, dynamic_ncols=True)
        data = iter(self._loader()) if self.step < tc.steps else iter(())
        try:
            while self.step < tc.steps:
                loss_value = self._one_step(data)
                window.append(loss_value)
                self.step += 1
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    final_loss = self._log_window(window, window_t)
                    bar.set_postfix(loss=f"{final_loss:.4f}")
                    window, window_t = [], time.perf_counter()
                if self.step % tc.checkpoint_every == 0 or self.step == tc.steps:
                    last_ckpt = self._checkpoint() or last_ckpt
                if tc.sample_every and self.step % tc.sample_every == 0 and self.step != tc.steps:
                    if self.acc.is_main_process:
                        self.preview()
                    self.acc.wait_for_everyone()
        except NonFiniteLossError as err:
            where = f"last good checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
            raise NonFiniteLossError(f"{err}; stopped, {where}") from None
        except CheckpointWriteError as err:
            where = f"last complete checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
            raise CheckpointWriteError(f"{err}; stopped, {where}; free space, then continue with --resume") from None
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.flush()
        trained = self.step - start
        written = self.acc.is_main_process and self.step > 0 and (trained > 0 or not self._final_outputs_exist())
        if written:
            self.plot_loss()
            self.preview()  # its .npz is written last: it marks the outputs as complete
        self.acc.wait_for_everyone()
        return TrainResult(self.run_dir, self.step, last_ckpt, final_loss, time.perf_counter() - t0, trained, written)

    def _final_outputs_exist(self) -> bool:
        return (self.run_dir / "samples" / f"step_{self.step:08d}.npz").is_file()

    def _one_step(self, data) -> float:
        """One optimiser step over ``grad_accum`` micro-batches; returns the mean loss."""
        tc = self.cfg.train
        total = 0.0
        _seed_global_rngs(_seed_for(tc.seed, self.acc.process_index, self.step, 2), self.acc.device)
        for j in range(tc.grad_accum):
            micro = self.step * tc.grad_accum + j
            x0, cond = split_batch(next(data))
            x0 = x0.to(self.acc.device, non_blocking=True)
            cond = {k: v.to(self.acc.device, non_blocking=True) for k, v in cond.items()}
            with self.acc.accumulate(self.net):
                loss = self.loss(x0, micro, cond).total.mean()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise NonFiniteLossError(f"non-finite loss ({value}) at step {self.step + 1}")
                self.acc.backward(loss)
                if tc.grad_clip is not None and self.acc.sync_gradients:
                    self.acc.clip_grad_norm_(self.net.parameters(), tc.grad_clip)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
            total += value
        self.lr_sched.step()
        self.ema.update(self.raw_net)
        return total / tc.grad_accum

    def _log_window(self, window: list[float], since: float) -> float:
        mean = torch.tensor(sum(window) / max(len(window), 1), device=self.acc.device)
        mean = float(self.acc.reduce(mean, "mean")) if self.acc.num_processes > 1 else float(mean)
        dt = time.perf_counter() - since
        self._log({"step": self.step, "loss": mean, "lr": self.lr_sched.get_last_lr()[0],
                   "ema_decay": self.ema.decay(), "steps_per_s": len(window) / dt if dt > 0 else None,
                   "time": time.time()})
        return mean

    # --- outputs --------------------------------------------------------------------------------
    @torch.no_grad()
    def preview(self) -> Path | None:
        """A sample grid (images) or scatter plot (vectors) from the EMA weights: samples/step_K.png.
        Class-conditional runs: one class per row, at the run's ``sample.guidance``; super-resolution
        runs: from the first low-resolution inputs of the test split; latent runs: decoded."""
        sc = self.cfg.sample
        den = runs.build_denoiser(self.cfg, self.ema.module, self.schedule).eval()
        model = runs.LoadedModel(den, self.schedule, self.cfg, self.cfg.name, self.cfg.data.name, shape=self.shape,
                                 num_classes=self.cfg.model.num_classes or 0, latents=self.latents)
        cond, nrow = self._preview_cond(model)
        num = len(next(iter(cond.values()))) if cond else sc.num
        x = runs.generate(model, num, sampler=sc.sampler, nfe=sc.nfe, seed=self.cfg.train.seed, batch=sc.batch,
                          device=self.acc.device, cond=cond or None)
        if x.ndim == 4:
            x = x.clamp(-1, 1)  # images: the sampler may overshoot the data range (as `etsdm sample` saves them)
        path = self.run_dir / "samples" / f"step_{self.step:08d}.png"
        save_samples_png(x, path, nrow=nrow)
        save_samples_npz(x, path.with_suffix(".npz"))
        return path

    def _preview_cond(self, model: runs.LoadedModel) -> tuple[dict[str, Tensor], int | None]:
        """The preview's network inputs and grid width: labels 0..K-1, one class per row of
        sample.num // K samples (at least 1); SR: the test split's first low-resolution inputs."""
        sc, cond, nrow = self.cfg.sample, {}, None
        if self.cfg.data.name == "sr":
            test = runs.build_dataset(self.cfg, "test")
            rows = [split_batch(test[i])[1] for i in range(min(sc.num, len(test)))]
            cond = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
        if model.num_classes and "labels" not in cond:  # (SR with labels: the test items' own classes)
            nrow = max(1, sc.num // model.num_classes)
            cond["labels"] = torch.arange(model.num_classes).repeat_interleave(nrow)
        return cond, nrow

    def plot_loss(self) -> Path | None:
        """loss.png: the training loss curve from metrics.jsonl (None if nothing was logged)."""
        metrics = self.run_dir / "metrics.jsonl"
        return plot_loss_curve(metrics, self.run_dir / "loss.png") if metrics.is_file() else None
