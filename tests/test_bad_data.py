"""Bad data, impossible optimizer arguments and unusable precisions: one line before any training.

Each case is a reproduction from the issue, with the message a user now reads in full: the key, what
was found (counts, the first offending row and column) and what to do. Nothing here is mocked; the
data goes through `nbopt.check` or `nbopt.train` as a notebook would pass it.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from test_data import ListDataset
from torch.utils.data import DataLoader, TensorDataset

from nbopt import RecipeError

RECIPE = "model: mlp\ndata: xy\nepochs: 1\n"


@pytest.fixture
def xy():
    X = np.random.default_rng(0).normal(size=(200, 8)).astype("float32")
    return X, (X[:, 0] > 0).astype("int64")


def refused(check, message: str, namespace: dict, recipe: str = RECIPE) -> None:
    """`check` (or `train`) refuses the recipe with exactly `message`."""
    with pytest.raises(RecipeError, match="^" + re.escape(message) + "$"):
        check(recipe, namespace)


def table(xy) -> pd.DataFrame:
    X, y = xy
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    frame["label"] = y
    return frame


# -- non-finite and missing values ---------------------------------------------------------------------

def test_a_nan_input_is_refused_with_its_row_and_column(xy, train):
    X, y = xy
    X[5, 2] = np.nan
    refused(train, "data (line 2): X has 1 NaN value among 1,600, the first at row 5, column 2; fill or drop them "
                   "before training, as they make every loss NaN", {"xy": (X, y)})


def test_nan_and_infinite_inputs_are_counted_together(xy, check):
    X, y = xy
    X[7, 1], X[9, 0], X[3, 4] = np.inf, -np.inf, np.nan
    refused(check, "data (line 2): X has 1 NaN value and 2 infinite values among 1,600, the first at row 3, "
                   "column 4; fill or drop them before training, as they make every loss NaN", {"xy": (X, y)})


def test_a_nan_in_a_dataframe_feature_names_the_column(xy, check):
    frame = table(xy)
    frame.loc[11, "f3"] = np.nan
    refused(check, "data (line 2): 'xy' has 1 NaN value among 1,600, the first at row 11, column 'f3'; fill or "
                   "drop them before training, as they make every loss NaN", {"xy": frame}, RECIPE + "target: label\n")


def test_a_nan_in_a_dataframe_label_column_is_a_missing_target_not_regression(xy, check):
    frame = table(xy)
    frame["label"] = frame["label"].astype(float)
    frame.loc[7, "label"] = np.nan
    refused(check, "target (line 4): column 'label' has 1 missing value (None or NaN) among 200, the first at row 7; "
                   "drop those samples or fill them in before training", {"xy": frame}, RECIPE + "target: label\n")


def test_a_string_target_with_none_is_a_missing_target(xy, check):
    X, _ = xy
    labels = np.array(["cat", "dog"] * 100, dtype=object)
    labels[3] = None
    refused(check, "data (line 2): y has 1 missing value (None or NaN) among 200, the first at row 3; drop those "
                   "samples or fill them in before training", {"xy": (X, labels)})


def test_targets_mixing_text_and_numbers_say_where(xy, check):
    X, _ = xy
    labels = np.array(["cat", "dog"] * 100, dtype=object)
    labels[4] = 3
    refused(check, "data (line 2): y mixes text and numbers ('cat' at row 0, 3 at row 4); make them one type, "
                   "e.g. y.astype(str)", {"xy": (X, labels)})


def test_infinite_regression_targets_are_refused(xy, check):
    X, _ = xy
    y = X[:, 0] * 2 + X[:, 1]
    y[12] = np.inf
    refused(check, "data (line 2): y has 1 infinite value among 200, the first at row 12; replace or drop them "
                   "before training", {"xy": (X, y)})


def test_nan_inputs_in_dataloaders_are_refused(xy, check):
    X, y = (torch.from_numpy(a) for a in xy)
    X[1, 6] = float("nan")
    loaders = (DataLoader(TensorDataset(X[:150], y[:150]), batch_size=50),
               DataLoader(TensorDataset(X[150:], y[150:]), batch_size=50))
    refused(check, "data (line 2): the first training batch's X has 1 NaN value among 400, the first at row 1, "
                   "column 6; fill or drop them before training, as they make every loss NaN", {"xy": loaders})


# -- too little data ----------------------------------------------------------------------------------

def test_five_samples_of_two_classes_are_too_few_for_a_stratified_split(xy, check):
    X, y = xy
    refused(check, "data (line 2): 5 samples are too few to split: validation would get 1 and training 4, but each "
                   "needs at least 2 (one of each of the 2 classes, as the split is stratified); use more data (at "
                   "least 6 samples at this val_split) or a larger val_split", {"xy": (X[:5], y[:5])})


def test_a_test_split_too_small_for_the_classes_names_test_split(xy, check):
    X, y = xy
    refused(check, "data (line 2): 8 samples are too few to split: test would get 1 and training 7, but each needs "
                   "at least 2 (one of each of the 2 classes, as the split is stratified); use more data (at least "
                   "11 samples at this test_split) or a larger test_split",
            {"xy": (X[:8], np.array([0, 1] * 4))}, RECIPE + "test_split: 0.1\n")


def test_one_sample_and_no_samples_are_refused(xy, check):
    X, y = xy
    refused(check, "data (line 2): X has 1 sample; a run needs at least 2, one to train on and one to validate",
            {"xy": (X[:1], y[:1])})
    refused(check, "data (line 2): X has 0 samples; a run needs at least 2, one to train on and one to validate",
            {"xy": (X[:0], y[:0])})


def test_an_empty_validation_dataset_is_refused(xy, check):
    X, y = (torch.from_numpy(a) for a in xy)
    refused(check, "data (line 2): the validation Dataset is empty (0 samples); give it samples, or pass (X, y) "
                   "arrays and let val_split hold some out", {"xy": (TensorDataset(X, y), TensorDataset(X[:0], y[:0]))})


def test_an_empty_training_dataset_is_refused_not_a_finished_run(xy, train, runs_dir):
    X, y = (torch.from_numpy(a) for a in xy)
    refused(train, "data (line 2): the training Dataset is empty (0 samples); give it samples",
            {"xy": (TensorDataset(X[:0], y[:0]), TensorDataset(X, y))})
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_an_empty_plain_dataset_or_a_loader_without_batches_is_refused(xy, check):
    X, y = (torch.from_numpy(a) for a in xy)
    refused(check, "data (line 2): the training Dataset is empty (0 samples); give it samples",
            {"xy": (ListDataset(X[:0], y[:0]), ListDataset(X, y))})
    no_batches = DataLoader(ListDataset(X[:10], y[:10]), batch_size=16, drop_last=True)
    refused(check, "data (line 2): the validation data is empty (its DataLoader gives no batches); give it samples",
            {"xy": (DataLoader(ListDataset(X, y), batch_size=16), no_batches)})


def test_one_class_only_is_refused(xy, check):
    X, _ = xy
    refused(check, "data (line 2): the targets hold one class only (0) in all 200 samples; classification needs two "
                   "or more: check the labels, or use task: regression to predict a number",
            {"xy": (X, np.zeros(200, dtype=np.int64))})
    refused(check, "data (line 2): the targets hold one class only ('spam') in all 200 samples; classification "
                   "needs two or more: check the labels, or use task: regression to predict a number",
            {"xy": (X, np.array(["spam"] * 200))})


# -- the shape of the data ----------------------------------------------------------------------------

class DictItems(ListDataset):
    def __getitem__(self, i):
        return {"input": self.x[i], "target": self.y[i]}


def test_dataset_items_that_are_dicts_say_to_return_pairs(xy, check):
    X, y = (torch.from_numpy(a) for a in xy)
    refused(check, "data (line 2): the training batches are dicts (keys 'input', 'target'); nbopt takes (inputs, "
                   "targets) pairs: make the Dataset's __getitem__ return (x, y)",
            {"xy": (DictItems(X[:150], y[:150]), DictItems(X[150:], y[150:]))})


def test_one_dimensional_inputs_say_how_to_reshape(xy, check):
    X, y = xy
    refused(check, "data (line 2): X has shape [200]; give one row per sample, of shape [samples, features] "
                   "(X.reshape(-1, 1) for a single feature)", {"xy": (X[:, 0], y)})


def test_text_inputs_name_the_first_text(xy, check):
    X, y = xy
    mixed = X.astype(object)
    mixed[3, 1] = "n/a"
    refused(check, "data (line 2): X contains text (row 3, column 1: 'n/a'); convert it to numbers first",
            {"xy": (mixed, y)})


def test_numbers_in_an_object_array_are_numbers_not_text(xy, train):
    X, y = xy
    run = train(RECIPE, {"xy": (X.astype(object), y)})
    assert run.status == "finished" and np.isfinite(run.history["val_loss"]).all()


def test_one_hot_float_targets_are_classes(xy, check, train):
    X, _ = xy
    classes = np.arange(200) % 3
    onehot = np.eye(3, dtype=np.float32)[classes]
    data = check(RECIPE, {"xy": (X, onehot)}).data
    assert data.task == "classification" and data.num_classes == 3 and data.num_outputs == 3
    assert sorted(torch.cat([data.train.y, data.val.y]).tolist()) == sorted(classes.tolist())
    run = train(RECIPE, {"xy": (X, onehot)})
    assert "val_acc" in run.history and run.predict(X[:4]).shape == (4, 3)
    assert check(RECIPE + "task: regression\n", {"xy": (X, onehot)}).data.num_outputs == 3  # as asked


@pytest.mark.parametrize("labels, classes", [([3, 7, 9], [3, 7, 9]), (["cat", "dog", "eel"], ["cat", "dog", "eel"])])
def test_run_classes_map_each_output_to_its_original_label(xy, train, labels, classes):
    X, _ = xy
    y = np.array(labels)[np.arange(200) % 3]
    run = train(RECIPE, {"xy": (X, y)})
    assert run.classes == classes
    assert set(run.predict(X[:20], labels=True)) <= set(classes)


def test_tensor_dataset_splits_share_one_label_mapping(xy, check):
    X, _ = xy
    y = torch.tensor([3, 7, 9])[torch.arange(200) % 3]
    val_y = torch.full((40,), 9)  # only the last class: encoded alone it would become class 0
    data = check(RECIPE, {"xy": (TensorDataset(torch.from_numpy(X), y), TensorDataset(torch.zeros(40, 8), val_y))}).data
    assert data.classes == [3, 7, 9] and data.num_classes == 3
    assert set(data.val.y.tolist()) == {2}


def test_balance_weights_refuse_a_class_without_training_samples(xy, check):
    X, y = (torch.from_numpy(a) for a in xy)
    val_y = torch.arange(40) % 3  # class 2 only here
    refused(check, "balance (line 4): class 2 has no samples in the training split, so `weights` has nothing to weigh "
                   "it by (and a validation batch of it alone would score NaN); give it more samples, or use balance: "
                   "oversample", {"xy": (TensorDataset(X, y), TensorDataset(X[:40], val_y))},
            RECIPE + "balance: weights\n")


# -- the model, the optimizer and the precision -------------------------------------------------------

class NoParameters(nn.Module):
    def forward(self, x):
        return x[:, :2]


def test_a_model_with_no_parameters_is_refused(xy, check):
    refused(check, "model (line 1): 'net' has nothing to train: NoParameters has no parameters; give it a layer with "
                   "weights (nn.Linear, nn.Conv2d) or unfreeze them",
            {"xy": xy, "net": NoParameters()}, RECIPE.replace("mlp", "net"))


def test_a_model_with_only_frozen_parameters_is_refused(xy, check):
    net = nn.Linear(8, 2).requires_grad_(False)
    refused(check, "model (line 1): 'net' has nothing to train: its 18 parameters are all frozen "
                   "(requires_grad=False); give it a layer with weights (nn.Linear, nn.Conv2d) or unfreeze them",
            {"xy": xy, "net": net}, RECIPE.replace("mlp", "net"))


@pytest.mark.parametrize("optimizer, said, cls", [
    ("sgd(lr=-0.1)", "Invalid learning rate: -0.1", "SGD"),
    ("sgd(lr=0.1, momentum=-1)", "Invalid momentum value: -1", "SGD"),
    ("adam(betas=[0.9, 1.5])", "Invalid beta parameter at index 1: 1.5", "Adam"),
])
def test_optimizer_arguments_torch_refuses_are_recipe_errors(xy, train, runs_dir, optimizer, said, cls):
    refused(train, f"optimizer (line 4): {optimizer} cannot be built: torch says '{said}'; give that argument a "
                   f"valid value (see torch.optim.{cls})", {"xy": xy}, RECIPE + f"optimizer: {optimizer}\n")
    assert not runs_dir.exists() or not any(runs_dir.iterdir())  # refused before a run folder was made


@pytest.mark.parametrize("loss, said", [
    ("cross_entropy(label_smoothing=2)", "label_smoothing must be between 0.0 and 1.0. Got: 2"),
    ("cross_entropy(label_smoothing=-0.1)", "label_smoothing must be between 0.0 and 1.0. Got: -0.1"),
    ("huber(delta=0)", "huber_loss does not support non-positive values for delta."),
])
def test_loss_arguments_torch_refuses_are_recipe_errors(xy, train, runs_dir, loss, said):
    refused(train, f"loss (line 4): {loss} cannot be used: torch says '{said}'; give that argument a valid value",
            {"xy": xy}, RECIPE + f"loss: {loss}\n")
    assert not runs_dir.exists() or not any(runs_dir.iterdir())  # refused before a run folder was made


def test_every_optimizer_with_its_defaults_passes_check():
    from nbopt.recipe import parse_recipe
    from nbopt.techniques.optimizers import OPTIMIZERS
    for name in OPTIMIZERS.names():
        assert parse_recipe(f"model: mlp\ndata: iris\noptimizer: {name}\n").optimizer.name == name


@pytest.mark.parametrize("precision, weights", [("64-true", "float64"), ("64", "float64"), ("16-true", "float16"),
                                                ("bf16-true", "bfloat16")])
def test_precisions_that_change_the_weights_type_are_refused(xy, check, precision, weights):
    refused(check, f"precision (line 4): precision '{precision}' keeps the weights in {weights}, but nbopt scores, "
                   "predicts and saves runs in float32; use 32-true, or 16-mixed / bf16-mixed for speed (float32 "
                   "weights, faster on a GPU)", {"xy": xy}, RECIPE + f"precision: {precision}\n")


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_every_listed_precision_trains_and_predicts(xy, train, precision):
    from nbopt.recipe import PRECISIONS
    assert precision in PRECISIONS and not {"64-true", "16-true", "bf16-true"} & set(PRECISIONS)
    X, _ = xy
    run = train(RECIPE + f"precision: {precision}\n", {"xy": xy})
    assert run.status == "finished" and run.predict(X[:3]).dtype == torch.float32


# -- in a real kernel ---------------------------------------------------------------------------------

def test_the_kernel_shows_bad_data_as_one_line(kernel):
    setup = ("import numpy as np\nX = np.random.default_rng(0).normal(size=(200, 8)).astype('float32')\n"
             "y = (X[:, 0] > 0).astype('int64')\ngood_xy = (X.copy(), y)\nX[5, 2] = np.nan\nbad_xy = (X, y)\n")
    reply, outputs = kernel.execute(setup)
    assert reply["status"] == "ok", kernel.errors(outputs)
    for cell, shown in [
        ("data: bad_xy", "data (line 2): X has 1 NaN value among 1,600, the first at row 5, column 2; fill or drop "
                         "them before training, as they make every loss NaN"),
        ("data: good_xy\noptimizer: sgd(lr=-0.1)", "optimizer (line 3): sgd(lr=-0.1) cannot be built: torch says "
         "'Invalid learning rate: -0.1'; give that argument a valid value (see torch.optim.SGD)"),
    ]:
        reply, outputs = kernel.execute(f"%%nbopt train\nmodel: mlp\n{cell}\nepochs: 1\n")
        errors = kernel.errors(outputs)
        assert reply["status"] == "error" and len(errors) == 1
        assert len(errors[0]["traceback"]) == 1, errors[0]["traceback"]
        assert re.sub(r"\x1b\[[0-9;]*m", "", errors[0]["traceback"][0]) == f"RecipeError: {shown}"
