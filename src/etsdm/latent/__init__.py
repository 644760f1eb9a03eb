"""Latent diffusion (Rombach et al. 2022): diffusion on an ``AutoencoderKL``'s latents.

* :class:`AutoencoderConfig`, :func:`load_autoencoder_config`, :func:`is_autoencoder_config` and
  :func:`train_autoencoder`: an autoencoder trained by etsdm on the user's images (a diffusers
  folder + etsdm's sidecar, written atomically).
* :func:`resolve_autoencoder`: a config's ``latent.autoencoder`` (an etsdm autoencoder run, a local
  diffusers AutoencoderKL folder, or an autoencoder YAML trained once into the cache) to a folder.
* :class:`Latents`: the autoencoder and its scaling factor (encode = posterior mode × factor,
  decode to [-1, 1]); :func:`fit_scaling_factor` (1/std, LDM).
* :func:`cached_latents`: every image encoded once, in safetensors shards keyed by the
  autoencoder's weights and a key (:func:`data_key`); :class:`LatentDataset`: scaled latents as
  training items; :func:`latent_training_set`: the three in one call.

See docs/latent.md.
"""

from .autoencoder import build_autoencoder, read_sidecar, reconstruction_error, train_autoencoder
from .cache import cached_latents, latent_cache_dir
from .config import AutoencoderConfig, autoencoder_config, is_autoencoder_config, load_autoencoder_config
from .dataset import LatentDataset, data_key, dataset_labels, latent_training_set
from .folders import SIDECAR, autoencoder_folder, cache_root, is_autoencoder_folder
from .latents import LatentError, Latents, fit_scaling_factor, folder_scaling_factor
from .resolve import resolve_autoencoder

__all__ = [
    "SIDECAR",
    "AutoencoderConfig",
    "LatentDataset",
    "LatentError",
    "Latents",
    "autoencoder_config",
    "autoencoder_folder",
    "build_autoencoder",
    "cache_root",
    "data_key",
    "dataset_labels",
    "cached_latents",
    "fit_scaling_factor",
    "folder_scaling_factor",
    "is_autoencoder_config",
    "is_autoencoder_folder",
    "latent_cache_dir",
    "latent_training_set",
    "load_autoencoder_config",
    "read_sidecar",
    "reconstruction_error",
    "resolve_autoencoder",
    "train_autoencoder",
]
