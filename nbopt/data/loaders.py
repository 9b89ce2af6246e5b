"""Fast batches for data that already sits in memory as tensors.

A DataLoader over a TensorDataset fetches samples one by one and collates them, which costs more
than a small model's whole training step. Indexing the full tensors with a shuffled batch of
indices gives the same batches at a fraction of the cost.
"""
from __future__ import annotations

import contextlib

import torch


class TensorBatches:
    """Iterable of ``(x, y)`` batches over in-memory tensors, reshuffled each pass when asked."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 draws: torch.Tensor | None = None):
        self.x, self.y = x, y
        self.draws = draws  # per-sample weights to draw by, with replacement (balance: oversample)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        rank, world = _rank_and_world()
        return -(-(-(-len(self.x) // world)) // self.batch_size)

    def __iter__(self):
        n = len(self.x)
        rank, world = _rank_and_world()
        if world == 1 and not self.shuffle:
            for start in range(0, n, self.batch_size):
                yield as_float(self.x[start:start + self.batch_size]), self.y[start:start + self.batch_size]
            return
        # Every rank draws the same permutation (same seed, same draws) and keeps every world-th index,
        # padded so that all ranks take the same number of steps, as DistributedSampler does.
        if self.draws is not None:  # as many draws as a permutation has indices, so an epoch keeps its length
            order = torch.multinomial(self.draws, n, replacement=True, generator=self.generator)
        else:
            order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        if world > 1:
            padding = (-n) % world
            order = torch.cat([order, order[:padding]])[rank::world]
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            yield as_float(self.x[index]), self.y[index]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (a decoded image cache, a quarter of float32's size) as floats in [0, 1], one batch at a time."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


_SHARDING = {"on": True}


@contextlib.contextmanager
def unsharded():
    """Every batch in this process, even while a DDP process group is still up (final scoring)."""
    _SHARDING["on"] = False
    try:
        yield
    finally:
        _SHARDING["on"] = True


def _rank_and_world() -> tuple[int, int]:
    """This process's share of the data under DDP; (0, 1) otherwise."""
    if _SHARDING["on"] and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
