"""E-TSDM for your own training script: :func:`share_timesteps` wraps any network that takes a
timestep, so training *and* sampling give it the shared condition f_T(t) of Eq. (9).

    import etsdm
    model = etsdm.share_timesteps(model, t_tilde=100, n=5)   # before building the optimiser
    # ... the training loop and the sampling pipeline stay exactly as they were

Sharing in training only (and sampling at t) is the mistake to avoid: the network never learnt
the conditions it is then queried at. Because the map is inside the returned module, both see it.

* A diffusers ``UNet2DModel`` becomes an :class:`~etsdm.diffusers_unet.ETSDMUNet2DModel` holding
  the same parameter tensors: ``DDPMPipeline(unet=model, ...)`` samples with the map, and
  ``save_pretrained`` writes a folder that diffusers loads back as an E-TSDM model (after
  ``import etsdm``).
* Any other module (a DiT, a plain ``nn.Module``) is wrapped in :class:`SharedTimesteps`, whose
  forward maps the timestep argument (``timestep`` / ``timesteps`` / ``t`` keyword, else the second
  positional argument, or the one named by ``timestep_arg``) and passes everything else through;
  other attributes (``config``, ``dtype``, ...) are the wrapped module's. Its ``state_dict`` keys
  carry the prefix ``module.``; ``wrapper.module`` is the network itself.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor, nn

from .conditioning import ConditionMap, Identity, TimestepSharing

TIMESTEP_KEYWORDS = ("timestep", "timesteps", "t")


def map_timestep(condition: ConditionMap, timestep: Any) -> Any:
    """f(timestep) in the timestep's own type: a tensor keeps its dtype and device (integer
    timesteps stay integers: f_T maps integers to integers), a Python number stays one."""
    if isinstance(timestep, Tensor):
        return condition(timestep)
    value = float(condition(torch.tensor(float(timestep), dtype=torch.float64)))
    return int(value) if isinstance(timestep, int) and value.is_integer() else value


class SharedTimesteps(nn.Module):
    """``module`` with its timestep argument replaced by ``condition(timestep)`` (see the module doc).

    Args:
        module: the network; called with the same arguments, the timestep mapped.
        condition: the condition map, e.g. ``TimestepSharing(100, 5)``.
        timestep_arg: where the timestep is: a keyword name or a positional index (None: the
            ``timestep`` / ``timesteps`` / ``t`` keyword if given, else positional argument 1).
    """

    def __init__(self, module: nn.Module, condition: ConditionMap, timestep_arg: str | int | None = None):
        super().__init__()
        self.module = module
        self.condition = condition
        self.timestep_arg = timestep_arg

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        key = self.timestep_arg
        if key is None:
            key = next((k for k in TIMESTEP_KEYWORDS if k in kwargs), 1)
        if isinstance(key, str):
            if key not in kwargs:
                raise TypeError(f"share_timesteps: the call has no {key!r} keyword (timestep_arg={key!r})")
            kwargs[key] = map_timestep(self.condition, kwargs[key])
        else:
            if len(args) <= key:
                raise TypeError(f"share_timesteps: expected the timestep as positional argument {key} or as a "
                                f"keyword ({', '.join(TIMESTEP_KEYWORDS)}); pass timestep_arg= to name it")
            args = (*args[:key], map_timestep(self.condition, args[key]), *args[key + 1 :])
        return self.module(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules") or {}
            if "module" not in modules or name.startswith("__"):  # e.g. during copy.deepcopy / unpickling
                raise
            return getattr(modules["module"], name)


def share_timesteps(
    module: nn.Module, t_tilde: float | None = None, n: int = 5, *, T: int | None = 1000,
    condition: ConditionMap | None = None, timestep_arg: str | int | None = None,
) -> nn.Module:
    """``module`` whose forward sees E-TSDM's shared condition f_T(t) (Eq. 9) instead of t.

    Args:
        module: a diffusers ``UNet2DModel`` (returned as an ``ETSDMUNet2DModel`` on the same
            parameters) or any module taking a timestep (wrapped in :class:`SharedTimesteps`).
        t_tilde: t̃, in timesteps (None: T/10, the paper's 100 of 1000; continuous time: 0.1).
        n: number of sub-intervals of [0, t̃).
        T: number of training timesteps (the timesteps are 0..T-1); None for continuous t in [0, 1].
        condition: another condition map instead (e.g. :class:`~etsdm.conditioning.Remap`).
        timestep_arg: see :class:`SharedTimesteps` (not used for a UNet2DModel).

    Raises:
        ValueError: t̃ / n out of range (``TimestepSharing``), or ``module`` already applies a map.
    """
    cond = condition if condition is not None else TimestepSharing(t_tilde, n, T=T)
    if isinstance(module, SharedTimesteps):
        raise ValueError(f"share_timesteps: the module already applies {module.condition!r}")
    if "diffusers" in sys.modules:  # a diffusers UNet2DModel -> the diffusers-native E-TSDM UNet
        from diffusers import UNet2DModel

        if isinstance(module, UNet2DModel):
            from .diffusers_unet import ETSDMUNet2DModel

            if isinstance(module, ETSDMUNet2DModel) and not isinstance(module.condition, Identity):
                raise ValueError(f"share_timesteps: the UNet already applies {module.condition!r}")
            return ETSDMUNet2DModel.from_unet(module, cond, num_train_timesteps=T)
    return SharedTimesteps(module, cond, timestep_arg)
