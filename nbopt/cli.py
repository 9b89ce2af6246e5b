"""``nbopt`` on the command line: the same recipes outside a notebook.

Notebook variable names do not exist here; use import paths (``model: mypkg.models:Net``). The
recipe's own folder is importable, so ``model: mymodels:Net`` finds ``mymodels.py`` beside it.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from nbopt.errors import RecipeError


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise RecipeError(f"cannot read the recipe file: {exc.strerror}: {path}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nbopt", description="Optimise a deep learning model from a recipe.")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="train once from a recipe file")
    run_p.add_argument("recipe")
    run_p.add_argument("--name", help="run name (folder under nbopt-runs/)")
    check_p = sub.add_parser("check", help="validate a recipe and show the plan, without training")
    check_p.add_argument("recipe")
    sweep_p = sub.add_parser("sweep", help="run sweep trials; several machines can share one --storage")
    sweep_p.add_argument("recipe")
    sweep_p.add_argument("--trials", type=int)
    sweep_p.add_argument("--sampler", default="tpe", choices=("grid", "random", "tpe", "gp"))
    sweep_p.add_argument("--pruner", default="median", choices=("median", "hyperband", "none"))
    sweep_p.add_argument("--metric")
    sweep_p.add_argument("--direction", choices=("maximize", "minimize"))
    sweep_p.add_argument("--storage", help="Optuna storage URL, or $VARIABLE holding one")
    sweep_p.add_argument("--study")
    sweep_p.add_argument("--jobs", type=int, default=1)
    sweep_p.add_argument("--timeout", type=float)
    sweep_p.add_argument("--allow-space-change", action="store_true")
    sub.add_parser("runs", help="list the recorded runs")
    export_p = sub.add_parser("export", help="write a run's recipe to a YAML file")
    export_p.add_argument("name")
    export_p.add_argument("--to")
    help_p = sub.add_parser("help", help="what the recipe keys accept")
    help_p.add_argument("key", nargs="?")
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except RecipeError as exc:
        print(f"nbopt: {exc}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    if args.command in ("run", "check"):
        sys.path.insert(0, str(Path(args.recipe).resolve().parent))
        text = _read(args.recipe)
        if args.command == "check":
            from nbopt.plan import check
            print(check(text, {}))
            return 0
        from nbopt.training import train
        run = train(text, {}, name=args.name)
        from nbopt.parallel import is_distributed_child
        if not is_distributed_child():
            print(f"Best weights: {run.checkpoint}")
        return 0 if run.status != "interrupted" else 130
    if args.command == "sweep":
        sys.path.insert(0, str(Path(args.recipe).resolve().parent))
        from nbopt.sweeps import sweep
        result = sweep(_read(args.recipe), {}, trials=args.trials, sampler=args.sampler, pruner=args.pruner,
                       metric=args.metric, direction=args.direction, storage=args.storage, study=args.study,
                       jobs=args.jobs, timeout=args.timeout, allow_space_change=args.allow_space_change)
        return 130 if result.interrupted else 0
    if args.command == "runs":
        from nbopt.store import list_runs
        for row in list_runs():
            best = f"{row['best']:.4g}" if isinstance(row["best"], (int, float)) else "–"
            print(f"{row['name']:32} {row['started']:20} {row['status']:14} epochs {row['epochs']}  best {best}")
        return 0
    if args.command == "export":
        from nbopt.store import find_run
        folder = find_run(args.name)
        target = Path(args.to or f"{folder.name}.yaml")
        shutil.copyfile(folder.path / "recipe.yaml", target)
        print(f"Wrote {target}")
        return 0
    from nbopt.helptext import help_text
    print(help_text(args.key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
