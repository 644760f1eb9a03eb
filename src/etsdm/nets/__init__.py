"""Backbones: the ADM-style UNet of Table A1 (diffusers UNet2DModel) and an MLP for vectors.

Every backbone is called ``net(x, c)`` with the condition c (B,) the Denoiser hands it and returns a
tensor of x's shape; a conditional UNet is called ``net(x, c, lowres=y)`` (super-resolution) and
``net(x, c, labels=y)`` (class labels, NULL_LABEL = -1 for none). Backbones never read
the schedule: ``time_scale`` (set by the trainer, T for continuous time) is their only knob on c.
"""

from .mlp import MLP
from .presets import NET_PRESETS, NETS, count_parameters, make_net, preset_fields
from .unet import UNet, build_unet

__all__ = ["MLP", "NETS", "NET_PRESETS", "UNet", "build_unet", "count_parameters", "make_net", "preset_fields"]
