"""`prune:` — unstructured pruning with ``torch.nn.utils.prune`` and structured (channel) pruning
with Torch-Pruning's dependency graph, which really removes channels so the model gets smaller
and faster.

Sparsity is scheduled here as a cumulative target (how many weights are zero in total), and each
step prunes exactly the missing count: torch's pruning ``amount`` is relative to the weights still
alive, so targets given to it directly would not add up.
"""
from __future__ import annotations

import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from nbopt.lightning_package import OnLightning

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_METHODS = {"l1_unstructured": torch_prune.L1Unstructured, "random_unstructured": torch_prune.RandomUnstructured}


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, _LAYERS)]


def cubic_schedule(final: float, epochs: int) -> list[float]:
    """Cumulative sparsity after each epoch: s_t = s_f·(1 − (1 − t/n)³) (Zhu & Gupta 2017)."""
    return [final * (1 - (1 - t / epochs) ** 3) for t in range(1, epochs + 1)]


def prune_to(model: nn.Module, method: str, sparsity: float, global_: bool) -> None:
    """Raise the model's (or each layer's) share of zero weights to `sparsity`, keeping earlier masks."""
    targets = prunable(model)
    pruning_method = _METHODS[method]
    if global_:
        total = sum(getattr(m, n).numel() for m, n in targets)
        missing = round(sparsity * total) - sum(_zeros(m, n) for m, n in targets)
        if missing > 0:
            torch_prune.global_unstructured(targets, pruning_method=pruning_method, amount=missing)
    else:
        for module, name in targets:
            missing = round(sparsity * getattr(module, name).numel()) - _zeros(module, name)
            if missing > 0:
                pruning_method.apply(module, name, amount=missing)
    for module, name in targets:
        keep_weight_first(module, name)


def keep_weight_first(module: nn.Module, name: str = "weight") -> None:
    """Put a pruned layer's `weight_orig` back where `weight` was, first among its parameters.

    torch's pruning re-registers the weight last, after the bias. An optimizer built later (the
    fine-tuning's) lists parameters in that order, and a checkpoint keeps optimizer state by
    position: one fixed order lets a run resume into any stage, pruned or not.
    """
    params = module._parameters
    if f"{name}_orig" in params and next(iter(params)) != f"{name}_orig":
        reordered = {f"{name}_orig": params[f"{name}_orig"], **params}
        params.clear()
        params.update(reordered)


def _zeros(module: nn.Module, name: str) -> int:
    mask = getattr(module, f"{name}_mask", None)
    return int((mask == 0).sum()) if mask is not None else 0


def make_permanent(model: nn.Module) -> None:
    """Fold masks into the weights: zeros in `.weight`, no `weight_orig` or hooks left behind."""
    for module, name in prunable(model):
        if torch_prune.is_pruned(module) and hasattr(module, f"{name}_mask"):
            torch_prune.remove(module, name)


def measured_sparsity(model: nn.Module) -> float:
    """Share of exactly-zero weights in the Linear/Conv layers, read from the weights themselves."""
    weights = [getattr(m, n).detach() for m, n in prunable(model)]
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / total) if total else 0.0


class GradualPruning(OnLightning):
    """Prunes at the end of each training epoch towards the cubic schedule's cumulative sparsity."""

    def __init__(self, target: nn.Module, method: str, amount: float, epochs: int, global_: bool):
        self.target, self.method, self.global_ = target, method, global_
        self.schedule = cubic_schedule(amount, epochs)

    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch
        if epoch < len(self.schedule):
            prune_to(self.target, self.method, self.schedule[epoch], self.global_)


class ChannelPruner:
    """Removes a share of channels/neurons over `steps` steps, Torch-Pruning keeping layers consistent."""

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, amount: float, steps: int, importance: str,
                 global_: bool):
        import torch_pruning as tp

        scorer = {"l1": lambda: tp.importance.MagnitudeImportance(p=1),
                  "l2": lambda: tp.importance.MagnitudeImportance(p=2),
                  "taylor": tp.importance.TaylorImportance}[importance]()
        layers = [m for m in model.modules() if isinstance(m, _LAYERS)]
        self.needs_gradients = importance == "taylor"
        self.model = model
        self.pruner = tp.pruner.MetaPruner(model, example_inputs, importance=scorer, pruning_ratio=amount,
                                           iterative_steps=steps, ignored_layers=layers[-1:],
                                           global_pruning=global_)

    def step(self, gradient_batches=None, loss_fn=None) -> None:
        if self.needs_gradients:
            self.model.zero_grad()
            for x, y in gradient_batches:
                loss_fn(self.model(x), y).backward()
        self.pruner.step()
        self.model.zero_grad(set_to_none=True)
