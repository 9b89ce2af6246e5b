"""Does a second process help? Samples/second with `devices: 1` and `devices: 2` on CPU, through nbopt.

Workload: the small CNN, `cnn(width=16)` (conv 16, conv 32, linear), on a synthetic 20,000-sample
1×28×28 10-class set (16,000 training, 4,000 validation), SGD, batch 64 and 256 *per process*.

Each configuration is one `nbopt run RECIPE.yaml` in a subprocess, as a user would run it from a
shell: with `devices: 2, strategy: ddp` that is Lightning's regular DDP, which starts the second
process by re-running the same command (this script is never re-run, so it needs no guard). The
numbers come from the run's own history:

  samples/s   training samples of one epoch / median seconds of epochs 2..N (epoch 1 carries the
              warm-up). An epoch's seconds are its training steps and its validation pass, so this
              is steady-state throughput, without any start-up.
  start-up    wall time of the command minus the seconds of all its epochs: interpreter and
              library imports, data, DDP launch of the second process and the gloo rendezvous,
              the final evaluation and exit. Reported separately; it does not scale with epochs.

Lightning gives each of the two processes one thread on a 2-core machine (cores / processes);
one process keeps PyTorch's default (all cores). OMP_NUM_THREADS is left unset for both, so that
each runs the way a user's would; a third row runs one process with one thread (OMP_NUM_THREADS=1),
which separates the effect of the second process from that of threads fighting over busy cores
(--no-single-thread leaves it out). Configurations run in rotating order for --repeats rounds and
the best (highest) samples/s of the rounds is kept, with the 1-minute load average sampled before
and after each run: other work on the machine lowers the numbers, it never raises them.

    python benchmarks/scaling.py                    # 6 configurations × 1 round, 4 epochs: ~5 min idle
    python benchmarks/scaling.py --repeats 2 --epochs 3
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = 20000
MODEL = "cnn(width=16)"


def recipe(batch_size: int, devices: int, epochs: int, n: int = SAMPLES) -> str:
    data = f"synthetic(n={n}, shape=[1, 28, 28], classes=10)"
    text = (f"model: {MODEL}\ndata: {data}\nepochs: {epochs}\nbatch_size: {batch_size}\n"
            "optimizer: sgd(lr=0.05, momentum=0.9)\n")
    if devices > 1:
        text += f"devices: {devices}\nstrategy: ddp\n"
    return text


def nbopt_command() -> list[str]:
    script = Path(sys.executable).parent / "nbopt"
    return [str(script)] if script.exists() else [sys.executable, "-m", "nbopt.cli"]


def training_samples(epochs: int, n: int) -> int:
    """Size of the training split, from nbopt's own plan of the same recipe (no training)."""
    sys.path.insert(0, str(ROOT))
    import nbopt

    return nbopt.check(recipe(64, 1, epochs, n), {}).data.sizes["train"]


def measure(batch_size: int, devices: int, threads: int | None, epochs: int, n: int, work: Path,
            timeout: float) -> dict:
    import pandas as pd

    name = f"d{devices}-b{batch_size}-{time.monotonic_ns()}"
    folder = work / name
    folder.mkdir()
    (folder / "recipe.yaml").write_text(recipe(batch_size, devices, epochs, n))
    env = dict(os.environ, NBOPT_RUNS_DIR=str(folder / "runs"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(nbopt_command() + ["run", "recipe.yaml", "--name", "run"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    if done.returncode != 0:
        raise RuntimeError(f"nbopt run failed for devices {devices}, batch {batch_size}:\n{done.stderr[-3000:]}")
    history = pd.read_csv(folder / "runs" / "run" / "history.csv")
    seconds = history["seconds"].tolist()
    steady = statistics.median(seconds[1:] if len(seconds) > 1 else seconds)
    return {"epoch_s": steady, "startup_s": wall - sum(seconds), "wall_s": wall,
            "val_acc": float(history["val_acc"].iloc[-1]), "load": (load_before, load_after)}


def label(devices: int, threads: int | None) -> str:
    if devices == 1:
        return "1 process" + (f", {threads} thread" + ("s" if threads > 1 else "") if threads else ", default threads")
    return f"{devices} processes"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over all configurations; best is kept")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256], help="batch sizes per process")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed for one run")
    parser.add_argument("--samples", type=int, default=SAMPLES, help="size of the synthetic set (smoke tests)")
    parser.add_argument("--no-single-thread", action="store_true", help="leave out 1 process × 1 thread")
    args = parser.parse_args(argv)

    samples = training_samples(args.epochs, args.samples)
    per_batch = [(d, None) for d in args.devices]
    if 1 in args.devices and not args.no_single_thread:
        per_batch.insert(per_batch.index((1, None)) + 1, (1, 1))
    configs = [(b, d, t) for b in args.batches for d, t in per_batch]
    results: dict[tuple, list[dict]] = {c: [] for c in configs}
    work = Path(tempfile.mkdtemp(prefix="nbopt-scaling-"))
    print(f"{os.cpu_count()} CPU cores; load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{samples:,} training samples, {args.epochs} epochs per run", flush=True)
    try:
        for round_ in range(args.repeats):
            order = configs[round_ % len(configs):] + configs[:round_ % len(configs)]
            for batch_size, devices, threads in order:
                result = measure(batch_size, devices, threads, args.epochs, args.samples, work, args.timeout)
                results[(batch_size, devices, threads)].append(result)
                print(f"  round {round_ + 1}: {label(devices, threads)}, batch {batch_size}/process: "
                      f"{samples / result['epoch_s']:,.0f} samples/s, epoch {result['epoch_s']:.2f}s, "
                      f"start-up {result['startup_s']:.1f}s, load {result['load'][0]:.1f}→{result['load'][1]:.1f}",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print("| processes | batch/process | global batch | samples/s | epoch (s) | start-up (s) | val_acc | load avg |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    best = {}
    for config in configs:
        batch_size, devices, threads = config
        top = min(results[config], key=lambda r: r["epoch_s"])
        best[config] = top
        loads = [v for r in results[config] for v in r["load"]]
        print(f"| {label(devices, threads)} | {batch_size} | {batch_size * devices} | {samples / top['epoch_s']:,.0f} | "
              f"{top['epoch_s']:.2f} | {statistics.median(r['startup_s'] for r in results[config]):.1f} "
              f"| {top['val_acc']:.3f} | {min(loads):.1f}–{max(loads):.1f} |")
    print()
    for batch_size in args.batches:
        for base in ((batch_size, 1, None), (batch_size, 1, 1)):
            if base not in best:
                continue
            for devices in args.devices:
                if devices == 1:
                    continue
                other = best[(batch_size, devices, None)]
                print(f"batch {batch_size}/process: {label(devices, None)} vs {label(1, base[2])}: "
                      f"{best[base]['epoch_s'] / other['epoch_s']:.2f}× samples/s; "
                      f"start-up {other['startup_s'] - best[base]['startup_s']:+.1f}s")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
