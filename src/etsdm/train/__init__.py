"""Training: the accelerate-based Trainer, EMA, atomic checkpoints, a resumable batch sampler."""

from .checkpoint import latest_checkpoint, load_state, load_weights, save_checkpoint
from .ema import EMA
from .sampler import StepBatchSampler

__all__ = ["EMA", "StepBatchSampler", "latest_checkpoint", "load_state", "load_weights", "save_checkpoint"]
