"""Does `compare --jobs 2` train a comparison twice as fast as `--jobs 1` on 2 cores, with the same results?

The comparison is W1 of overhead.py (``model: mlp(hidden=[128, 64])``, ``data: digits``, 20 epochs) in
three variants, each trained with 3 seeds (``repeats=3``), i.e. 9 runs:

    adam    optimizer: adam
    sgd     optimizer: sgd(lr=0.1, momentum=0.9)
    adamw   optimizer: adamw

It runs as ``nbopt.compare(recipe, {}, repeats=3, jobs=N, live=False)`` with N = 1 (the runs one after
the other in the calling process) and N = 2 (two forked worker processes, each training one run after
another on one thread, as nbopt runs every forked worker). Nine runs of about equal length take at
best five run-lengths on two workers, so 9/5 = 1.8× is this workload's ceiling.

Each measurement is a fresh Python process (this script with ``--child``), so that both settings
start from the same state: it imports nbopt, trains one untimed one-epoch run (lazy imports and
first-call costs, which a notebook that has trained before has behind it; ``--no-warmup`` leaves it
out), then times the ``compare`` call: that wall time is the measure. The process's whole wall time
(interpreter start and imports included) is shown beside it. The two settings alternate, the order
flipping every round (1, 2, then 2, 1, …); the table gives medians over the rounds. Before each
measurement the script waits (up to --quiet-wait seconds) for the CPUs to go idle; during it, it
reads /proc/stat and reports how many cores other processes used ("others").

Same results: every measurement's comparison table, the time column aside, must equal the first
one's exactly (the same variants, seeds, scores, best and last epochs, parameter counts); the
script says so, or shows where they differ. Run folders go to a temporary directory that is removed
at the end.

    python benchmarks/compare_jobs.py           # 3 rounds, 20 epochs, 3 seeds: about a minute on 2 idle cores
    python benchmarks/compare_jobs.py --quick   # 1 round, 5 epochs, 2 seeds: about 15 s
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # markdown_table and overhead's CPU meters, beside this script

from markdown_table import markdown_table  # noqa: E402
from overhead import _busy_seconds, wait_for_quiet  # noqa: E402

VARIANTS = {"adam": "adam", "sgd": "sgd(lr=0.1, momentum=0.9)", "adamw": "adamw"}
TIME_COLUMN = "time (s)"
GOAL = 1.8  # jobs=2 at least this many times faster than jobs=1, on 2 cores


def recipe(epochs: int) -> str:
    variants = "".join(f"  {name}: {{optimizer: {optimizer}}}\n" for name, optimizer in VARIANTS.items())
    return f"model: mlp(hidden=[128, 64])\ndata: digits\nepochs: {epochs}\nvariants:\n{variants}"


# -- one measurement, in a fresh process -------------------------------------------------------------

def child(args) -> int:
    """Warm up, time ``compare``, and leave its table (a pickle) and the time (JSON) in args.out."""
    import warnings
    warnings.simplefilter("ignore")
    import torch
    sys.path.insert(0, str(HERE.parent))  # the nbopt of this checkout
    import nbopt
    if not args.no_warmup:
        nbopt.train("model: mlp(hidden=[128, 64])\ndata: digits\nepochs: 1\n", {}, live=False, name="warm-up")
    started = time.perf_counter()
    comparison = nbopt.compare(recipe(args.epochs), {}, repeats=args.repeats, jobs=args.jobs, live=False)
    wall = time.perf_counter() - started
    out = Path(args.out)
    comparison.table.to_pickle(out / "table.pkl")
    (out / "result.json").write_text(json.dumps({"wall_s": wall, "threads": torch.get_num_threads(),
                                                 "torch": torch.__version__}))
    return 0


def _cpu_of_children() -> float:
    """CPU seconds of this script's finished children and their own children (the compare workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(jobs: int, args, folder: Path) -> dict:
    """One fresh process running one ``compare`` with ``jobs``; its table, times and the CPUs' business."""
    import pandas as pd
    folder.mkdir(parents=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--jobs", str(jobs), "--out", str(folder),
               "--epochs", str(args.epochs), "--repeats", str(args.repeats)]
    if args.no_warmup:
        command.append("--no-warmup")
    env = {**os.environ, "NBOPT_RUNS_DIR": str(folder / "runs")}
    if args.quiet_wait > 0:
        wait_for_quiet(args.quiet_wait)
    busy, ours, start = _busy_seconds(), _cpu_of_children(), time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    process_s = time.perf_counter() - start
    others = (_busy_seconds() - busy) - (_cpu_of_children() - ours)
    if done.returncode != 0:
        raise RuntimeError(f"the jobs={jobs} measurement failed (exit code {done.returncode}):\n"
                           f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    result = json.loads((folder / "result.json").read_text())
    table = pd.read_pickle(folder / "table.pkl")
    return {"jobs": jobs, "wall_s": result["wall_s"], "process_s": process_s, "table": table,
            "others": max(others, 0.0) / process_s if not math.isnan(others) else math.nan,
            "torch": result["torch"], "threads": result["threads"]}


# -- the report ------------------------------------------------------------------------------------

def differences(first, other) -> str:
    """'' when the tables are equal (time column aside), else where they differ."""
    a, b = first.drop(columns=TIME_COLUMN), other.drop(columns=TIME_COLUMN)
    if list(a.index) != list(b.index) or list(a.columns) != list(b.columns):
        return f"rows {list(a.index)} vs {list(b.index)}, columns {list(a.columns)} vs {list(b.columns)}"
    found = []
    for column in a.columns:
        for row in a.index:
            x, y = a.loc[row, column], b.loc[row, column]
            same = (x == y) or (_missing(x) and _missing(y))
            if not same:
                found.append(f"{row}/{column}: {x!r} vs {y!r}")
    return "; ".join(found)


def _missing(value) -> bool:
    import pandas as pd
    return bool(pd.isna(value))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round, 5 epochs, 2 seeds, no waiting for idle CPUs")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of jobs=1 and jobs=2 (default 3; 1 quick)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 20; 5 quick)")
    parser.add_argument("--repeats", type=int, default=None, help="seeds per variant (default 3; 2 quick)")
    parser.add_argument("--jobs", type=int, default=2, help="the parallel setting, measured against 1 (default 2)")
    parser.add_argument("--quiet-wait", type=float, default=None,
                        help="seconds to wait for idle CPUs before each measurement (default 20; 0 quick)")
    parser.add_argument("--no-warmup", action="store_true", help="time the first run of each process too")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.epochs = args.epochs or (5 if args.quick else 20)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 20.0)
    if args.child:
        return child(args)
    if args.jobs < 2:
        parser.error("--jobs is the parallel setting measured against jobs=1: give 2 or more")

    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    runs = len(VARIANTS) * args.repeats
    print(f"compare of {len(VARIANTS)} variants ({', '.join(VARIANTS)}) × {args.repeats} seeds = {runs} runs of "
          f"W1 (digits MLP), {args.epochs} epochs each; jobs=1 vs jobs={args.jobs}, {args.rounds} round(s)")
    print(f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)", flush=True)
    settings = [1, args.jobs]
    tmp = Path(tempfile.mkdtemp(prefix="nbopt-compare-bench-"))
    began = time.perf_counter()
    try:
        found: dict[int, list[dict]] = {jobs: [] for jobs in settings}
        for rnd in range(args.rounds):
            for jobs in settings if rnd % 2 == 0 else settings[::-1]:
                m = measure(jobs, args, tmp / f"round{rnd + 1}-jobs{jobs}")
                found[jobs].append(m)
                print(f"  round {rnd + 1}/{args.rounds} jobs={jobs}: compare {m['wall_s']:6.2f} s, process "
                      f"{m['process_s']:6.1f} s, other processes {m['others']:.2f} cores", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    first = found[1][0]
    print(f"\ntorch {first['torch']}; medians of {args.rounds} round(s)\n")
    stats = {jobs: {key: statistics.median(m[key] for m in ms) for key in ("wall_s", "process_s", "others")}
             for jobs, ms in found.items()}
    rows = [(f"jobs={jobs}", f"{s['wall_s']:.2f}", f"{s['process_s']:.1f}", f"{runs / s['wall_s'] * 60:.1f}",
             f"{s['others']:.2f}") for jobs, s in stats.items()]
    print(markdown_table(("setting", "compare s", "process s", "runs/min", "others (cores)"), rows))
    speedup = stats[1]["wall_s"] / stats[args.jobs]["wall_s"]
    process_speedup = stats[1]["process_s"] / stats[args.jobs]["process_s"]
    verdict = "met" if speedup >= GOAL else "not met"
    print(f"\nspeed-up jobs={args.jobs} over jobs=1: {speedup:.2f}× (whole processes {process_speedup:.2f}×); "
          f"goal ≥ {GOAL}× on 2 cores: {verdict}")

    all_measurements = [m for ms in found.values() for m in ms]
    problems = [(m, text) for m in all_measurements[1:] if (text := differences(first["table"], m["table"]))]
    if problems:
        print(f"tables equal (time column aside): NO, {len(problems)} of {len(all_measurements) - 1} differ from "
              "the first jobs=1 table:")
        for m, text in problems:
            print(f"  jobs={m['jobs']}: {text}")
    else:
        print(f"tables equal (time column aside): yes, all {len(all_measurements)} measurements")
    print("\nthe comparison (first jobs=1 measurement):")
    print(first["table"].drop(columns=TIME_COLUMN).to_string())
    print(f"\n(benchmark took {time.perf_counter() - began:.0f} s; load average now {os.getloadavg()[0]:.2f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "epochs": args.epochs, "repeats": args.repeats, "rounds": args.rounds, "load_before": load,
            "measurements": [{k: v for k, v in m.items() if k != "table"} for m in all_measurements],
            "speedup": speedup, "tables_equal": not problems}, indent=1))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
