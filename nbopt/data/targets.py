"""Targets → what the loss takes: class indices 0..K-1 (with the original labels kept for the Run), or
floats to regress.

They are checked before the task is read from them: a missing label in an integer column turns it
into floats (and the task into regression), a None among text labels fails inside numpy's sort,
and a NaN or infinite target makes every loss NaN.
"""
from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch

from nbopt.data.validate import plural, position, quoted
from nbopt.errors import RecipeError


# what pandas infers an object array to hold → the type it becomes
_INFERRED = {"string": str, "integer": np.int64, "boolean": bool, "floating": np.float64,
             "mixed-integer-float": np.float64}


def clean_targets(y, noun: str, key: str, line: int | None) -> np.ndarray:
    """The targets as a NumPy array of numbers, booleans or text; a missing, mixed or non-finite value is
    a RecipeError naming the first one."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu()
        y = (y.float() if y.dtype == torch.bfloat16 else y).numpy()
    values = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    if values.ndim == 0:
        raise RecipeError(f"{noun} is a single value; give one target per sample", key=key, line=line)
    if values.dtype.kind == "O":
        values = _objects(values, noun, key, line)
    if values.dtype.kind not in "biufUS":
        raise RecipeError(f"{noun} holds {values.dtype} values; give numbers, or labels as text", key=key, line=line)
    if values.dtype.kind == "f":
        missing, infinite = np.isnan(values), np.isinf(values)
        if missing.any():
            _missing(missing, noun, key, line)
        if infinite.any():
            raise RecipeError(f"{noun} has {plural(int(infinite.sum()), 'infinite value')} among {values.size:,}, "
                              f"the first at {position(infinite)}; replace or drop them before training", key=key,
                              line=line)
    return values


def _objects(values: np.ndarray, noun: str, key: str, line: int | None) -> np.ndarray:
    """Python objects as text labels or numbers; gaps (None, NaN, pd.NA) and a mix of the two are refused."""
    missing = pd.isna(values)
    if missing.any():
        _missing(missing, noun, key, line)
    found = pd.api.types.infer_dtype(values.ravel(), skipna=False)  # in C: the common cases without a Python loop
    dtype = _INFERRED.get(found) or _mixed(values, noun, key, line)
    try:
        return values.astype(dtype)
    except OverflowError:
        raise RecipeError(f"{noun} holds whole numbers beyond 64 bits; give such labels as text (y.astype(str))",
                          key=key, line=line) from None


def _mixed(values: np.ndarray, noun: str, key: str, line: int | None) -> type:
    """The type of objects pandas could not name in one word: all numbers (ints and bools, fractions) are
    numbers; text among numbers, or anything else, is refused naming the first."""
    text = np.vectorize(lambda v: isinstance(v, str), otypes=[bool])(values)
    number = np.vectorize(lambda v: isinstance(v, (Real, np.bool_)), otypes=[bool])(values)
    if number.all():
        return np.int64 if all(isinstance(v, (Integral, np.bool_)) for v in values.flat) else np.float64
    other = ~(text | number)
    if other.any():
        first = values[tuple(np.argwhere(other)[0])]
        raise RecipeError(f"{noun} holds a {type(first).__name__} at {position(other)}; give one label or number per "
                          "sample", key=key, line=line)
    first_text, first_number = values[tuple(np.argwhere(text)[0])], values[tuple(np.argwhere(number)[0])]
    raise RecipeError(f"{noun} mixes text and numbers ({quoted(first_text)} at {position(text)}, "
                      f"{quoted(first_number)} at {position(number)}); make them one type, e.g. y.astype(str)",
                      key=key, line=line)


def _missing(mask: np.ndarray, noun: str, key: str, line: int | None) -> None:
    raise RecipeError(f"{noun} has {plural(int(mask.sum()), 'missing value')} (None or NaN) among {mask.size:,}, the "
                      f"first at {position(mask)}; drop those samples or fill them in before training",
                      key=key, line=line)


def one_hot(values: np.ndarray) -> bool:
    """Rows of 0s and a single 1: classes written as indicator columns (pd.get_dummies, to_categorical)."""
    return (values.ndim == 2 and values.shape[1] > 1 and values.dtype.kind in "biuf"
            and bool(np.isin(values, (0, 1)).all()) and bool((values.sum(axis=1) == 1).all()))


def detect_task(values: np.ndarray) -> str:
    """Whole-number, boolean, text and one-hot targets are classes; fractional numbers are regression."""
    if values.dtype.kind == "f" and not one_hot(values):
        return "regression"
    return "classification"


def encode_targets(values: np.ndarray, task: str, task_line: int | None, data_line: int | None
                   ) -> tuple[torch.Tensor, list | None]:
    """Class targets as 0..K-1 longs with the original labels (None when they already are 0..K-1),
    regression targets as floats. A mistake is the task's (`task_line`) or the data's (`data_line`)."""
    if task == "regression":
        if values.dtype.kind in "US":
            raise RecipeError("the targets are text, which cannot be regressed; use task: classification",
                              key="task", line=task_line)
        if values.ndim > 2:
            raise RecipeError(f"regression targets must be one value or one row of values per sample, got shape "
                              f"{list(values.shape)}", key="data", line=data_line)
        y = torch.as_tensor(values.astype(np.float32))
        return (y if y.ndim == 1 or y.shape[1] > 1 else y[:, 0]), None
    if one_hot(values):
        values = values.argmax(axis=1)
    if values.ndim > 1:
        raise RecipeError(f"classification targets must be one label per sample, got shape {list(values.shape)}",
                          key="data", line=data_line)
    if values.dtype.kind == "f" and not np.all(np.mod(values, 1) == 0):
        raise RecipeError("the targets have fractional values; use task: regression", key="task", line=task_line)
    labels, encoded = np.unique(values, return_inverse=True)
    if labels.dtype.kind in "iuf" and np.array_equal(labels, np.arange(len(labels))):
        return torch.as_tensor(values.astype(np.int64)), None
    return torch.as_tensor(encoded.astype(np.int64)), labels.tolist()


def encode_like(values: np.ndarray, task: str, classes: list | None, line: int | None) -> torch.Tensor:
    """A given test split's targets, with the class numbers the training targets got."""
    if task == "regression" or classes is None:
        return encode_targets(values, task, line, line)[0]
    index = {label: i for i, label in enumerate(classes)}
    unknown = [label for label in np.unique(values).tolist() if label not in index]
    if unknown:
        raise RecipeError(f"the test split's y holds the label {quoted(unknown[0])}, which the training data does not; "
                          "give the test split only classes the model can learn", key="data", line=line)
    return torch.as_tensor([index[label] for label in values.tolist()], dtype=torch.long)
