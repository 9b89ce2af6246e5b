"""`data: images(path=DIR, ...)`: a folder of image files with one sub-folder per class.

Two layouts, as torchvision's ImageFolder and Keras' flow_from_directory read them: DIR/<class>/…
(split by the recipe's val_split/test_split), or a folder already split into DIR/train/<class>/…,
DIR/val/<class>/… and optionally DIR/test/<class>/…. Classes are the folder names, sorted.

Every file is decoded once before training: that is how a damaged file is named before any epoch
runs, and how `normalize: auto` gets the exact statistics of the training split. Pixels that fit the
memory budget stay as a uint8 cache (a quarter of float32's size) and are batched like arrays;
larger sets stream from disk through DataLoader workers, in the same order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import torch

from nbopt.data.builtin import DATASETS
from nbopt.data.image_files import ImageFiles, StreamedBatches, channel_sums, decode_all, each_chunk, read_headers
from nbopt.data.loaders import TensorBatches
from nbopt.errors import RecipeError, closest

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
KINDS = "PNG, JPEG, BMP or WebP"
SPLIT_NAMES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
CACHE_MODES = ("auto", "memory", "none")
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "F"}
MEMORY_SHARE = 4  # cache=auto keeps the pixels in memory when they take at most 1/MEMORY_SHARE of the free memory
AUTO_WORKERS_FROM = 1000  # smaller folders decode faster in this process than it takes to start workers


@dataclass
class ImageFolder:
    """A scanned, checked and decoded image folder; ``resolve_data`` splits and batches it."""
    label: str  # the path as the recipe wrote it
    paths: list[str]
    labels: torch.Tensor  # class index of every file
    splits: dict[str, np.ndarray]  # the folder's own splits, as file indices: "train", maybe "val" and "test"
    classes: list[str]
    size: tuple[int, int]
    channels: int
    cache: torch.Tensor | None  # (N, C, H, W) uint8 pixels when kept in memory; None when streamed
    sums: torch.Tensor | None  # when streamed: (N, 2, C) channel sums of every image, for the statistics
    workers: int
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    @property
    def description(self) -> str:
        where = (f"cached in memory ({_amount(self.cache.numel())} as uint8)" if self.cache is not None else
                 f"streamed from disk ({self.workers} DataLoader workers)" if self.workers else
                 "streamed from disk (decoded in the training process)")
        return (f"images: {self.label}, {len(self.paths):,} files in {len(self.classes)} classes, "
                f"{'×'.join(map(str, self.shape))}, {where}")

    def batch_source(self) -> torch.Tensor:
        """What every split's batches index by its file indices: the cached pixels, else the file indices."""
        return self.cache if self.cache is not None else torch.arange(len(self.paths))

    def batch_kind(self):
        if self.cache is not None:
            return partial(TensorBatches, pixels=True)
        return partial(StreamedBatches, files=ImageFiles(self.paths, self.labels, self.size, self.channels),
                       workers=self.workers)

    def statistics(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the images `index` in [0, 1], shaped (1, C, 1, 1), from the exact
        integer sums: a cached and a streamed run get the very same values."""
        sums = channel_sums(self.cache, rows=index) if self.cache is not None else self.sums[index].sum(0)
        total, squares = sums.double()
        count = len(index) * self.size[0] * self.size[1]
        mean = total / count
        std = ((squares - total * mean) / max(count - 1, 1)).clamp_min(0).sqrt()
        std = torch.where(std > 1e-8, std, torch.full_like(std, 255.0))  # a constant channel stays as it is
        return (mean / 255).float().reshape(1, -1, 1, 1), (std / 255).float().reshape(1, -1, 1, 1)


@DATASETS.register("images", f"a folder of {KINDS} files: one sub-folder per class, or train/ val/ (test/) "
                   "folders of class folders (Pillow, offline)", ("path",))
def images(path: str | None = None, size: list | None = None, channels: int | None = None, cache: str = "auto",
           skip_bad: bool = False, workers: int | None = None) -> ImageFolder:
    if not path:
        raise RecipeError('images needs the folder: images(path="DIR", size=[H, W])')
    size, channels, cache = _checked_size(size), _checked_channels(channels), _checked_cache(cache)
    root = _root(str(path))
    listing, classes, notes = _listing(root)
    found = len(listing.paths)
    workers = _checked_workers(workers, found)
    if size is None or channels is None:
        headers = [header for chunk in each_chunk(read_headers, listing.paths, workers) for header in chunk]
        readable = _usable({i: h for i, h in enumerate(headers) if isinstance(h, str)}, listing.paths, root, skip_bad)
        listing = listing.keep(readable)
        size, channels = _common_format([h for h, ok in zip(headers, readable) if ok], listing.paths, root, size,
                                        channels)
    nbytes = len(listing.paths) * channels * size[0] * size[1]
    in_memory = cache_in_memory(cache, nbytes, free_memory())
    if cache == "auto" and not in_memory:
        notes.append(f"the pixels ({_amount(nbytes)}) exceed a quarter of the free memory, so they stream from disk; "
                     "cache=memory keeps them in memory anyway")
    decoded, failed = decode_all(listing.paths, size, channels, in_memory, workers)
    good = torch.as_tensor(_usable(failed, listing.paths, root, skip_bad))
    listing = listing.keep(good.numpy())
    if len(listing.paths) < found:
        notes.append(f"skipped {found - len(listing.paths)} unreadable file(s) (skip_bad)")
    decoded = decoded[good] if failed else decoded
    return ImageFolder(str(path), listing.paths, torch.as_tensor(listing.labels), listing.splits(), classes, size,
                       channels, decoded if in_memory else None, None if in_memory else decoded, workers, notes)


@dataclass
class _Listing:
    """The image files of a folder, split by split and class by class, before anything is decoded."""
    paths: list[str]
    labels: np.ndarray
    split_of: np.ndarray  # each file's split, as its position in `names`
    names: list[str]

    def keep(self, mask: np.ndarray) -> _Listing:
        return _Listing([p for p, k in zip(self.paths, mask) if k], self.labels[mask], self.split_of[mask], self.names)

    def splits(self) -> dict[str, np.ndarray]:
        return {name: np.flatnonzero(self.split_of == n) for n, name in enumerate(self.names)}


def _root(path: str) -> Path:
    root = Path(os.path.expanduser(path))
    if not root.exists():
        raise RecipeError(f"images: no folder '{path}' (looked in {root.absolute()}); give the folder that holds "
                          "one sub-folder per class")
    if not root.is_dir():
        raise RecipeError(f"images: '{path}' is a file; give the folder that holds one sub-folder per class")
    return root


def _listing(root: Path) -> tuple[_Listing, list[str], list[str]]:
    """Every image file with its class and split, the class names, and a note on the folder's own splits."""
    folders = _split_folders(root)
    found = {split: _class_files(folder, root) for split, folder in folders.items()}
    classes = _same_classes(found, root)
    paths, labels, split_of = [], [], []
    for number, files in enumerate(found.values()):
        for label, name in enumerate(classes):
            paths += files[name]
            labels += [label] * len(files[name])
            split_of += [number] * len(files[name])
    notes = []
    if len(folders) > 1:
        notes.append(f"splits: the folder's own {', '.join(f'{f.name}/' for f in folders.values())}"
                     + ("" if "val" in folders else "; val carved from train/ by val_split"))
    return _Listing(paths, np.asarray(labels, np.int64), np.asarray(split_of), list(found)), classes, notes


# -- layout -------------------------------------------------------------------------------------------

def _subfolders(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted by name as ImageFolder sorts classes (.ipynb_checkpoints is no class)."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _split_folders(root: Path) -> dict[str, Path]:
    """{"train": root} for one folder per class; the split folders when root holds train/ of class folders."""
    by_name = {p.name.lower(): p for p in _subfolders(root)}
    if "train" not in by_name or not _subfolders(by_name["train"]):
        return {"train": root}
    splits = {}
    for split, names in SPLIT_NAMES.items():
        folder = next((by_name[name] for name in names if name in by_name), None)
        if folder is not None:
            splits[split] = folder
    return splits


def _image_files(folder: Path) -> list[str]:
    files = []
    for top, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [os.path.join(top, n) for n in sorted(names)
                  if not n.startswith(".") and os.path.splitext(n)[1].lower() in EXTENSIONS]
    return files


def _class_files(folder: Path, root: Path) -> dict[str, list[str]]:
    """{class: its image files} of one folder of class folders, or why it is not one."""
    where = _shown(folder, root)
    classes = {sub.name: _image_files(sub) for sub in _subfolders(folder)}
    if not any(classes.values()):
        loose = len(_image_files(folder))
        if loose:
            raise RecipeError(f"images: '{where}' holds {loose:,} images but no class folders; put each class's images "
                              f"in a sub-folder named after the class ({where}/cat/…, {where}/dog/…)")
        raise RecipeError(f"images: no {KINDS} files in '{where}'; it needs one sub-folder of images per class")
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise RecipeError(f"images: the class folder '{where}/{empty[0]}' holds no {KINDS} files; add images or "
                          "remove the folder")
    return classes


def _same_classes(found: dict[str, dict[str, list[str]]], root: Path) -> list[str]:
    """The class names, when every split has the same class folders (a model's outputs are one list)."""
    (first, classes), *others = found.items()
    for split, other in others:
        if set(other) != set(classes):
            only = sorted(set(classes) - set(other))
            extra = sorted(set(other) - set(classes))
            guess = closest(extra[0], only) if extra and only else None
            raise RecipeError(
                f"images: {first}/ and {split}/ have different class folders (only in {first}/: "
                f"{', '.join(only) or 'none'}; only in {split}/: {', '.join(extra) or 'none'})"
                + (f" — is '{extra[0]}' meant to be '{guess}'?" if guess else "")
                + "; every split needs the same class folders")
    if len(classes) < 2:
        raise RecipeError(f"images: '{_shown(root, root)}' has one class folder ({next(iter(classes))}); "
                          "a classifier needs at least two")
    return sorted(classes)


# -- file checks -------------------------------------------------------------------------------------

def _usable(failed: dict[int, str], paths: list[str], root: Path, skip_bad: bool) -> np.ndarray:
    """Which files to keep; a file that cannot be read stops the recipe, or is skipped with skip_bad."""
    if failed and not skip_bad:
        first = min(failed)
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise RecipeError(f"images: cannot read {_shown(paths[first], root)} ({failed[first]}){more}; remove or "
                          "replace it, or pass skip_bad=true to skip unreadable files")
    if failed and len(failed) == len(paths):
        raise RecipeError(f"images: none of the {len(paths):,} files can be read ({_shown(paths[0], root)}: "
                          f"{failed[0]})")
    keep = np.ones(len(paths), bool)
    keep[list(failed)] = False
    return keep


def _common_format(headers: list[tuple[int, int, str]], paths: list[str], root: Path, size, channels):
    """The size to decode to (the images' own, when they all share it) and the channels the files hold."""
    if size is None and headers:
        height, width, _ = headers[0]
        other = next((i for i, h in enumerate(headers) if h[:2] != (height, width)), None)
        if other is not None:
            h, w, _ = headers[other]
            raise RecipeError(f"images: the images have different sizes ({_shown(paths[0], root)} is "
                              f"{height}×{width}, {_shown(paths[other], root)} is {h}×{w}, height×width); give "
                              "size=[H, W] to resize them all")
        size = (height, width)
    if channels is None:
        channels = 1 if all(mode in GREY_MODES for _, _, mode in headers) else 3
    return size, channels


def cache_in_memory(cache: str, nbytes: int, free: int) -> bool:
    """cache=memory keeps the pixels, cache=none streams them, cache=auto keeps them when they fit in
    a quarter of the free memory (room for the model, the splits' copies and everything else)."""
    if cache == "auto":
        return nbytes * MEMORY_SHARE <= free
    return cache == "memory"


def free_memory() -> int:
    """Bytes of memory available without swapping: free memory plus caches the system can drop."""
    return psutil.virtual_memory().available


# -- arguments ---------------------------------------------------------------------------------------

def _checked_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    values = [size, size] if isinstance(size, int) else size
    if (not isinstance(values, (list, tuple)) or len(values) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)):
        raise RecipeError(f"images: size is [height, width] in pixels, e.g. size=[32, 32]; got {size!r}")
    return int(values[0]), int(values[1])


def _checked_channels(channels) -> int | None:
    if channels not in (None, 1, 3) or isinstance(channels, bool):
        raise RecipeError(f"images: channels is 1 (grey) or 3 (colour); got {channels!r}")
    return channels


def _checked_workers(workers, files: int) -> int:
    """The DataLoader workers that decode: as given, else none for a small folder and up to 4 for a larger one."""
    if workers is None:
        return 0 if files < AUTO_WORKERS_FROM else min(4, os.cpu_count() or 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise RecipeError(f"images: workers is how many DataLoader processes decode, 0 or more; got {workers!r}")
    return workers


def _checked_cache(cache) -> str:
    cache = "none" if cache is None else str(cache).lower()  # `cache=none` reads as YAML's null
    if cache not in CACHE_MODES:
        guess = closest(cache, CACHE_MODES)
        raise RecipeError(f"images: cache is auto, memory or none; got '{cache}'"
                          + (f" — did you mean '{guess}'?" if guess else ""))
    return cache


def _shown(path, root: Path) -> str:
    """A path as the user knows it, from the image folder's own name: pets/cat/1.png."""
    return Path(os.path.relpath(path, root.absolute().parent)).as_posix()


def _amount(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MB"
