"""Does pruning make the small CNN faster on a CPU, and what does it cost in accuracy?

Three models are trained with nbopt on the same synthetic 1×28×28 10-class data, with the same seed:

  dense         cnn(width=16), trained `--epochs` epochs
  unstructured  the same, then 90% of every layer's weights set to zero (l1_unstructured), fine-tuned
  channels      the same, then 50% of the channels removed (Torch-Pruning), fine-tuned

Every pruned run starts with exactly the dense run's training (same seed, same batches), so its
report's "before" is the dense model and the accuracy lost is read within one run (the pruned models
then train `--finetune` more epochs: that is the usual price of pruning, and part of the comparison).

Then the three returned models are timed side by side in this process: eval mode, torch.no_grad,
batches of 1, 64 and 256 random inputs; in every round each model runs (in rotating order) a few
forward passes per batch size, and a repeat's result is the median milliseconds per forward pass
over its rounds. The timing is repeated (`--repeats`), printing each repeat's speed-ups and the
machine's load, and the table gives the median over the repeats. Training uses one thread, timing
`--threads` (default 1: on a shared machine more threads mostly wait for each other).

Target: channel pruning ≥ 1.5× faster than dense at batch 64, losing ≤ 1 point of accuracy after
fine-tuning. Unstructured zeros are expected to give no speed-up: a dense kernel multiplies zeros
as fast as any other number.

    python benchmarks/compression.py                  # about 3 minutes on 2 idle CPU cores
    python benchmarks/compression.py --repeats 1 --epochs 3     # quicker
    python benchmarks/compression.py --threads 2      # time with 2 threads
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the nbopt of this checkout

import nbopt  # noqa: E402

from markdown_table import markdown_table  # noqa: E402  (beside this script)

BATCHES = (1, 64, 256)
SPEEDUP_TARGET, ACCURACY_LOSS_TARGET = 1.5, 0.01


def recipes(args) -> dict[str, str]:
    base = (f"model: cnn(width=16)\ndata: synthetic(n={args.n}, shape=[1, 28, 28], classes=10, noise={args.noise})\n"
            f"epochs: {args.epochs}\noptimizer: adam(lr={args.lr})\nbatch_size: 64\nseed: 0\n")
    return {
        "dense": base,
        "unstructured 90%": base + f"prune: {{method: l1_unstructured, amount: 0.9, finetune: {args.finetune}}}\n",
        "channels 50%": base + f"prune: {{method: channels, amount: 0.5, finetune: {args.finetune}}}\n",
    }


def train_all(args) -> dict:
    runs = {}
    for name, recipe in recipes(args).items():
        started = time.perf_counter()
        runs[name] = nbopt.train(recipe, {}, name=name.split()[0], live=False)
        print(f"  trained {name:<17} in {time.perf_counter() - started:5.0f} s: "
              f"val_acc {runs[name].metrics['val_acc']:.4f}", flush=True)
    return runs


@torch.no_grad()
def latencies(models: dict, rounds: int, passes: dict[int, int]) -> dict[str, dict[int, float]]:
    """Median ms per forward pass for every model and batch size; models alternate within each round."""
    inputs = {b: torch.randn(b, 1, 28, 28, generator=torch.Generator().manual_seed(b)) for b in BATCHES}
    for model in models.values():
        model.eval()
        for x in inputs.values():  # warm-up
            model(x)
    times = {name: {b: [] for b in BATCHES} for name in models}
    names = list(models)
    for r in range(rounds):
        for b in BATCHES:
            for name in names[r % len(names):] + names[:r % len(names)]:
                start = time.perf_counter()
                for _ in range(passes[b]):
                    models[name](inputs[b])
                times[name][b].append((time.perf_counter() - start) * 1000 / passes[b])
    return {name: {b: statistics.median(t) for b, t in per_batch.items()} for name, per_batch in times.items()}


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=6000, help="synthetic samples, 20%% held out (default 6000)")
    parser.add_argument("--noise", type=float, default=3.0, help="synthetic noise; 3 keeps dense below 100%% accuracy")
    parser.add_argument("--epochs", type=int, default=5, help="dense training epochs (default 5)")
    parser.add_argument("--finetune", type=int, default=2, help="fine-tuning epochs after pruning (default 2)")
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per repeat; the median counts (default 15)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="repeat the whole timing this many times (default 3); the table gives the median")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads while timing (default 1: on a shared machine more threads mostly wait "
                             "for each other); training always uses 1")
    parser.add_argument("--runs-dir", default=None, help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args(argv)

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"compression benchmark: cnn(width=16) on synthetic(n={args.n}, 1×28×28, 10 classes, noise={args.noise}); "
          f"torch {torch.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["NBOPT_RUNS_DIR"] = args.runs_dir or scratch
        runs = train_all(args)

    dense_acc = runs["dense"].metrics["val_acc"]
    for name, run in runs.items():
        if name != "dense":  # the pruned runs began with the dense run's very training
            before = run.metrics["compression"]["before"]["val_acc"]
            if abs(before - dense_acc) > 1e-6:
                print(f"note: {name} started from a dense model at val_acc {before:.4f}, not {dense_acc:.4f}")

    torch.set_num_threads(args.threads)
    passes = {1: 50, 64: 5, 256: 2}
    models = {name: run.model for name, run in runs.items()}
    print(f"\ntiming with {torch.get_num_threads()} thread(s), {args.repeats} × {args.rounds} rounds:")
    measured = []
    for repeat in range(args.repeats):
        load_before = _load()
        started = time.perf_counter()
        measured.append(latencies(models, args.rounds, passes))
        m = measured[-1]
        print(f"  repeat {repeat + 1}: {time.perf_counter() - started:.0f} s, load {load_before:.1f} → {_load():.1f}; "
              f"channels speed-up {m['dense'][64] / m['channels 50%'][64]:.2f}× at batch 64, "
              f"{m['dense'][256] / m['channels 50%'][256]:.2f}× at 256; unstructured "
              f"{m['dense'][64] / m['unstructured 90%'][64]:.2f}× at 64", flush=True)
    # the median over the repeats of each repeat's median
    ms = {name: {b: statistics.median(m[name][b] for m in measured) for b in BATCHES} for name in models}
    print()

    rows = []
    for name, run in runs.items():
        model = run.model
        params = sum(p.numel() for p in model.parameters())
        nonzero = sum(int((p != 0).sum()) for p in model.parameters())
        acc = run.metrics["val_acc"]
        rows.append((name, f"{acc:.4f}", f"{100 * (acc - dense_acc):+.1f}", f"{params:,}", f"{nonzero:,}",
                     *(f"{ms[name][b]:.2f}" for b in BATCHES),
                     *(f"{ms['dense'][b] / ms[name][b]:.2f}×" for b in BATCHES[1:])))
    head = ("model", "val_acc", "Δ points", "parameters", "non-zero", *(f"ms batch {b}" for b in BATCHES),
            *(f"speed-up b{b}" for b in BATCHES[1:]))
    print(markdown_table(head, rows))

    channels = runs["channels 50%"]
    speedup = ms["dense"][64] / ms["channels 50%"][64]
    lost = dense_acc - channels.metrics["val_acc"]
    ok = speedup >= SPEEDUP_TARGET and lost <= ACCURACY_LOSS_TARGET
    print(f"\nchannels 50%: {speedup:.2f}× faster at batch 64 (target ≥ {SPEEDUP_TARGET}×), "
          f"{100 * lost:+.1f} points of accuracy lost (target ≤ {100 * ACCURACY_LOSS_TARGET:.0f}): "
          f"{'meets' if ok else 'misses'} the target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
