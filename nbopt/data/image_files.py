"""Image files → uint8 pixels with Pillow, one way for every path: the pass that checks every file
(and fills the cache), the DataLoader workers that stream from disk, and ``run.predict``.

Decoding the same way everywhere is what lets a cached and a streamed run of one seed see the very
same batches, and a prediction on a file see what training saw.
"""
from __future__ import annotations

import os
from functools import partial

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from nbopt.data.loaders import TensorBatches, as_float, row_chunks
from nbopt.errors import RecipeError

MODES = {1: "L", 3: "RGB"}
CHUNK = 256  # files per task of a checking pass: few messages between processes, steady progress


def read_image(path, size: tuple[int, int], channels: int) -> np.ndarray:
    with Image.open(path) as image:
        image.draft(None, (size[1], size[0]))  # a large JPEG decodes straight at a reduced scale: many times faster
        return pixels(image, size, channels)


def pixels(image: Image.Image, size: tuple[int, int], channels: int) -> np.ndarray:
    """(H, W, C) uint8 pixels of one image at `size` (height, width), converted to `channels`."""
    height, width = size
    if image.mode != MODES[channels]:
        image = image.convert(MODES[channels])
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).reshape(height, width, channels)


def _channels_first(stack: np.ndarray) -> torch.Tensor:
    """(B, H, W, C) pixels as the contiguous (B, C, H, W) tensor a model takes (contiguous in every path,
    so that cached and streamed batches give bit-identical results)."""
    return torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous()


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__


# -- checking passes, in chunks, on DataLoader workers -------------------------------------------

def read_headers(paths: list[str]) -> list[tuple[int, int, str] | str]:
    """(height, width, mode) of each file from its header alone (nothing decoded), or why it cannot be read."""
    found = []
    for path in paths:
        try:
            with Image.open(path) as image:
                found.append((image.height, image.width, image.mode))
        except Exception as exc:  # a damaged file raises OSError, SyntaxError, ValueError, ... depending on format
            found.append(_reason(exc))
    return found


def decode_chunk(paths: list[str], size: tuple[int, int], channels: int, keep: bool):
    """Decode every file: the (B, C, H, W) pixels when they are kept, else only their channel sums;
    and {position: why it failed}."""
    stack = np.zeros((len(paths), *size, channels), np.uint8)
    failed = {}
    for i, path in enumerate(paths):
        try:
            stack[i] = read_image(path, size, channels)
        except Exception as exc:  # as in read_headers: damaged files raise many types
            failed[i] = _reason(exc)
    pixels = _channels_first(stack)
    return (pixels if keep else channel_sums(pixels, per_image=True)), failed


def channel_sums(pixels: torch.Tensor, per_image: bool = False, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Sums and sums of squares of uint8 (N, C, H, W) pixels per channel — of the images `rows` only,
    when given: (2, C), or (N, 2, C) per image.

    Exact integers, so that the statistics of a split come out the same whether its pixels were
    cached or streamed, and however they were grouped.
    """
    dims = (2, 3) if per_image else (0, 2, 3)
    parts = []
    for _, part in row_chunks(pixels, rows, elements=2**22):  # int64 copies of at most 32 MB at a time
        wide = part.to(torch.int64)
        parts.append(torch.stack([wide.sum(dims), (wide * wide).sum(dims)], dim=-2))
    return torch.cat(parts) if per_image else torch.stack(parts).sum(0)


class _Chunks(Dataset):
    """A list of files in chunks, each handed whole to `job`: one worker task per chunk."""

    def __init__(self, job, paths: list[str]):
        self.job, self.paths = job, paths

    def __len__(self) -> int:
        return -(-len(self.paths) // CHUNK)

    def __getitem__(self, k: int):
        return self.job(self.paths[k * CHUNK:(k + 1) * CHUNK])


def _unchanged(item):
    return item


def each_chunk(job, paths: list[str], workers: int):
    """`job(chunk of paths)` for every chunk, in order, on `workers` processes (0: in this one)."""
    yield from DataLoader(_Chunks(job, paths), batch_size=None, num_workers=workers, collate_fn=_unchanged,
                          generator=torch.Generator())  # its own generator: the global RNG stays untouched


def decode_all(paths: list[str], size: tuple[int, int], channels: int, keep: bool, workers: int):
    """Every file decoded once: the (N, C, H, W) uint8 pixels when `keep`, else each image's channel
    sums (N, 2, C) for the statistics; and {file index: why it failed}."""
    found = (torch.empty((len(paths), channels, *size), dtype=torch.uint8) if keep else
             torch.empty((len(paths), 2, channels), dtype=torch.int64))
    failed, start = {}, 0
    for chunk, chunk_failed in each_chunk(partial(decode_chunk, size=size, channels=channels, keep=keep), paths,
                                          workers):
        found[start:start + len(chunk)] = chunk
        failed.update({start + i: why for i, why in chunk_failed.items()})
        start += len(chunk)
    return found, failed


# -- streaming from disk ----------------------------------------------------------------------------

class ImageFiles(Dataset):
    """Labelled files, decoded on request into a uint8 (B, C, H, W) batch, in a DataLoader worker."""

    def __init__(self, paths: list[str], labels: torch.Tensor, size: tuple[int, int], channels: int):
        self.paths, self.labels, self.size, self.channels = paths, labels, size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, indices: list[int]):
        stack = np.stack([read_image(self.paths[i], self.size, self.channels) for i in indices])
        return _channels_first(stack), self.labels[indices]


class StreamedBatches(TensorBatches):
    """Batches decoded from disk by DataLoader workers, in exactly the order of the in-memory batches.

    It is a TensorBatches over the files' indices, whose own order (seeded shuffle, oversampling, DDP
    sharding; the generator a run reseeds) picks the files of each batch: a streamed and a cached run
    of one seed train on the same batches and reach the same metrics.

    The workers live for one pass. Persistent ones would outlive it inside an object that may end up
    in a reference cycle, and the garbage collector stops such workers only after seconds of waiting
    for each of them.
    """

    movable = False  # decoded on the host, by workers: nothing in memory to move to the GPU

    def __init__(self, x, y, batch_size, shuffle, seed=0, draws=None, *, rows=None, files: ImageFiles, workers: int):
        super().__init__(x, y, batch_size, shuffle, seed, draws, rows=rows)
        self.files, self.workers = files, workers

    def __iter__(self):
        yield from DataLoader(self.files, batch_sampler=_IndexBatches(self), num_workers=self.workers,
                              collate_fn=_floats, generator=torch.Generator())  # the global RNG stays untouched


def _floats(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels to floats in the worker, as for cached batches: the training process, whose threads would
    contend with the workers for the cores, only receives them."""
    return as_float(batch[0]), batch[1]


class _IndexBatches:
    """The DataLoader's batch sampler: file indices, batch by batch, as TensorBatches orders them."""

    def __init__(self, batches: StreamedBatches):
        self.batches = batches

    def __iter__(self):  # a generator: the DataLoader calls iter() twice, and only the pass it takes may draw an order
        for index in self.batches.positions():
            yield self.batches.source_rows(index).tolist()

    def __len__(self) -> int:
        return len(self.batches)


# -- run.predict ------------------------------------------------------------------------------------

class ImageInputs:
    """`run.predict`'s inputs for an image run: file paths or PIL images (decoded and resized exactly as
    for training), or arrays/tensors already shaped (N, C, H, W) or (C, H, W); uint8 values are scaled
    to [0, 1] as in training."""

    def __init__(self, size: tuple[int, int], channels: int):
        self.size, self.channels = tuple(size), channels

    def encode(self, x) -> torch.Tensor:
        items = _images(x)
        if items is not None:
            return as_float(_channels_first(np.stack([self._pixels(item) for item in items])))
        x = as_float(x if isinstance(x, torch.Tensor) else torch.as_tensor(np.array(x))).float()  # a writable copy
        x = x.unsqueeze(0) if x.ndim == 3 else x
        if tuple(x.shape[1:]) != (self.channels, *self.size):
            raise RecipeError(f"the run takes images of shape {[self.channels, *self.size]} (or file paths or PIL "
                              f"images); got an array of shape {list(x.shape)}")
        return x

    def _pixels(self, item) -> np.ndarray:
        if isinstance(item, Image.Image):
            return pixels(item, self.size, self.channels)
        try:
            return read_image(item, self.size, self.channels)
        except Exception as exc:  # as in read_headers: damaged files raise many types
            raise RecipeError(f"cannot read {item} ({_reason(exc)})") from None


def _images(x) -> list | None:
    """Paths or PIL images as a list (one alone, a list, a pandas Series, an array of strings); None for pixels."""
    if isinstance(x, (str, os.PathLike, Image.Image)):
        return [x]
    sequence = isinstance(x, (list, tuple)) or type(x).__name__ == "Series"
    if sequence or (isinstance(x, np.ndarray) and x.dtype.kind in "OU"):
        items = list(x)
        return items if items and isinstance(items[0], (str, os.PathLike, Image.Image)) else None
    return None
