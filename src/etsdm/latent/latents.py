"""``Latents``: an ``AutoencoderKL`` with its scaling factor, as latent diffusion uses it.

Encoding (Rombach et al. 2022, Sec. 3.1 and Appendix G): z = E(x), the latent the diffusion model
sees is ``scaling_factor · (z - shift_factor)`` (``shift_factor`` only for VAEs whose config sets
one; Stable Diffusion's VAEs have none), decoding inverts it and clamps D(z) to [-1, 1].

E(x) here is the posterior's **mode** (its mean), not a sample as in LDM's
``get_first_stage_encoding``: latents are encoded once and cached, so a sample would freeze one
draw of the encoder noise per image (LDM draws anew at every step); the mode is the deterministic
choice, equal across runs and equal to a fresh encoding bit for bit. With LDM's KL weight (1e-6)
the posterior's std is small next to the latents' spread (measured in docs/latent.md).

The scaling factor (LDM's ``scale_factor``): given, else the VAE folder's own
``config.json`` ``scaling_factor`` when the file sets one, else 1/std of the training latents
(:func:`fit_scaling_factor`, LDM's ``scale_by_std`` rule) via :meth:`Latents.fitted`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from torch import Tensor

from ..folders import publish_folder, staged_folder
from .folders import SIDECAR, autoencoder_folder, load_vae

# AutoencoderKL config keys that do not change E(x) or D(z) (left out of the weights fingerprint).
NON_ARCHITECTURE_KEYS = ("scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast")


class LatentError(ValueError):
    """A latent-space operation that cannot be done as asked (the message says why)."""


def fit_scaling_factor(unscaled: Tensor) -> float:
    """1 / std of all entries of the unscaled training latents (LDM's ``scale_by_std``: the scaled
    latents then have unit variance, like the data of an image-space model)."""
    if unscaled.numel() < 2:
        raise LatentError(f"fit_scaling_factor: need at least 2 latent entries, got {unscaled.numel()}")
    std = unscaled.detach().to(torch.float64).flatten().std().item()
    if not math.isfinite(std) or std <= 0:
        raise LatentError(f"fit_scaling_factor: the latents' std is {std} (constant or non-finite latents)")
    return 1.0 / std


def folder_scaling_factor(folder: str | Path) -> float | None:
    """The ``scaling_factor`` a diffusers AutoencoderKL folder's ``config.json`` sets, or None when
    the file has no such key (older Stable Diffusion VAE configs)."""
    config = json.loads((autoencoder_folder(folder) / "config.json").read_text())
    value = config.get("scaling_factor")
    return None if value is None else float(value)


def _batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch: int | None) -> Tensor:
    if batch is None or x.shape[0] <= batch:
        return fn(x)
    return torch.cat([fn(x[i : i + batch]) for i in range(0, x.shape[0], batch)])


class Latents:
    """An AutoencoderKL in eval mode, no gradients, and its scaling factor.

    Args:
        vae: the autoencoder (moved to nothing; use :meth:`load` for a folder).
        scaling_factor: s of ``s · (E(x) - shift)``; None: unknown until :meth:`fitted`.
        source: the folder it was loaded from (copied by :meth:`save`).
    """

    def __init__(self, vae: AutoencoderKL, scaling_factor: float | None = None, *, source: Path | None = None):
        if scaling_factor is not None and not (math.isfinite(scaling_factor) and scaling_factor > 0):
            raise LatentError(f"scaling_factor must be a positive finite number, got {scaling_factor!r}")
        self.vae = vae.eval().requires_grad_(False)
        self._scaling_factor = None if scaling_factor is None else float(scaling_factor)
        self.shift_factor = float(vae.config.get("shift_factor") or 0.0)
        self.source = source

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, scaling_factor: float | None = None, device: str | torch.device = "cpu"
             ) -> Latents:
        """Load an AutoencoderKL folder (an etsdm autoencoder run, a diffusers folder, or a diffusers
        pipeline folder with ``vae/``). ``scaling_factor`` None: the folder's own if its config.json
        sets one, else unknown (call :meth:`fitted` with the training latents).

        Raises:
            FileNotFoundError / ValueError: the folder is missing / not an AutoencoderKL (named).
        """
        folder = autoencoder_folder(path)
        factor = scaling_factor if scaling_factor is not None else folder_scaling_factor(folder)
        return cls(load_vae(folder).to(device), factor, source=folder)

    def with_scaling_factor(self, scaling_factor: float) -> Latents:
        """The same autoencoder (shared, not copied) with another scaling factor."""
        return Latents(self.vae, scaling_factor, source=self.source)

    def fitted(self, unscaled: Tensor) -> Latents:
        """Self if the scaling factor is known, else the same autoencoder with 1/std of ``unscaled``
        (the training latents, :func:`fit_scaling_factor`)."""
        return self if self.has_scaling_factor else self.with_scaling_factor(fit_scaling_factor(unscaled))

    # --- properties --------------------------------------------------------------------------
    @property
    def has_scaling_factor(self) -> bool:
        return self._scaling_factor is not None

    @property
    def scaling_factor(self) -> float:
        if self._scaling_factor is None:
            raise LatentError("the scaling factor is not known yet: give latent.scaling_factor, or fit it with "
                              "Latents.fitted(training latents) (1/std, as LDM)")
        return self._scaling_factor

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def in_channels(self) -> int:
        return int(self.vae.config.in_channels)

    @property
    def downsampling(self) -> int:
        """Image side / latent side: 2^(levels - 1)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_shape(self, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(C, h, w) of the latent of an image of shape (C_img, H, W)."""
        if len(image_shape) != 3 or image_shape[0] != self.in_channels:
            raise LatentError(f"latent_shape: expected an image shape ({self.in_channels}, H, W), got "
                              f"{tuple(image_shape)}")
        f = self.downsampling
        _, h, w = image_shape
        if h % f or w % f:
            raise LatentError(f"latent_shape: image side {h}x{w} is not divisible by the autoencoder's "
                              f"downsampling factor {f}")
        return int(self.vae.config.latent_channels), h // f, w // f

    # --- encode / decode ---------------------------------------------------------------------
    def _check_images(self, images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise LatentError(f"encode: expected images (N, {self.in_channels}, H, W) in [-1, 1], got "
                              f"{tuple(images.shape)}")

    @torch.no_grad()
    def encode_unscaled(self, images: Tensor, *, batch: int | None = None) -> Tensor:
        """E(x): the posterior mode of images (N, C, H, W) in [-1, 1], on the input's device."""
        self._check_images(images)

        def one(x: Tensor) -> Tensor:
            return self.vae.encode(x.to(self.device, torch.float32)).latent_dist.mode()

        return _batched(one, images, batch).to(images.device)

    def scale(self, unscaled: Tensor) -> Tensor:
        """The diffusion model's latents: s · (z - shift)."""
        return (unscaled - self.shift_factor) * self.scaling_factor

    def encode(self, images: Tensor, *, batch: int | None = None) -> Tensor:
        """Scaled latents s · (E(x) - shift) of images in [-1, 1]."""
        return self.scale(self.encode_unscaled(images, batch=batch))

    @torch.no_grad()
    def decode(self, latents: Tensor, *, batch: int | None = None) -> Tensor:
        """Images D(z / s + shift) clamped to [-1, 1], on the input's device."""
        if latents.ndim != 4 or latents.shape[1] != self.vae.config.latent_channels:
            raise LatentError(f"decode: expected latents (N, {self.vae.config.latent_channels}, h, w), got "
                              f"{tuple(latents.shape)}")

        def one(z: Tensor) -> Tensor:
            z = z.to(self.device, torch.float32) / self.scaling_factor + self.shift_factor
            return self.vae.decode(z).sample.clamp(-1.0, 1.0)

        return _batched(one, latents, batch).to(latents.device)

    # --- identity and copies -----------------------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 of the weights and the architecture (not the scaling / shift factors): equal
        fingerprints encode equal latents. Computed anew at each call (weights may change)."""
        h = hashlib.sha256()
        arch = {k: v for k, v in self.vae.config.items() if not k.startswith("_") and k not in NON_ARCHITECTURE_KEYS}
        h.update(json.dumps(arch, sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.vae.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()

    def save(self, folder: str | Path) -> Path:
        """Write the autoencoder as a diffusers folder (e.g. ``<run>/autoencoder/``) whose config.json
        holds the resolved scaling factor, with etsdm's sidecar when the source has one; atomic
        (an existing folder is replaced whole). Raises LatentError if the factor is unknown."""
        out = Path(folder)
        vae_config_factor = self.vae.config.scaling_factor
        self.vae.register_to_config(scaling_factor=self.scaling_factor)
        try:
            with staged_folder(out) as tmp:
                self.vae.save_pretrained(tmp, safe_serialization=True)
                if self.source is not None and (self.source / SIDECAR).is_file():
                    shutil.copy2(self.source / SIDECAR, tmp / SIDECAR)
                publish_folder(tmp, out, replace=True)
        finally:
            self.vae.register_to_config(scaling_factor=vae_config_factor)
        return out
