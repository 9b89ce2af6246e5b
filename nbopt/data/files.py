"""Tables: `csv(path=FILE)`, `parquet(path=FILE)` and notebook DataFrames, with `target: COLUMN`.

A file is read into a pandas DataFrame and takes the same road as a notebook DataFrame: the target
column is split off, text and category columns are one-hot encoded, and what the encoding learnt is
kept as a :class:`FrameInputs`, so ``run.predict`` takes new rows as a table and encodes them exactly
as the training rows were.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nbopt.data.builtin import DATASETS
from nbopt.data.encoding import TensorInputs
from nbopt.errors import RecipeError, unknown_name_message


@dataclass
class TableData:
    """A table read from a file; `label` and `kind` name it in the plan and in messages."""
    frame: pd.DataFrame
    label: str
    kind: str


class FrameInputs(TensorInputs):
    """The feature columns a run was trained on, and the one-hot columns their text values became.

    New rows are encoded against these, not from their own values: a table holding only some of the
    categories, in another column order or with extra columns (the target) still lines up with the
    training matrix. A value training never saw gets all-zero dummies: the model has learnt nothing
    about it. New rows come as a DataFrame, a dict of columns, or one row (a dict of values, a Series);
    arrays and tensors are taken as already encoded.
    """

    def __init__(self, columns: list, categorical: list, encoded: list):
        self.columns, self.categorical, self.encoded = columns, categorical, encoded

    @classmethod
    def fit(cls, features: pd.DataFrame) -> tuple[FrameInputs, np.ndarray]:
        """The encoder of a training table, and that table encoded (a writable float32 matrix)."""
        encoded = pd.get_dummies(features, dtype=np.float32)
        categorical = [c for c in features.columns if c not in encoded.columns]
        inputs = cls(list(features.columns), categorical, list(encoded.columns))
        return inputs, encoded.to_numpy(np.float32, copy=True)  # a copy: pandas hands out read-only arrays

    def encode(self, x) -> torch.Tensor:
        if isinstance(x, dict):  # columns, or one row of scalars
            x = pd.DataFrame(x if any(np.ndim(v) for v in x.values()) else [x])
        elif isinstance(x, pd.Series):  # one row, as `table.iloc[0]` gives it
            x = x.to_frame().T.infer_objects()
        if not isinstance(x, pd.DataFrame):
            return super().encode(x)
        missing = [str(c) for c in self.columns if c not in x.columns]
        if missing:
            raise RecipeError(f"the rows lack the training column(s) {', '.join(map(repr, missing))}; "
                              "predict needs every feature column the run was trained on")
        text = [str(c) for c in self.columns if c not in self.categorical and not _numeric(x[c])]
        if text:
            raise RecipeError(f"column(s) {', '.join(map(repr, text))} held numbers in training but not here; "
                              "convert them to numbers first")
        encoded = pd.get_dummies(x[self.columns], columns=self.categorical, dtype=np.float32)
        return torch.from_numpy(encoded.reindex(columns=self.encoded, fill_value=0).to_numpy(np.float32, copy=True))


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def frame_arrays(frame: pd.DataFrame, recipe, label: str, kind: str = "DataFrame"
                 ) -> tuple[np.ndarray, np.ndarray, str, FrameInputs]:
    """(features as a float32 matrix, target values, description, the FrameInputs that made the matrix)."""
    line = recipe.line("target")
    if recipe.target is None:
        raise RecipeError(f"'{label}' is a {kind}; say which column to predict with `target: COLUMN`",
                          key="target")
    if recipe.target not in frame.columns:
        raise RecipeError(unknown_name_message("column", recipe.target, [str(c) for c in frame.columns]),
                          key="target", line=line)
    features = frame.drop(columns=[recipe.target])  # NaN in a number column stays NaN: refused with its place
    inputs, x = _encoded(features, label, recipe.line("data"))
    description = f"{label}: {kind}, {len(frame):,} rows, {x.shape[1]} feature columns → '{recipe.target}'"
    return x, frame[recipe.target].to_numpy(copy=True), description, inputs


def _encoded(features: pd.DataFrame, label: str, line: int | None) -> tuple[FrameInputs, np.ndarray]:
    """The feature columns one-hot encoded; a table without any, or with cells that are neither numbers
    nor categories (complex numbers, lists), is refused naming them."""
    if features.shape[1] == 0:
        raise RecipeError(f"'{label}' has no columns besides the target; give it feature columns to learn from",
                          key="data", line=line)
    complex_ = [str(c) for c in features.columns if pd.api.types.is_complex_dtype(features[c])]
    if complex_:
        raise RecipeError(f"column(s) {', '.join(map(repr, complex_))} of '{label}' hold complex numbers; give "
                          "their real and imaginary parts as separate columns", key="data", line=line)
    try:
        return FrameInputs.fit(features)
    except (TypeError, ValueError) as exc:  # pandas cannot one-hot encode cells such as lists
        raise RecipeError(f"cannot encode the feature columns of '{label}' ({str(exc).strip()[:80]}); give each cell "
                          "a number or a category", key="data", line=line) from None


def _read(path: str, kind: str, reader) -> TableData:
    """The file as a DataFrame; a missing or unreadable file is a one-line RecipeError."""
    file = Path(os.path.expanduser(str(path)))
    if not file.is_file():
        raise RecipeError(f"there is no file '{path}' (relative paths start in the working folder, "
                          f"{os.getcwd()})", key="data")
    try:
        frame = reader(file)
    except Exception as exc:  # pandas' readers raise many types for a file that is not what its name says
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeError(f"cannot read '{path}' as {kind}: {first}", key="data") from None
    return TableData(frame, file.name, f"{kind} file")


@DATASETS.register("csv", "a table from a CSV file (pandas); name the column to predict with `target:`")
def csv(path: str, sep: str = ","):
    return _read(path, "CSV", lambda file: pd.read_csv(file, sep=sep))


@DATASETS.register("parquet", "a table from a Parquet file (needs pyarrow: pip install nbopt[parquet]); "
                   "name the column to predict with `target:`")
def parquet(path: str):
    try:
        import pyarrow.parquet  # noqa: F401  (pandas' reader; its own error would not say what to install)
    except ImportError:
        raise RecipeError("reading parquet files needs pyarrow: pip install nbopt[parquet]", key="data") from None
    return _read(path, "Parquet", lambda file: pd.read_parquet(file, engine="pyarrow"))
