"""nbopt's module takes its own optimizer steps where Lightning's automatic optimisation adds nothing: the
same seed gives the same history either way, for every feature that path serves."""
from __future__ import annotations

import pandas as pd
import pytest

import nbopt
from nbopt import fitting

# 25 training batches an epoch: Lightning fetches chunks of 16 and 9 of them (nbopt.step_chunks)
BASE = "model: mlp(hidden=[32])\ndata: synthetic(n=500, shape=[8], classes=3)\nbatch_size: 16\nepochs: 4\n"
CASES = {
    "plain": "",
    "clipped": "grad_clip: 0.05\n",
    "accumulated (a partial window at each epoch's end)": "accumulate: 3\n",  # windows of 3, one across the chunks, 1 at the end
    "bf16-mixed": "precision: bf16-mixed\n",
    "pruned while training": "prune: {method: l1_unstructured, amount: 0.6, schedule: gradual, finetune: 1}\n",
    "dropout and weight decay": "dropout: 0.3\noptimizer: adamw(lr=3e-3, weight_decay=0.1)\n",
}


def trained(recipe: str, by_hand: bool, monkeypatch, namespace=None):
    if not by_hand:
        monkeypatch.setattr(fitting, "steps_by_hand", lambda *args: False)
    run = nbopt.train(recipe, namespace or {}, live=False)
    monkeypatch.undo()
    return run


def same_history(one, other) -> None:
    columns = [c for c in one.history.columns if c != "seconds"]
    pd.testing.assert_frame_equal(one.history[columns], other.history[columns], check_exact=True)
    assert one.metrics["val_acc"] == other.metrics["val_acc"]


@pytest.mark.parametrize("case", list(CASES))
def test_steps_by_hand_give_the_history_of_automatic_optimisation(case, monkeypatch):
    recipe = BASE + CASES[case]
    assert fitting.steps_by_hand(*_fit_of(recipe)), "this case takes the hand-made steps"
    same_history(trained(recipe, True, monkeypatch), trained(recipe, False, monkeypatch))


def test_a_distilled_student_steps_by_hand_as_automatic_optimisation_would(monkeypatch):
    teacher = nbopt.train(BASE.replace("[32]", "[64]"), {}, live=False)
    recipe = BASE.replace("[32]", "[8]") + "distill: {teacher: teacher, temperature: 2, alpha: 0.5}\n"
    same_history(trained(recipe, True, monkeypatch, {"teacher": teacher}),
                 trained(recipe, False, monkeypatch, {"teacher": teacher}))


def test_schedules_and_several_processes_keep_automatic_optimisation():
    assert not fitting.steps_by_hand(*_fit_of(BASE + "scheduler: cosine\n"))
    assert not fitting.steps_by_hand(*_fit_of(BASE + "devices: 2\nstrategy: ddp\n"))


def _fit_of(recipe: str):
    """(module, recipe, first fit stage, strategy) as a run of `recipe` would decide with."""
    from nbopt.module import build_lightning_module
    from nbopt.stages import Fit
    from nbopt.training import plan_stages
    plan = nbopt.check(recipe, {})
    stage = next(s for s in plan_stages(plan.recipe, False) if isinstance(s, Fit))
    strategy = "ddp" if plan.recipe.devices != 1 else "auto"
    return build_lightning_module(plan)[0], plan.recipe, stage, strategy
