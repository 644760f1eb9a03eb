"""Runs as objects: build a run's pieces from its config, load a trained model, sample it,
export / import diffusers folders. One home per concern, imported in this order (no cycles):

* :mod:`.build` — the data set, the raw network, the Denoiser and shapes from a
  :class:`~etsdm.config.RunConfig` (:func:`build_dataset`, :func:`build_net`, :func:`build_denoiser`);
* :mod:`.store` — run folders, checkpoints and diffusers folders as a :class:`LoadedModel`
  (:func:`load_model`; which kind a path is);
* :mod:`.clipping` — the run's x̂0 clipping (:func:`resolve_clip`) and as diffusers settings;
* :mod:`.diffusers_parts` — the UNet, timestep axis and scheduler an export maps a run onto;
* :mod:`.diffusers_sampler` — any diffusers scheduler as a sampler (``--sampler diffusers:<Class>``,
  re-exported by :mod:`etsdm.diffusers_sampling`);
* :mod:`.generation` — the run's sampler defaults and conventions, :func:`generate`;
* :mod:`.model_card` — the README.md of an export;
* :mod:`.diffusers_io` — :func:`export_diffusers` / :func:`import_diffusers`.

Every name other modules import from ``etsdm.runs`` is re-exported here.
"""

from .build import (
    build_dataset,
    build_denoiser,
    build_image_dataset,
    build_latent_dataset,
    build_net,
    dataset_shape,
    net_time_scale,
    rebuild_net,
    resolve_classes,
    resolve_data,
    resolve_latents,
    run_latents,
)
from .clipping import IMAGE_DATA, auto_clip, clip_config, resolve_clip
from .diffusers_io import export_diffusers, import_diffusers
from .diffusers_parts import (
    _export_scheduler,
    axis_factor,
    export_axis,
    export_scheduler,
    export_spacing,
    exports_pipeline,
    find_unet,
    has_ddpm_scheduler,
)
from .generation import (
    CLI_NFE,
    CLI_SAMPLER,
    SAMPLE_CONVENTIONS,
    decoded,
    default_sampler,
    describe_sampling,
    generate,
    sample_settings,
    sampling_cond,
    sampling_denoiser,
)
from .store import (
    AUTOENCODER_DIR,
    GMM_SPECS,
    SIDECAR,
    UNET_CLASSES,
    VAE_DIR,
    DiffusersNet,
    LoadedModel,
    is_checkpoint_dir,
    is_run_dir,
    load_model,
    run_autoencoder,
    schedule_from_diffusers,
)

__all__ = [
    "_export_scheduler",  # the DDPMScheduler an export ships
    "AUTOENCODER_DIR",
    "VAE_DIR",
    "CLI_NFE",
    "CLI_SAMPLER",
    "DiffusersNet",
    "GMM_SPECS",
    "IMAGE_DATA",
    "LoadedModel",
    "SAMPLE_CONVENTIONS",
    "SIDECAR",
    "UNET_CLASSES",
    "auto_clip",
    "axis_factor",
    "build_dataset",
    "build_denoiser",
    "build_image_dataset",
    "build_latent_dataset",
    "build_net",
    "clip_config",
    "dataset_shape",
    "decoded",
    "default_sampler",
    "describe_sampling",
    "export_axis",
    "export_diffusers",
    "export_scheduler",
    "export_spacing",
    "exports_pipeline",
    "find_unet",
    "generate",
    "has_ddpm_scheduler",
    "import_diffusers",
    "is_checkpoint_dir",
    "is_run_dir",
    "load_model",
    "net_time_scale",
    "rebuild_net",
    "resolve_classes",
    "resolve_clip",
    "resolve_data",
    "resolve_latents",
    "run_autoencoder",
    "run_latents",
    "sample_settings",
    "sampling_cond",
    "sampling_denoiser",
    "schedule_from_diffusers",
]
