"""``sweep``: a recipe plus a `search:` space → an Optuna study → a ``Sweep``.

Grid, random, TPE and GP sampling; median or Hyperband pruning from the per-epoch metric; a study
stored on disk (or any Optuna storage) so that an interrupted sweep resumes; `jobs` worker
processes on this machine, or any number of machines sharing a PostgreSQL study.
"""
from __future__ import annotations

__all__ = ["sweep", "Sweep", "SAMPLERS", "PRUNERS"]

# The names `--sampler` and `--pruner` take; here, without Optuna, so that help and the doors can list
# them without loading the whole sweep machinery (Optuna, pandas, Lightning).
SAMPLERS = ("grid", "random", "tpe", "gp")
PRUNERS = ("median", "hyperband", "none")


def __getattr__(name):
    if name in ("sweep", "Sweep"):
        from nbopt.sweeps import search
        return getattr(search, name)
    raise AttributeError(f"module 'nbopt.sweeps' has no attribute {name!r}")
