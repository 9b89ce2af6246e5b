"""Built-in models that size themselves from the data: input shape in, one output per class/target."""
from __future__ import annotations

import math

from torch import nn

from nbopt.components import parse_component
from nbopt.registry import Registry
from nbopt.techniques.activations import build_activation

MODELS = Registry("model", "built-in model")
_SKIP = ("input_shape", "num_outputs")
IMAGE_MODELS = {"cnn", "resnet"}


@MODELS.register("mlp", "fully connected network; flattens any input", ("hidden",), _SKIP)
def mlp(input_shape, num_outputs, hidden: list = (128, 64), activation: str = "relu"):
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for size in hidden:
        layers += [nn.Linear(width, int(size)), build_activation(parse_component(activation))]
        width = int(size)
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


@MODELS.register("cnn", "small ConvNet: `depth` conv+pool blocks doubling from `width` channels, then a linear head",
                 ("width",), _SKIP)
def cnn(input_shape, num_outputs, width: int = 16, depth: int = 2, activation: str = "relu"):
    channels, height, breadth = input_shape
    layers: list[nn.Module] = []
    for i in range(depth):
        out = width * 2 ** i
        layers += [nn.Conv2d(channels, out, 3, padding=1), build_activation(parse_component(activation))]
        if min(height, breadth) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, breadth = height // 2, breadth // 2
        channels = out
    layers += [nn.Flatten(), nn.Linear(channels * height * breadth, num_outputs)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with BatchNorm and a shortcut, as in He et al. 2016."""

    def __init__(self, cin: int, cout: int, stride: int, activation: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = build_activation(parse_component(activation))
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = build_activation(parse_component(activation))
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + self.shortcut(x))


@MODELS.register("resnet", "CIFAR-style ResNet of depth 6n+2 (8, 14, 20, ...) with 3 stages from `width` channels",
                 ("depth",), _SKIP)
def resnet(input_shape, num_outputs, depth: int = 8, width: int = 16, activation: str = "relu"):
    blocks = max((depth - 2) // 6, 1)
    layers: list[nn.Module] = [nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                               build_activation(parse_component(activation))]
    cin = width
    for stage in range(3):
        cout = width * 2 ** stage
        for b in range(blocks):
            layers.append(BasicBlock(cin, cout, 2 if (b == 0 and stage > 0) else 1, activation))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_outputs)]
    return nn.Sequential(*layers)
