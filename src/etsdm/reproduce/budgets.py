"""Budgets of ``etsdm reproduce``: how many seeds, steps, samples each claim gets, and what it costs.

* ``quick`` — every code path with tiny sizes (a 2-step, 4k-parameter UNet; a few NFE; pools of a
  dozen samples); what the tests run. Its numbers mean nothing.
* ``toy`` — all claims on digits (8x8, 1,497 training images) on a 2-core CPU in about 3 hours with
  ``--jobs 2``. Claims 1, 2, 3, 5 share 5 seeds x 2 arms of the default digits job (3000 steps,
  batch 128: the run the README documents); claims 4, 6, 7, 8 need 43 more arms, so they get 3 seeds
  and 1000 steps each (their own baseline / E-TSDM pair at that length). The cost in resolution:
  the sweep models are under-trained (digits quality still improves between 1000 and 3000 steps),
  so they compare the methods early in training, and 3 seeds give a t-interval 2.5x the standard
  error (t_{0.975, 2} = 4.30) — only large effects resolve. FID-n uses n = 250 (main) / 150 (sweep)
  digits-classifier features, whose real-vs-real floor is reported beside every number.
* ``full`` — the paper's scale: the ``accelerate launch`` commands of configs/paper/ per claim
  (``--dry-run`` prints them); with the run folders present, the same report from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .claims import Claim, Family, Row

TINY_NET = ("model.overrides={base_channels: 8, channel_mult: [1, 2], layers_per_block: 1, "
            "attention_resolutions: [4], attention_head_dim: 8, time_embedding_dim: 16, norm_num_groups: 4}")


@dataclass(frozen=True)
class FamilyBudget:
    """Training and evaluation sizes of one family of arms (``main``: claims 1, 2, 3, 5; ``sweep``: 4, 6, 7, 8)."""

    seeds: int
    steps: int
    batch_size: int
    pool: int  # samples drawn per (run, plan), from noise seed 1000 + training seed (paired across arms)
    n: int  # FID-n: images per random subset of the pool (< pool)
    eval_seeds: int  # random subsets per FID value
    overrides: tuple[str, ...] = ()  # e.g. a smaller network

    def train_overrides(self) -> tuple[str, ...]:
        """Training length, batch, and a cheap preview grid (the trainer's own end-of-run samples)."""
        return self.overrides + (
            f"train.steps={self.steps}", f"train.batch_size={self.batch_size}", "train.tensorboard=false",
            f"train.checkpoint_every={max(1, min(self.steps, 1000))}", "train.keep_last=1",  # a kill loses <= 1000
            f"train.log_every={max(1, min(50, self.steps))}", "sample.sampler=ddim", "sample.nfe=10",
            "sample.num=16", "sample.batch=16")


@dataclass(frozen=True)
class Budget:
    """A budget: per-family sizes, measurement sizes, and the cost model of :func:`estimate`."""

    name: str
    families: dict[Family, FamilyBudget]
    measure_samples: int  # test images for K(t, t+1) and the stability of x̂0
    feature_epochs: int  # digits feature net (FID features)
    nfe_map: dict[int, int] = field(default_factory=dict)  # NFE of a plan -> NFE used (quick only)
    ddpm_nfe: int | None = None  # None: T (the paper's DDPM)
    max_rows: dict[Family, int] = field(default_factory=dict)  # rows per claim of a family (evenly spaced; quick)
    steps_per_s: float = 15.0  # one quiet core, batch 128, the default digits UNet (measured)
    sample_nfe_s: float = 1.3e-4  # seconds per sample per network evaluation (batch ~300, same net)
    train_only: bool = False  # full: runs come from `accelerate launch` (printed), not trained here
    analytic: tuple[int, int, int] = (3, 20, 200)  # analytic reference: noise seeds, test images, mixture components
    autoencoder_steps: int | None = None  # latent arms: train the autoencoder this many steps (None: its config's)

    def plan(self, spec: str, T: int) -> str:
        """The plan actually sampled for a claim's plan (``ddpm:T`` resolved, NFE mapped)."""
        sampler, nfe, opts = spec.split(":")[0], spec.split(":")[1], spec.split(":")[2:]
        if nfe == "T":
            value = self.ddpm_nfe or T
        else:
            value = self.nfe_map.get(int(nfe), int(nfe))
        return ":".join([sampler, str(value), *opts])

    def rows(self, claim: Claim) -> tuple[Row, ...]:
        """The rows evaluated at this budget (all, or ``max_rows[family]`` evenly spaced ones)."""
        rows, most = claim.rows, self.max_rows.get(claim.family)
        if most is None or len(rows) <= most:
            return rows
        idx = sorted({int(round(i)) for i in np.linspace(0, len(rows) - 1, most)})
        return tuple(rows[i] for i in idx)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "families": {k: vars(v) for k, v in self.families.items()},
                "measure_samples": self.measure_samples, "feature_epochs": self.feature_epochs,
                "nfe_map": self.nfe_map, "ddpm_nfe": self.ddpm_nfe, "max_rows": self.max_rows,
                "analytic": dict(zip(("seeds", "samples", "components"), self.analytic, strict=True)),
                "autoencoder_steps": self.autoencoder_steps}


BUDGETS: dict[str, Budget] = {
    "quick": Budget(
        "quick",
        {"main": FamilyBudget(2, 2, 8, 12, 6, 2, (TINY_NET,)), "sweep": FamilyBudget(2, 2, 8, 12, 6, 2, (TINY_NET,))},
        measure_samples=4, feature_epochs=1, nfe_map={20: 4, 50: 6, 200: 8}, ddpm_nfe=10,
        max_rows={"main": 2, "sweep": 1}, analytic=(2, 2, 10), autoencoder_steps=2,
    ),
    "toy": Budget(
        "toy",
        {"main": FamilyBudget(5, 3000, 128, 300, 250, 3), "sweep": FamilyBudget(3, 1000, 128, 200, 150, 3)},
        measure_samples=100, feature_epochs=20,
    ),
    "full": Budget(
        "full",
        {"main": FamilyBudget(5, 500_000, 96, 12_000, 10_000, 3), "sweep": FamilyBudget(3, 500_000, 96, 12_000,
                                                                                        10_000, 3)},
        measure_samples=1000, feature_epochs=20, train_only=True,
    ),
}


def calibrate(budget: Budget, steps: int = 10, forwards: int = 5) -> Budget:
    """``budget`` with its cost model measured on this machine now (one thread): ``steps`` training
    steps of the default digits UNet at batch 128 and ``forwards`` forward passes of 300 samples."""
    import dataclasses
    import time

    import torch

    from ..config import load_config
    from ..runs import build_net

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = build_net(load_config(None), (1, 8, 8))
        opt = torch.optim.Adam(net.parameters())
        x, c = torch.randn(128, 1, 8, 8), torch.rand(128) * 999
        net(x, c).pow(2).mean().backward()  # warm-up
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            net(x, c).pow(2).mean().backward()
            opt.step()
        step_s = (time.perf_counter() - t0) / steps
        x, c = torch.randn(300, 1, 8, 8), torch.rand(300) * 999
        with torch.no_grad():
            net(x, c)
            t0 = time.perf_counter()
            for _ in range(forwards):
                net(x, c)
        nfe_s = (time.perf_counter() - t0) / forwards / 300
    finally:
        torch.set_num_threads(threads)
    return dataclasses.replace(budget, steps_per_s=1.0 / step_s, sample_nfe_s=nfe_s)
