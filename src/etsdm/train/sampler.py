"""A resumable, rank-aware batch sampler: the batch of micro-step k is a pure function of k.

Epoch e is a permutation of the data set drawn from ``seed`` and e; each epoch holds
``len(dataset) // (batch_size · world_size)`` global batches (the remainder is dropped) and rank r
takes the r-th slice of each global batch. Resuming at micro-step k starts exactly where an
uninterrupted run would be, and ranks never see the same example within a global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[int]]):
    """Yields the index lists of micro-steps ``start, start + 1, ...`` (infinitely).

    Args:
        n: data set size. batch_size: per-rank micro-batch. seed: data-order seed.
        rank, world_size: this process and the number of processes. start: first micro-step.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0):
        if n < batch_size * world_size:
            raise ValueError(
                f"data set has {n} examples, fewer than one global batch "
                f"({batch_size} x {world_size} processes); lower train.batch_size"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.start = rank, world_size, start
        self.per_epoch = n // (batch_size * world_size)
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm

    def index_tensor(self, step: int) -> torch.Tensor:
        """The indices rank ``rank`` reads at micro-step ``step``, as a (batch_size,) int64 tensor."""
        epoch, pos = divmod(step, self.per_epoch)
        gb = self.batch_size * self.world_size
        lo = pos * gb + self.rank * self.batch_size
        return self.permutation(epoch)[lo : lo + self.batch_size]

    def indices(self, step: int) -> list[int]:
        """The indices rank ``rank`` reads at micro-step ``step``."""
        return self.index_tensor(step).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            yield self.indices(step)
            step += 1

    def __len__(self) -> int:  # DataLoader asks; the stream is effectively endless
        return 2**62
