"""The stages of a compression run, and its before/after report.

Without compression a run is one stage. With `prune:` it is: train → prune → fine-tune (once);
train while pruning → fine-tune (gradual); or train → [remove channels → fine-tune] × steps.
`quantize:` and `distill:` add a before/after comparison; fine-tuning uses the recipe's optimizer
at `prune.lr` (default: its own LR) without the LR schedule.
"""
from __future__ import annotations

import torch

from nbopt.techniques.measure import count_macs, profile
from nbopt.techniques.prune import ChannelPruner, GradualPruning, make_permanent, measured_sparsity, prune_to
from nbopt.techniques.quantize import quantize_dynamic


def total_epochs(recipe) -> int:
    prune = recipe.prune
    if prune is None:
        return recipe.epochs
    return recipe.epochs + prune.finetune * (prune.steps if prune.method == "channels" else 1)


def history_columns(recipe, target):
    """Extra per-epoch history columns: sparsity while pruning weights, parameters while removing channels."""
    if recipe.prune is None:
        return None
    if recipe.prune.method == "channels":
        return lambda: {"parameters": sum(p.numel() for p in target.parameters())}
    return lambda: {"sparsity": measured_sparsity(target)}


def sample_input(session) -> torch.Tensor:
    """One validation input, normalised as the model sees it, for MACs and latency."""
    x = torch.as_tensor(next(iter(session.data.val))[0][:1]).float()
    if session.data.normalization is not None:
        x = session.data.normalization.apply(x)
    return x[0]


def _profile(session, model, scores: dict | None = None) -> dict:
    if scores is None:
        scores = {session.plan.metric_key: session.scores(model if model is not session.target else None)
                  .get(session.plan.metric_key)}
    return profile(model, sample_input(session), scores)


def run(session) -> None:
    recipe, prune, target = session.recipe, session.recipe.prune, session.target
    if session.plan.teacher is not None:
        session.report_before = {"model": "teacher", **_profile(session, session.plan.teacher)}
    if prune is None:
        session.fit(recipe.epochs)
    elif prune.schedule == "gradual":
        if session.report_before is None:
            session.report_before = {"model": "dense (untrained)", **_profile(session, target, {})}
        session.fit(recipe.epochs, track_best=False, early_stopping=False,
                    callbacks=[GradualPruning(target, prune.method, prune.amount, recipe.epochs, prune.global_)])
        _finetune(session)
    else:
        session.fit(recipe.epochs)
        if session.report_before is None:
            session.report_before = {"model": "dense", **_profile(session, target)}
        if not session.guard.requested:
            if prune.method == "channels":
                _remove_channels(session)
            else:
                prune_to(target, prune.method, prune.amount, prune.global_)
                _finetune(session)
    if prune is not None and prune.method != "channels":
        make_permanent(target)
    if recipe.quantize == "dynamic":
        if session.report_before is None:
            session.report_before = {"model": "float32", **_profile(session, target)}
        session.quantized = quantize_dynamic(target)


def _finetune(session) -> None:
    prune = session.recipe.prune
    if prune.finetune and not session.guard.requested:
        session.module.use_schedule = False
        session.module.lr_override = prune.lr or session.lr_found
        session.fit(prune.finetune)


def _remove_channels(session) -> None:
    prune, target = session.recipe.prune, session.target
    pruner = ChannelPruner(target, sample_input(session).unsqueeze(0), prune.amount, prune.steps, prune.importance,
                           prune.global_)
    loss_fn = getattr(session.module, "loss_fn", None)
    for _ in range(prune.steps):
        if session.guard.requested:
            break
        batches = [(session.data.normalization.apply(x) if session.data.normalization else x, y)
                   for x, y in list(session.data.train)[:4]] if pruner.needs_gradients else None
        pruner.step(batches, loss_fn)
        _finetune(session)


def add_metrics(session, metrics: dict) -> None:
    """The before/after report (and measured sparsity) into the run's metrics."""
    if session.recipe.prune is not None and session.recipe.prune.method != "channels":
        metrics["sparsity"] = measured_sparsity(session.target)
    if session.report_before is None:
        return
    final = session.quantized if session.quantized is not None else session.target
    after = {"model": "after", **_profile(session, final, {session.plan.metric_key: metrics.get(
        session.plan.metric_key)})}
    if session.quantized is not None:  # int8 layers do the same multiply-accumulates; the counter skips them
        after["macs"] = count_macs(session.target, sample_input(session).unsqueeze(0))
    metrics["compression"] = {"before": session.report_before, "after": after}
