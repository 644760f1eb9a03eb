"""A residual MLP with a sinusoidal condition embedding, for low-dimensional data (the 2-D mixture).

``net(x, c)``: x is (B, D) (any trailing shape is flattened and restored), c is the Denoiser's
condition (B,). The embedding is diffusers' sinusoidal timestep embedding of c · time_scale
(cos first, max period 10^4, as the UNet), then Linear-SiLU-Linear to ``width``. Each of ``depth``
residual blocks computes h + W2 SiLU(W1 LN(h) + U e) with the condition embedding e; the output
is W_out SiLU(LN(h)), of the input's size. ``time_scale`` plays the same role as in the UNet
(1 for discrete timesteps, T for continuous time in [0, 1]; set by the trainer).
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import get_timestep_embedding
from torch import Tensor, nn


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        return h + self.fc2(self.act(self.fc1(self.norm(h)) + self.emb(e)))


class MLP(nn.Module):
    """Residual MLP ``net(x, c) -> same shape as x``.

    Args:
        dim: input size D (the product of the trailing shape).
        width: hidden width.
        depth: number of residual blocks.
        emb_dim: width of the sinusoidal features of c (even).
        time_scale: multiplier of c before the embedding.
    """

    def __init__(self, dim: int, *, width: int = 128, depth: int = 3, emb_dim: int = 64, time_scale: float = 1.0):
        super().__init__()
        if dim < 1 or width < 1 or depth < 1 or emb_dim < 2 or emb_dim % 2:
            raise ValueError(
                f"mlp: need dim, width, depth >= 1 and an even emb_dim >= 2, got {dim=}, {width=}, {depth=}, {emb_dim=}"
            )
        self.dim, self.emb_dim, self.time_scale = dim, emb_dim, float(time_scale)
        self.embed = nn.Sequential(nn.Linear(emb_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_Block(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: Tensor, c: Tensor | float, **cond: Tensor) -> Tensor:
        if cond:
            raise ValueError(f"mlp: takes no conditioning inputs, got {sorted(cond)}; class labels (labels=) and "
                             "low-resolution images (lowres=) need model.name: unet (model.num_classes / sr data)")
        shape = x.shape
        h = self.inp(x.reshape(shape[0], -1))
        c = torch.as_tensor(c, device=x.device, dtype=torch.float32).expand(shape[0]) * self.time_scale
        e = self.embed(
            get_timestep_embedding(c, self.emb_dim, flip_sin_to_cos=True, downscale_freq_shift=0).to(h.dtype)
        )
        for block in self.blocks:
            h = block(h, e)
        return self.out(h).reshape(shape)
