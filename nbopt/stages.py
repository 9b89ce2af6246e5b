"""A run as data: the stages that training executes, in order.

Compression decides *what* happens (train, measure, prune, fine-tune, quantize) and returns it as
a list of these frozen records; training decides *how* (Trainers, callbacks, weights, files). So
the order of a compression recipe can be read, printed and tested without a Trainer, and neither
side reaches into the other.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GradualPrune:
    """Prune at the end of every training epoch towards `amount`, on a cubic schedule over `epochs`."""
    method: str
    amount: float
    epochs: int
    global_: bool


@dataclass(frozen=True)
class Fit:
    """One Trainer fit of `epochs` epochs; its history continues the run's."""
    epochs: int
    purpose: str = "train"  # "train" or "finetune"
    track_best: bool = True  # keep this stage's best weights and put them back at its end
    early_stopping: bool = True  # the recipe's early stopping may end it
    schedule: bool = True  # the recipe's LR schedule; fine-tuning runs at one LR
    lr: float | None = None  # a fixed LR; None: the LR range test's suggestion if there was one, else the optimizer's
    prune_while_training: GradualPrune | None = None


@dataclass(frozen=True)
class Measure:
    """Profile a model (size, MACs, latency, and its score unless `scored` is off) for the report's "before"."""
    label: str
    model: str = "student"  # or "teacher"
    scored: bool = True


@dataclass(frozen=True)
class PruneWeights:
    """Zero the smallest (or random) weights until `amount` of them are zero, per layer or globally."""
    method: str
    amount: float
    global_: bool


@dataclass(frozen=True)
class RemoveChannels:
    """Step `step` of `steps`: remove channels, so that `amount` of them are gone after the last step."""
    amount: float
    steps: int
    step: int
    importance: str
    global_: bool


@dataclass(frozen=True)
class MakePermanent:
    """Fold pruning masks into the weights (zeros in `.weight`, no hooks left)."""


@dataclass(frozen=True)
class Quantize:
    """Post-training quantization of the trained model."""
    scheme: str = "dynamic"


Stage = Fit | Measure | PruneWeights | RemoveChannels | MakePermanent | Quantize

# After a stop request (Ctrl-C, the Stop button) no more training or pruning starts, but these still
# run, so an interrupted run ends with the model and report it would have had.
FINISHING = (Measure, MakePermanent, Quantize)


def total_epochs(stages: list[Stage]) -> int:
    return sum(stage.epochs for stage in stages if isinstance(stage, Fit))


def describe(stages: list[Stage]) -> str:
    """One line a plan can show: `train 10 → measure dense → prune → fine-tune 2`."""
    words = {Fit: lambda s: f"{'fine-tune' if s.purpose == 'finetune' else 'train'} {s.epochs}"
                                + (" while pruning" if s.prune_while_training else ""),
             Measure: lambda s: f"measure {s.label}",
             PruneWeights: lambda s: f"prune to {s.amount:.0%}",
             RemoveChannels: lambda s: f"remove channels ({s.step}/{s.steps})",
             MakePermanent: lambda s: "make pruning permanent",
             Quantize: lambda s: f"quantize ({s.scheme})"}
    return " → ".join(words[type(stage)](stage) for stage in stages)
