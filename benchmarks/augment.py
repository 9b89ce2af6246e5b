"""How much faster is augmenting a whole batch at once than augmenting sample by sample?

nbopt's ``augment:`` list becomes one module (``nbopt.techniques.augment.build_augmenter``) that
transforms a whole (B, C, H, W) training batch in one call, on the batch's device. The common
alternative is a per-sample transform in a Dataset's ``__getitem__``: the same transform called
once per sample, then the samples collated into a batch. This script times both on a 256×1×28×28
batch (MNIST-sized), with the *same* kornia transforms in both paths, so the difference is only
batch-at-once versus one-at-a-time:

  batched     augmenter(x, y)                                   one call per batch
  per-sample  torch.cat([transforms(x[i:i+1]) for i in range(B)])  one call per sample, then collate

The pipeline is ``hflip, rotate(15), translate(0.1), crop(pad=4), cutout(8), noise(0.05)``; each
transform is also timed alone. Both paths run alternately in every round, after a warm-up round;
the table gives the median over the rounds as samples/second, and the ratio batched/per-sample.

    python benchmarks/augment.py                 # about a minute on 2 CPU cores
    python benchmarks/augment.py --rounds 3      # quicker
    python benchmarks/augment.py --device cuda   # on a GPU
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the nbopt of this checkout

from nbopt.components import parse_component  # noqa: E402
from nbopt.techniques.augment import build_augmenter  # noqa: E402

from markdown_table import markdown_table  # noqa: E402  (beside this script)

PIPELINE = ["hflip", "rotate(15)", "translate(0.1)", "crop(pad=4)", "cutout(8)", "noise(0.05)"]
SHAPE = (1, 28, 28)
TARGET = 10.0  # the batched path should be at least this many times faster


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batched(augmenter, x, y, device):
    def run():
        out, _ = augmenter(x, y)
        _sync(device)
        return out
    return run


def _per_sample(augmenter, x, y, device):
    """What a Dataset transform costs: the same transforms on each 1×C×H×W sample, then collate."""
    transforms = augmenter.transforms

    def run():
        out = torch.cat([transforms(x[i:i + 1]) for i in range(len(x))])
        _sync(device)
        return out
    return run


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(components: list[str], x, y, device, rounds: int) -> dict:
    augmenter = build_augmenter([parse_component(c) for c in components], SHAPE, "classification", 10)
    batched, per_sample = _batched(augmenter, x, y, device), _per_sample(augmenter, x, y, device)
    with torch.no_grad():
        out_b, out_s = batched(), per_sample()  # warm-up, and both give batches of the same shape
        assert out_b.shape == out_s.shape == x.shape
        times_b, times_s = [], []
        for r in range(rounds):
            order = (batched, per_sample) if r % 2 == 0 else (per_sample, batched)
            for fn in order:
                (times_b if fn is batched else times_s).append(_time(fn))
    tb, ts = statistics.median(times_b), statistics.median(times_s)
    return {"batched": len(x) / tb, "per_sample": len(x) / ts, "ratio": ts / tb,
            "batched_ms": 1000 * tb, "per_sample_ms": 1000 * ts}


def _table(rows: list[tuple[str, dict]]) -> str:
    head = ("augmentation", "batched (samples/s)", "per-sample (samples/s)", "batched ms", "per-sample ms", "ratio")
    return markdown_table(head, [(name, f"{m['batched']:,.0f}", f"{m['per_sample']:,.0f}", f"{m['batched_ms']:.2f}",
                                  f"{m['per_sample_ms']:.1f}", f"{m['ratio']:.1f}×") for name, m in rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256, help="samples per batch (default 256)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per measurement; the median counts")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-single", action="store_true", help="skip timing each transform alone")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch, *SHAPE, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    import kornia
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"augment benchmark: batch {args.batch}×{'×'.join(map(str, SHAPE))} on {device}, median of "
          f"{args.rounds} rounds; torch {torch.__version__} ({torch.get_num_threads()} threads), kornia "
          f"{kornia.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, load {load:.1f}")
    if device.type == "cpu" and load > (os.cpu_count() or 1) and torch.get_num_threads() > 1:
        print("note: other processes keep the CPUs busy; multi-threaded batched kernels suffer most from that "
              "(their threads wait for each other), so compare with --threads 1")

    rows = [("pipeline: " + ", ".join(PIPELINE), measure(PIPELINE, x, y, device, args.rounds))]
    print(_table(rows), flush=True)
    if not args.no_single:
        for component in PIPELINE:
            rows.append((component, measure([component], x, y, device, args.rounds)))
        print()
        print(_table(rows))
    ratio = rows[0][1]["ratio"]
    verdict = "meets" if ratio >= TARGET else "misses"
    print(f"\nwhole pipeline: batched is {ratio:.1f}× the per-sample throughput ({verdict} the {TARGET:.0f}× target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
