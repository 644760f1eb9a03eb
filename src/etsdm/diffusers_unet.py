"""A diffusers UNet that applies E-TSDM's condition map itself: :class:`ETSDMUNet2DModel`.

(Implementation module: import it as ``etsdm.diffusers_model.ETSDMUNet2DModel`` or
``etsdm.ETSDMUNet2DModel``; :mod:`etsdm.diffusers_model` is the light module diffusers resolves.)

An E-TSDM network was trained on c = f_T(t) (Eq. 9), not on t. A plain ``UNet2DModel`` queried by
diffusers' pipelines at ``timestep = t`` therefore sees the wrong conditions, silently. The class
here is a ``UNet2DModel`` whose ``forward(sample, timestep)`` feeds the UNet
``f(timestep) · time_scale``; the map lives in its ``config.json`` (``etsdm_condition``,
``etsdm_num_train_timesteps``, ``etsdm_time_scale``), so ``save_pretrained`` / ``from_pretrained``
carry it and diffusers' own pipelines (``DDPMPipeline``, ``DDIMPipeline``, any scheduler) sample
the model it was trained to be.

How diffusers finds the class. ``model_index.json`` names each component as ``[library, class]``;
a pipeline saved with this UNet records ``["etsdm.diffusers_model", "ETSDMUNet2DModel"]`` (the
class's ``__module__`` is set to that light module). diffusers (``pipeline_loading_utils.
_get_library_or_raise``) imports only its own libraries (diffusers, transformers, onnxruntime)
itself and takes any other library from ``sys.modules`` — it never imports a module because a
folder names it. ``import etsdm`` imports :mod:`etsdm.diffusers_model` (which imports diffusers
only when the class is first asked for), so after ``import etsdm`` the documented loaders work
unchanged::

    import etsdm  # registers etsdm.diffusers_model for diffusers
    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained("exported/")   # unet: ETSDMUNet2DModel

Without ``import etsdm`` diffusers refuses the folder with an error that says to import it — a
loud failure, never a model queried at the wrong conditions. ``UNet2DModel.from_pretrained`` on
the ``unet/`` folder itself builds the plain parent class (diffusers does not dispatch on
``_class_name``); use ``ETSDMUNet2DModel.from_pretrained`` or ``AutoModel`` with the pipeline folder.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers import ModelMixin, UNet2DModel  # noqa: F401  (ModelMixin: diffusers looks its loaders up here)
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from .conditioning import ConditionMap, TimestepSharing, make_condition_map

ETSDM_KEYS = ("etsdm_condition", "etsdm_num_train_timesteps", "etsdm_time_scale")


def _signature(extra: Any) -> inspect.Signature:
    """The etsdm parameters followed by every UNet2DModel parameter: diffusers reads a model's
    config keys from its ``__init__`` signature (``ConfigMixin._get_init_keys``)."""
    own = list(inspect.signature(extra).parameters.values())[:-1]  # self + etsdm_*, not **unet_kwargs
    parent = list(inspect.signature(UNet2DModel.__init__).parameters.values())[1:]
    return inspect.Signature([p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if i else p
                              for i, p in enumerate(own + parent)])


class ETSDMUNet2DModel(UNet2DModel):
    """``UNet2DModel`` whose forward applies a condition map to ``timestep`` (E-TSDM's f_T).

    Args:
        etsdm_condition: the condition map's config (:func:`condition_config`), e.g.
            ``{"kind": "etsdm", "t_tilde": 100, "n": 5}``, or explicit ``boundaries`` of a sharing
            map (EDM / flow exports, on their timestep axis); None: the identity.
        etsdm_num_train_timesteps: T of the discrete time axis 0..T-1 the map acts on (None:
            continuous time t in [0, 1]).
        etsdm_time_scale: the UNet is fed ``f(timestep) · etsdm_time_scale`` (T for etsdm's
            continuous-time runs, 1 otherwise).
        **unet_kwargs: ``UNet2DModel``'s arguments (keywords only).
    """

    def __init__(self, etsdm_condition: dict[str, Any] | None = None, etsdm_num_train_timesteps: int | None = 1000,
                 etsdm_time_scale: float = 1.0, **unet_kwargs: Any):
        super().__init__(**unet_kwargs)
        self.condition: ConditionMap = condition_from_config(etsdm_condition, etsdm_num_train_timesteps)
        self.time_scale = float(etsdm_time_scale)

    __init__.__signature__ = _signature(__init__)  # type: ignore[attr-defined]
    __init__ = register_to_config(__init__)

    def net_condition(self, timestep: Tensor | float | int, sample: Tensor) -> Tensor:
        """The UNet's input timestep f(t) · time_scale, float32 of shape (batch,), as etsdm's
        Denoiser and ``etsdm.nets.UNet`` compute it (so both give bit-identical outputs)."""
        t = torch.as_tensor(timestep, device=sample.device).to(torch.float64)
        t = t.expand(sample.shape[0]) if t.ndim == 0 else t
        c = self.condition(t).to(torch.float32)  # c = f(t)  (Eq. 9)
        return c * self.time_scale if self.time_scale != 1.0 else c

    def forward(self, sample: Tensor, timestep: Tensor | float | int, class_labels: Tensor | None = None,
                return_dict: bool = True) -> Any:
        """UNet2DModel's forward at timestep f(timestep) · time_scale."""
        return super().forward(sample, self.net_condition(timestep, sample), class_labels, return_dict)

    def forward_at_condition(self, sample: Tensor, c: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """The plain UNet at condition ``c`` (the map already applied, e.g. by etsdm's Denoiser)."""
        return UNet2DModel.forward(self, sample, c, class_labels).sample

    @classmethod
    def from_unet(cls, unet: UNet2DModel, condition: ConditionMap, *, num_train_timesteps: int | None = 1000,
                  time_scale: float = 1.0) -> ETSDMUNet2DModel:
        """An ETSDMUNet2DModel holding ``unet``'s own parameters (the same tensors, so an optimiser
        built on ``unet`` trains it) with ``condition`` applied in forward."""
        kwargs = {k: v for k, v in dict(unet.config).items() if not k.startswith("_") and k not in ETSDM_KEYS}
        with torch.device("meta"):
            model = cls(etsdm_condition=condition_config(condition), etsdm_num_train_timesteps=num_train_timesteps,
                        etsdm_time_scale=time_scale, **kwargs)
        model.load_state_dict(unet.state_dict(keep_vars=True), assign=True)
        model.train(unet.training)
        return model


def condition_config(condition: ConditionMap) -> dict[str, Any]:
    """What ``etsdm_condition`` stores: ``condition.config()``, or for a sharing map with explicit
    boundaries (E-TSDM on EDM / flow, or with a ``space``; the map on an export's timestep axis,
    ``etsdm.runs.export_axis``) the boundaries themselves, so the UNet needs no schedule to rebuild it."""
    if isinstance(condition, TimestepSharing) and condition.space is not None:
        return {"kind": "etsdm", "boundaries": list(condition.boundaries), "space": condition.space}
    return condition.config()


def condition_from_config(config: dict[str, Any] | None, num_train_timesteps: int | None) -> ConditionMap:
    """Inverse of :func:`condition_config` (None: the identity)."""
    cfg = dict(config or {"kind": "identity"})
    if "boundaries" in cfg:
        return TimestepSharing(boundaries=cfg["boundaries"], space=cfg.get("space"))
    return make_condition_map(cfg.pop("kind", "identity"), T=num_train_timesteps, **cfg)


ETSDMUNet2DModel.__module__ = "etsdm.diffusers_model"  # what save_pretrained records in model_index.json


def unet_at_condition(unet: UNet2DModel, sample: Tensor, c: Tensor) -> Tensor:
    """``unet``'s output at condition c, for a plain UNet2DModel or an ETSDMUNet2DModel (whose own
    map is then skipped: etsdm's Denoiser has applied it)."""
    if isinstance(unet, ETSDMUNet2DModel):
        return unet.forward_at_condition(sample, c)
    return unet(sample, c).sample
