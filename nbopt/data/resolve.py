"""Turn a recipe's `data:` into train/val/test batches plus what the model needs to know.

Whatever the source — a built-in, arrays, a DataFrame, Datasets, DataLoaders or a
LightningDataModule — the result is a ``DataBundle``. In-memory data is split with a seeded,
stratified split of its row indices and batched with :class:`TensorBatches` straight from the
caller's arrays (no copy of the rows); loaders are used as given.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, TensorDataset

from nbopt.data.builtin import DATASETS, ArrayData
from nbopt.data.encoding import TensorInputs
from nbopt.data.files import TableData, frame_arrays
from nbopt.data.image_files import ImageInputs
from nbopt.data.images import ImageFolder
from nbopt.data.loaders import TensorBatches
from nbopt.data.normalization import Normalization, statistics
from nbopt.data.targets import clean_targets, detect_task, encode_like, encode_targets
from nbopt.data.validate import (check_batch_inputs, check_batch_targets, check_classes, check_dataset, check_finite,
                                 check_samples, check_split, first_pair, numeric_inputs)
from nbopt.errors import RecipeError, shown
from nbopt.lightning_package import is_datamodule
from nbopt.namespace import Reference
from nbopt.recipe import Recipe
from nbopt.techniques.balance import balanced_draws


@dataclass
class DataBundle:
    train: Iterable
    val: Iterable
    test: Iterable | None
    input_shape: tuple[int, ...]
    task: str
    num_outputs: int
    num_classes: int | None
    sizes: dict[str, int]
    description: str
    in_memory: bool
    normalization: Normalization | None = None  # applied to every batch, after augmentation
    classes: list | None = None  # class names in the order of the model's outputs, when the data has names
    notes: list[str] = field(default_factory=list)
    inputs: object = field(default_factory=TensorInputs)  # raw inputs → tensors, for run.predict too
    class_counts: list[int] | None = None  # training samples per class (in-memory classification), for balance

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train)


def resolve_data(ref: Reference, recipe: Recipe) -> DataBundle:
    line = recipe.line("data")
    if ref.builtin is not None:
        entry, kwargs = DATASETS.resolve(ref.builtin, "data", line)
        try:
            array = entry.build(**kwargs)
        except RecipeError as exc:  # a builder's own error (no torchvision, failed download): add the line
            raise RecipeError(exc.message, key="data", line=line) from None
        if isinstance(array, TableData):
            return _from_dataframe(array.frame, recipe, array.label, array.kind)
        if isinstance(array, ImageFolder):
            return _from_images(array, recipe)
        return _from_arrays(array.x, array.y, recipe, array.description, array.test)
    obj = ref.obj
    if ref.call_args is not None and callable(obj):
        obj = obj(*ref.call_args.args, **ref.call_args.kwargs)
    if isinstance(obj, ArrayData):
        return _from_arrays(obj.x, obj.y, recipe, obj.description, obj.test)
    if _is_dataframe(obj):
        return _from_dataframe(obj, recipe, ref.label)
    if is_datamodule(obj):
        return _from_datamodule(obj, recipe, ref.label)
    if isinstance(obj, (tuple, list)) and len(obj) in (2, 3):
        if len(obj) == 2 and all(_is_array(part) for part in obj):
            columns = list(obj[0].columns) if _is_dataframe(obj[0]) else None
            return _from_arrays(obj[0], obj[1], recipe, f"{ref.label}: arrays", columns=columns)
        if all(isinstance(part, (Dataset, DataLoader)) for part in obj):
            return _from_splits(list(obj), recipe, ref.label)
    if isinstance(obj, TensorDataset) and len(obj.tensors) == 2:
        return _from_arrays(*obj.tensors, recipe, f"{ref.label}: TensorDataset")
    raise RecipeError(f"'{ref.label}' is of type {type(obj).__name__}; expected a LightningDataModule, a (train, val) "
                      "pair of Datasets or DataLoaders, an (X, y) pair of arrays, or a DataFrame with `target:`"
                      + ref.hint(), key="data", line=line)


def _is_array(obj) -> bool:
    return isinstance(obj, (np.ndarray, torch.Tensor)) or _is_dataframe(obj) or type(obj).__name__ == "Series"


def _is_dataframe(obj) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "columns")


def _split(rows: torch.Tensor, y: torch.Tensor, fraction: float, seed: int, stratify: bool, part: str,
           line: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`fraction` of the samples `rows` (whose targets are `y`) held out as `part` (validation or test),
    by class where each has two: (the rows kept, the rows held out)."""
    index = np.arange(len(rows))
    labels = y.numpy() if stratify else None
    if stratify and np.min(np.bincount(labels)) < 2:
        labels = None  # a class with one sample cannot be stratified
    classes = 0 if labels is None else len(np.unique(labels))
    check_split(len(index), fraction, classes, part, "test_split" if part == "test" else "val_split", line)
    keep, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=labels)
    return rows[torch.as_tensor(keep)], rows[torch.as_tensor(held)]


def _from_arrays(x, y, recipe: Recipe, description: str, test=None, *, inputs: str = "X",
                 columns: list | None = None, target: str | None = None) -> DataBundle:
    """In-memory samples, checked (numbers, finite, enough of them, two classes at least), then split.
    `inputs` names them in messages, `columns` their features, `target` the table column y came from."""
    line = recipe.line("data")
    x = numeric_inputs(x, inputs, line)
    key, noun = ("target", f"column {shown(target)}") if target else ("data", "y")
    values = clean_targets(y, noun, key, recipe.line(key) or line)
    if len(x) != len(values):
        raise RecipeError(f"X has {len(x)} samples but y has {len(values)}", key="data", line=line)
    check_samples(len(x), inputs, line)
    check_finite(x, inputs, line, columns)
    task = recipe.task or detect_task(values)
    y, classes = encode_targets(values, task, recipe.line("task"), line)
    num_classes = None
    if task == "classification":
        num_classes = len(classes) if classes is not None else int(y.max()) + 1
        check_classes(num_classes, classes or list(range(num_classes)), len(y), line)
    splits = _array_splits(x, y, recipe, task == "classification", test is None, line)
    if test is not None:
        splits["test"] = (numeric_inputs(test[0], "the test split's X", line),
                          encode_like(clean_targets(test[1], "the test split's y", "data", line), task, classes, line),
                          None)
    train_rows = splits["train"][2]
    normalization = None if recipe.normalize == "none" else Normalization(*statistics(x, recipe, train_rows))
    batches = {name: _batches(name, sx, sy, rows, recipe, task) for name, (sx, sy, rows) in splits.items()}
    return DataBundle(
        train=batches["train"], val=batches["val"], test=batches.get("test"),
        input_shape=tuple(x.shape[1:]), task=task,
        num_outputs=num_classes if task == "classification" else (1 if y.ndim == 1 else y.shape[1]),
        num_classes=num_classes, sizes={name: split.size for name, split in batches.items()},
        description=description, in_memory=True, normalization=normalization, classes=classes,
        class_counts=_class_counts(y[train_rows], task, num_classes))


def _array_splits(x: torch.Tensor, y: torch.Tensor, recipe: Recipe, stratify: bool, carve_test: bool,
                  line: int | None) -> dict:
    """{split: (x, y, its rows)} of one array: test first (when `test_split` asks and the data has no
    test split of its own), then validation from the rest. Both fractions are of all the samples."""
    rows, splits = torch.arange(len(y)), {}
    if carve_test and recipe.test_split > 0:
        rows, test_rows = _split(rows, y, recipe.test_split, recipe.seed, stratify, "test", line)
        splits["test"] = (x, y, test_rows)
    fraction = recipe.val_split / (1 - recipe.test_split)
    train_rows, val_rows = _split(rows, y[rows], fraction, recipe.seed, stratify, "validation", line)
    return {"train": (x, y, train_rows), "val": (x, y, val_rows), **splits}


def _from_dataframe(frame, recipe: Recipe, label: str, kind: str = "DataFrame") -> DataBundle:
    x, y, description, inputs = frame_arrays(frame, recipe, label, kind)
    bundle = _from_arrays(x, y, recipe, description, inputs=f"'{label}'", columns=inputs.encoded,
                          target=recipe.target)
    bundle.inputs = inputs
    return bundle


def _from_images(folder: ImageFolder, recipe: Recipe) -> DataBundle:
    """An image folder: its own train/val/test folders, the splits it lacks carved from its training
    files as for arrays. Cached pixels batch like arrays; streamed files come in the very same order,
    so both count as batched here (`in_memory`: the recipe's batch size and DDP sharding apply)."""
    if recipe.task not in (None, "classification"):
        raise RecipeError("an image folder's classes are its sub-folders: use task: classification or leave task out",
                          key="task", line=recipe.line("task"))
    splits = _image_splits(folder, recipe)
    normalization = None
    if recipe.normalize == "auto":
        normalization = Normalization(*folder.statistics(splits["train"]))
    elif recipe.normalize != "none":  # given values, checked against the channels as for arrays
        normalization = Normalization(*statistics(torch.zeros(1, *folder.shape), recipe))
    kind, count, source = folder.batch_kind(), len(folder.classes), folder.batch_source()
    batches = {name: _batches(name, source, folder.labels, index, recipe, "classification", kind)
               for name, index in splits.items()}
    return DataBundle(batches["train"], batches["val"], batches.get("test"), folder.shape, "classification", count,
                      count, {name: len(index) for name, index in splits.items()}, folder.description, True,
                      normalization, folder.classes, folder.notes, ImageInputs(folder.size, folder.channels),
                      _class_counts(folder.labels[splits["train"]], "classification", count))


def _image_splits(folder: ImageFolder, recipe: Recipe) -> dict[str, torch.Tensor]:
    """File indices of train, val (and test): the folder's own, else carved from its training files with
    the seeded stratified split of arrays (test first, then val from the rest)."""
    given = {name: torch.as_tensor(index) for name, index in folder.splits.items()}
    train = given.pop("train")
    if "test" not in given and recipe.test_split > 0:
        train, given["test"] = _split(train, folder.labels[train], recipe.test_split, recipe.seed, True, "test",
                                      recipe.line("data"))
    if "val" not in given:
        fraction = recipe.val_split / (1 - recipe.test_split) if recipe.test_split > 0 else recipe.val_split
        train, given["val"] = _split(train, folder.labels[train], fraction, recipe.seed, True, "validation",
                                     recipe.line("data"))
    return {"train": train, "val": given["val"], **({"test": given["test"]} if "test" in given else {})}


def _from_splits(parts: list, recipe: Recipe, label: str) -> DataBundle:
    tensors = [part.tensors if isinstance(part, TensorDataset) and len(part.tensors) == 2 else None for part in parts]
    if all(t is not None for t in tensors):
        return _from_tensor_splits(tensors, recipe, f"{label}: TensorDatasets")
    for name, part in zip(("training", "validation", "test"), parts):
        if not isinstance(part, DataLoader) and hasattr(part, "__len__"):
            check_dataset(len(part), name, recipe.line("data"))
    generator = torch.Generator().manual_seed(recipe.seed)
    loaders = [part if isinstance(part, DataLoader) else
               DataLoader(part, batch_size=recipe.batch_size, shuffle=(i == 0), generator=generator)
               for i, part in enumerate(parts)]
    return _from_loaders(loaders[0], loaders[1], loaders[2] if len(loaders) > 2 else None, recipe,
                         f"{label}: {type(parts[0]).__name__}s")


def _from_tensor_splits(tensors: list, recipe: Recipe, description: str) -> DataBundle:
    """TensorDatasets used as given, each checked; their targets are encoded together, so that a label
    is the same class in every split."""
    line = recipe.line("data")
    xs, ys = [], []
    for part, (x, y) in zip(("training", "validation", "test"), tensors):
        check_dataset(len(x), part, line)
        xs.append(numeric_inputs(x, f"the {part} Dataset's X", line))
        check_finite(xs[-1], f"the {part} Dataset's X", line)
        ys.append(clean_targets(y, f"the {part} Dataset's y", "data", line))
    if len({v.shape[1:] for v in ys}) > 1:
        shapes = ", ".join(str(list(v.shape[1:])) for v in ys)
        raise RecipeError(f"the targets differ in shape between the splits ({shapes} per sample); give every split "
                          "the same kind of targets", key="data", line=line)
    task = recipe.task or detect_task(ys[0])
    y, classes = encode_targets(np.concatenate(ys), task, recipe.line("task"), line)
    splits = dict(zip(("train", "val", "test"), zip(xs, torch.split(y, [len(v) for v in ys]))))
    num_classes = None
    if task == "classification":
        num_classes = len(classes) if classes is not None else int(y.max()) + 1
        check_classes(num_classes, classes or list(range(num_classes)), len(y), line)
    normalization = None if recipe.normalize == "none" else Normalization(*statistics(xs[0], recipe))
    batches = {name: _batches(name, sx, sy, None, recipe, task) for name, (sx, sy) in splits.items()}
    return DataBundle(batches["train"], batches["val"], batches.get("test"), tuple(xs[0].shape[1:]), task,
                      num_classes or (1 if y.ndim == 1 else y.shape[1]), num_classes,
                      {name: len(sx) for name, (sx, _) in splits.items()}, description, True, normalization,
                      classes, class_counts=_class_counts(splits["train"][1], task, num_classes))


def _from_datamodule(dm, recipe: Recipe, label: str) -> DataBundle:
    """A LightningDataModule of either package, whichever trains the model: only its loaders are used."""
    dm.prepare_data()
    dm.setup("fit")
    test = None
    try:
        dm.setup("test")
        test = dm.test_dataloader()
    except Exception:  # the default test_dataloader raises: this datamodule has no test split
        test = None
    return _from_loaders(dm.train_dataloader(), dm.val_dataloader(), test, recipe,
                         f"{label}: {type(dm).__name__}", classes_hint=getattr(dm, "num_classes", None))


def _from_loaders(train, val, test, recipe: Recipe, description: str, classes_hint: int | None = None
                  ) -> DataBundle:
    """Loaders used as given. Their first batches are checked (the rest would take a pass over the data);
    they reach the model and the loss as they come, so their types must be the ones those take."""
    line = recipe.line("data")
    x, y = first_pair(train, "training", line)
    for part, (bx, by) in (("training", (x, y)), ("validation", first_pair(val, "validation", line))):
        check_finite(bx, f"the first {part} batch's X", line)
        clean_targets(by, f"the first {part} batch's y", "data", line)
    check_batch_inputs(x, recipe.normalize != "none", line)
    # batches cannot be encoded again, so float targets (one-hot ones too) are regressed as they come
    task = recipe.task or ("regression" if y.is_floating_point() else "classification")
    check_batch_targets(y, task, line)
    num_classes = None
    if task == "classification":
        num_classes = classes_hint or _count_classes(train, val)
        check_classes(num_classes, None, _size(train) + _size(val), line)
    notes = ["batches come from your DataLoaders: their batch size and workers apply"]
    normalization = None if recipe.normalize == "none" else Normalization(*_loader_statistics(train, recipe))
    return DataBundle(train, val, test, tuple(x.shape[1:]), task,
                      num_classes or (1 if y.ndim == 1 else y.shape[1]), num_classes,
                      {"train": _size(train), "val": _size(val), **({"test": _size(test)} if test else {})},
                      description, False, normalization, notes=notes)


def _count_classes(*loaders) -> int:
    """Number of classes from a dataset's labels when it exposes them, else from scanning batches."""
    for loader in loaders:
        dataset = getattr(loader, "dataset", None)
        targets = getattr(dataset, "targets", None)
        if targets is not None:
            return int(torch.as_tensor(targets).max()) + 1
    top = 0
    for loader in loaders:
        for _, y in itertools.islice(loader, 200):
            top = max(top, int(torch.as_tensor(y).max()))
    return top + 1


def _loader_statistics(loader, recipe: Recipe, max_batches: int = 50):
    """Training-split statistics from up to `max_batches` batches (enough for a stable estimate)."""
    sample = torch.cat([torch.as_tensor(b[0]).float() for b in itertools.islice(loader, max_batches)])
    check_finite(sample, f"a sample of {len(sample):,} training inputs", recipe.line("data"))
    return statistics(sample, recipe)


def _size(loader) -> int:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else len(loader)
    except TypeError:
        return 0


EVAL_BATCH_FACTOR = 4
EVAL_BATCH_BYTES = 4 * 2**20  # a validation batch's inputs, as float32, beyond a training batch's rows


def eval_batch_size(batch_size: int, sample_shape) -> int:
    """Rows per validation and test batch: EVAL_BATCH_FACTOR training batches, as long as their inputs take at
    most EVAL_BATCH_BYTES as float32, and never fewer rows than a training batch. A pass holds two or three
    batches at a time, so large images (a 224×224 RGB image is 0.6 MB) would otherwise hold hundreds of MB."""
    row_bytes = 4 * math.prod(sample_shape)
    return max(batch_size, min(batch_size * EVAL_BATCH_FACTOR, EVAL_BATCH_BYTES // max(row_bytes, 1)))


def _class_counts(y: torch.Tensor, task: str, num_classes: int | None) -> list[int] | None:
    """Samples per class of a split: what `balance:` weighs or draws by, and what the plan shows."""
    return torch.bincount(y, minlength=num_classes).tolist() if task == "classification" else None


def _batches(split: str, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor | None, recipe, task: str,
             kind=TensorBatches) -> TensorBatches:
    """Shuffled training batches of the recipe's size; larger, ordered ones for validation and test.
    Each over the rows `rows` of x and y (all when None).

    Evaluation keeps no activations for a backward pass, so four times the training batch fits in
    about the same memory, and fewer batches cost less per sample (up to a size: `eval_batch_size`).
    Metrics do not depend on it: losses are averaged per sample and BatchNorm uses its running statistics.
    """
    if split == "train":
        oversample = recipe.balance == "oversample" and task == "classification"  # regression: refused by check
        draws = balanced_draws(y if rows is None else y[rows]) if oversample else None
        return kind(x, y, recipe.batch_size, True, recipe.seed, draws, rows=rows)
    return kind(x, y, eval_batch_size(recipe.batch_size, x.shape[1:]), False, recipe.seed, rows=rows)
