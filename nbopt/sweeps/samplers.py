"""The sampler and pruner that `--sampler` and `--pruner` name.

Each trial draws from its own seed, made from the recipe's `seed:` and the trial's number. Trial
numbers are unique in a study, so no two workers draw alike (`--jobs` processes, machines that
start the same cell at the same moment, a sweep resumed later), and the same seed draws the same
trials again, however many workers ran them. A seed per process, mixed from the host name and pid,
would tell workers apart too, but no sweep could then be repeated.
"""
from __future__ import annotations

import random
from collections.abc import Callable

import optuna


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    # grid trials come from the queue; the sampler is never asked
    kind = {"tpe": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler}.get(name, optuna.samplers.RandomSampler)
    return _SeedPerTrial(kind, seed)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()


def _trial_seed(seed: int, number: int) -> int:
    """A well-mixed seed for trial `number` (seed 1's trial 0 must not be seed 0's trial 1)."""
    return random.Random(f"{seed}/{number}").getrandbits(32)


class _SeedPerTrial(optuna.samplers.BaseSampler):
    """A fresh `make(seed=…)` sampler for each trial, seeded by `_trial_seed`; it sees the whole study."""

    def __init__(self, make: Callable[..., optuna.samplers.BaseSampler], seed: int):
        self._make, self._seed = make, seed
        self._sampler = make(seed=seed)

    def before_trial(self, study, trial) -> None:  # Optuna calls this once the trial has its number
        self._sampler = self._make(seed=_trial_seed(self._seed, trial.number))
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()
