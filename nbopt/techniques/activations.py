"""`activation:` — the activation modules the built-in models use and that a recipe can swap in."""
from __future__ import annotations

from torch import nn

from nbopt.registry import Registry

ACTIVATIONS = Registry("activation", "activation")

ACTIVATIONS.add("relu", lambda: nn.ReLU(), "max(0, x)", {})
ACTIVATIONS.add("gelu", lambda: nn.GELU(), "Gaussian error linear unit (smooth ReLU, used in transformers)", {})
ACTIVATIONS.add("silu", lambda: nn.SiLU(), "x·sigmoid(x), also called swish", {})
ACTIVATIONS.add("elu", lambda alpha=1.0: nn.ELU(alpha), "exponential linear unit", {"alpha": 1.0})
ACTIVATIONS.add("tanh", lambda: nn.Tanh(), "hyperbolic tangent; saturates, so deep nets learn slowly", {})
ACTIVATIONS.add("sigmoid", lambda: nn.Sigmoid(), "logistic function; saturates, so deep nets learn slowly", {})
ACTIVATIONS.add("leaky_relu", lambda negative_slope=0.01: nn.LeakyReLU(negative_slope),
                "ReLU with a small slope for x < 0", {"negative_slope": 0.01})
ACTIVATIONS.add("mish", lambda: nn.Mish(), "x·tanh(softplus(x))", {})

ACTIVATION_TYPES = (nn.ReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.Mish, nn.ReLU6,
                    nn.PReLU, nn.Softplus, nn.Hardswish, nn.SELU, nn.CELU, nn.Hardtanh)


def build_activation(component, key="activation", line=None) -> nn.Module:
    entry, kwargs = ACTIVATIONS.resolve(component, key, line)
    return entry.build(**kwargs)
