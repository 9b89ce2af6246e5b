"""Fast batches for data that already sits in memory as tensors.

A DataLoader over a TensorDataset fetches samples one by one and collates them, which costs more
than a small model's whole training step. Indexing the full tensors with a shuffled batch of
indices gives the same batches at a fraction of the cost.

A split is the caller's own tensors plus the indices of its rows, never a copy of them: the
training and validation splits of a 1 GB array take 1 GB, not 2. The rows keep their dtype until a
batch is made (uint8 pixels stay a quarter of float32's size), and whatever has to look at a whole
split (statistics, checks, a move to the GPU) walks through it in chunks of a few MB.
"""
from __future__ import annotations

import contextlib
import math

import torch

CHUNK_ELEMENTS = 2**20  # values per chunk of a pass over a whole split: 4 MB as float32


class TensorBatches:
    """Iterable of ``(x, y)`` batches of the rows `rows` (all when None) of in-memory tensors,
    reshuffled each pass when asked.

    `pixels`: the inputs are uint8 pixels of a decoded image folder, scaled to [0, 1] per batch; any
    other inputs become float32 per batch with their values unchanged (uint8 arrays too).
    """

    movable = True  # its rows can be moved to the training device once (nbopt.data.placement)

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 draws: torch.Tensor | None = None, *, rows: torch.Tensor | None = None, pixels: bool = False):
        self.source_x, self.source_y = x, y  # the caller's whole tensors, shared by every split
        self.rows = rows
        self.draws = draws  # per-sample weights to draw by, with replacement (balance: oversample)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.pixels = pixels
        self.generator = torch.Generator().manual_seed(seed)
        self.on_device: tuple[torch.Tensor, torch.Tensor] | None = None  # the split's rows, moved by place()

    @property
    def size(self) -> int:
        """Samples in this split."""
        return len(self.source_y) if self.rows is None else len(self.rows)

    @property
    def x(self) -> torch.Tensor:
        """The split's inputs, in their stored dtype: a copy of its rows, made on request (batches never need it)."""
        return self.source_x if self.rows is None else self.source_x[self.rows]

    @property
    def y(self) -> torch.Tensor:
        """The split's targets (a copy of its rows, as for `x`)."""
        return self.source_y if self.rows is None else self.source_y[self.rows]

    def __len__(self) -> int:
        rank, world = _rank_and_world()
        return -(-(-(-self.size // world)) // self.batch_size)

    def __iter__(self):
        for index in self.positions():
            yield self.batch_at(index)

    def positions(self):
        """This pass's batches as positions within the split: in order, shuffled, or drawn by `draws`.

        Every DDP rank draws the same permutation (same seed, same draws) and keeps every world-th
        position, padded so that all ranks take the same number of steps, as DistributedSampler does.
        Drawn on the host (the same batches on any device); for rows placed on a GPU, moved there once a
        pass, as one copy from pageable memory waits for the GPU to finish what it was given and a copy
        a step would stall it every step.
        """
        n = self.size
        rank, world = _rank_and_world()
        if self.draws is not None:  # as many draws as a permutation has indices, so an epoch keeps its length
            order = torch.multinomial(self.draws, n, replacement=True, generator=self.generator)
        else:
            order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        if world > 1:
            padding = (-n) % world
            order = torch.cat([order, order[:padding]])[rank::world]
        if self.on_device is not None:
            order = order.to(self.on_device[0].device)
        return order.split(self.batch_size)

    def source_rows(self, index: torch.Tensor) -> torch.Tensor:
        """The rows of the caller's tensors at these positions of the split."""
        return index if self.rows is None else self.rows[index]

    def batch_at(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of the split's rows at these positions (one of `positions()`)."""
        if self.on_device is not None:
            x, y = self.on_device
            index = index.to(x.device)
        else:
            x, y, index = self.source_x, self.source_y, self.source_rows(index)
        batch = x[index]
        return (as_float(batch) if self.pixels else batch.float()), y[index]

    def nbytes(self) -> int:
        """What the split's rows take (inputs and targets), as place() would move them."""
        return self.size * (_row_bytes(self.source_x) + _row_bytes(self.source_y))

    def place(self, device: torch.device) -> None:
        """Keep a copy of the split's rows on `device` and make every batch there: one move, gathered a
        chunk at a time, instead of a host-to-device copy every step."""
        x = torch.empty((self.size, *self.source_x.shape[1:]), dtype=self.source_x.dtype, device=device)
        for start, chunk in row_chunks(self.source_x, self.rows):
            x[start:start + len(chunk)] = chunk.to(device)
        self.on_device = x, self.y.to(device)

    def unplace(self) -> None:
        """Batches from the caller's tensors again; the device copy is dropped."""
        self.on_device = None

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def row_chunks(x: torch.Tensor, rows: torch.Tensor | None = None, elements: int = CHUNK_ELEMENTS):
    """``(first position, rows of x)`` for the rows `rows` of x (all when None), `elements` values at a
    time: how a whole split is read without gathering it."""
    count = len(x) if rows is None else len(rows)
    step = max(1, elements // max(math.prod(x.shape[1:]), 1))
    for start in range(0, count, step):
        yield start, (x[start:start + step] if rows is None else x[rows[start:start + step]])


def _row_bytes(t: torch.Tensor) -> int:
    return t.element_size() * math.prod(t.shape[1:])


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
