"""The stages of a run, from its recipe: what compression adds around training.

Without compression a run is one stage. With `prune:` it is: train → prune → fine-tune (once);
train while pruning → fine-tune (gradual); or train → [remove channels → fine-tune] × steps.
`quantize:` and `distill:` add a before/after comparison; fine-tuning uses the recipe's optimizer
at `prune.lr` (default: its own LR) without the LR schedule. The stages are plain data
(nbopt.stages); training executes them.
"""
from __future__ import annotations

from nbopt.stages import (Fit, GradualPrune, MakePermanent, Measure, PruneWeights, Quantize, RemoveChannels,
                          Stage)


def plan_stages(recipe, has_teacher: bool = False) -> list[Stage]:
    """Every stage of the run, in order. The report's "before" is the first thing measured: the
    teacher when distilling, else the model before pruning (or before quantizing)."""
    prune = recipe.prune
    stages: list[Stage] = [Measure("teacher", model="teacher")] if has_teacher else []
    if prune is None:
        stages.append(Fit(recipe.epochs))
    elif prune.schedule == "gradual":
        stages.append(Measure("dense (untrained)", scored=False))
        gradual = GradualPrune(prune.method, prune.amount, recipe.epochs, prune.global_)
        stages += [Fit(recipe.epochs, track_best=False, early_stopping=False, prune_while_training=gradual),
                   *_finetune(prune)]
    else:
        stages += [Fit(recipe.epochs), Measure("dense")]
        if prune.method == "channels":
            for step in range(1, prune.steps + 1):
                stages += [RemoveChannels(prune.amount, prune.steps, step, prune.importance, prune.global_),
                           *_finetune(prune)]
        else:
            stages += [PruneWeights(prune.method, prune.amount, prune.global_), *_finetune(prune)]
    if prune is not None and prune.method != "channels":
        stages.append(MakePermanent())
    if recipe.quantize:
        stages += [Measure("float32"), Quantize(recipe.quantize)]
    return _first_measure_only(stages)


def _finetune(prune) -> list[Stage]:
    return [Fit(prune.finetune, purpose="finetune", schedule=False, lr=prune.lr)] if prune.finetune else []


def _first_measure_only(stages: list[Stage]) -> list[Stage]:
    """The report compares against one "before": the first measured model."""
    first = next((i for i, stage in enumerate(stages) if isinstance(stage, Measure)), None)
    return [stage for i, stage in enumerate(stages) if not isinstance(stage, Measure) or i == first]


def history_column(recipe) -> str | None:
    """The extra per-epoch history column: sparsity while pruning weights, parameters while removing channels."""
    if recipe.prune is None:
        return None
    return "parameters" if recipe.prune.method == "channels" else "sparsity"
