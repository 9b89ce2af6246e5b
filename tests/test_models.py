"""`model:` — built-ins sized from the data, notebook modules/classes/factories, and a user's LightningModule."""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from nbopt import RecipeError
from nbopt.models.builtin import MODELS


def outputs(plan, n=5) -> torch.Tensor:
    x = plan.data.val.x[:n]
    with torch.no_grad():
        return plan.model.net.eval()(x)


# -- built-ins ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["mlp", "mlp(hidden=[16, 8])", "cnn(width=4)", "resnet(depth=8, width=4)"])
@pytest.mark.parametrize("data, classes", [("digits", 10), ("synthetic(n=200, shape=[3, 8, 8], classes=4)", 4)])
def test_builtin_models_size_themselves_from_the_data(model, data, classes, check):
    plan = check(f"model: {model}\ndata: {data}\n")
    out = outputs(plan)
    assert out.shape == (5, classes)
    first = next(m for m in plan.model.net.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    expected_in = 64 if model.startswith("mlp") and data == "digits" else (192 if model.startswith("mlp") else None)
    if expected_in is not None:
        assert first.in_features == expected_in
    else:
        assert first.in_channels == plan.data.input_shape[0]


def test_mlp_on_tabular_data(check):
    plan = check("model: mlp(hidden=[32, 16])\ndata: wine\n")
    widths = [m.out_features for m in plan.model.net.modules() if isinstance(m, nn.Linear)]
    assert widths == [32, 16, 3]
    assert plan.parameters == sum(p.numel() for p in plan.model.net.parameters())


def test_builtin_regression_model_has_one_output(check):
    plan = check("model: mlp(hidden=[8])\ndata: synthetic(n=100, classes=0)\n")
    assert outputs(plan).shape == (5, 1)


def test_cnn_width_argument(check):
    plan = check("model: cnn(width=8, depth=2)\ndata: digits\n")
    convs = [m.out_channels for m in plan.model.net.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [8, 16]


def test_cnn_on_tabular_data_is_a_recipe_error(check):
    message = ("model (line 1): cnn needs images (channels, height, width) but the data has samples of shape [13]; "
               "use mlp for tabular data")
    with pytest.raises(RecipeError, match="^" + re.escape(message) + "$"):
        check("model: cnn\ndata: wine\n")


def test_unknown_builtin_model_suggests(check):
    names = ", ".join(MODELS.names())
    message = (f"model (line 1): 'mpl' is neither a notebook variable nor a built-in model ({names}) — "
               "did you mean 'mlp'?")
    with pytest.raises(RecipeError, match="^" + re.escape(message) + "$"):
        check("model: mpl\ndata: digits\n")


def test_bad_builtin_argument_suggests(check):
    with pytest.raises(RecipeError, match="^" + re.escape(
            "model (line 1): mlp has no argument 'hiden' — did you mean 'hidden'?") + "$"):
        check("model: mlp(hiden=[8])\ndata: digits\n")


def test_same_seed_same_initial_weights(check):
    def weights(seed):
        return check(f"model: mlp(hidden=[8])\ndata: iris\nseed: {seed}\n").model.net.state_dict()

    a, b, c = weights(1), weights(1), weights(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# -- the notebook's own models ------------------------------------------------------------------------

class MyNet(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.hidden = hidden
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.body(x)


def test_a_notebook_instance_is_copied_and_left_unchanged(train):
    torch.manual_seed(0)
    net = MyNet(hidden=16)
    before = copy.deepcopy(net.state_dict())
    run = train("model: net\ndata: digits\nepochs: 2\noptimizer: adam(lr=0.01)\n", {"net": net})
    assert run.model is not net
    assert isinstance(run.model, MyNet)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the notebook's model was changed"
    trained = run.model.state_dict()
    assert not all(torch.equal(before[k], trained[k]) for k in before), "the run did not train"
    # a second run starts from the same weights the notebook holds: identical history
    again = train("model: net\ndata: digits\nepochs: 2\noptimizer: adam(lr=0.01)\n", {"net": net})
    assert again.history["train_loss"].tolist() == run.history["train_loss"].tolist()


def test_a_class_is_called_with_the_recipe_arguments(train):
    run = train("model: MyNet(hidden=16)\ndata: digits\nepochs: 1\n", {"MyNet": MyNet})
    assert isinstance(run.model, MyNet) and run.model.hidden == 16
    assert run.metrics["parameters"] == sum(p.numel() for p in MyNet(hidden=16).parameters())
    plain = train("model: MyNet\ndata: digits\nepochs: 1\n", {"MyNet": MyNet})
    assert plain.model.hidden == 32


def test_a_factory_is_called_afresh(train):
    calls = []

    def make_net():
        calls.append(1)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    run = train("model: make_net\ndata: digits\nepochs: 1\n", {"make_net": make_net})
    assert len(calls) == 1
    assert isinstance(run.model, nn.Sequential) and run.model[1].out_features == 10
    train("model: make_net\ndata: digits\nepochs: 1\n", {"make_net": make_net})
    assert len(calls) == 2


def test_a_class_called_with_a_wrong_argument(check):
    pattern = (r"^model \(line 1\): calling 'MyNet' to build the model failed: .*unexpected keyword argument 'hiden'"
               r".*; it is called as MyNet\(hidden: '?int'? = 32\), give arguments in the recipe like "
               r"`model: MyNet\(hidden=64\)`$")
    with pytest.raises(RecipeError, match=pattern):
        check("model: MyNet(hiden=16)\ndata: digits\n", {"MyNet": MyNet})


def test_an_instance_given_arguments_is_refused(check):
    with pytest.raises(RecipeError, match="^" + re.escape(
            "model (line 1): 'net' is a model instance, not a class; write `model: net`") + "$"):
        check("model: net(hidden=3)\ndata: digits\n", {"net": MyNet()})


def test_a_factory_returning_something_else(check):
    with pytest.raises(RecipeError, match="^" + re.escape(
            "model (line 1): 'make' returned str, not an nn.Module") + "$"):
        check("model: make\ndata: digits\n", {"make": lambda: "net"})


def test_output_width_not_matching_the_classes_fails_before_training(train, runs_dir):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    message = ("model (line 1): the model outputs shape [5] per sample but the data has 10 classes; "
               "make its last layer output 10 values")
    with pytest.raises(RecipeError, match="^" + re.escape(message) + "$"):
        train("model: net\ndata: digits\nepochs: 1\n", {"net": net})
    assert not runs_dir.exists() or not any(runs_dir.iterdir()), "nothing is trained or recorded"


def test_a_model_that_cannot_take_the_inputs(check):
    net = nn.Linear(13, 10)
    with pytest.raises(RecipeError, match=r"^model \(line 1\): the model cannot take this data's inputs of shape "
                                          r"\[8, 1, 8, 8\]: .+$") as info:
        check("model: net\ndata: digits\n", {"net": net})
    assert "\n" not in str(info.value)


def test_regression_output_width_mismatch(check):
    net = nn.Linear(20, 3)
    with pytest.raises(RecipeError, match="^" + re.escape(
            "model (line 1): the model outputs 3 values per sample but there are 1 target(s)") + "$"):
        check("model: net\ndata: synthetic(n=100, classes=0)\n", {"net": net})


# -- a user's own LightningModule ---------------------------------------------------------------------

class OwnSteps(pl.LightningModule):
    """Trains with its own steps and its own optimizer (SGD, lr 0.05) unless the recipe says otherwise."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.training_steps = 0

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.training_steps += 1
        loss = F.cross_entropy(self(x), y)
        self.log("own_train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        self.log("val_loss", F.cross_entropy(out, y))
        self.log("val_acc", (out.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_own_lightning_module_trains_with_its_own_steps_and_optimizer(train, check):
    module = OwnSteps()
    run = train("model: module\ndata: digits\nepochs: 2\n", {"module": module})
    steps = check("model: mlp\ndata: digits\n").data.steps_per_epoch
    assert isinstance(run.model, OwnSteps) and run.model is not module
    assert run.model.training_steps == 2 * steps
    assert module.training_steps == 0  # the notebook's object is untouched
    assert run.history["lr"].tolist() == pytest.approx([0.05, 0.05])  # its own configure_optimizers
    assert "own_train_loss" in run.history.columns and run.history["own_train_loss"].notna().all()
    assert list(run.history.columns[:6]) == ["epoch", "train_loss", "val_loss", "val_acc", "lr", "seconds"]
    assert run.status == "finished" and "val_acc" in run.metrics


def test_recipe_optimizer_overrides_the_modules_own(train):
    run = train("model: module\ndata: digits\nepochs: 2\noptimizer: adam(lr=0.003)\n", {"module": OwnSteps()})
    assert run.history["lr"].tolist() == pytest.approx([0.003, 0.003])
    assert type(run.model.trainer.optimizers[0]).__name__ == "Adam"


def test_recipe_scheduler_applies_to_the_module(train):
    run = train("model: module\ndata: digits\nepochs: 3\noptimizer: sgd(lr=0.1)\n"
                "scheduler: step(step_size=1, gamma=0.5)\n", {"module": OwnSteps()})
    assert run.history["lr"].tolist() == pytest.approx([0.1, 0.05, 0.025])


def test_own_lightning_module_best_weights_and_checkpoint(train):
    run = train("model: module\ndata: digits\nepochs: 2\n", {"module": OwnSteps()})
    saved = torch.load(run.checkpoint, weights_only=True)
    current = run.model.state_dict()
    assert set(saved) == set(current)
    assert all(torch.equal(saved[k], current[k]) for k in saved)
    assert run.metrics["best_epoch"] == int(np.argmin(run.history["val_loss"])) + 1


class NoValidation(OwnSteps):
    validation_step = pl.LightningModule.validation_step


def test_own_lightning_module_without_validation_step_is_refused_before_training(check):
    with pytest.raises(RecipeError) as info:
        check("model: module\ndata: digits\n", {"module": NoValidation()})
    assert str(info.value) == (
        "model (line 1): your LightningModule NoValidation has no validation_step; nbopt validates every epoch to "
        "keep the best weights, so define validation_step and log val_loss in validation_step "
        "(self.log('val_loss', loss))")


class FlattensWithView(nn.Module):
    """A conv net written the old way: `.view()` on the conv output, which NHWC tensors cannot take."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 16 * 16, 4)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.head(h.view(h.size(0), -1))


def test_conv_nets_train_in_channels_last_layout_unless_the_model_cannot(train):
    data = "data: synthetic(n=300, shape=[1, 16, 16], classes=4)\nepochs: 1\n"
    builtin = train("model: cnn(width=8)\n" + data)
    weight = builtin.model[3].weight  # conv 8 → 16: its NHWC layout differs from the usual one
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    viewing = train("model: FlattensWithView\n" + data, {"FlattensWithView": FlattensWithView})
    assert viewing.status == "finished" and viewing.model.conv.weight.is_contiguous()
    assert 0 <= viewing.metrics["val_acc"] <= 1
