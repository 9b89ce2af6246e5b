"""`data:` — built-ins, notebook arrays/DataFrames/Datasets/DataLoaders/DataModules, splits and normalisation."""
from __future__ import annotations

import importlib.util
import math
import re

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from sklearn import datasets as skd
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from nbopt import RecipeError
from nbopt.data.builtin import DATASETS
from nbopt.data.loaders import TensorBatches


def all_of(batches) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of an in-memory split, in its stored order."""
    assert isinstance(batches, TensorBatches)
    return batches.x, batches.y


def plan_for(check, data: str, namespace=None, extra: str = ""):
    return check(f"model: mlp(hidden=[8])\ndata: {data}\n{extra}", namespace)


# -- built-ins ---------------------------------------------------------------------------------------

SKLEARN = {"digits": skd.load_digits, "wine": skd.load_wine, "breast_cancer": skd.load_breast_cancer,
           "iris": skd.load_iris}


@pytest.mark.parametrize("name", sorted(SKLEARN))
def test_sklearn_builtins_resolve_with_shapes_classes_and_splits(name, check):
    source = SKLEARN[name]()
    n, classes = len(source.target), len(np.unique(source.target))
    shape = (1, 8, 8) if name == "digits" else (source.data.shape[1],)
    plan = plan_for(check, name)
    data = plan.data
    assert data.task == "classification"
    assert data.input_shape == shape
    assert data.num_classes == classes and data.num_outputs == classes
    assert data.sizes["train"] + data.sizes["val"] == n
    assert data.sizes["val"] == math.ceil(0.2 * n)  # default val_split 0.2
    x, y = all_of(data.train)
    assert tuple(x.shape[1:]) == shape and len(x) == data.sizes["train"]
    assert set(torch.cat([y, all_of(data.val)[1]]).tolist()) == set(range(classes))
    assert data.in_memory and data.test is None


@pytest.mark.parametrize("name", sorted(SKLEARN))
def test_a_builtin_read_twice_gives_the_file_values_in_tensors_of_its_own(name):
    """The scikit-learn sets are read once a process; changing one run's tensors must not reach the next."""
    from nbopt.data import builtin
    first = getattr(builtin, name)()
    first.x.add_(1000.0)
    first.y.fill_(-1)
    second = getattr(builtin, name)()
    source = SKLEARN[name]()
    assert torch.equal(second.x.reshape(len(source.data), -1), torch.as_tensor(source.data, dtype=torch.float32))
    assert torch.equal(second.y, torch.as_tensor(source.target))


def test_synthetic_builtin_takes_its_arguments(check):
    plan = plan_for(check, "synthetic(n=300, shape=[2, 4, 4], classes=3)")
    d = plan.data
    assert d.input_shape == (2, 4, 4) and d.num_classes == 3 and d.task == "classification"
    assert d.sizes == {"train": 240, "val": 60}
    assert set(all_of(d.train)[1].tolist()) == {0, 1, 2}


def test_synthetic_with_zero_classes_is_regression(check):
    d = plan_for(check, "synthetic(n=200, classes=0)").data
    assert d.task == "regression" and d.num_outputs == 1 and d.num_classes is None
    assert all_of(d.train)[1].dtype == torch.float32
    assert plan_for(check, "synthetic(n=200, classes=0)").metric_key == "val_mae"


def test_every_builtin_dataset_is_documented_in_the_registry():
    assert {"digits", "wine", "breast_cancer", "iris", "synthetic", "mnist", "fashion_mnist", "cifar10"} <= set(
        DATASETS.names())


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed here")
def test_mnist_without_torchvision_is_a_clear_recipe_error(check):
    pattern = (r"^data \(line 2\): the mnist dataset needs torchvision, which could not be imported \(.+\); "
               r"install a torchvision that matches your torch, or use digits, wine or synthetic$")
    with pytest.raises(RecipeError, match=pattern):
        check("model: mlp\ndata: mnist\n")


def test_unknown_dataset_name_suggests(check):
    names = ", ".join(DATASETS.names())
    message = (f"data (line 2): 'digts' is neither a notebook variable nor a built-in dataset ({names}) — "
               "did you mean 'digits'?")
    with pytest.raises(RecipeError, match="^" + re.escape(message) + "$"):
        check("model: mlp\ndata: digts\n")


def test_a_notebook_variable_wins_over_a_builtin_of_the_same_name(check):
    x, y = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32), np.arange(50) % 2
    d = plan_for(check, "digits", {"digits": (x, y)}).data
    assert d.input_shape == (3,) and d.num_classes == 2


# -- splits --------------------------------------------------------------------------------------------

def test_val_and_test_split_sizes(check):
    n = len(skd.load_digits().target)
    d = plan_for(check, "digits", extra="val_split: 0.25\ntest_split: 0.1\n").data
    assert set(d.sizes) == {"train", "val", "test"}
    assert sum(d.sizes.values()) == n
    assert abs(d.sizes["test"] - 0.1 * n) <= 1
    assert abs(d.sizes["val"] - 0.25 * n) <= 1
    assert d.test is not None and len(all_of(d.test)[0]) == d.sizes["test"]


def test_splits_are_disjoint_and_cover_the_data(check):
    x = np.stack([np.arange(150), np.zeros(150)], axis=1).astype(np.float32)  # column 0 identifies the sample
    d = plan_for(check, "xy", {"xy": (x, np.arange(150) % 3)}, "normalize: none\ntest_split: 0.2\n").data
    ids = [set(all_of(split)[0][:, 0].long().tolist()) for split in (d.train, d.val, d.test)]
    assert sum(len(i) for i in ids) == 150
    assert ids[0] | ids[1] | ids[2] == set(range(150))


def test_same_seed_same_split_different_seed_different(check):
    val = {seed: all_of(plan_for(check, "wine", extra=f"seed: {seed}\nnormalize: none\n").data.val)[0]
           for seed in (3, 4)}
    again = all_of(plan_for(check, "wine", extra="seed: 3\nnormalize: none\n").data.val)[0]
    assert torch.equal(val[3], again)
    assert not torch.equal(val[3], val[4])


def test_split_is_stratified(check):
    y = np.array([0] * 160 + [1] * 40)  # 80 % / 20 %
    x = np.random.default_rng(1).normal(size=(200, 4)).astype(np.float32)
    for seed in range(3):
        d = plan_for(check, "xy", {"xy": (x, y)}, f"seed: {seed}\nval_split: 0.25\n").data
        val_y = all_of(d.val)[1]
        assert len(val_y) == 50
        assert int((val_y == 1).sum()) == 10  # exactly the class share, whatever the seed


# -- task detection and targets ---------------------------------------------------------------------

def test_integer_targets_mean_classification(check):
    x = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    d = plan_for(check, "xy", {"xy": (x, np.arange(60) % 3)}).data
    assert (d.task, d.num_classes) == ("classification", 3)


def test_float_targets_mean_regression(check):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    plan = plan_for(check, "xy", {"xy": (x, rng.normal(size=60))})
    assert plan.data.task == "regression" and plan.data.num_outputs == 1 and plan.metric_key == "val_mae"


def test_task_can_be_forced(check):
    x = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    d = plan_for(check, "xy", {"xy": (x, (np.arange(60) % 3))}, "task: regression\n").data
    assert d.task == "regression" and all_of(d.train)[1].dtype == torch.float32


def test_string_labels_are_encoded(check):
    x = np.random.default_rng(0).normal(size=(90, 2)).astype(np.float32)
    labels = np.array(["cat", "dog", "eel"] * 30)
    d = plan_for(check, "xy", {"xy": (x, labels)}).data
    assert d.task == "classification" and d.num_classes == 3
    assert d.classes == ["cat", "dog", "eel"]
    y = torch.cat([all_of(d.train)[1], all_of(d.val)[1]])
    assert y.dtype == torch.int64 and sorted(set(y.tolist())) == [0, 1, 2]


def test_integer_labels_not_starting_at_zero_are_encoded(check):
    x = np.random.default_rng(0).normal(size=(90, 2)).astype(np.float32)
    d = plan_for(check, "xy", {"xy": (x, np.array([3, 7, 9] * 30))}).data
    assert d.num_classes == 3 and d.classes == [3, 7, 9]
    assert set(all_of(d.train)[1].tolist()) == {0, 1, 2}


def test_fractional_targets_with_classification_is_an_error(check):
    x = np.zeros((20, 2), dtype=np.float32)
    with pytest.raises(RecipeError, match="^" + re.escape(
            "task (line 3): the targets have fractional values; use task: regression") + "$"):
        plan_for(check, "xy", {"xy": (x, np.linspace(0, 1, 20))}, "task: classification\n")


# -- notebook data of every supported kind ----------------------------------------------------------

def _frame(n=120, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "size": rng.normal(size=n),
        "rooms": rng.integers(1, 6, size=n),
        "colour": rng.choice(["red", "green", "blue"], size=n),
        "price": rng.normal(size=n) * 10,
        "kind": rng.choice(["flat", "house"], size=n),
    })


def test_dataframe_with_target_and_categorical_column(check):
    frame = _frame()
    plan = plan_for(check, "df", {"df": frame.drop(columns=["kind"])}, "target: price\n")
    d = plan.data
    # size, rooms, and colour one-hot into 3 columns
    assert d.input_shape == (5,)
    assert d.task == "regression" and d.num_outputs == 1
    assert d.sizes["train"] + d.sizes["val"] == len(frame)
    raw = plan_for(check, "df", {"df": frame.drop(columns=["kind"])}, "target: price\nnormalize: none\n").data
    x = torch.cat([all_of(raw.train)[0], all_of(raw.val)[0]])
    one_hot = x[:, 2:]
    assert set(one_hot.unique().tolist()) == {0.0, 1.0} and torch.equal(one_hot.sum(1), torch.ones(len(x)))
    # each sample's 1 sits in its own colour's column
    counts = sorted(one_hot.sum(0).long().tolist())
    assert counts == sorted(frame["colour"].value_counts().tolist())
    assert sorted(x[:, 1].unique().tolist()) == sorted(float(v) for v in frame["rooms"].unique())


def test_dataframe_with_a_text_target_is_classification(check):
    d = plan_for(check, "df", {"df": _frame()}, "target: kind\n").data
    assert d.task == "classification" and d.classes == ["flat", "house"]
    assert d.input_shape == (6,)  # size, rooms, price, colour one-hot (3)


def test_dataframe_without_target_says_so(check):
    with pytest.raises(RecipeError, match="^" + re.escape(
            "target: 'df' is a DataFrame; say which column to predict with `target: COLUMN`") + "$"):
        plan_for(check, "df", {"df": _frame()})


def test_dataframe_with_an_unknown_target_column_suggests(check):
    with pytest.raises(RecipeError, match="^" + re.escape(
            "target (line 3): unknown column 'prise' — did you mean 'price'?") + "$"):
        plan_for(check, "df", {"df": _frame()}, "target: prise\n")


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_x_y_arrays_and_tensors(kind, check):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 2, 3)).astype(np.float32), np.arange(100) % 4
    if kind == "torch":
        x, y = torch.from_numpy(x), torch.from_numpy(y)
    d = plan_for(check, "xy", {"xy": (x, y)}).data
    assert d.input_shape == (2, 3) and d.num_classes == 4 and d.sizes == {"train": 80, "val": 20}


def test_x_y_of_different_lengths_names_the_mismatch(check):
    with pytest.raises(RecipeError, match="^" + re.escape("data (line 2): X has 10 samples but y has 9") + "$"):
        plan_for(check, "pair", {"pair": (np.zeros((10, 3), dtype=np.float32), np.zeros(9, dtype=np.int64))})


def test_an_unusable_object_is_refused(check):
    with pytest.raises(RecipeError, match=r"^data \(line 2\): 'thing' is of type int; expected a LightningDataModule, "
                                          r"a \(train, val\) pair of Datasets or DataLoaders, an \(X, y\) pair of "
                                          r"arrays, or a DataFrame with `target:`$"):
        plan_for(check, "thing", {"thing": 42})


def _tensor_split(n, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g) + shift, torch.randint(0, 3, (n,), generator=g)


def test_train_val_tensor_datasets_are_used_as_given(check):
    train, val = TensorDataset(*_tensor_split(90, 0)), TensorDataset(*_tensor_split(30, 1))
    d = plan_for(check, "pair", {"pair": (train, val)}).data
    assert d.sizes == {"train": 90, "val": 30} and d.num_classes == 3 and d.input_shape == (6,)


class ListDataset(Dataset):
    """A plain map-style Dataset, as a user would write one."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_train_val_plain_datasets(check):
    train, val = ListDataset(*_tensor_split(90, 0)), ListDataset(*_tensor_split(30, 1))
    d = plan_for(check, "pair", {"pair": (train, val)}, "batch_size: 16\n").data
    assert d.sizes == {"train": 90, "val": 30} and d.input_shape == (6,) and d.num_classes == 3
    assert d.steps_per_epoch == math.ceil(90 / 16)


def test_train_val_dataloaders_keep_their_batch_size_and_train(check, train):
    loaders = (DataLoader(TensorDataset(*_tensor_split(96, 0)), batch_size=32, shuffle=True),
               DataLoader(TensorDataset(*_tensor_split(40, 1)), batch_size=40))
    plan = plan_for(check, "loaders", {"loaders": loaders})
    assert not plan.data.in_memory
    assert plan.data.sizes == {"train": 96, "val": 40} and plan.data.steps_per_epoch == 3
    run = train("model: mlp(hidden=[8])\ndata: loaders\nepochs: 2\n", {"loaders": loaders})
    assert len(run.history) == 2 and run.history["val_loss"].notna().all()


def test_loader_normalisation_uses_training_batches_only(train):
    train_x, train_y = _tensor_split(200, 0, shift=5.0)
    val_x, val_y = _tensor_split(50, 1, shift=-5.0)
    loaders = (DataLoader(TensorDataset(train_x, train_y), batch_size=50),
               DataLoader(TensorDataset(val_x, val_y), batch_size=50))
    run = train("model: Seeing\ndata: loaders\nepochs: 1\n", {"loaders": loaders, "Seeing": seeing(6, 3)})
    assert np.allclose(run.normalization["mean"], train_x.mean(0).numpy(), atol=1e-5)
    assert np.allclose(run.normalization["std"], train_x.std(0).numpy(), atol=1e-5)
    trained_on, validated_on = run.model.inputs(True), run.model.inputs(False)[-50:]
    assert torch.allclose(trained_on.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(validated_on, (val_x - train_x.mean(0)) / train_x.std(0), atol=1e-5)


class Blobs(pl.LightningDataModule):
    def __init__(self):
        super().__init__()
        self.setup_calls = []

    def setup(self, stage=None):
        self.setup_calls.append(stage)
        self.train_set = TensorDataset(*_tensor_split(120, 0))
        self.val_set = TensorDataset(*_tensor_split(40, 1))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=40, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=40)


def test_lightning_datamodule(check, train):
    dm = Blobs()
    plan = plan_for(check, "dm", {"dm": dm})
    assert "fit" in dm.setup_calls
    d = plan.data
    assert (d.sizes["train"], d.sizes["val"]) == (120, 40) and d.input_shape == (6,) and d.num_classes == 3
    assert d.test is None
    run = train("model: mlp(hidden=[8])\ndata: dm\nepochs: 1\n", {"dm": Blobs()})
    assert len(run.history) == 1 and np.isfinite(run.history["val_loss"]).all()


# -- normalisation: checked on what the model really receives -------------------------------------------

class SeeingNet(nn.Module):
    """A small classifier that keeps every input batch it is given, with whether it was training."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        self.layer = nn.Sequential(nn.Flatten(), nn.Linear(features, classes))
        self.seen: list[tuple[bool, torch.Tensor]] = []

    def forward(self, x):
        self.seen.append((self.training, x.detach().clone()))
        return self.layer(x)

    def inputs(self, training: bool) -> torch.Tensor:
        return torch.cat([x for mode, x in self.seen if mode == training])


def seeing(features: int, classes: int):
    return lambda: SeeingNet(features, classes)


def raw_splits(check, data: str, namespace=None, extra: str = ""):
    """The same split (same seed) without normalisation: the raw training and validation inputs."""
    d = plan_for(check, data, namespace, extra + "normalize: none\n").data
    return all_of(d.train)[0], all_of(d.val)[0]


def test_normalize_auto_uses_training_statistics_for_images(check, train):
    raw_train, raw_val = raw_splits(check, "digits")
    run = train("model: Seeing\ndata: digits\nepochs: 1\n", {"Seeing": seeing(64, 10)})
    trained_on = run.model.inputs(True)
    assert trained_on.shape == raw_train.shape  # one epoch: every training sample once
    # the training split has mean 0 and std 1 per channel
    assert torch.allclose(trained_on.mean(dim=(0, 2, 3)), torch.zeros(1), atol=1e-4)
    assert torch.allclose(trained_on.std(dim=(0, 2, 3)), torch.ones(1), atol=1e-4)
    # validation inputs are normalised with the training statistics, not their own
    mean, std = raw_train.mean(), raw_train.std()
    validated_on = run.model.inputs(False)[-len(raw_val):]  # the last pass over the validation split
    assert torch.allclose(validated_on, (raw_val - mean) / std, atol=1e-5)
    assert not torch.allclose(validated_on, (raw_val - raw_val.mean()) / raw_val.std(), atol=1e-3)
    assert run.normalization["mean"] == pytest.approx([float(mean)], rel=1e-5)
    assert run.normalization["std"] == pytest.approx([float(std)], rel=1e-5)


def test_normalize_none_gives_the_raw_inputs(check, train):
    raw_train, raw_val = raw_splits(check, "digits")
    run = train("model: Seeing\ndata: digits\nepochs: 1\nnormalize: none\n", {"Seeing": seeing(64, 10)})
    assert torch.allclose(run.model.inputs(False)[-len(raw_val):], raw_val)
    assert torch.allclose(run.model.inputs(True).sum(0), raw_train.sum(0))  # same samples, shuffled
    assert run.normalization is None


def test_normalize_auto_per_channel_for_colour_images(train):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, 4, 4, generator=g) * torch.tensor([1.0, 5.0, 0.1]).reshape(1, 3, 1, 1) \
        + torch.tensor([0.0, 10.0, -3.0]).reshape(1, 3, 1, 1)
    y = torch.arange(200) % 2
    run = train("model: Seeing\ndata: xy\nepochs: 1\n", {"xy": (x, y), "Seeing": seeing(48, 2)})
    trained_on = run.model.inputs(True)
    assert len(trained_on) == 160
    assert torch.allclose(trained_on.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(trained_on.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)
    assert len(run.normalization["mean"]) == 3


def test_normalize_auto_per_feature_for_tables(check, train):
    raw_train, raw_val = raw_splits(check, "wine")
    run = train("model: Seeing\ndata: wine\nepochs: 1\n", {"Seeing": seeing(13, 3)})
    trained_on = run.model.inputs(True)
    assert torch.allclose(trained_on.mean(0), torch.zeros(13), atol=1e-4)
    assert torch.allclose(trained_on.std(0), torch.ones(13), atol=1e-4)
    expected = (raw_val - raw_train.mean(0)) / raw_train.std(0)
    assert torch.allclose(run.model.inputs(False)[-len(raw_val):], expected, atol=1e-4)


def test_normalize_given_mean_and_std(check, train):
    _, raw_val = raw_splits(check, "digits")
    run = train("model: Seeing\ndata: digits\nepochs: 1\nnormalize: {mean: [8.0], std: [4.0]}\n",
                {"Seeing": seeing(64, 10)})
    assert torch.allclose(run.model.inputs(False)[-len(raw_val):], (raw_val - 8.0) / 4.0)


def test_normalize_with_the_wrong_number_of_values(check):
    with pytest.raises(RecipeError, match="^" + re.escape(
            "normalize (line 3): normalize needs 13 means and stds (one per channel/feature), got 2 and 2") + "$"):
        plan_for(check, "wine", extra="normalize: {mean: [0, 1], std: [1, 1]}\n")


# -- the in-memory batches --------------------------------------------------------------------------

def _batches(n=100, batch_size=16, shuffle=True, seed=0):
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1)
    return TensorBatches(x, torch.arange(n) * 2, batch_size, shuffle, seed)


def test_tensor_batches_are_full_shuffled_and_cover_every_sample_once():
    batches = _batches()
    assert len(batches) == math.ceil(100 / 16)
    epoch = list(batches)
    assert [len(x) for x, _ in epoch] == [16] * 6 + [4]
    seen = torch.cat([x[:, 0] for x, _ in epoch]).long()
    assert sorted(seen.tolist()) == list(range(100))
    assert seen.tolist() != list(range(100))  # shuffled
    for x, y in epoch:  # inputs and targets stay paired
        assert torch.equal(y, x[:, 0].long() * 2)
    second = torch.cat([x[:, 0] for x, _ in batches]).long()
    assert sorted(second.tolist()) == list(range(100)) and second.tolist() != seen.tolist()  # new order each epoch


def test_tensor_batches_are_reproducible_by_seed():
    order = [torch.cat([x[:, 0] for x, _ in _batches(seed=s)]).tolist() for s in (5, 5, 6)]
    assert order[0] == order[1]
    assert order[0] != order[2]


def test_tensor_batches_without_shuffle_keep_the_order():
    seen = torch.cat([x[:, 0] for x, _ in _batches(shuffle=False)]).long().tolist()
    assert seen == list(range(100))


def test_builtin_training_batches_use_the_recipe_batch_size(check):
    d = plan_for(check, "iris", extra="batch_size: 32\n").data
    assert d.steps_per_epoch == math.ceil(d.sizes["train"] / 32)
    assert [len(x) for x, _ in d.train][:-1] == [32] * (d.steps_per_epoch - 1)


def test_a_notebook_variable_that_hides_a_builtin_dataset_says_so(check):
    from sklearn.datasets import load_digits

    with pytest.raises(RecipeError) as info:
        check("model: mlp\ndata: digits\n", {"digits": load_digits()})
    assert str(info.value).endswith(
        "; this notebook variable hides nbopt's built-in dataset 'digits' — rename the variable (or `del digits`) "
        "to use the built-in")
