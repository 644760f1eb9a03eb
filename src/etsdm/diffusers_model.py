"""The module diffusers resolves an exported E-TSDM folder's UNet from.

An export's ``model_index.json`` names its UNet ``["etsdm.diffusers_model", "ETSDMUNet2DModel"]``.
diffusers takes that library from ``sys.modules`` (it imports only its own libraries itself), and
``import etsdm`` imports this module — without importing diffusers: the names diffusers asks for
(``ETSDMUNet2DModel`` and the base classes it checks the component against) are loaded from
:mod:`etsdm.diffusers_unet` on first access (PEP 562). See :mod:`etsdm.diffusers_unet`.
"""

from __future__ import annotations

from typing import Any

_FROM_IMPL = ("ETSDMUNet2DModel", "unet_at_condition", "ETSDM_KEYS")
_FROM_DIFFUSERS = ("ModelMixin", "SchedulerMixin", "DiffusionPipeline", "UNet2DModel")  # diffusers' loader checks


def __getattr__(name: str) -> Any:
    if name in _FROM_IMPL:
        from . import diffusers_unet

        return getattr(diffusers_unet, name)
    if name in _FROM_DIFFUSERS:
        import diffusers

        return getattr(diffusers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
