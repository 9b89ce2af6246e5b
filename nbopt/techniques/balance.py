"""`balance:` — imbalanced classes, evened out from the training split's class counts.

`weights` weighs each sample's loss by ``n / (k · count of its class)``, the weights of scikit-learn's
``compute_class_weight('balanced')``: every class then carries the same share of the loss, so a rare
class is no longer cheap to get wrong. `oversample` (the re-sampling alternative) leaves the loss as it
is and draws the training samples instead, with replacement and each with a chance inversely
proportional to its class's count, so every class is drawn equally often; an epoch keeps its length.
Only the training split is counted and drawn from; validation and test samples are scored as they come.
With `weights` their loss is the weighted one too (the objective being minimised, so best weights and
early stopping favour it), while accuracy and the other metrics stay unweighted.
"""
from __future__ import annotations

import torch


def class_weights(counts: list[int]) -> torch.Tensor:
    """Inverse-frequency weights per class; a class absent from the training split gets 0 (nothing to weigh)."""
    counts = torch.tensor(counts, dtype=torch.float32)
    present = counts > 0
    weights = counts.sum() / (present.sum() * counts.clamp(min=1))
    return torch.where(present, weights, torch.zeros_like(weights))


def balanced_draws(y: torch.Tensor) -> torch.Tensor:
    """Per-sample drawing weights for `oversample`: each class's samples share an equal total chance."""
    return 1.0 / torch.bincount(y)[y].float()


def describe_counts(counts: list[int], names: list | None) -> str:
    """``0: 380, 1: 41`` — the plan's row of training samples per class."""
    return _per_class(counts, names, lambda name, count: f"{name}: {count:,}")


def describe_balance(mode: str, counts: list[int], names: list | None) -> str:
    """What balancing does to these counts, as the plan's technique line."""
    if mode == "weights":
        weights = class_weights(counts).tolist()
        return "balance: class weights in the loss " + _per_class(weights, names, lambda n, w: f"{n} ×{w:.3g}")
    total, present = sum(counts), sum(1 for c in counts if c > 0)
    shares = _per_class(counts, names, lambda name, count: f"{name} {count / total:.0%}")
    return f"balance: oversample, each class drawn 1/{present} of the time (training split: {shares})"


def _per_class(values: list, names: list | None, text, limit: int = 12) -> str:
    """One item per class, named when the data names its classes; long lists end after `limit`."""
    items = [text(name, value) for name, value in zip(range(len(values)) if names is None else names, values)]
    return ", ".join(items[:limit]) + (f", … ({len(items)} classes)" if len(items) > limit else "")
