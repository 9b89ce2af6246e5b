"""How fast does a folder of image files feed training: nbopt's uint8 cache and its streamed batches,
next to a plain DataLoader over a Pillow Dataset as people write it?

The folder: N 32×32 colour PNGs in 10 class folders (scikit-learn's digits, upscaled, tinted and
noised, written once into a temporary folder, so they sit in the page cache for every variant).
Only the data is timed — an epoch takes every training batch, then every validation batch, and
drops them; no model runs:

  nbopt, cached          images(path=DIR): every file decoded once into a uint8 cache, then batches
                         of the cache indexed and turned into floats in [0, 1]
  nbopt, streamed, W     images(path=DIR, cache=none, workers=W): decoded from disk every epoch by W
                         DataLoader workers (0: in this process), in the cached run's order
  DataLoader, W          a Dataset whose __getitem__ opens one file with Pillow and returns a float
                         tensor (what torchvision's ImageFolder with ToTensor does), in
                         DataLoader(batch_size=64, shuffle=True, num_workers=W) for the same
                         training files, and one without shuffling for the same validation files

"First epoch" runs from nothing — nbopt resolving `data:` (scan the folder, read every header, decode
every file once: into the cache, or, streamed, for the normalisation statistics) or the DataLoaders'
set-up — to the end of the first epoch; "later epochs" is the median of the epochs after it. Both
count the images of an epoch (the whole folder: nbopt's 80 % training and 20 % validation split) per
second. Every round runs each variant once, in a rotating order, after waiting for idle CPUs; the
table gives medians over the rounds.

    python benchmarks/data.py                  # 6,000 images, 3 rounds: about a minute on 2 cores
    python benchmarks/data.py --images 20000 --rounds 5
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the nbopt of this checkout

import nbopt  # noqa: E402

from markdown_table import markdown_table  # noqa: E402  (beside this script)
from overhead import _busy_seconds, wait_for_quiet  # noqa: E402

SIZE = 32
BATCH = 64
TARGET = 5.0  # later epochs from the cache should be at least this many times the plain DataLoader's


def write_folder(root: Path, count: int) -> None:
    """`count` 32×32 RGB PNGs, digit d in folder d: upscaled digits with a random tint and noise."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    rng = np.random.default_rng(0)
    for i in range(count):
        image, digit = digits.images[i % len(digits.images)], digits.target[i % len(digits.images)]
        grey = np.asarray(Image.fromarray((image * 255 / 16).astype(np.uint8)).resize((SIZE, SIZE), Image.BILINEAR))
        colour = grey[..., None] * rng.uniform(0.4, 1.0, 3) + rng.normal(0, 12, (SIZE, SIZE, 3))
        folder = root / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(colour.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.png")


class PillowFiles(Dataset):
    """The Dataset people write: one file per __getitem__, opened with Pillow, as a float tensor."""

    def __init__(self, paths: list[str], labels: list[int]):
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = Image.open(self.paths[i]).convert("RGB")
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)
        return x, self.labels[i]


def _epochs(setup, epochs: int) -> tuple[float, list[float]]:
    """Seconds of set-up plus the first epoch, and of every later epoch, over the (train, val) setup() returns."""
    start = time.perf_counter()
    splits = setup()
    times = []
    for _ in range(epochs):
        for batches in splits:
            for _x, _y in batches:
                pass
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
    return times[0], times[1:]


def _nbopt(folder: Path, arguments: str):
    def setup():
        recipe = f"model: mlp(hidden=[8])\ndata: images(path='{folder}'{arguments})\nbatch_size: {BATCH}\n"
        data = nbopt.check(recipe, {}).data
        return data.train, data.val
    return setup


def _plain(splits: dict[str, tuple[list[str], list[int]]], workers: int):
    def setup():
        return [DataLoader(PillowFiles(*splits[name]), batch_size=BATCH, shuffle=name == "train", num_workers=workers)
                for name in ("train", "val")]
    return setup


def split_files(folder: Path) -> dict[str, tuple[list[str], list[int]]]:
    """nbopt's training and validation splits as files and labels, for the plain DataLoaders to read the same."""
    data = nbopt.check(f"model: mlp(hidden=[8])\ndata: images(path='{folder}', cache=none)\n", {}).data
    return {name: ([batches.files.paths[i] for i in batches.x], batches.y.tolist())
            for name, batches in (("train", data.train), ("val", data.val))}


def _cpu_of_ours() -> float:
    """CPU seconds of this process and of its finished children (the DataLoader workers)."""
    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def measure(folder: Path, rounds: int, epochs: int, quiet_wait: float) -> dict[str, dict]:
    splits = split_files(folder)
    images = sum(len(paths) for paths, _ in splits.values())
    variants = {"nbopt, cached": _nbopt(folder, ", cache=memory"),
                "nbopt, streamed, 0 workers": _nbopt(folder, ", cache=none, workers=0"),
                "nbopt, streamed, 2 workers": _nbopt(folder, ", cache=none, workers=2"),
                "DataLoader, 0 workers": _plain(splits, 0),
                "DataLoader, 2 workers": _plain(splits, 2)}
    found = {name: {"first": [], "later": [], "others": []} for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            gc.collect()  # the last variant's DataLoader workers end before this one starts
            if quiet_wait > 0:
                wait_for_quiet(quiet_wait)
            busy, ours, start = _busy_seconds(), _cpu_of_ours(), time.perf_counter()
            first, later = _epochs(variants[name], epochs)
            others = (_busy_seconds() - busy) - (_cpu_of_ours() - ours)
            found[name]["first"].append(images / first)
            found[name]["later"].append(images / statistics.median(later))
            found[name]["others"].append(max(others, 0.0) / (time.perf_counter() - start))
    return {name: {key: statistics.median(values) for key, values in m.items()} for name, m in found.items()}


def _table(results: dict[str, dict]) -> str:
    plain = max(results["DataLoader, 0 workers"]["later"], results["DataLoader, 2 workers"]["later"])
    head = ("variant", "first epoch (images/s)", "later epochs (images/s)", "later vs best DataLoader", "others")
    return markdown_table(head, [(name, f"{m['first']:,.0f}", f"{m['later']:,.0f}", f"{m['later'] / plain:.1f}×",
                                  f"{m['others']:.2f}") for name, m in results.items()])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6000, help="PNG files in the folder (default 6,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the table gives medians (default 3)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per measurement, the first included (default 4)")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="before each measurement, wait up to this many seconds for idle CPUs (default 20)")
    args = parser.parse_args(argv)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"data benchmark: {args.images:,} {SIZE}×{SIZE} RGB PNGs, batch {BATCH}, {args.epochs} epochs, median of "
          f"{args.rounds} rounds; torch {torch.__version__} ({torch.get_num_threads()} threads), Pillow "
          f"{Image.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, load {load:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pngs"
        write_folder(folder, args.images)
        results = measure(folder, args.rounds, args.epochs, args.quiet_wait)
    print(_table(results))
    ratio = results["nbopt, cached"]["later"] / max(results["DataLoader, 0 workers"]["later"],
                                                    results["DataLoader, 2 workers"]["later"])
    verdict = "meets" if ratio >= TARGET else "misses"
    print(f"\nlater epochs from the cache: {ratio:.1f}× the faster plain DataLoader ({verdict} the {TARGET:.0f}× "
          "target); 'others': cores that other processes used meanwhile (this one's DataLoader workers are its own)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
