"""Whatever data a notebook passes, nbopt trains on it or refuses it with one RecipeError.

`test_mutated_data_trains_or_is_one_recipe_error` builds small data sets at random, seeded so a failure
reproduces: 40 samples of 4 features (or 0, 1, 2, 3, 5 or 8 samples) with NaN, infinite and huge
values, None and text among the numbers, object, text, boolean, integer, half, complex and date
dtypes, 1-D, 3-D and featureless inputs, lengths that disagree; targets that are missing, infinite,
one class, text mixed with numbers, one-hot, fractional, two-dimensional or shifted labels; passed as
arrays, tensors, DataFrames, TensorDatasets, plain Datasets (some with dict items), DataLoaders or
with an empty validation split, under recipes that force the task, hold out a test split or change
the batch size. Every case goes through `nbopt.check`; a share of those it accepts also trains for
one epoch, and must come back as a Run: finished with only finite numbers in its history, or named
as diverged.
"""
from __future__ import annotations

import random
import time
import traceback
import warnings

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import nbopt
from nbopt import RecipeError

SEED = 20240615
CASES = 1500
TRAINED = 300  # at most this many of the accepted cases also train (each starts a Trainer)


def _nan(rng, x):
    x = x.astype(np.float32)
    if x.size:
        x.flat[rng.integers(x.size)] = np.nan
    return x


def _inf(rng, x):
    x = x.astype(np.float32)
    if x.size:
        x.flat[rng.integers(x.size)] = rng.choice([np.inf, -np.inf])
    return x


def _objects(rng, x, value):
    x = x.astype(object)
    if x.size:
        x.flat[rng.integers(x.size)] = value
    return x


X_MUTATIONS = {
    "nan": _nan,
    "inf": _inf,
    "beyond float32": lambda rng, x: x.astype(np.float64) * 1e39,
    "huge": lambda rng, x: x * 1e6,
    "object numbers": lambda rng, x: x.astype(object),
    "None": lambda rng, x: _objects(rng, x, None),
    "text among numbers": lambda rng, x: _objects(rng, x, "n/a"),
    "text": lambda rng, x: x.astype(str),
    "bool": lambda rng, x: x > 0,
    "int": lambda rng, x: (x * 3).astype(np.int64),
    "float16": lambda rng, x: x.astype(np.float16),
    "float64": lambda rng, x: x.astype(np.float64),
    "complex": lambda rng, x: x.astype(np.complex64),
    "dates": lambda rng, x: np.full(x.shape, np.datetime64("2024-01-01")),
    "1-D": lambda rng, x: x[:, 0] if x.ndim == 2 else x.ravel(),
    "3-D": lambda rng, x: x.reshape(len(x), 2, -1) if x.ndim == 2 and x.shape[1] % 2 == 0 else x,
    "no features": lambda rng, x: x[:, :0] if x.ndim == 2 else x,
    "one row fewer": lambda rng, x: x[:-1],
    "constant": lambda rng, x: np.ones_like(x),
}


Y_MUTATIONS = {
    "nan": lambda rng, y: _nan(rng, y),
    "inf": lambda rng, y: _inf(rng, y),
    "None": lambda rng, y: _objects(rng, y, None),
    "pd.NA": lambda rng, y: _objects(rng, y, pd.NA),
    "one class": lambda rng, y: np.zeros_like(y),
    "text": lambda rng, y: np.array(["cat", "dog", "eel"])[np.abs(y.astype(np.int64)) % 3],
    "text and numbers": lambda rng, y: _objects(rng, y.astype(str), 3),
    "object numbers": lambda rng, y: y.astype(object),
    "shifted labels": lambda rng, y: y.astype(np.int64) * 4 + 3,
    "negative labels": lambda rng, y: -y.astype(np.int64),
    "fractional": lambda rng, y: y + 0.5,
    "one-hot": lambda rng, y: np.eye(3, dtype=np.float32)[np.abs(y.astype(np.int64)) % 3],
    "one-hot int": lambda rng, y: np.eye(3, dtype=np.int64)[np.abs(y.astype(np.int64)) % 3],
    "2-D": lambda rng, y: np.stack([y, y], axis=1),
    "column": lambda rng, y: y.reshape(-1, 1),
    "bool": lambda rng, y: y.astype(np.int64) % 2 == 0,
    "huge ints": lambda rng, y: y.astype(np.int64) * 10**12,
    "one row fewer": lambda rng, y: y[:-1],
    "complex": lambda rng, y: y.astype(np.complex64),
}


class Items(Dataset):
    """A plain map-style Dataset whose items are (x, y) pairs, or dicts when `as_dict`."""

    def __init__(self, x, y, as_dict=False):
        self.x, self.y, self.as_dict = x, y, as_dict

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input": self.x[i], "target": self.y[i]} if self.as_dict else (self.x[i], self.y[i])


def _halves(x, y):
    cut = len(x) * 3 // 4
    return (torch.as_tensor(x[:cut]), torch.as_tensor(y[:cut])), (torch.as_tensor(x[cut:]), torch.as_tensor(y[cut:]))


def _frame(x, y):
    frame = pd.DataFrame(x.reshape(len(x), -1) if x.ndim else x)
    frame.columns = [f"f{c}" for c in frame.columns]
    frame["target"] = y
    return frame


CONTAINERS = {
    "arrays": lambda x, y: (x, y),
    "tensors": lambda x, y: (torch.as_tensor(x), torch.as_tensor(y)),
    "DataFrame": _frame,
    "TensorDataset": lambda x, y: TensorDataset(torch.as_tensor(x), torch.as_tensor(y)),
    "TensorDatasets": lambda x, y: tuple(TensorDataset(*half) for half in _halves(x, y)),
    "Datasets": lambda x, y: tuple(Items(*half) for half in _halves(x, y)),
    "dict items": lambda x, y: tuple(Items(*half, as_dict=True) for half in _halves(x, y)),
    "DataLoaders": lambda x, y: tuple(DataLoader(TensorDataset(*half), batch_size=8) for half in _halves(x, y)),
    "empty validation": lambda x, y: (TensorDataset(torch.as_tensor(x), torch.as_tensor(y)),
                                      TensorDataset(torch.as_tensor(x[:0]), torch.as_tensor(y[:0]))),
}

EXTRAS = ["", "", "", "task: classification\n", "task: regression\n", "test_split: 0.2\n", "val_split: 0.5\n",
          "batch_size: 1\n", "batch_size: 16\n", "normalize: none\n", "balance: weights\n"]


def _mutated(values: np.ndarray, mutations: dict, rng: np.random.Generator, pick: random.Random):
    """`values` with up to two mutations, and their names; one that cannot apply to what an earlier one
    made (dates times 1e39) is left out."""
    applied = []
    for name in pick.sample(sorted(mutations), pick.choice([0, 0, 0, 1, 1, 2])):
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")  # numpy warns of the casts the fuzz makes on purpose
                values = mutations[name](rng, values)
        except (TypeError, ValueError, IndexError):
            continue
        applied.append(name)
    return values, applied


def _case(rng: np.random.Generator, pick: random.Random) -> tuple[str, dict, str]:
    """(what the case is, the namespace holding its data as `d`, the recipe)."""
    n = pick.choice([40, 40, 40, 40, 40, 8, 5, 3, 2, 1, 0])
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1) if pick.random() < 0.6 else x[:, 0] * 2 + x[:, 1]
    x, x_changes = _mutated(x, X_MUTATIONS, rng, pick)
    y, y_changes = _mutated(y, Y_MUTATIONS, rng, pick)
    container = pick.choice(sorted(CONTAINERS))
    try:
        data = CONTAINERS[container](x, y)
    except Exception:  # torch or pandas cannot hold this data that way: pass the arrays
        container, data = "arrays (fallback)", (x, y)
    extra = pick.choice(EXTRAS) + ("target: target\n" if container == "DataFrame" else "")
    recipe = "model: mlp(hidden=[4])\ndata: d\nepochs: 1\n" + extra
    described = f"{n} samples, X {x_changes}, y {y_changes}, as {container}, recipe extra {extra!r}"
    return described, {"d": data}, recipe


def test_mutated_data_trains_or_is_one_recipe_error(runs_dir):
    started = time.perf_counter()
    rng, pick = np.random.default_rng(SEED), random.Random(SEED)
    refused, trained = 0, 0
    for _ in range(CASES):
        described, namespace, recipe = _case(rng, pick)
        try:
            nbopt.check(recipe, namespace, interactive=False)
        except RecipeError as exc:
            refused += 1
            assert "\n" not in str(exc) and len(str(exc)) < 600, f"not one short line for {described}:\n{exc}"
            continue
        except BaseException:
            raise AssertionError(f"check raised more than a RecipeError for {described}:\n{traceback.format_exc()}")
        if trained >= TRAINED or pick.random() > 0.4:
            continue
        trained += 1
        try:
            run = nbopt.train(recipe, namespace, live=False)
        except RecipeError:
            continue
        except BaseException:
            raise AssertionError(f"train raised more than a RecipeError for {described}:\n{traceback.format_exc()}")
        assert run.status in ("finished", "diverged") and len(run.history) == 1, f"{described}: {run.status}"
        if run.status == "finished":  # a loss that went NaN on data nbopt accepted is a named outcome, never this
            numbers = run.history.drop(columns=["epoch"]).select_dtypes("number").to_numpy(dtype=float)
            assert np.isfinite(numbers).all(), f"{described}: non-finite history\n{run.history}"
    # Sanity of the mutations: many are mistakes, and a fair share are still data to train on.
    assert CASES * 0.3 < refused < CASES * 0.9 and trained >= 40, (refused, trained)
    assert time.perf_counter() - started < 120
