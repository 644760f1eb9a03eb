"""Train a diffusers ``AutoencoderKL`` on the user's images (LDM's first stage, at toy scale).

Loss per image (Rombach et al. 2022, Appendix G, without its LPIPS and patch-GAN terms, which a toy
8x8 autoencoder has no use for): the reconstruction error of a posterior sample summed over pixels
(L1 as LDM, or squared error) plus ``kl_weight`` · KL(q(z|x) || N(0, I)) summed over latent
entries, both averaged over the batch — LDM's normalisation, so LDM's KL weight 1e-6 means the
same here. Adam, constant learning rate, on ``accelerate`` like the diffusion trainer.

The output folder is a diffusers AutoencoderKL folder (``save_pretrained``: config.json with the
fitted ``scaling_factor``, diffusion_pytorch_model.safetensors) plus etsdm's files: the sidecar
``etsdm_autoencoder.json`` (config, scaling factor, held-out reconstruction error, time),
``config.yaml``, ``metrics.jsonl`` and ``reconstructions.png`` (held-out images, odd rows, and their
reconstructions, even rows). It is written in a temporary folder and renamed into place, so it
is either absent or complete.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from diffusers import AutoencoderKL
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..config import DataConfig, to_dict
from ..data import make_dataset
from ..folders import publish_folder, staged_folder
from ..metrics.image import psnr
from ..plotting import sample_grid
from .config import AutoencoderArchConfig, AutoencoderConfig, dump_autoencoder_config, load_autoencoder_config
from .folders import SIDECAR
from .latents import Latents, fit_scaling_factor

SIDECAR_FORMAT = "etsdm-autoencoder/1"
GRID_IMAGES = 32  # held-out images in reconstructions.png


def build_autoencoder(arch: AutoencoderArchConfig, channels: int, resolution: int) -> AutoencoderKL:
    """A fresh ``AutoencoderKL`` for (channels, resolution, resolution) images."""
    levels = len(arch.block_out_channels)
    return AutoencoderKL(
        in_channels=channels, out_channels=channels, down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=tuple(arch.block_out_channels),
        layers_per_block=arch.layers_per_block, latent_channels=arch.latent_channels,
        norm_num_groups=arch.norm_num_groups, sample_size=resolution,
        mid_block_add_attention=arch.mid_block_attention,
    )


def image_dataset(data: DataConfig, split: str) -> Dataset:
    """The images of an autoencoder config's data section (``etsdm.data.make_dataset``)."""
    extra: dict[str, Any] = {}
    if data.holdout:
        extra["holdout"] = int(data.holdout) if float(data.holdout).is_integer() else data.holdout
    return make_dataset(data.name, split=split, root=data.root, resolution=data.resolution, channels=data.channels,
                        skip_bad=data.skip_bad, num_samples=data.num_samples, **extra)


def image_of(item: Any) -> Tensor:
    """x0 of a data item (a Tensor, or a dict with "x0": etsdm's item convention)."""
    return item["x0"] if isinstance(item, dict) else item


def stack_x0(items: list[Any]) -> Tensor:
    """A batch of x0 from a list of data items (the DataLoader's collate)."""
    return torch.stack([image_of(i) for i in items])


def reconstruction_loss(x: Tensor, rec: Tensor, kind: str) -> Tensor:
    """Per-image reconstruction error summed over pixels, averaged over the batch (LDM's L_rec)."""
    err = (rec - x).abs() if kind == "l1" else (rec - x) ** 2
    return err.flatten(1).sum(1).mean()


def _batches(dataset: Dataset, batch_size: int, seed: int):
    """Shuffled batches of x0 forever (a new permutation per epoch, seeded)."""
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True, drop_last=True,
                        generator=g, collate_fn=stack_x0)
    while True:
        yield from loader


def _held_out(cfg: AutoencoderConfig) -> Dataset:
    """The test split (digits: the fixed 300; folder: data.holdout files, else the training images)."""
    if cfg.data.name == "folder" and not cfg.data.holdout:
        return image_dataset(cfg.data, "train")
    return image_dataset(cfg.data, "test")


def reconstruction_error(latents: Latents, images: Tensor, batch: int = 256) -> dict[str, float]:
    """Per-pixel MSE (images in [-1, 1]) and mean per-image PSNR (dB, on [0, 1]) of D(E(x))."""
    rec = latents.decode(latents.encode(images, batch=batch), batch=batch)
    return {"mse": float(((rec - images) ** 2).mean()), "psnr": float(psnr(rec, images).mean())}


def posterior_spread(vae: AutoencoderKL, images: Tensor) -> float:
    """Mean posterior std over latent entries / std of the posterior means (how far a sample of
    q(z|x) strays from its mode, in units of the latents' spread)."""
    with torch.no_grad():
        post = vae.encode(images.to(next(vae.parameters()).device)).latent_dist
    return float(post.std.mean() / post.mean.std())


def training_device(device: str | torch.device) -> torch.device:
    """"auto": accelerate's device for this process (a GPU when there is one); else ``device``."""
    return PartialState().device if device == "auto" else torch.device(device)


def train_autoencoder(config: str | Path | AutoencoderConfig, out_dir: str | Path, *,
                      device: str | torch.device = "cpu", progress: bool = False) -> Path:
    """Train the config's autoencoder and write it to ``out_dir`` (see the module docstring).

    Args:
        config: an autoencoder YAML path or an :class:`AutoencoderConfig`.
        out_dir: the output folder; must not exist or be empty.
        device: "cpu", "auto" (accelerate's choice: a GPU when there is one) or a torch device.
        progress: a tqdm bar.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty.
        ConfigError: an invalid config (field named).
        RuntimeError: the loss became NaN or infinite (nothing is written).
    """
    cfg = config if isinstance(config, AutoencoderConfig) else load_autoencoder_config(config)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"autoencoder output {out}: exists and is not empty (choose a new folder)")
    start = time.time()
    dev = training_device(device)
    torch.manual_seed(cfg.train.seed)
    train_set = image_dataset(cfg.data, "train")
    channels, resolution = image_of(train_set[0]).shape[0], image_of(train_set[0]).shape[-1]
    vae = build_autoencoder(cfg.autoencoder, channels, resolution).to(dev)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.train.lr)
    metrics = _optimise(cfg, vae, opt, _batches(train_set, cfg.train.batch_size, cfg.train.seed), progress)
    vae.eval()
    record = _evaluate(cfg, vae, train_set)
    record.update(train_seconds=time.time() - start, steps=cfg.train.steps, final_loss=metrics[-1]["loss"])
    _write(cfg, vae, record, metrics, out)
    return out


def _optimise(cfg: AutoencoderConfig, vae: AutoencoderKL, opt: torch.optim.Optimizer, batches,
              progress: bool) -> list[dict[str, float]]:
    """The training loop; returns the metrics lines (every ``log_every`` steps and the last)."""
    a, t = cfg.autoencoder, cfg.train
    metrics: list[dict[str, float]] = []
    vae.train()
    start = time.time()
    for step in tqdm(range(1, t.steps + 1), disable=not progress, desc="autoencoder"):
        x = next(batches).to(next(vae.parameters()).device)
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample()).sample
        rec_loss = reconstruction_loss(x, rec, a.reconstruction)
        kl = posterior.kl().mean()  # Σ over latent entries, mean over the batch
        loss = rec_loss + a.kl_weight * kl
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"autoencoder training: non-finite loss {loss.item()} at step {step} "
                               f"(try a smaller train.lr than {t.lr:g}); nothing was written")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % t.log_every == 0 or step == t.steps:
            metrics.append({"step": step, "loss": loss.item(), "rec": rec_loss.item(), "kl": kl.item(),
                            "seconds": time.time() - start})
    return metrics


def _evaluate(cfg: AutoencoderConfig, vae: AutoencoderKL, train_set: Dataset) -> dict[str, Any]:
    """The fitted scaling factor (1/std of the training latents) and the held-out reconstruction error."""
    plain = Latents(vae)
    train_images = stack_x0([train_set[i] for i in range(len(train_set))])
    factor = fit_scaling_factor(plain.encode_unscaled(train_images, batch=256))
    vae.register_to_config(scaling_factor=factor)
    held = _held_out(cfg)
    images = stack_x0([held[i] for i in range(len(held))])
    latents = Latents(vae, factor)
    return {"scaling_factor": factor, "test": {**reconstruction_error(latents, images), "count": len(held)},
            "posterior_std_over_latent_std": posterior_spread(vae, images[:256]),
            "image_shape": list(images.shape[1:]), "latent_shape": list(latents.latent_shape(images.shape[1:])),
            "grid": images[:GRID_IMAGES]}


def _grid(latents: Latents, images: Tensor) -> Tensor:
    """Rows of 8 held-out images, each followed by the row of their reconstructions."""
    rec = latents.decode(latents.encode(images))
    rows = [t for i in range(0, images.shape[0], 8) for t in (images[i : i + 8], rec[i : i + 8])]
    return torch.cat(rows)


def _write(cfg: AutoencoderConfig, vae: AutoencoderKL, record: dict[str, Any], metrics: list[dict[str, float]],
           out: Path) -> None:
    """Write every file into a temporary folder beside ``out``, then rename it to ``out``."""
    grid = record.pop("grid")
    with staged_folder(out) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
        sidecar = {"format": SIDECAR_FORMAT, "config": to_dict(cfg), **record}
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=1) + "\n")
        (tmp / "config.yaml").write_text(dump_autoencoder_config(cfg))
        (tmp / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        if grid.shape[1] in (1, 3):
            sample_grid(_grid(Latents(vae, record["scaling_factor"]), grid), tmp / "reconstructions.png", nrow=8)
        if not publish_folder(tmp, out, replace=False):  # an empty `out` counts as absent
            raise FileExistsError(f"autoencoder output {out}: another process wrote it first")


def read_sidecar(folder: str | Path) -> dict[str, Any] | None:
    """etsdm's record of an autoencoder it trained, or None for a foreign diffusers folder."""
    path = Path(folder) / SIDECAR
    return json.loads(path.read_text()) if path.is_file() else None
