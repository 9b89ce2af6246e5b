"""`batchnorm:`, `dropout:` and `activation:` — change a model's layers without editing its code.

Works on ``nn.Sequential`` models (new layers are inserted as siblings, so printing the model
shows exactly where they went) and on nested custom modules (a layer held as an attribute is
wrapped in a small Sequential). Activations called as functions in ``forward`` (``F.relu``) are
invisible to this; rather than silently doing nothing, that is reported as a RecipeError.
"""
from __future__ import annotations

from torch import nn

from nbopt.errors import RecipeError
from nbopt.techniques.activations import ACTIVATION_TYPES, build_activation

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


def _batchnorm_for(layer: nn.Module) -> nn.Module:
    if isinstance(layer, nn.Linear):
        return nn.BatchNorm1d(layer.out_features)
    return {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}[type(layer)](
        layer.out_channels)


def _output_layer(model: nn.Module) -> nn.Module | None:
    layers = [m for m in model.modules() if isinstance(m, _LAYERS)]
    return layers[-1] if layers else None


def _insert_after(model: nn.Module, wanted, make, skip_if_next=()) -> int:
    """Insert `make(module)` after every module for which `wanted(module)` is true; returns the count."""
    count = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        if isinstance(parent, nn.Sequential):
            new, changed = [], False
            for i, (_, child) in enumerate(children):
                new.append(child)
                following = children[i + 1][1] if i + 1 < len(children) else None
                if wanted(child) and not isinstance(following, skip_if_next):
                    new.append(make(child))
                    changed = True
                    count += 1
            if changed:
                _replace_children(parent, new)
        else:
            has_norm = any(isinstance(c, skip_if_next) for _, c in children) if skip_if_next else False
            for name, child in children:
                if wanted(child) and not has_norm:
                    setattr(parent, name, nn.Sequential(child, make(child)))
                    count += 1
    return count


def _replace_children(seq: nn.Sequential, modules: list[nn.Module]) -> None:
    for name in list(seq._modules):
        del seq._modules[name]
    for i, module in enumerate(modules):
        seq.add_module(str(i), module)


def add_batchnorm(model: nn.Module) -> int:
    """BatchNorm after every Linear/Conv but the output layer, before its activation."""
    output = _output_layer(model)
    return _insert_after(model, lambda m: isinstance(m, _LAYERS) and m is not output, _batchnorm_for,
                         skip_if_next=_NORMS)


def _hidden_activations(model: nn.Module) -> list[nn.Module]:
    order = list(model.modules())
    output = _output_layer(model)
    last = order.index(output) if output is not None else len(order)
    return [m for m in order[:last] if isinstance(m, ACTIVATION_TYPES)]


def add_dropout(model: nn.Module, p: float, line: int | None = None) -> int:
    hidden = {id(m) for m in _hidden_activations(model)}
    if not hidden:
        raise _functional_error("dropout", line)
    return _insert_after(model, lambda m: id(m) in hidden, lambda m: nn.Dropout(p))


def swap_activations(model: nn.Module, component, line: int | None = None) -> int:
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ACTIVATION_TYPES):
                setattr(parent, name, build_activation(component))
                count += 1
    if not count:
        raise _functional_error("activation", line)
    return count


def _functional_error(key: str, line: int | None) -> RecipeError:
    return RecipeError(f"the model has no activation modules to change (it probably calls functions such as "
                       f"F.relu in forward, which nbopt cannot see); use nn.ReLU() etc. as layers, or set {key} "
                       "in the model's own code", key=key, line=line)


def apply_surgery(model: nn.Module, recipe) -> list[str]:
    """Apply the recipe's model changes in a fixed order; returns what was done, for the plan."""
    done = []
    if recipe.activation is not None:
        swapped = swap_activations(model, recipe.activation, recipe.line("activation"))
        done.append(f"activation → {recipe.activation} ({swapped} swapped)")
    if recipe.batchnorm:
        n = add_batchnorm(model)
        done.append(f"BatchNorm after {n} layer(s)" if n else "batchnorm: the model already normalises every layer")
    if recipe.dropout:
        added = add_dropout(model, recipe.dropout, recipe.line("dropout"))
        done.append(f"Dropout({recipe.dropout}) after {added} activation(s)")
    return done
