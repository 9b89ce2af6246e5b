"""How much training do grid, random, TPE and GP sweeps need to reach a target accuracy?

One recipe and one search space (scikit-learn's digits, an MLP, 6 epochs per trial):

    optimizer.lr   loguniform(1e-4, 1e-1)     the grid: [1e-4, 1e-3, 1e-2, 1e-1]
    batch_size     [64, 128, 256]
    model.hidden   [[32], [128], [512]]       (the MLP's width)
    dropout        uniform(0.0, 0.5)          the grid: [0.0, 0.5]

Every strategy (grid, random, tpe, gp; each without pruning and with median pruning) runs as a
real ``nbopt.sweep()`` (its own temporary journal file and runs folder, ``live=False``) with the
recipe's seed 0, 1, 2 (the seed drives both the sampler and the training), and stops as soon as a
finished trial reaches the target validation accuracy (default 0.97, which only a small part of the
space reaches in 6 epochs: learning rates near 1e-2 with the wider layers). The measure is
**trial-epochs**: the epochs trained by all trials up to and including the first one that reached
the target (a pruned trial counts the epochs it ran). It does not depend on how fast or busy the
machine is. A sweep that has not reached the target after --max-trials trials is reported as "> N".

Reading the numbers: TPE and GP sample their first 10 trials at random (Optuna's default), and with
the same seed these are the very trials random search draws, so until trial 10 the three are one
strategy. GP learns only from completed trials: under heavy pruning it stays random for longer.

The grid visits its 72 points in nbopt's order (the product of the lists, the first key varying
slowest), so where the good points lie in that order decides its cost; its three seeds differ only
in the training's own randomness.

Then throughput: the same random sweep (no pruning) with ``jobs=1`` and ``jobs=2`` worker
processes, as trials per hour and trial-epochs per hour (wall clock; this one does depend on the
machine, and on what else runs on it: the load average is printed).

Training uses one thread per process (--threads): tiny models train fastest that way, and it is what
each of the ``jobs=2`` workers gets on a 2-core machine, so the two throughputs compare like with like.

    python benchmarks/sweep.py            # about 3 CPU-minutes (12 minutes on 2 cores busy with other work)
    python benchmarks/sweep.py --quick    # about 1 CPU-minute (3.5 minutes there): seed 0, five strategies
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the nbopt of this checkout

EPOCHS = 6
SPACE = """\
search:
  optimizer.lr: {lr}
  batch_size: [64, 128, 256]
  model.hidden: [[32], [128], [512]]
  dropout: {dropout}
"""
CONTINUOUS = {"lr": "loguniform(1e-4, 1e-1)", "dropout": "uniform(0.0, 0.5)"}
GRID = {"lr": "[1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1]", "dropout": "[0.0, 0.5]"}
STRATEGIES = [(s, p) for s in ("grid", "random", "tpe", "gp") for p in ("none", "median")]
QUICK_STRATEGIES = [("grid", "none"), ("grid", "median"), ("random", "none"), ("tpe", "median"), ("gp", "median")]


def recipe(sampler: str, seed: int, epochs: int = EPOCHS) -> str:
    space = SPACE.format(**(GRID if sampler == "grid" else CONTINUOUS))
    return (f"model: mlp(hidden=[128])\ndata: digits\nepochs: {epochs}\nseed: {seed}\n"
            f"optimizer: adam(lr=1e-3)\n{space}")


@contextlib.contextmanager
def scratch_folder():
    """A temporary working folder (the study's journal file) and runs folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="nbopt-sweep-bench-"))
    before, runs = os.getcwd(), os.environ.get("NBOPT_RUNS_DIR")
    os.chdir(folder)
    os.environ["NBOPT_RUNS_DIR"] = str(folder / "runs")
    try:
        yield folder
    finally:
        os.chdir(before)
        if runs is None:
            os.environ.pop("NBOPT_RUNS_DIR", None)
        else:
            os.environ["NBOPT_RUNS_DIR"] = runs
        shutil.rmtree(folder, ignore_errors=True)


def stop_at_target(journal: Path, study_name: str, target: float):
    """A stop guard that ends the sweep between trials once a finished trial reached `target`.

    The sweep asks its guard before every trial (and the Trainer after every step); between
    trials this one reads the study from its journal file, during training it only passes on a
    real interrupt.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from nbopt.callbacks.interrupt import InterruptGuard

    class StopAtTarget(InterruptGuard):
        def __init__(self):
            self._stop, self._fitting, self._study = False, False, None
            super().__init__()

        @property
        def requested(self) -> bool:
            if not self._stop and not self._fitting and journal.exists():
                if self._study is None:
                    with contextlib.suppress(KeyError):
                        self._study = optuna.load_study(study_name=study_name,
                                                        storage=JournalStorage(JournalFileBackend(str(journal))))
                if self._study is not None:
                    self._stop = any(t.value is not None and t.value >= target for t in self._study.get_trials(
                        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
            return self._stop

        @requested.setter
        def requested(self, value: bool) -> None:
            self._stop = value

        def arm(self):  # a run starts: its steps ask `requested`, which must not read the journal each time
            self._fitting = True
            super().arm()

        def release(self):
            self._fitting = False
            super().release()

    return StopAtTarget()


def to_target(sampler: str, pruner: str, seed: int, target: float, max_trials: int, epochs: int) -> dict:
    import optuna

    from nbopt.sweeps import sweep
    from nbopt.sweeps.study import DEFAULT_STORAGE_FILE

    with scratch_folder() as folder:
        name = f"{sampler}-{pruner}-{seed}"
        guard = stop_at_target(folder / DEFAULT_STORAGE_FILE, name, target)
        start = time.perf_counter()
        result = sweep(recipe(sampler, seed, epochs), {}, trials=None if sampler == "grid" else max_trials,
                       sampler=sampler, pruner=pruner, study=name, live=False, stop=guard)
        seconds = time.perf_counter() - start
        trials = sorted(result.study.get_trials(deepcopy=False), key=lambda t: t.number)
    ended = [t for t in trials if t.state.is_finished()]
    hits = [t for t in ended if t.state == optuna.trial.TrialState.COMPLETE and t.value >= target]
    last = hits[0].number if hits else max(t.number for t in ended)
    used = [t for t in ended if t.number <= last]
    return {"sampler": sampler, "pruner": pruner, "seed": seed, "reached": bool(hits),
            "trial_epochs": sum(t.user_attrs.get("epochs", 0) for t in used), "trials": len(used),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in used),
            "best": max((t.value for t in ended if t.value is not None), default=math.nan),
            "seconds": seconds}


def throughput(jobs: int, trials: int, epochs: int) -> dict:
    from nbopt.sweeps import sweep

    with scratch_folder():
        start = time.perf_counter()
        result = sweep(recipe("random", 0, epochs), {}, trials=trials, sampler="random", pruner="none",
                       jobs=jobs, study=f"jobs{jobs}", live=False)
        seconds = time.perf_counter() - start
        done = [t for t in result.study.get_trials(deepcopy=False) if t.state.is_finished()]
        pids = {t.user_attrs.get("pid") for t in done}
    epochs_run = sum(t.user_attrs.get("epochs", 0) for t in done)
    return {"jobs": jobs, "trials": len(done), "processes": len(pids), "seconds": seconds,
            "trials_per_hour": len(done) / seconds * 3600, "epochs_per_hour": epochs_run / seconds * 3600}


def _cell(row: dict) -> str:
    return f"{row['trial_epochs']}" if row["reached"] else f"> {row['trial_epochs']}"


def report(rows: list[dict], seeds: list[int], target: float, epochs: int) -> tuple[str, dict]:
    lines = [f"Trial-epochs to reach val_acc >= {target} ({epochs} epochs per trial; trials in brackets, "
             "'> N' = not reached within the budget)", "",
             "| sampler | pruning | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | vs grid |",
             "|---|---|" + "---:|" * len(seeds) + "---:|---:|"]
    means = {}
    for (sampler, pruner) in dict.fromkeys((r["sampler"], r["pruner"]) for r in rows):
        mine = [r for r in rows if r["sampler"] == sampler and r["pruner"] == pruner]
        means[sampler, pruner] = statistics.mean(r["trial_epochs"] for r in mine)
        censored = "> " if not all(r["reached"] for r in mine) else ""
        means_censored = censored + f"{means[sampler, pruner]:.0f}"
        cells = [f"{_cell(r)} ({r['trials']})" for r in sorted(mine, key=lambda r: r["seed"])]
        lines.append(f"| {sampler} | {pruner} | " + " | ".join(cells)
                     + f" | {means_censored} | {{{sampler},{pruner}}} |")
    grid = means.get(("grid", "none"))
    text = "\n".join(lines)
    for (sampler, pruner), mean in means.items():
        ratio = f"{mean / grid:.2f}" if grid else "–"
        text = text.replace(f"{{{sampler},{pruner}}}", ratio)
    return text, means


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="seed 0 only, five strategies, a short throughput test")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3; 1 with --quick)")
    parser.add_argument("--target", type=float, default=0.97, help="validation accuracy to reach (default 0.97)")
    parser.add_argument("--max-trials", type=int, default=60, help="budget of a non-grid sweep (default 60)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs per trial (default {EPOCHS})")
    parser.add_argument("--throughput-trials", type=int, default=None,
                        help="trials of the jobs=1 / jobs=2 comparison (default 40; 6 with --quick)")
    parser.add_argument("--no-throughput", action="store_true", help="skip the jobs=1 / jobs=2 comparison")
    parser.add_argument("--strategies", default=None,
                        help="comma-separated sampler:pruner pairs, e.g. grid:none,tpe:median (default: all eight)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement to this file")
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    strategies = QUICK_STRATEGIES if args.quick else STRATEGIES
    if args.strategies:
        strategies = [tuple(pair.split(":")) for pair in args.strategies.split(",")]
    throughput_trials = args.throughput_trials or (6 if args.quick else 40)

    warnings.filterwarnings("ignore")
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(f"torch {torch.__version__}, optuna {optuna.__version__}, {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    rows = []
    for sampler, pruner in strategies:
        for seed in seeds:
            row = to_target(sampler, pruner, seed, args.target, args.max_trials, args.epochs)
            rows.append(row)
            print(f"  {sampler:6} pruner {pruner:6} seed {seed}: {_cell(row):>6} trial-epochs, {row['trials']:3} "
                  f"trials ({row['pruned']} pruned), best {row['best']:.4f}, {row['seconds']:.0f} s", flush=True)
    table, means = report(rows, seeds, args.target, args.epochs)
    print("\n" + table + "\n")
    grid = means.get(("grid", "none"))
    smart = {k: v for k, v in means.items() if k[0] in ("tpe", "gp") and k[1] == "median"}
    if grid and smart:
        (sampler, _), best = min(smart.items(), key=lambda kv: kv[1])
        verdict = "met" if best <= grid / 3 and all(r["reached"] for r in rows if r["sampler"] == sampler
                                                    and r["pruner"] == "median") else "NOT met"
        print(f"{sampler} with median pruning: {best:.0f} trial-epochs = {best / grid:.2f} × the grid's {grid:.0f} "
              f"(target ≤ 1/3: {verdict})\n")

    speed = []
    if not args.no_throughput:
        for jobs in (1, 2):
            speed.append(throughput(jobs, throughput_trials, args.epochs))
        print(f"Throughput: a random sweep of {throughput_trials} trials × {args.epochs} epochs, no pruning "
              f"(load average now {os.getloadavg()[0]:.1f})\n")
        print("| jobs | worker processes | wall s | trials/hour | trial-epochs/hour |\n|---:|---:|---:|---:|---:|")
        for s in speed:
            print(f"| {s['jobs']} | {s['processes']} | {s['seconds']:.1f} | {s['trials_per_hour']:.0f} | "
                  f"{s['epochs_per_hour']:.0f} |")
        gain = speed[1]["trials_per_hour"] / speed[0]["trials_per_hour"]
        print(f"\njobs=2 / jobs=1: {gain:.2f}× the trials per hour")
    print(f"\n(benchmark took {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"target": args.target, "epochs": args.epochs, "rows": rows,
                                         "throughput": speed}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
