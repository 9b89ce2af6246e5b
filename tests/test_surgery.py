"""`batchnorm:`, `dropout:` and `activation:` — where the new layers go, and that they act in training."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nbopt
from nbopt import RecipeError


def check(recipe, namespace=None):
    return nbopt.check(recipe, {} if namespace is None else namespace)


def train(recipe, namespace=None):
    return nbopt.train(recipe, {} if namespace is None else namespace, live=False)


def layout(seq: nn.Sequential) -> list[str]:
    """Each layer as its printed line inside the Sequential, e.g. 'BatchNorm1d(16)' or 'Dropout(p=0.3)'."""
    out = []
    for module in seq:
        name = type(module).__name__
        if isinstance(module, nn.Linear):
            out.append(f"Linear({module.in_features}, {module.out_features})")
        elif isinstance(module, nn.Conv2d):
            out.append(f"Conv2d({module.in_channels}, {module.out_channels})")
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            out.append(f"{name}({module.num_features})")
        elif isinstance(module, nn.Dropout):
            out.append(f"Dropout({module.p})")
        elif isinstance(module, nn.LeakyReLU):
            out.append(f"LeakyReLU({module.negative_slope})")
        else:
            out.append(name)
    return out


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.fc = nn.Linear(cin, cout)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x))


class Nested(nn.Module):
    """A user's model: a custom block, a Sequential inside, and a head."""

    def __init__(self):
        super().__init__()
        self.block = Block(13, 16)
        self.body = nn.Sequential(nn.Linear(16, 8), nn.Tanh())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.body(self.block(x)))


class Functional(nn.Module):
    """Activations called as functions: invisible to module surgery."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(13, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


# -- batchnorm ------------------------------------------------------------------------------------------------

def test_batchnorm_in_mlp_after_every_hidden_linear_and_before_its_activation():
    plan = check("model: mlp(hidden=[16, 8])\ndata: wine\nbatchnorm: true\n")
    assert layout(plan.model.net) == ["Flatten", "Linear(13, 16)", "BatchNorm1d(16)", "ReLU", "Linear(16, 8)",
                                      "BatchNorm1d(8)", "ReLU", "Linear(8, 3)"]
    printed = str(plan.model.net)
    assert "(2): BatchNorm1d(16," in printed and "(5): BatchNorm1d(8," in printed
    assert "BatchNorm after 2 layer(s)" in plan.surgery


def test_batchnorm_in_cnn_after_every_conv_but_not_after_the_output_layer():
    plan = check("model: cnn(width=4)\ndata: digits\nbatchnorm: true\n")
    assert layout(plan.model.net) == ["Conv2d(1, 4)", "BatchNorm2d(4)", "ReLU", "MaxPool2d", "Conv2d(4, 8)",
                                      "BatchNorm2d(8)", "ReLU", "MaxPool2d", "Flatten", "Linear(32, 10)"]
    assert "(1): BatchNorm2d(4," in str(plan.model.net)


def test_batchnorm_in_a_nested_custom_model():
    namespace = {"net": Nested()}
    plan = check("model: net\ndata: wine\nbatchnorm: true\n", namespace)
    net = plan.model.net
    assert isinstance(net.block.fc, nn.Sequential)
    assert layout(net.block.fc) == ["Linear(13, 16)", "BatchNorm1d(16)"]
    assert isinstance(net.block.act, nn.ReLU)  # the activation still comes after: fc(x) then act
    assert layout(net.body) == ["Linear(16, 8)", "BatchNorm1d(8)", "Tanh"]
    assert isinstance(net.head, nn.Linear)  # the output layer is left alone
    # the notebook's own model is untouched
    assert not any(isinstance(m, nn.BatchNorm1d) for m in namespace["net"].modules())


def test_inserted_batchnorm_is_used_in_training():
    run = train("model: mlp(hidden=[16])\ndata: wine\nbatchnorm: true\nepochs: 1\nbatch_size: 32\n")
    norms = [m for m in run.model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(norms) == 1
    assert norms[0].num_batches_tracked.item() > 0
    assert not torch.allclose(norms[0].running_mean, torch.zeros(16))


def test_resnet_already_normalised_gets_no_extra_batchnorm():
    before = check("model: resnet(depth=8, width=4)\ndata: digits\n")
    after = check("model: resnet(depth=8, width=4)\ndata: digits\nbatchnorm: true\n")
    count = lambda net: sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # noqa: E731
    assert count(after.model.net) == count(before.model.net)
    assert str(after.model.net) == str(before.model.net)
    assert after.surgery == ["batchnorm: the model already normalises every layer"]


def test_batchnorm_works_for_a_model_with_functional_activations():
    plan = check("model: net\ndata: wine\nbatchnorm: true\n", {"net": Functional()})
    assert layout(plan.model.net.fc1) == ["Linear(13, 16)", "BatchNorm1d(16)"]
    assert isinstance(plan.model.net.fc2, nn.Linear)


# -- dropout --------------------------------------------------------------------------------------------------

def test_dropout_after_each_hidden_activation():
    plan = check("model: mlp(hidden=[16, 8])\ndata: wine\ndropout: 0.3\n")
    assert layout(plan.model.net) == ["Flatten", "Linear(13, 16)", "ReLU", "Dropout(0.3)", "Linear(16, 8)", "ReLU",
                                      "Dropout(0.3)", "Linear(8, 3)"]
    assert "Dropout(0.3) after 2 activation(s)" in plan.surgery


def test_dropout_in_cnn_and_in_a_nested_model():
    plan = check("model: cnn(width=4)\ndata: digits\ndropout: 0.25\n")
    assert layout(plan.model.net) == ["Conv2d(1, 4)", "ReLU", "Dropout(0.25)", "MaxPool2d", "Conv2d(4, 8)", "ReLU",
                                      "Dropout(0.25)", "MaxPool2d", "Flatten", "Linear(32, 10)"]
    net = check("model: net\ndata: wine\ndropout: 0.3\n", {"net": Nested()}).model.net
    assert layout(net.block.act) == ["ReLU", "Dropout(0.3)"]
    assert layout(net.body) == ["Linear(16, 8)", "Tanh", "Dropout(0.3)"]


def test_dropout_acts_in_training_mode_only():
    net = check("model: mlp(hidden=[64])\ndata: wine\ndropout: 0.5\n").model.net
    x = torch.randn(32, 13)
    net.train()
    torch.manual_seed(0)
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


def test_batchnorm_dropout_and_activation_together_in_order():
    plan = check("model: mlp(hidden=[16, 8])\ndata: wine\nbatchnorm: true\ndropout: 0.3\n"
                 "activation: leaky_relu(0.2)\n")
    assert layout(plan.model.net) == ["Flatten", "Linear(13, 16)", "BatchNorm1d(16)", "LeakyReLU(0.2)",
                                      "Dropout(0.3)", "Linear(16, 8)", "BatchNorm1d(8)", "LeakyReLU(0.2)",
                                      "Dropout(0.3)", "Linear(8, 3)"]


# -- activation -----------------------------------------------------------------------------------------------

def test_activation_gelu_replaces_every_activation():
    plan = check("model: mlp(hidden=[16, 8])\ndata: wine\nactivation: gelu\n")
    kinds = [type(m) for m in plan.model.net.modules() if not isinstance(m, (nn.Sequential, nn.Linear, nn.Flatten))]
    assert kinds == [nn.GELU, nn.GELU]
    assert "activation → gelu (2 swapped)" in plan.surgery


def test_activation_leaky_relu_slope_in_a_nested_model():
    plan = check("model: net\ndata: wine\nactivation: leaky_relu(0.2)\n", {"net": Nested()})
    net = plan.model.net
    assert isinstance(net.block.act, nn.LeakyReLU) and net.block.act.negative_slope == 0.2
    assert isinstance(net.body[1], nn.LeakyReLU) and net.body[1].negative_slope == 0.2
    assert not any(isinstance(m, (nn.ReLU, nn.Tanh)) for m in net.modules())
    out = net.block(torch.full((1, 13), -1.0))
    pre = net.block.fc(torch.full((1, 13), -1.0))
    assert torch.allclose(out, torch.where(pre > 0, pre, 0.2 * pre))


def test_activation_in_a_cnn_and_in_resnet_blocks():
    net = check("model: resnet(depth=8, width=4)\ndata: digits\nactivation: silu\n").model.net
    kinds = {type(m) for m in net.modules()}
    assert nn.SiLU in kinds and nn.ReLU not in kinds


def test_unknown_activation_suggests():
    with pytest.raises(RecipeError, match=re.escape("unknown activation 'gleu' — did you mean 'gelu'?")):
        check("model: mlp\ndata: wine\nactivation: gleu\n")


# -- functional activations are reported, not silently ignored -------------------------------------------------

FUNCTIONAL = ("the model has no activation modules to change (it probably calls functions such as F.relu in "
              "forward, which nbopt cannot see); use nn.ReLU() etc. as layers, or set {key} in the model's own code")


@pytest.mark.parametrize("key, value", [("dropout", "0.3"), ("activation", "gelu")])
def test_functional_activations_give_a_recipe_error(key, value, runs_dir):
    with pytest.raises(RecipeError, match=re.escape(f"{key}: " + FUNCTIONAL.format(key=key))):
        recipe = {"model": "net", "data": "wine", key: float(value) if key == "dropout" else value}
        nbopt.train(recipe, {"net": Functional()}, live=False)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


@pytest.mark.parametrize("key, value", [("dropout", "0.3"), ("activation", "gelu")])
def test_functional_activation_error_names_the_line(key, value):
    """The contract: a recipe error names the key and the line."""
    with pytest.raises(RecipeError, match=re.escape(f"{key} (line 4): the model has no activation modules")):
        check(f"model: net\ndata: wine\nepochs: 1\n{key}: {value}\n", {"net": Functional()})
