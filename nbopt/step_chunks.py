"""Several training steps per Lightning batch, for small models that Lightning's per-batch loop slows.

Around every batch it fetches, Lightning runs its fetcher, progress counters, batch transfer and a
dozen hook calls: about as long as a whole step of a small MLP on a CPU. When nbopt's own module
takes its steps by hand over in-memory data, the Trainer is given chunks of up to `STEPS_PER_CHUNK`
batches instead, and the module takes one optimizer step per batch of the chunk: the same batches in
the same order, the same arithmetic, Lightning's loop paid once per chunk. A stop request is still
heard at the next step, not the next chunk.
"""
from __future__ import annotations

from typing import Callable

STEPS_PER_CHUNK = 16


class StepChunk:
    """Up to `STEPS_PER_CHUNK` batches of one epoch, each gathered only when the module asks for it.

    Iterating gives ``(step in the epoch, batch)``; it ends early once `stop()` is true. What was
    trained is counted as it goes (`steps_taken`, `samples_taken`), for the history and progress.
    """

    def __init__(self, loader, positions: list, first_step: int, steps_in_epoch: int, stop: Callable[[], bool]):
        self.loader, self.positions, self.first_step = loader, positions, first_step
        self.steps_in_epoch, self.stop = steps_in_epoch, stop
        self.steps_taken = self.samples_taken = 0

    def __iter__(self):
        for offset, index in enumerate(self.positions):
            if self.stop():
                return
            self.steps_taken += 1
            self.samples_taken += len(index)
            yield self.first_step + offset, self.loader.batch_at(index)


class StepChunks:
    """The batches of an in-memory split (a `TensorBatches`), reshuffled each pass as it is, in chunks."""

    def __init__(self, loader, stop: Callable[[], bool], steps: int = STEPS_PER_CHUNK):
        self.loader, self.stop, self.steps = loader, stop, steps

    @property
    def steps_per_pass(self) -> int:
        return len(self.loader)

    def __len__(self) -> int:
        return -(-len(self.loader) // self.steps)

    def __iter__(self):
        positions = list(self.loader.positions())
        for start in range(0, len(positions), self.steps):
            yield StepChunk(self.loader, positions[start:start + self.steps], start, len(positions), self.stop)


def trained_in(batch) -> tuple[int, int]:
    """(optimizer steps, samples) that one Lightning batch trained: a chunk's, or one plain batch's."""
    if isinstance(batch, StepChunk):
        return batch.steps_taken, batch.samples_taken
    return 1, len(batch[0])


def steps_per_epoch(trainer) -> float:
    """Training steps in an epoch, whether the Trainer fetches batches or chunks of them."""
    return getattr(trainer.train_dataloader, "steps_per_pass", trainer.num_training_batches)
