"""``%nbopt panel`` without a browser: the state of real ipywidgets, in a real IPython shell.

Controls ↔ recipe round trips, which controls are enabled for which data, errors in the panel, and
the buttons: Train and Compare with last run in a background thread (the tests join it), Stop ends a
long run cleanly, As cell writes a ``%%nbopt train`` cell that trains the same recipe.
"""
from __future__ import annotations

import html
import re
import signal
import threading
import time

import pytest
from IPython.core.error import UsageError

import nbopt
from nbopt import RecipeError
from nbopt.recipe import parse_recipe
from nbopt.run import Run
from nbopt.components import parse_component
from nbopt.techniques.augment import IMAGE_ONLY as IMAGE_AUGMENTATIONS
from nbopt.widgets.choices import AUGMENT_LABELS
from nbopt.widgets.panel import BUILTIN_DATA, BUILTIN_MODELS, Panel

TINY = {"model": "mlp(hidden=[8])", "data": "iris", "epochs": 2, "batch_size": 32,
        "optimizer": "adam(lr=0.01)"}
LONG = {"model": "mlp(hidden=[32])", "data": "synthetic(n=3000, shape=[20], classes=3)", "epochs": 100,
        "batch_size": 16, "optimizer": "adam(lr=0.001)"}
IMAGE_ONLY = {label for label in AUGMENT_LABELS if parse_component(label).name in IMAGE_AUGMENTATIONS}
FOR_TABLES = set(AUGMENT_LABELS) - IMAGE_ONLY
TRAINABLE = {  # many controls set at once, and still quick to train
    "model": "mlp(hidden=[16])", "data": "df", "target": "price", "task": "regression", "epochs": 3,
    "batch_size": 16, "seed": 7, "optimizer": "sgd(lr=0.01, momentum=0.9)",
    "scheduler": ["warmup(epochs=2)", "cosine"], "early_stopping": {"monitor": "val_loss", "patience": 3},
    "augment": ["noise(0.05)"], "batchnorm": True, "dropout": 0.1, "activation": "gelu", "grad_clip": 1.0}
JOIN_TIMEOUT = 180  # seconds; two shared cores


# -- fixtures and helpers ---------------------------------------------------------------------------

NOTEBOOK_CODE = """
import numpy as np, pandas as pd, torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    def forward(self, x):
        return self.layers(x)

net = Net()
xy = (np.random.default_rng(0).normal(size=(60, 4)).astype('float32'), np.arange(60) % 3)
images = (np.zeros((40, 1, 8, 8), dtype='float32'), np.arange(40) % 2)
df = pd.DataFrame({'a': np.arange(40.0), 'b': np.arange(40.0) ** 0.5, 'price': np.arange(40.0) * 2})
number, words, a_list = 3, 'text', [1, 2, 3]
def helper():
    return 1
"""
NOTEBOOK_VARIABLES = {"Net", "net", "xy", "images", "df", "number", "words", "a_list", "helper"}


@pytest.fixture
def notebook(ip):
    """The shell with a few notebook variables of every kind the panel looks for (and some it ignores)."""
    result = ip.run_cell(NOTEBOOK_CODE)
    assert result.success, result.error_in_exec
    return ip


@pytest.fixture
def open_panel(ip):
    """``%nbopt panel [VAR]`` in the real shell; returns the Panel it left in ``panel``.

    Whatever a test leaves running is stopped afterwards, so a failure cannot leave a thread training."""
    opened: list[Panel] = []

    def _open(variable: str = "") -> Panel:
        result = ip.run_cell(f"%nbopt panel {variable}".strip())
        assert result.success, result.error_in_exec or result.error_before_exec
        panel = ip.user_ns["panel"]
        assert isinstance(panel, Panel)
        opened.append(panel)
        return panel

    yield _open
    for panel in opened:
        if panel.thread is not None and panel.thread.is_alive():
            panel.stop()
            panel.thread.join(JOIN_TIMEOUT)


def finish(panel: Panel) -> None:
    """Wait for the panel's background work; it must not have failed with a traceback."""
    assert panel.thread is not None, "the button started no background work"
    panel.thread.join(JOIN_TIMEOUT)
    assert not panel.thread.is_alive(), f"the panel's work did not finish within {JOIN_TIMEOUT}s"
    assert panel.output.outputs == (), "the panel showed a traceback:\n" + "".join(
        o.get("text", "") for o in panel.output.outputs)
    assert panel.buttons["Stop"].disabled, "Stop is still enabled after the work ended"


def shown_text(value: str) -> str:
    """The text an HTML widget shows (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", value))


def control_values(panel: Panel) -> dict:
    """Every control's value, as a user sees the panel."""
    values = {name: getattr(panel, name).value for name in (
        "model", "data", "target", "task", "epochs", "batch_size", "seed", "optimizer", "lr", "scheduler",
        "early_stopping", "patience", "normalize", "batchnorm", "dropout", "activation", "prune_method",
        "prune_amount", "teacher")}
    values["augment"] = {name: box.value for name, box in panel.augment.items()}
    return values


# -- options from the notebook ----------------------------------------------------------------------

def test_options_list_the_notebooks_variables_and_the_builtins(notebook, open_panel):
    panel = open_panel()
    models, data = list(panel.model.options), list(panel.data.options)
    assert {"net", "Net"} <= set(models), "an nn.Module instance and an nn.Module class are models"
    assert {"xy", "images", "df"} <= set(data), "(X, y) pairs and DataFrames are data"
    assert models[-len(BUILTIN_MODELS):] == BUILTIN_MODELS, "the built-in models come after the variables"
    assert data[-len(BUILTIN_DATA):] == BUILTIN_DATA, "the built-in data sets come after the variables"
    others = NOTEBOOK_VARIABLES - {"Net", "net", "xy", "images", "df"}
    assert not others & set(models) and not others & set(data), "variables of other kinds are offered"
    assert not any(name.startswith("_") for name in models + data)
    assert "net" in panel.teacher.options and panel.teacher.options[0] == "none"


def test_a_panel_without_variables_offers_the_builtins():
    panel = Panel({})
    assert list(panel.model.options) == BUILTIN_MODELS and list(panel.data.options) == BUILTIN_DATA
    recipe = panel.to_recipe()
    assert recipe["model"] == "mlp" and recipe["data"] == "digits"
    parse_recipe(recipe)  # the untouched panel makes a valid recipe


def test_the_controls_offer_what_the_code_accepts():
    """Every built-in, optimizer, activation, augmentation, prune method and sampler the recipe and the sweep
    accept is offered, and every offered augmentation makes a valid recipe."""
    from nbopt.data.builtin import DATASETS
    from nbopt.models.builtin import MODELS
    from nbopt.recipe import Prune
    from nbopt.sweeps import SAMPLERS
    from nbopt.techniques.activations import ACTIVATIONS
    from nbopt.techniques.augment import AUGMENTATIONS
    from nbopt.techniques.optimizers import OPTIMIZERS
    panel = Panel({})
    assert BUILTIN_MODELS == list(MODELS.entries)
    # every built-in data set but those read from a file (a path is written in a recipe, not picked)
    assert BUILTIN_DATA == [name for name in DATASETS.entries if name not in ("images", "csv", "parquet")]
    assert set(panel.optimizer.options) == set(OPTIMIZERS.names())
    assert set(panel.activation.options) == {"keep", *ACTIVATIONS.names()}
    assert {parse_component(label).name for label in panel.augment} == set(AUGMENTATIONS.names())
    assert set(panel.prune_method.options) == {"none", *Prune.model_fields["method"].annotation.__args__}
    assert set(panel.sampler.options) == set(SAMPLERS) and panel.sampler.value == "tpe"
    for label in panel.augment:
        parse_recipe({"model": "mlp", "data": "digits", "augment": [label]})
    for schedule in panel.scheduler.options[1:]:  # the curated examples are valid schedules
        parse_recipe(f"model: mlp\ndata: digits\nscheduler: {schedule}\n")


# -- controls ↔ recipe ------------------------------------------------------------------------------

FULL = {
    "model": "mlp(hidden=[16])", "data": "df", "target": "price", "task": "regression", "epochs": 3,
    "batch_size": 32, "seed": 7, "optimizer": "sgd(lr=0.05, momentum=0.9, nesterov=true)",
    "scheduler": ["warmup(epochs=2)", "cosine"], "early_stopping": {"monitor": "val_loss", "patience": 3},
    "normalize": "none", "augment": ["mixup(0.2)", "scale(0.1)", "noise(0.1)"], "batchnorm": True,
    "dropout": 0.2, "activation": "leaky_relu(0.1)",
    "prune": {"method": "l1_unstructured", "amount": 0.7, "schedule": "gradual", "finetune": 1},
    "distill": {"teacher": "net", "temperature": 2.0, "alpha": 0.5},
    "grad_clip": 1.0, "accumulate": 2, "loss": "huber", "val_split": 0.25,
}


def test_recipe_to_controls_to_recipe_keeps_every_key(notebook):
    panel = Panel(notebook.user_ns, FULL)
    assert panel.model.value == "mlp(hidden=[16])" and panel.data.value == "df"
    assert panel.target.value == "price" and not panel.target.disabled
    assert panel.task.value == "regression"
    assert (panel.epochs.value, panel.batch_size.value, panel.seed.value) == (3, 32, 7)
    assert panel.optimizer.value == "sgd" and panel.lr.value == pytest.approx(0.05)
    assert panel.scheduler.value == "[warmup(epochs=2), cosine]"
    assert panel.early_stopping.value and panel.patience.value == 3 and not panel.patience.disabled
    assert panel.normalize.value == "none"
    assert panel.augment["mixup(0.2)"].value and panel.augment["noise(0.1)"].value
    assert not any(box.value for name, box in panel.augment.items() if name not in FOR_TABLES)
    assert panel.batchnorm.value and panel.dropout.value == pytest.approx(0.2)
    assert panel.activation.value == "leaky_relu(0.1)"
    assert panel.prune_method.value == "l1_unstructured" and panel.prune_amount.value == pytest.approx(0.7)
    assert not panel.prune_amount.disabled
    assert panel.teacher.value == "net"

    recipe = panel.to_recipe()
    assert recipe == FULL
    assert list(recipe["augment"]) == FULL["augment"], "the order of augmentations changed"
    assert parse_recipe(recipe) == parse_recipe(FULL)
    # and through the YAML text of the cell
    assert Panel(notebook.user_ns, panel.cell().partition("\n")[2]).to_recipe() == FULL


def test_controls_to_recipe_to_controls(notebook):
    panel = Panel(notebook.user_ns)
    panel.model.value = "net"
    panel.data.value = "xy"
    panel.task.value = "classification"
    panel.epochs.value = 4
    panel.batch_size.value = 128
    panel.seed.value = 3
    panel.optimizer.value = "rmsprop"
    panel.lr.value = 3e-3
    panel.scheduler.value = "[warmup(epochs=2), cosine]"
    panel.early_stopping.value = True
    panel.patience.value = 2
    panel.normalize.value = "none"
    panel.augment["mixup(0.2)"].value = True
    panel.augment["noise(0.1)"].value = True  # newly checked boxes are written in the panel's order
    panel.batchnorm.value = True
    panel.dropout.value = 0.3
    panel.activation.value = "gelu"
    panel.prune_method.value = "random_unstructured"
    panel.prune_amount.value = 0.4
    panel.teacher.value = "net"
    before = control_values(panel)

    recipe = panel.to_recipe()
    assert recipe == {
        "model": "net", "data": "xy", "task": "classification", "epochs": 4, "batch_size": 128, "seed": 3,
        "optimizer": "rmsprop(lr=0.003)", "scheduler": ["warmup(epochs=2)", "cosine"],
        "early_stopping": {"monitor": "val_loss", "patience": 2}, "normalize": "none",
        "augment": ["noise(0.1)", "mixup(0.2)"], "batchnorm": True, "dropout": 0.3, "activation": "gelu",
        "prune": {"method": "random_unstructured", "amount": 0.4}, "distill": {"teacher": "net"}}
    parsed = parse_recipe(recipe)  # the panel writes valid recipes
    assert [c.to_text() for c in parsed.scheduler] == ["warmup(epochs=2)", "cosine"]

    again = Panel(notebook.user_ns, recipe)
    after = control_values(again)
    assert after.pop("lr") == pytest.approx(before.pop("lr"))
    assert after == before
    assert again.to_recipe() == recipe
    assert parse_recipe(again.to_recipe()) == parsed


@pytest.mark.parametrize("overrides, control, shown", [
    ({"model": "Net"}, "model", "Net"),
    ({"data": "xy"}, "data", "xy"),
    ({"data": "df", "target": "price"}, "target", "price"),
    ({"task": "regression"}, "task", "regression"),
    ({"epochs": 17}, "epochs", 17),
    ({"batch_size": 48}, "batch_size", 48),  # not one of the dropdown's sizes: added to it
    ({"seed": 11}, "seed", 11),
    ({"optimizer": "adamw(lr=0.0003, weight_decay=0.01)"}, "optimizer", "adamw"),
    ({"optimizer": "adagrad(lr=0.02)"}, "lr", pytest.approx(0.02)),
    ({"scheduler": "step(step_size=10, gamma=0.5)"}, "scheduler", "step(step_size=10, gamma=0.5)"),
    ({"scheduler": ["warmup(epochs=2)", "cosine"]}, "scheduler", "[warmup(epochs=2), cosine]"),
    ({"scheduler": "exponential(gamma=0.9)"}, "scheduler", "exponential(gamma=0.9)"),
    ({"early_stopping": {"monitor": "val_loss", "patience": 4}}, "patience", 4),
    ({"normalize": "none"}, "normalize", "none"),
    ({"augment": ["rotate(15)", "hflip", "translate(0.2)", "vflip"]}, "augment",
     {"rotate(15)": True, "hflip": True, "vflip": True}),
    ({"batchnorm": True}, "batchnorm", True),
    ({"dropout": 0.35}, "dropout", pytest.approx(0.35)),
    ({"activation": "silu"}, "activation", "silu"),
    ({"activation": "leaky_relu(0.2)"}, "activation", "leaky_relu(0.2)"),
    ({"prune": {"method": "channels", "amount": 0.5}}, "prune_method", "channels"),
    ({"prune": {"method": "l1_unstructured", "amount": 0.8, "schedule": "gradual", "finetune": 3}},
     "prune_amount", pytest.approx(0.8)),
    ({"distill": {"teacher": "net", "temperature": 4, "alpha": 0.7}}, "teacher", "net"),
    ({"grad_clip": 0.5, "accumulate": 4, "lr_find": True, "test_split": 0.1}, None, None),
])
def test_each_key_round_trips(notebook, overrides, control, shown):
    base = {"model": "mlp", "data": "digits", "epochs": 10, "batch_size": 64, "optimizer": "adam(lr=0.001)"}
    recipe = {**base, **overrides}
    panel = Panel(notebook.user_ns, recipe)
    if control == "augment":
        assert {name: box.value for name, box in panel.augment.items() if box.value} == shown
    elif control is not None:
        assert getattr(panel, control).value == shown
    assert panel.to_recipe() == recipe
    assert parse_recipe(panel.to_recipe()) == parse_recipe(recipe)


def test_optimizer_arguments_other_than_lr_are_kept_when_the_lr_changes(notebook):
    panel = Panel(notebook.user_ns, {**TINY, "optimizer": "sgd(lr=0.1, momentum=0.9, nesterov=true)"})
    panel.lr.value = 0.02
    assert panel.to_recipe()["optimizer"] == "sgd(lr=0.02, momentum=0.9, nesterov=true)"
    assert parse_recipe(panel.to_recipe()).optimizer.kwargs == {"lr": 0.02, "momentum": 0.9, "nesterov": True}


def test_augmentations_keep_their_order_and_ones_without_a_checkbox(notebook):
    recipe = {**TINY, "data": "digits", "augment": ["rotate(15)", "scale(0.1)", "hflip", "translate(0.2)"]}
    panel = Panel(notebook.user_ns, recipe)
    assert panel.to_recipe()["augment"] == recipe["augment"]
    panel.augment["vflip"].value = True  # a newly checked one goes last
    assert panel.to_recipe()["augment"] == recipe["augment"] + ["vflip"]
    panel.augment["hflip"].value = False  # an unchecked one goes; the rest keep their places
    assert panel.to_recipe()["augment"] == ["rotate(15)", "scale(0.1)", "translate(0.2)", "vflip"]
    for name in ("rotate(15)", "vflip"):
        panel.augment[name].value = False
    assert panel.to_recipe()["augment"] == ["scale(0.1)", "translate(0.2)"], "augmentations without a box dropped"


def test_settings_the_panel_has_no_control_for_are_kept(notebook):
    recipe = {**TINY, "early_stopping": {"monitor": "val_acc", "patience": 2, "min_delta": 0.01},
              "normalize": {"mean": [0.5], "std": [0.25]}, "distill": {"teacher": "net", "temperature": 3.0},
              "quantize": "dynamic", "precision": "32-true", "name": "kept"}
    panel = Panel(notebook.user_ns, recipe)
    assert panel.early_stopping.value and panel.patience.value == 2
    assert panel.to_recipe() == recipe
    assert parse_recipe(panel.to_recipe()) == parse_recipe(recipe)


def test_opening_a_recipe_replaces_the_previous_one(notebook):
    panel = Panel(notebook.user_ns, FULL)
    panel.from_recipe(TINY)
    assert panel.to_recipe() == TINY, "settings of the recipe opened before leaked into the next one"


def test_components_written_as_mappings_round_trip(notebook):
    """The contract's third form of a component, `{name: ..., arg: ...}`, is as good as the other two."""
    recipe = {**TINY, "data": "digits", "scheduler": {"name": "step", "step_size": 5, "gamma": 0.5},
              "activation": {"name": "leaky_relu", "negative_slope": 0.2},
              "augment": [{"name": "rotate", "degrees": 10}, "hflip"]}
    panel = Panel(notebook.user_ns, recipe)
    assert parse_recipe(panel.to_recipe()) == parse_recipe(recipe)


def test_values_beyond_a_sliders_range_are_kept(notebook):
    """A Run trained for 300 epochs, or with lr 2.0, opens in the panel and writes the same cell back."""
    recipe = {**TINY, "epochs": 300, "optimizer": "sgd(lr=2.0)", "dropout": 0.9,
              "prune": {"method": "l1_unstructured", "amount": 0.98}}
    panel = Panel(notebook.user_ns, recipe)
    assert panel.to_recipe() == recipe


def test_the_cell_is_block_style_yaml(notebook):
    """As cell writes one key per line, as a person writes a recipe — also for a short recipe."""
    text = Panel(notebook.user_ns, TINY).cell()
    assert text.splitlines() == ["%%nbopt train", "model: mlp(hidden=[8])", "data: iris", "epochs: 2",
                                 "batch_size: 32", "optimizer: adam(lr=0.01)"]


# -- which controls apply ---------------------------------------------------------------------------

def test_image_augmentations_are_disabled_for_tabular_data(notebook):
    panel = Panel(notebook.user_ns)
    panel.data.value = "digits"
    assert not any(box.disabled for box in panel.augment.values())
    panel.augment["hflip"].value = True
    panel.augment["noise(0.1)"].value = True
    for tabular in ("wine", "df", "xy"):
        panel.data.value = tabular
        assert {n for n, box in panel.augment.items() if box.disabled} == IMAGE_ONLY, tabular
        assert {n for n, box in panel.augment.items() if not box.disabled} == FOR_TABLES, tabular
    assert not panel.augment["hflip"].value, "a disabled augmentation stayed checked"
    assert panel.augment["noise(0.1)"].value
    assert panel.to_recipe()["augment"] == ["noise(0.1)"]
    panel.data.value = "images"  # an (X, y) pair of image tensors
    assert not any(box.disabled for box in panel.augment.values())


def test_target_column_is_enabled_only_for_a_dataframe(notebook):
    panel = Panel(notebook.user_ns)
    for name in ("digits", "wine", "xy"):
        panel.data.value = name
        assert panel.target.disabled, name
    panel.data.value = "df"
    assert not panel.target.disabled
    panel.target.value = "price"
    assert panel.to_recipe()["target"] == "price"
    panel.data.value = "wine"
    assert panel.target.disabled and "target" not in panel.to_recipe()


def test_patience_and_prune_amount_follow_their_switches():
    panel = Panel({})
    assert panel.patience.disabled and panel.prune_amount.disabled
    panel.early_stopping.value = True
    panel.prune_method.value = "channels"
    assert not panel.patience.disabled and not panel.prune_amount.disabled
    assert panel.to_recipe()["prune"] == {"method": "channels", "amount": 0.5}


# -- errors -----------------------------------------------------------------------------------------

def test_an_invalid_combination_shows_the_same_one_line_error_as_check(notebook, open_panel, runs_dir):
    panel = open_panel()
    panel.model.value = "cnn"
    panel.data.value = "wine"
    panel.epochs.value = 1
    with pytest.raises(RecipeError) as raised:
        nbopt.check(panel.to_recipe(), notebook.user_ns)
    panel.buttons["Train"].click()
    finish(panel)
    shown = shown_text(panel.error.value)
    assert shown == f"RecipeError: {raised.value}"
    assert "\n" not in shown and "Traceback" not in shown
    assert panel.result is None and "run" not in notebook.user_ns
    assert not runs_dir.exists() or not any(runs_dir.iterdir()), "a run folder was made for a broken recipe"


def test_a_dataframe_without_target_is_an_error_in_the_panel(notebook, open_panel):
    panel = open_panel()
    panel.model.value = "mlp"
    panel.data.value = "df"
    with pytest.raises(RecipeError) as raised:
        nbopt.check(panel.to_recipe(), notebook.user_ns)
    panel.buttons["Train"].click()
    finish(panel)
    assert shown_text(panel.error.value) == f"RecipeError: {raised.value}"
    assert "target" in str(raised.value)


def test_a_broken_recipe_does_not_open_a_panel(ip):
    ip.user_ns["broken"] = {"model": "mlp", "data": "digits", "optimizer": "adma"}
    result = ip.run_cell("%nbopt panel broken")
    assert isinstance(result.error_in_exec, RecipeError)
    assert "did you mean 'adam'" in str(result.error_in_exec)
    result = ip.run_cell("%nbopt panel no_such_variable")
    assert isinstance(result.error_in_exec, UsageError) and "no_such_variable" in str(result.error_in_exec)


# -- the buttons ------------------------------------------------------------------------------------

def test_train_runs_in_a_thread_and_shows_the_run_in_the_panel(notebook, open_panel):
    panel = open_panel()
    panel.from_recipe(TINY)
    panel.buttons["Train"].click()
    assert panel.thread is not None and panel.thread is not threading.main_thread()
    assert panel.thread.is_alive(), "Train blocked until the training ended"
    assert not panel.buttons["Stop"].disabled
    finish(panel)

    run = panel.result
    assert isinstance(run, Run) and run.status == "finished"
    assert notebook.user_ns["run"] is run and nbopt.last is run
    assert run.recipe.raw == TINY and run.metrics["epochs_run"] == 2
    assert f"nbopt run '{html.escape(run.name)}'" in panel.status.value
    assert "epochs run" in panel.status.value
    assert panel.figure.value[:8] == b"\x89PNG\r\n\x1a\n" and panel.figure.layout.display == ""
    assert panel.error.value == ""
    assert not panel.buttons["Compare with last"].disabled
    assert run.name in panel.teacher.options, "a finished run is offered as a teacher"


def test_stop_ends_a_long_train_quickly_without_keyboard_interrupt(notebook, open_panel):
    handler_before = signal.getsignal(signal.SIGINT)
    panel = open_panel()
    panel.from_recipe(LONG)
    panel.buttons["Train"].click()
    deadline = time.monotonic() + JOIN_TIMEOUT
    while "val_loss" not in panel.status.value:  # the first epoch is done
        assert panel.thread.is_alive(), "training ended before Stop was pressed"
        assert time.monotonic() < deadline, "training never finished its first epoch"
        time.sleep(0.05)
    pressed = time.monotonic()
    panel.buttons["Stop"].click()
    panel.thread.join(JOIN_TIMEOUT)
    assert time.monotonic() - pressed < 30, "Stop took more than 30 s"
    finish(panel)

    run = panel.result
    assert isinstance(run, Run), "the stopped run was lost"
    assert run.status == "interrupted" and 1 <= run.metrics["epochs_run"] < LONG["epochs"]
    assert "Interrupted after" in shown_text(panel.status.value)
    assert panel.error.value == ""
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_stop_without_a_run_does_nothing(open_panel):
    panel = open_panel()
    panel.buttons["Stop"].click()
    assert panel.result is None and panel.error.value == ""


def test_compare_with_last_makes_a_comparison(notebook, open_panel):
    from nbopt.comparison import Comparison
    panel = open_panel()
    panel.from_recipe(TINY)
    assert panel.buttons["Compare with last"].disabled, "nothing to compare with yet"
    panel.buttons["Train"].click()
    finish(panel)
    first = panel.result
    panel.lr.value = 0.05
    panel.buttons["Compare with last"].click()
    finish(panel)

    comparison = panel.result
    assert isinstance(comparison, Comparison) and notebook.user_ns["comparison"] is comparison
    assert list(comparison.runs) == ["last", "current"]
    assert comparison.runs["last"].recipe.raw == first.recipe.raw == TINY
    assert parse_recipe(comparison.runs["current"].recipe.raw).optimizer.kwargs["lr"] == pytest.approx(0.05)
    assert len(comparison.table) == 2
    assert panel.figure.value[:4] == b"\x89PNG"
    assert "last" in shown_text(panel.status.value) and "current" in shown_text(panel.status.value)


def test_a_second_click_while_running_says_so(notebook, open_panel):
    panel = open_panel()
    panel.from_recipe(LONG)
    panel.buttons["Train"].click()
    first = panel.thread
    panel.buttons["Train"].click()
    assert panel.thread is first and "still running" in panel.error.value
    panel.buttons["Stop"].click()
    finish(panel)


def test_as_cell_shows_the_cell_text(notebook, open_panel):
    panel = open_panel()
    panel.from_recipe(TINY)
    panel.buttons["As cell"].click()
    assert panel.cell_text.value == panel.cell()
    assert panel.cell_text.layout.display != "none"


def test_the_cell_trains_the_same_recipe(notebook, open_panel):
    panel = open_panel()
    panel.from_recipe(TINY)
    panel.lr.value = 0.02
    panel.epochs.value = 3
    text = panel.cell()
    assert text.startswith("%%nbopt train\n")

    result = notebook.run_cell(text)
    assert result.success, result.error_in_exec
    from_cell = notebook.user_ns["run"]
    assert isinstance(from_cell, Run) and from_cell.status == "finished"
    assert from_cell.recipe.raw == panel.to_recipe()
    assert parse_recipe(from_cell.recipe.raw) == parse_recipe(panel.to_recipe())
    assert from_cell.metrics["epochs_run"] == 3

    panel.buttons["Train"].click()  # the same recipe from the button: the same training
    finish(panel)
    from_button = panel.result
    assert from_button.history["val_loss"].tolist() == pytest.approx(from_cell.history["val_loss"].tolist(),
                                                                     rel=1e-4)


def test_panel_from_a_run_is_lossless(notebook, open_panel):
    first = open_panel()
    first.from_recipe(TRAINABLE)
    recipe = first.to_recipe()
    assert recipe == TRAINABLE
    assert notebook.run_cell(first.cell()).success

    second = open_panel("run")
    assert second is not first
    assert second.to_recipe() == recipe
    assert second.cell() == first.cell()
    assert control_values(second) == control_values(first)


@pytest.mark.parametrize("kind", ["dict", "yaml", "recipe"])
def test_panel_from_a_recipe_variable(ip, open_panel, kind):
    ip.user_ns["r"] = {"dict": dict(TINY), "yaml": Panel({}, TINY).cell().partition("\n")[2],
                       "recipe": parse_recipe(TINY)}[kind]
    assert open_panel("r").to_recipe() == TINY
