"""Turn a recipe's `model:` into a fresh ``nn.Module`` sized for the data.

The notebook's own objects are never changed: an instance is deep-copied, a class or factory is
called afresh, so every run starts from the same weights the notebook holds.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass

import torch
from torch import nn

from nbopt.errors import RecipeError, shown
from nbopt.lightning_package import package_of
from nbopt.models.builtin import IMAGE_MODELS, MODELS
from nbopt.namespace import Reference


@dataclass
class ResolvedModel:
    net: nn.Module
    label: str
    is_lightning: bool  # a user's own LightningModule (of either package): its own steps are kept


def build_model(ref: Reference, input_shape: tuple, num_outputs: int, seed: int, line: int | None = None
                ) -> ResolvedModel:
    torch.manual_seed(seed)  # built-ins and classes start from the same weights for the same seed
    if ref.builtin is not None:
        entry, kwargs = MODELS.resolve(ref.builtin, "model", line)
        if entry.name in IMAGE_MODELS and len(input_shape) != 3:
            raise RecipeError(f"{entry.name} needs images (channels, height, width) but the data has samples of "
                              f"shape {list(input_shape)}; use mlp for tabular data", key="model", line=line)
        return ResolvedModel(_build_builtin(entry, input_shape, num_outputs, kwargs, line), ref.label, False)
    net = _instantiate(ref, line)
    return ResolvedModel(net, ref.label, package_of(net) is not None)


def _build_builtin(entry, input_shape: tuple, num_outputs: int, kwargs: dict, line: int | None) -> nn.Module:
    """A built-in's arguments all come from the recipe, so torch refusing them (`hidden=[-4]`, `hidden=[4, z]`)
    is the recipe's mistake: one line naming the model and its signature, not torch's traceback."""
    try:
        return entry.build(input_shape, num_outputs, **kwargs)
    except RecipeError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecipeError(f"cannot build {entry.name} from these arguments ({shown(reason, 120)}); write it like "
                          f"{entry.signature_text()}", key="model", line=line) from None


def _instantiate(ref: Reference, line: int | None) -> nn.Module:
    obj = ref.obj
    if isinstance(obj, nn.Module):
        if ref.call_args is not None:
            raise RecipeError(f"'{ref.label}' is a model instance, not a class; write `model: {ref.label}`",
                              key="model", line=line)
        try:
            return copy.deepcopy(obj)
        except RuntimeError as exc:
            raise RecipeError(f"cannot copy '{ref.label}' ({exc}); pass its class or a function that builds it",
                              key="model", line=line) from None
    if callable(obj):
        args = ref.call_args
        try:
            made = obj(*(args.args if args else ()), **(args.kwargs if args else {}))
        except TypeError as exc:
            wanted = _signature(obj)
            raise RecipeError(f"calling '{ref.label}' to build the model failed: {exc}; it is called as "
                              f"{ref.label}{wanted}, give arguments in the recipe like "
                              f"`model: {ref.label}(hidden=64)`", key="model", line=line) from None
        if isinstance(made, nn.Module):
            return made
        raise RecipeError(f"'{ref.label}' returned {type(made).__name__}, not an nn.Module", key="model", line=line)
    raise RecipeError(f"'{ref.label}' is of type {type(obj).__name__}; expected an nn.Module, a LightningModule, "
                      "or a class/function that returns one" + ref.hint(), key="model", line=line)


def _signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "()"

