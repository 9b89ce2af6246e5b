"""How much memory do `nbopt.check` and a one-epoch `nbopt.train` take beyond the data itself?

A user's in-memory `(X, y)` is already in the notebook's memory; whatever nbopt allocates on top of
it (a split that copies the rows, a float32 copy of uint8 pixels, a temporary of the whole array
for the statistics) is the "extra". It is printed as a ratio of the data's size: 1.0 means nbopt
needed as much memory again as the data takes.

Every measurement runs in a fresh Python process, one at a time:

  1. import nbopt and run the same operation once on 2 MB of data of the same kind, so that imports
     (Lightning, scikit-learn) and one-off buffers are in place before anything is measured;
  2. make the data: 3×32×32 images in 10 classes, random pixels, written chunk by chunk into one
     preallocated array so that making them leaves no temporary behind; a numpy float32 array, a
     torch float32 tensor, or numpy uint8 pixels;
  3. read the process's resident memory (RSS), reset the kernel's record of its peak (Linux: writing 5
     to /proc/self/clear_refs, so that the warm-up's peak is forgotten), run `nbopt.check` or
     `nbopt.train` (`mlp(hidden=[16])`, one epoch, batches of 256, `live=False`), and read the peak
     (VmHWM in /proc/self/status).

"Extra" is that peak minus the RSS of step 3's start. Where the peak cannot be reset, the process's
lifetime peak (`ru_maxrss`) stands in, which may still be the warm-up's for small inputs.

    python benchmarks/memory.py                  # 0.3 GB and 1.2 GB inputs: 2-6 minutes on 2 cores
    python benchmarks/memory.py --quick          # 20 MB and 60 MB inputs: about a minute; fixed costs of
                                                 # 10-40 MB (a validation batch, Lightning) dominate the ratios
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the nbopt of this checkout

from markdown_table import markdown_table  # noqa: E402  (beside this script)

SHAPE = (3, 32, 32)
CLASSES = 10
SIZES = {"0.3 GB": 0.3e9, "1.2 GB": 1.2e9}
QUICK_SIZES = {"20 MB": 20e6, "60 MB": 60e6}
SOURCES = ("numpy float32", "torch float32", "numpy uint8")
OPERATIONS = ("check", "train")
TARGET = 0.2  # extra peak memory, as a share of the data, that in-memory arrays should stay within
RECIPE = {"model": "mlp(hidden=[16])", "data": "arrays", "epochs": 1, "batch_size": 256, "seed": 0}
CHUNK_ROWS = 4096


def make_data(source: str, nbytes: float, seed: int = 0):
    """(X, y) of about `nbytes` of inputs, filled in place chunk by chunk (no temporary of X's size)."""
    import torch
    dtype = np.uint8 if source.endswith("uint8") else np.float32
    count = max(int(nbytes // (np.prod(SHAPE) * np.dtype(dtype).itemsize)), 2 * CLASSES)
    rng = np.random.default_rng(seed)
    x = np.empty((count, *SHAPE), dtype)
    for start in range(0, count, CHUNK_ROWS):
        part = x[start:start + CHUNK_ROWS]
        if dtype == np.uint8:
            part[...] = rng.integers(0, 256, part.shape, dtype=np.uint8)
        else:
            rng.random(part.shape, dtype=np.float32, out=part)
    y = rng.integers(0, CLASSES, count)
    if source.startswith("torch"):
        return torch.from_numpy(x), torch.from_numpy(y)
    return x, y


def run_operation(operation: str, x, y) -> None:
    import nbopt
    namespace = {"arrays": (x, y)}
    if operation == "check":
        nbopt.check(RECIPE, namespace, interactive=False)
    else:
        nbopt.train(RECIPE, namespace, live=False)


def rss() -> int:
    import psutil
    return psutil.Process().memory_info().rss


def reset_peak() -> None:
    """Forget the peak RSS so far (Linux 4.0+); without it, peak_rss() is the lifetime peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss() -> int:
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024
    except (OSError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def measure(source: str, nbytes: float, operation: str) -> dict:
    """One measurement in this (fresh) process: see the module's docstring."""
    run_operation(operation, *make_data(source, 512 * np.prod(SHAPE) * 4, seed=1))
    x, y = make_data(source, nbytes)
    gc.collect()
    reset_peak()
    before, started = rss(), time.perf_counter()
    run_operation(operation, x, y)
    seconds = time.perf_counter() - started
    return {"data": x.nbytes, "extra": peak_rss() - before, "seconds": seconds}


def measure_in_subprocess(source: str, nbytes: float, operation: str, runs_dir: str) -> dict:
    command = [sys.executable, __file__, "--measure", source, str(nbytes), operation]
    env = {**os.environ, "NBOPT_RUNS_DIR": runs_dir}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{source}, {operation} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(sizes: dict[str, float], sources: tuple[str, ...]) -> str:
    rows = []
    with tempfile.TemporaryDirectory() as runs_dir:
        for label, nbytes in sizes.items():
            for source in sources:
                cells = [f"{label} {source}"]
                for operation in OPERATIONS:
                    found = measure_in_subprocess(source, nbytes, operation, runs_dir)
                    ratio = found["extra"] / found["data"]
                    cells += [f"{found['extra'] / 2**20:,.0f} MB", f"{ratio:.2f}×", "met" if ratio <= TARGET else
                              "not met"]
                    print(f"  {cells[0]}, {operation}: {ratio:.2f}× ({found['seconds']:.1f} s)", file=sys.stderr)
                rows.append(tuple(cells))
    head = ("input", "check: extra", "÷ data", f"≤ {TARGET}×", "train: extra", "÷ data", f"≤ {TARGET}×")
    return markdown_table(head, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 MB and 60 MB inputs instead of 0.3 GB and 1.2 GB")
    parser.add_argument("--sources", default=",".join(SOURCES), help=f"a subset of: {', '.join(SOURCES)}")
    parser.add_argument("--measure", nargs=3, metavar=("SOURCE", "BYTES", "OPERATION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # a child process: one measurement, printed as JSON
        source, nbytes, operation = args.measure
        print(json.dumps(measure(source, float(nbytes), operation)))
        return
    sources = tuple(s.strip() for s in args.sources.split(","))
    unknown = set(sources) - set(SOURCES)
    if unknown:
        parser.error(f"unknown sources {sorted(unknown)}; choose from {', '.join(SOURCES)}")
    print(table(QUICK_SIZES if args.quick else SIZES, sources))


if __name__ == "__main__":
    main()
