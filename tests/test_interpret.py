"""`run.interpret()`: what the model gets wrong on the validation split, checked against sklearn on the
same predictions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_wine
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

import nbopt

DIGITS = "model: mlp(hidden=[32])\ndata: digits\nepochs: 2\nseed: 1\n"


def validation(recipe, namespace=None):
    """The raw validation inputs and targets the run saw, in order."""
    plan = nbopt.check(recipe, namespace or {})
    batches = list(plan.data.val)
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NBOPT_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
        return nbopt.train(DIGITS, {}, live=False)


def test_confusion_and_per_class_scores_match_sklearn(digits_run):
    x, y = validation(DIGITS)
    predicted = digits_run.predict(x).argmax(dim=1).numpy()
    result = digits_run.interpret()
    assert result.confusion.to_numpy().tolist() == confusion_matrix(y.numpy(), predicted).tolist()
    assert list(result.confusion.index) == list(range(10)) and result.confusion.index.name == "true"
    precision, recall, f1, support = precision_recall_fscore_support(y.numpy(), predicted, zero_division=0)
    table = result.per_class
    np.testing.assert_allclose(table["precision"], precision)
    np.testing.assert_allclose(table["recall"], recall)
    np.testing.assert_allclose(table["f1"], f1)
    assert table["support"].tolist() == support.tolist()
    # the summary after training shows the same per-class F1, and so does metrics.json
    assert digits_run.metrics["per_class_f1"] == pytest.approx({str(k): v for k, v in zip(range(10), f1)})
    assert "per-class F1  0 " in repr(digits_run)


def test_top_losses_are_the_highest_cross_entropies_with_their_images(digits_run):
    x, y = validation(DIGITS)
    losses = F.cross_entropy(digits_run.predict(x), y, reduction="none")
    top = digits_run.interpret().top_losses(5)
    worst = torch.argsort(losses, descending=True)[:5]
    assert top["index"].tolist() == worst.tolist()
    np.testing.assert_allclose(top["loss"], losses[worst].numpy(), rtol=1e-5)
    assert top["true"].tolist() == y[worst].tolist()
    assert top["loss"].is_monotonic_decreasing
    assert all(image.shape == (8, 8) for image in top["image"])
    np.testing.assert_array_equal(top["image"].iloc[0], x[worst[0], 0].numpy())


def test_plot_draws_the_confusion_matrix_and_a_grid_of_top_losses(digits_run):
    fig = digits_run.interpret().plot(n=6)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "confusion matrix"
    assert len(fig.axes) == 1 + 6 and all(t.startswith("true ") for t in titles[1:])


def test_class_names_come_from_text_labels(train):
    wine = load_wine(as_frame=True).frame
    wine["kind"] = np.array(["barolo", "grignolino", "barbera"])[wine.pop("target")]
    run = train("model: mlp(hidden=[16])\ndata: wine\ntarget: kind\nepochs: 3\n", {"wine": wine})
    result = run.interpret()
    assert list(result.confusion.columns) == ["barbera", "barolo", "grignolino"] == run.classes
    assert set(result.top_losses(3)["true"]) <= set(run.classes)
    assert "image" not in result.top_losses(3)
    assert set(run.predict(wine.drop(columns="kind").to_numpy()[:5], labels=True)) <= set(run.classes)


def test_regression_gives_residuals_and_the_largest_errors(train):
    recipe = "model: mlp(hidden=[16])\ndata: synthetic(n=400, classes=0)\nepochs: 2\n"
    run = train(recipe)
    x, y = validation(recipe)
    prediction = run.predict(x).reshape(-1)
    result = run.interpret()
    residuals = result.residuals
    np.testing.assert_allclose(residuals["residual"], (y - prediction).numpy(), rtol=1e-5, atol=1e-6)
    largest = result.largest_errors(4)
    assert largest["index"].tolist() == (y - prediction).abs().argsort(descending=True)[:4].tolist()
    assert [ax.get_title() for ax in result.plot().axes] == ["residuals", "distribution of residuals"]
    assert "per_class_f1" not in run.metrics
    with pytest.raises(ValueError, match="classification"):
        result.confusion


def test_a_loaded_run_interprets_too(digits_run):
    loaded = nbopt.load(str(digits_run.folder))
    pd.testing.assert_frame_equal(loaded.interpret().confusion, digits_run.interpret().confusion)


def test_a_split_and_a_plain_list_of_its_batches_interpret_alike(digits_run):
    """An in-memory split's rows go into one tensor allocated up front; any other batches are concatenated."""
    from nbopt.interpretation import interpret
    data = nbopt.check(DIGITS, {}).data
    whole = interpret(digits_run.model, data.val, "classification", None, data.normalization.apply)
    listed = interpret(digits_run.model, list(data.val), "classification", None, data.normalization.apply)
    assert len(whole.targets) == data.val.size == 360
    assert torch.equal(whole.outputs, listed.outputs) and torch.equal(whole.targets, listed.targets)
