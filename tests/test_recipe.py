"""Recipe parsing: what a user writes in the cell, and the one-line message they get for a mistake."""
from __future__ import annotations

import re

import pytest
import torch
from IPython.core.error import UsageError

from nbopt import RecipeError
from nbopt.components import Component
from nbopt.recipe import KNOWN_KEYS, parse_recipe
from nbopt.techniques.optimizers import OPTIMIZERS, build_optimizer
from nbopt.yamltext import load_yaml

BASE = "model: mlp\ndata: digits\n"  # lines 1 and 2; the line under test is line 3


def recipe(extra: str = ""):
    return parse_recipe(BASE + extra)


def fails(text: str, message: str):
    """The recipe fails with exactly this message (key and line included)."""
    with pytest.raises(RecipeError, match="^" + re.escape(message) + "$") as info:
        parse_recipe(text)
    return info.value


# -- the error type ----------------------------------------------------------------------------------

def test_recipe_error_is_an_ipython_usage_error():
    assert issubclass(RecipeError, UsageError)
    error = fails(BASE + "optimizer: adma\n", "optimizer (line 3): unknown optimizer 'adma' — did you mean 'adam'?")
    assert isinstance(error, UsageError)
    assert (error.key, error.line) == ("optimizer", 3)
    assert "\n" not in str(error)


# -- components: three equivalent forms ------------------------------------------------------------

def _optimizer_settings(component: Component) -> dict:
    opt = build_optimizer(component, [torch.nn.Parameter(torch.zeros(2))])
    return {k: v for k, v in opt.param_groups[0].items() if k != "params"}


def test_signature_text_is_read_from_torch():
    text = OPTIMIZERS.entries["sgd"].signature_text()
    assert text.startswith("sgd(lr=0.001, momentum=0, dampening=0, weight_decay=0, nesterov=False")


def test_three_component_forms_are_equivalent():
    bare = recipe("optimizer: adam\n").optimizer
    call = recipe("optimizer: adam(lr=1e-3)\n").optimizer
    mapping = recipe("optimizer: {name: adam, lr: 1e-3}\n").optimizer
    block = recipe("optimizer:\n  name: adam\n  lr: 1e-3\n").optimizer
    assert call == mapping == block == Component("adam", (), {"lr": 0.001})
    assert bare == Component("adam")
    # the bare name means the optimizer's defaults, and adam's default lr is 1e-3: all build the same thing
    assert _optimizer_settings(bare) == _optimizer_settings(call) == _optimizer_settings(mapping)
    assert _optimizer_settings(call)["lr"] == 0.001


def test_default_optimizer_is_adam():
    assert recipe().optimizer == Component("adam")


@pytest.mark.parametrize("text, value", [("1e-3", 0.001), ("3e-4", 0.0003), (".5", 0.5), ("1E-2", 0.01),
                                         ("2.5e-3", 0.0025), ("-1e-1", -0.1)])
def test_numbers_in_usual_forms_are_floats(text, value):
    data, _ = load_yaml(f"x: {text}\n")
    assert isinstance(data["x"], float) and data["x"] == pytest.approx(value)
    # the same number inside call form and mapping form (dampening: torch refuses a negative lr, as check does)
    assert recipe(f"optimizer: sgd(dampening={text})\n").optimizer.kwargs["dampening"] == pytest.approx(value)
    mapping = recipe(f"optimizer: {{name: sgd, dampening: {text}}}\n").optimizer
    assert mapping.kwargs["dampening"] == pytest.approx(value)


def test_top_level_floats_are_numbers():
    r = recipe("grad_clip: 1e-3\nval_split: .25\n")
    assert r.grad_clip == pytest.approx(0.001) and isinstance(r.grad_clip, float)
    assert r.val_split == pytest.approx(0.25)


def test_call_form_positional_arguments_lists_and_words():
    sgd = recipe("optimizer: sgd(0.1, momentum=0.9, nesterov=true)\n").optimizer
    assert sgd == Component("sgd", (0.1,), {"momentum": 0.9, "nesterov": True})
    settings = _optimizer_settings(sgd)
    assert (settings["lr"], settings["momentum"], settings["nesterov"]) == (0.1, 0.9, True)

    adam = recipe("optimizer: adam(lr=3e-4, betas=[0.9, 0.99])\n").optimizer
    assert adam.kwargs == {"lr": 0.0003, "betas": [0.9, 0.99]}
    assert tuple(_optimizer_settings(adam)["betas"]) == (0.9, 0.99)


def test_flow_list_of_calls_with_commas():
    r = parse_recipe(BASE + "epochs: 10\nscheduler: [warmup(epochs=2, start_factor=0.5), cosine]\n")
    assert r.scheduler == [Component("warmup", (), {"epochs": 2, "start_factor": 0.5}), Component("cosine")]
    r = parse_recipe(BASE + "epochs: 10\nscheduler: [warmup(epochs=2), cosine]\n")
    assert [s.name for s in r.scheduler] == ["warmup", "cosine"]
    assert r.scheduler[0].kwargs == {"epochs": 2}


def test_single_scheduler_becomes_a_one_item_list():
    assert recipe("scheduler: step(step_size=2, gamma=0.5)\n").scheduler == [
        Component("step", (), {"step_size": 2, "gamma": 0.5})]
    assert recipe().scheduler == []


def test_component_round_trips_through_its_text():
    component = recipe("optimizer: sgd(lr=0.1, momentum=0.9, nesterov=true)\n").optimizer
    assert recipe(f"optimizer: {component.to_text()}\n").optimizer == component


def test_unquoted_folder_and_file_names_in_call_form_are_text():
    from nbopt.components import ComponentSyntaxError, parse_component
    assert parse_component("images(path=digit-images, size=[32, 32])").kwargs == {"path": "digit-images",
                                                                                 "size": [32, 32]}
    assert parse_component("csv(path=data/train.csv)").kwargs == {"path": "data/train.csv"}
    with pytest.raises(ComponentSyntaxError, match=r"cannot read the argument '0.001 - 0.0001'"):
        parse_component("adam(lr=1e-3-1e-4)")  # arithmetic is not a name, and not silently text


def test_raw_keeps_what_the_user_wrote():
    r = recipe("optimizer: adam(lr=1e-3)\nepochs: 3\n")
    assert r.raw == {"model": "mlp", "data": "digits", "optimizer": "adam(lr=1e-3)", "epochs": 3}


def test_a_dict_recipe_is_accepted():
    r = parse_recipe({"model": "mlp", "data": "digits", "optimizer": "sgd(lr=0.1)", "epochs": 2})
    assert r.optimizer == Component("sgd", (), {"lr": 0.1}) and r.epochs == 2


def test_defaults():
    r = recipe()
    assert (r.val_split, r.test_split, r.batch_size, r.epochs, r.seed, r.normalize) == (0.2, 0.0, 64, 10, 0, "auto")
    assert r.early_stopping is None and r.loss is None


def test_early_stopping_true_means_defaults():
    r = recipe("early_stopping: true\n")
    assert (r.early_stopping.monitor, r.early_stopping.patience) == ("val_loss", 5)
    assert recipe("early_stopping: {monitor: val_acc, patience: 2}\n").early_stopping.patience == 2


# -- errors: every message pinned ------------------------------------------------------------------

ERRORS = {
    "unknown key with a suggestion": (
        BASE + "epocs: 3\n", "epocs (line 3): unknown recipe key 'epocs' — did you mean 'epochs'?"),
    "unknown key without a close match": (
        BASE + "zzzqqq: 3\n",
        "zzzqqq (line 3): unknown recipe key 'zzzqqq'; valid keys: " + ", ".join(KNOWN_KEYS)),
    "unknown optimizer": (
        BASE + "optimizer: adma\n", "optimizer (line 3): unknown optimizer 'adma' — did you mean 'adam'?"),
    "unknown optimizer in mapping form": (
        BASE + "epochs: 2\noptimizer: {name: sdg, lr: 0.1}\n",
        "optimizer (line 4): unknown optimizer 'sdg' — did you mean 'sgd'?"),
    "bad argument name": (
        BASE + "optimizer: adam(lrr=1)\n", "optimizer (line 3): adam has no argument 'lrr' — did you mean 'lr'?"),
    "too many positional arguments": (
        BASE + "optimizer: sgd(0.1, 0.9)\n",
        "optimizer (line 3): sgd takes 1 positional argument(s) (lr), got 2; write them as name=value: "
        + OPTIMIZERS.entries["sgd"].signature_text()),
    "unreadable call": (
        BASE + "optimizer: adam(lr=\n", "optimizer (line 3): cannot read 'adam(lr='; write `name` or `name(arg=value, ...)`"),
    "mapping component without name": (
        BASE + "optimizer: {lr: 0.1}\n",
        "optimizer (line 3): a mapping component needs a `name:` entry, e.g. {name: adam, lr: 1e-3}"),
    "negative batch size": (
        BASE + "batch_size: -3\n", "batch_size (line 3): must be greater than or equal to 1, got -3"),
    "zero epochs": (BASE + "epochs: 0\n", "epochs (line 3): must be greater than or equal to 1, got 0"),
    "val_split out of range": (BASE + "val_split: 1.5\n", "val_split (line 3): must be less than 1, got 1.5"),
    "splits leave nothing to train": (
        BASE + "val_split: 0.5\ntest_split: 0.4\n",
        "val_split (line 3): val_split + test_split = 0.90 leaves too little to train on; keep their sum below 0.9"),
    "wrong task literal": (
        BASE + "task: classify\n", "task (line 3): must be 'classification' or 'regression', got 'classify'"),
    "duplicate key": (BASE + "epochs: 3\nepochs: 4\n", "epochs (line 4): this key is given twice; keep one"),
    "invalid YAML": (
        "model: mlp\n  data: digits\n", "recipe (line 2): the recipe is not valid YAML: mapping values are not allowed here"),
    "not a mapping": (
        "- mlp\n- digits\n", "recipe (line 1): the recipe must be a YAML mapping of `key: value` lines, e.g. `model: mlp`"),
    "empty recipe": ("", "the recipe is empty; it needs at least `model:` and `data:`"),
    "missing model": ("data: digits\nepochs: 2\n", "model: the recipe needs `model:` (e.g. `model: mlp`)"),
    "missing data": ("model: mlp\nepochs: 2\n", "data: the recipe needs `data:` (e.g. `data: digits`)"),
    "lr at top level": (
        BASE + "lr: 0.01\n", "lr (line 3): `lr` is an optimizer argument; write it there, e.g. `optimizer: adam(lr=0.01)`"),
    "learning_rate at top level": (
        BASE + "learning_rate: 0.01\n",
        "learning_rate (line 3): `learning_rate` is an optimizer argument; write it there, e.g. "
        "`optimizer: adam(lr=0.01)`"),
    "variants belongs to compare": (
        BASE + "variants:\n  fast: {epochs: 2}\n", "variants (line 3): `variants:` belongs in a %%nbopt compare cell, not here"),
    "search belongs to sweep": (
        BASE + "search:\n  optimizer.lr: [0.1, 0.01]\n",
        "search (line 3): `search:` belongs in a %%nbopt sweep cell, not here"),
    "unknown early_stopping setting": (
        BASE + "early_stopping: {monitor: val_loss, patiense: 3}\n",
        "early_stopping.patiense (line 3): unknown setting 'patiense'; allowed: monitor, patience, min_delta, mode"),
    "unknown precision": (
        BASE + "precision: bf16-mix\n", "precision (line 3): unknown precision 'bf16-mix' — did you mean 'bf16-mixed'?"),
    "unknown scheduler": (
        BASE + "scheduler: cosin\n", "scheduler (line 3): unknown scheduler 'cosin' — did you mean 'cosine'?"),
    "warmup as long as the run": (
        BASE + "epochs: 3\nscheduler: [warmup(epochs=3), cosine]\n",
        "scheduler (line 4): warmup takes 3 epochs but the run has only 3; shorten the warmup or raise epochs"),
    "schedule sequence without warmup first": (
        BASE + "scheduler: [cosine, step]\n",
        "scheduler (line 3): in a sequence every schedule but the last must be warmup(epochs=N), got cosine"),
    "unknown loss": (
        BASE + "loss: crossentropy\n", "loss (line 3): unknown loss 'crossentropy' — did you mean 'cross_entropy'?"),
    "bad loss argument": (
        BASE + "loss: cross_entropy(smoothing=0.1)\n",
        "loss (line 3): cross_entropy has no argument 'smoothing' — did you mean 'label_smoothing'?"),
}


@pytest.mark.parametrize("text, message", ERRORS.values(), ids=ERRORS.keys())
def test_error_messages(text, message):
    error = fails(text, message)
    assert isinstance(error, UsageError)
    assert "\n" not in str(error), "a RecipeError is one line"


def test_an_unclosed_list_points_at_the_recipe():
    with pytest.raises(RecipeError, match=r"^recipe \(line [23]\): the recipe is not valid YAML: ") as info:
        parse_recipe("model: mlp\ndata: [digits\n")
    assert info.value.key == "recipe"


def test_not_a_recipe_at_all():
    with pytest.raises(RecipeError, match=re.escape("a recipe is YAML text or a dict, got int")):
        parse_recipe(42)


def test_errors_are_found_without_touching_data(check):
    """A typo costs nothing: the optimizer error comes before a dataset is even looked at."""
    with pytest.raises(RecipeError, match=re.escape("optimizer (line 3): unknown optimizer 'adma'")):
        check("model: mlp\ndata: no_such_dataset\noptimizer: adma\n")
