"""Checks of the data itself, before any training: what would otherwise train to NaN, end as a
finished run of nothing, or fail deep inside numpy, scikit-learn or a DataLoader.

Every refusal is one RecipeError on `data:` that says what was found (a count, the first offending
row and column) and what to do.
"""
from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping
from numbers import Real

import numpy as np
import torch

from nbopt.data.loaders import row_chunks
from nbopt.errors import RecipeError, shown


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def quoted(value) -> str:
    """A value for a message: text in quotes, numbers as they are."""
    return shown(value, 30) if isinstance(value, str) else str(value)[:30]


def position(mask, columns: list | None = None, first_row: int = 0) -> str:
    """Where the first True of a per-sample mask is: 'row 5', 'row 5, column 2' (or its name), or
    'sample 5, position (0, 3, 4)' for samples of more than one dimension. `first_row`: the row the
    mask starts at, when it covers a chunk of the rows."""
    at = np.argwhere(np.asarray(mask))[0].tolist()
    at[0] += first_row
    if len(at) == 1:
        return f"row {at[0]}"
    if len(at) == 2:
        column = shown(columns[at[1]]) if columns is not None else at[1]
        return f"row {at[0]}, column {column}"
    return f"sample {at[0]}, position {tuple(at[1:])}"


def numeric_inputs(x, noun: str, line: int | None) -> torch.Tensor:
    """The inputs as a tensor of one row per sample, sharing the caller's memory where it can. Numbers
    held in an object array are taken; text, dates and complex numbers are refused, naming the first
    such value.

    The caller's numbers keep their dtype — float64 and uint8 included — and become float32, with
    their values unchanged, batch by batch (nbopt.data.loaders): converting the whole array here would
    cost half its size again for float64, and four times it for uint8 pixels. Only an array made here
    (from a list, an object array, a mixed-type DataFrame) is made float32 at once, as nobody else holds it."""
    if not isinstance(x, torch.Tensor):
        values = np.asarray(x)
        made_here = not isinstance(x, np.ndarray) and values.flags.writeable  # pandas' views of its data are read-only
        if values.size == 0 and values.dtype.kind in "OUS":  # no samples: what they would hold does not matter
            values = values.astype(np.float32)
        if values.dtype.kind == "O":
            values, made_here = _object_numbers(values, noun, line), True
        if values.dtype.kind in "US":
            raise RecipeError(f"{noun} contains text ({position(np.ones(values.shape, bool))}: "
                              f"{quoted(values.flat[0])}); convert it to numbers first (one-hot encode categories, "
                              "or pass a DataFrame with `target:`, which does)", key="data", line=line)
        if values.dtype.kind not in "biufc":  # complex: refused below, for tensors too
            raise RecipeError(f"{noun} holds {values.dtype} values; convert them to numbers first", key="data",
                              line=line)
        if made_here and values.dtype == np.float64:
            with np.errstate(over="ignore"):  # beyond float32's range: infinite, refused as such by check_finite
                values = values.astype(np.float32)
        x = _shared_tensor(values)
    if x.is_complex():
        raise RecipeError(f"{noun} holds complex numbers; give their real and imaginary parts as separate "
                          "features", key="data", line=line)
    if x.ndim < 2:
        raise RecipeError(f"{noun} has shape {list(x.shape)}; give one row per sample, of shape [samples, "
                          "features] (X.reshape(-1, 1) for a single feature)", key="data", line=line)
    if math.prod(x.shape[1:]) == 0:
        raise RecipeError(f"{noun} has shape {list(x.shape)}: no features to learn from; give each sample at least "
                          "one value", key="data", line=line)
    return x


def _shared_tensor(values: np.ndarray) -> torch.Tensor:
    """The array as a tensor over the same memory, a read-only one too (pandas' copy-on-write hands them
    out): nbopt only ever reads its inputs, so torch's warning about writing to it does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(values)


def _object_numbers(values: np.ndarray, noun: str, line: int | None) -> np.ndarray:
    """An object array of numbers (and None for gaps) as floats; the first value that is not one is named."""
    wrong = np.vectorize(lambda v: v is not None and not isinstance(v, (Real, np.bool_)), otypes=[bool])(values)
    if wrong.any():
        first = values[tuple(np.argwhere(wrong)[0])]
        kind = "text" if isinstance(first, str) else f"a {type(first).__name__}"
        raise RecipeError(f"{noun} contains {kind} ({position(wrong)}: {quoted(first)}); convert it to numbers "
                          "first", key="data", line=line)
    try:
        return np.where(values == None, np.nan, values).astype(np.float64)  # noqa: E711  (elementwise, not identity)
    except OverflowError:
        raise RecipeError(f"{noun} holds whole numbers beyond float's range; scale them first", key="data",
                          line=line) from None


def check_finite(x: torch.Tensor, noun: str, line: int | None, columns: list | None = None) -> None:
    """NaN or infinite inputs make every loss NaN: refused with their count and the first place.

    Checked chunk by chunk as float32, the batches' dtype: a float64 value beyond float32's range
    would become infinite in training, so it counts as infinite here."""
    if not x.is_floating_point():
        return
    for first_row, chunk in row_chunks(x):
        bad = ~torch.isfinite(chunk.float())
        if bad.any():
            _refuse_nonfinite(x, bad, first_row, noun, line, columns)


def _refuse_nonfinite(x: torch.Tensor, bad: torch.Tensor, first_row: int, noun: str, line: int | None,
                      columns: list | None) -> None:
    """The refusal of check_finite, `bad` being the mask of the first chunk with a non-finite value."""
    nan = infinite = 0
    for _, chunk in row_chunks(x):
        chunk = chunk.float()
        nan += int(torch.isnan(chunk).sum())
        infinite += int(torch.isinf(chunk).sum())
    found = " and ".join(plural(n, kind) for n, kind in ((nan, "NaN value"), (infinite, "infinite value")) if n)
    raise RecipeError(f"{noun} has {found} among {x.numel():,}, the first at "
                      f"{position(bad.cpu().numpy(), columns, first_row)}; fill or drop them before training, as "
                      "they make every loss NaN", key="data", line=line)


def check_samples(count: int, noun: str, line: int | None) -> None:
    """Training and validation need a sample each at the very least."""
    if count < 2:
        raise RecipeError(f"{noun} has {plural(count, 'sample')}; a run needs at least 2, one to train on and one "
                          "to validate", key="data", line=line)


def check_dataset(count: int, part: str, line: int | None) -> None:
    """A Dataset given as a split must hold samples: an empty one trains nothing, or fails in its sampler."""
    if count == 0:
        raise RecipeError(f"the {part} Dataset is empty (0 samples); give it samples"
                          + (", or pass (X, y) arrays and let val_split hold some out" if part == "validation" else ""),
                          key="data", line=line)


def check_classes(num_classes: int, labels: list | None, count: int, line: int | None) -> None:
    """A single class leaves nothing to tell apart: a one-output model scores 100% by saying it."""
    if num_classes < 2:
        label = f" ({quoted(labels[0])})" if labels else ""
        raise RecipeError(f"the targets hold one class only{label} in all {plural(count, 'sample')}; classification "
                          "needs two or more: check the labels, or use task: regression to predict a number",
                          key="data", line=line)


def check_split(count: int, fraction: float, classes: int, part: str, setting: str, line: int | None) -> None:
    """scikit-learn's sizes (ceil(fraction·n) held out, the rest kept), checked before it splits: each part
    needs a sample, and a stratified split one sample of every class in each part."""
    held = math.ceil(fraction * count)
    kept = count - held
    need = max(classes, 1)
    if held >= need and kept >= need:
        return
    why = f" (one of each of the {classes} classes, as the split is stratified)" if classes > 1 else ""
    enough = next(n for n in itertools.count(count + 1) if min(math.ceil(fraction * n), n - math.ceil(fraction * n))
                  >= need)
    fix = "larger" if held < need else "smaller"
    raise RecipeError(f"{plural(count, 'sample')} {'is' if count == 1 else 'are'} too few to split: {part} would get "
                      f"{held:,} and training {kept:,}, but each needs at least {need}{why}; use more data (at least "
                      f"{enough:,} samples at this {setting}) or a {fix} {setting}", key="data", line=line)


def check_batch_inputs(x: torch.Tensor, normalized: bool, line: int | None) -> None:
    """DataLoader inputs reach the model as they come: float32, or uint8 pixels that normalisation turns
    into float32."""
    if x.dtype == torch.float32 or (normalized and x.dtype == torch.uint8):
        return
    raise RecipeError(f"the training batches hold {str(x.dtype).removeprefix('torch.')} inputs, but the model takes "
                      "float32; return x.float() from the Dataset", key="data", line=line)


def check_batch_targets(y: torch.Tensor, task: str, line: int | None) -> None:
    """DataLoader targets reach the loss as they come, without nbopt's encoding: class indices must be
    longs from 0, one per sample, and regression targets floats."""
    found = str(y.dtype).removeprefix("torch.")
    if task == "regression":
        if not y.is_floating_point():
            raise RecipeError(f"regression targets must be floats, but the training batches hold {found}; return "
                              "y.float() from the Dataset", key="data", line=line)
        return
    if y.ndim != 1:
        raise RecipeError(f"classification targets must be one class index per sample, but the training batches "
                          f"hold shape {list(y.shape[1:])} per sample; return y.argmax() for one-hot rows",
                          key="data", line=line)
    if y.dtype not in (torch.long, torch.uint8):
        raise RecipeError(f"classification targets must be class indices as torch.long, but the training batches "
                          f"hold {found}; return y.long() from the Dataset, or use task: regression for numbers",
                          key="data", line=line)
    if len(y) and int(y.min()) < 0:
        raise RecipeError(f"classification targets must be class indices 0, 1, 2, …, but the first training batch "
                          f"holds {int(y.min())} at {position((y < 0).numpy())}; number the classes from 0",
                          key="data", line=line)


def first_pair(loader, split: str, line: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first (inputs, targets) batch of a loader; an empty loader or batches of another shape (dicts,
    single tensors) are refused with what to return instead."""
    try:
        batch = next(iter(loader))
    except StopIteration:
        raise RecipeError(f"the {split} data is empty (its DataLoader gives no batches); give it samples",
                          key="data", line=line) from None
    except Exception as exc:  # the user's Dataset or collate_fn failing on its first items
        raise RecipeError(f"reading the first {split} batch failed with {type(exc).__name__}: {_first_line(exc)}; "
                          "check the Dataset's __len__ and __getitem__ (and the DataLoader's collate_fn)",
                          key="data", line=line) from None
    if isinstance(batch, Mapping):
        keys = ", ".join(shown(k, 20) for k in list(batch)[:4])
        raise RecipeError(f"the {split} batches are dicts (keys {keys}); nbopt takes (inputs, targets) pairs: make "
                          "the Dataset's __getitem__ return (x, y)", key="data", line=line)
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise RecipeError(f"the {split} batches must be (inputs, targets) pairs, got a {type(batch).__name__}; make "
                          "the Dataset's __getitem__ return (x, y)", key="data", line=line)
    try:
        return torch.as_tensor(batch[0]), torch.as_tensor(batch[1])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise RecipeError(f"the {split} batches must be (inputs, targets) pairs of tensors: {_first_line(exc)}",
                          key="data", line=line) from None


def _first_line(exc: Exception) -> str:
    return shown(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, 100)
