"""A run's stages are data: each compression recipe's list, read without a Trainer or a model."""
from __future__ import annotations

import pytest

from nbopt.compression import history_column, plan_stages
from nbopt.recipe import parse_recipe
from nbopt.stages import (Fit, GradualPrune, MakePermanent, Measure, PruneWeights, Quantize, RemoveChannels, describe,
                          total_epochs)

BASE = {"model": "mlp", "data": "digits", "epochs": 6}


def stages(has_teacher: bool = False, **keys):
    return plan_stages(parse_recipe({**BASE, **keys}), has_teacher)


def test_a_plain_recipe_is_one_fit():
    assert stages() == [Fit(6)]
    assert history_column(parse_recipe(BASE)) is None


def test_pruning_once_trains_measures_prunes_finetunes_and_makes_it_permanent():
    assert stages(prune={"amount": 0.8, "finetune": 2, "lr": 0.001}) == [
        Fit(6), Measure("dense"), PruneWeights("l1_unstructured", 0.8, False),
        Fit(2, purpose="finetune", schedule=False, lr=0.001), MakePermanent()]
    assert history_column(parse_recipe({**BASE, "prune": {"amount": 0.8}})) == "sparsity"


def test_gradual_pruning_measures_the_untrained_model_and_tracks_no_best_weights_while_pruning():
    result = stages(prune={"method": "random_unstructured", "amount": 0.5, "schedule": "gradual", "global": True,
                           "finetune": 3})
    assert result == [
        Measure("dense (untrained)", scored=False),
        Fit(6, track_best=False, early_stopping=False,
            prune_while_training=GradualPrune("random_unstructured", 0.5, 6, True)),
        Fit(3, purpose="finetune", schedule=False), MakePermanent()]
    assert total_epochs(result) == 9


def test_channel_pruning_in_steps_removes_and_finetunes_each_step_and_keeps_no_masks():
    result = stages(prune={"method": "channels", "amount": 0.5, "steps": 3, "finetune": 1, "importance": "taylor"})
    finetune = Fit(1, purpose="finetune", schedule=False)
    assert result == [Fit(6), Measure("dense"),
                      RemoveChannels(0.5, 3, 1, "taylor", False), finetune,
                      RemoveChannels(0.5, 3, 2, "taylor", False), finetune,
                      RemoveChannels(0.5, 3, 3, "taylor", False), finetune]
    assert total_epochs(result) == 9
    assert describe(result).startswith("train 6 → measure dense → remove channels (1/3) → fine-tune 1")
    assert history_column(parse_recipe({**BASE, "prune": {"method": "channels"}})) == "parameters"


def test_finetune_zero_adds_no_fit():
    assert stages(prune={"amount": 0.5, "finetune": 0}) == [
        Fit(6), Measure("dense"), PruneWeights("l1_unstructured", 0.5, False), MakePermanent()]


def test_distillation_measures_the_teacher_first_and_it_stays_the_reports_before():
    assert stages(True) == [Measure("teacher", model="teacher"), Fit(6)]
    assert stages(True, prune={"amount": 0.5, "finetune": 1}) == [
        Measure("teacher", model="teacher"), Fit(6), PruneWeights("l1_unstructured", 0.5, False),
        Fit(1, purpose="finetune", schedule=False), MakePermanent()]


@pytest.mark.parametrize("teacher", [False, True])
def test_quantization_measures_the_float_model_unless_something_was_measured_before(teacher):
    expected_first = [Measure("teacher", model="teacher")] if teacher else []
    expected_measure = [] if teacher else [Measure("float32")]
    assert stages(teacher, quantize="dynamic") == [*expected_first, Fit(6), *expected_measure,
                                                    Quantize("dynamic")]
