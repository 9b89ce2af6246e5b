"""`metrics:` — extra torchmetrics scores, checked against scikit-learn's own implementations.

Every score is compared with sklearn on the same predictions: the run's model (`run.predict`) on the
split the plan resolves (`nbopt.check(recipe).data.val`, batches in order). The final scores and the
history row of the best epoch score the same weights, so they must agree too. Directions come from
the one metric table, and every place that takes a metric (early stopping, plateau, compare, sweep)
is checked to use it. Models are tiny and runs take 2–4 epochs.
"""
from __future__ import annotations

import re

import numpy as np
import optuna
import pytest
import torch
from sklearn import datasets, metrics as skm
from test_parallel import finish, needs_two_cores, start_cli

import nbopt
from nbopt import RecipeError, metrics
from nbopt.components import Component
from nbopt.helptext import help_text
from nbopt.recipe import parse_recipe
from nbopt.techniques.schedulers import ScheduleContext, SCHEDULERS
from nbopt.techniques.scores import AVERAGES, SCORES, Scores

DIGITS = "model: mlp(hidden=[16])\ndata: digits\nepochs: 3\nbatch_size: 64\noptimizer: adam(lr=0.01)\n"
CLASSIFICATION = ("[f1, f1(average=weighted), precision(average=micro), recall, auroc, auroc(average=weighted), "
                  "average_precision, top_k(k=3), balanced_accuracy, mcc, kappa]")
REGRESSION = "[r2, mse, rmse, mape, explained_variance]"


def arrays(plan, split: str = "val") -> tuple[torch.Tensor, np.ndarray]:
    """A split's inputs and targets, in the order the plan's batches give them."""
    xs, ys = zip(*getattr(plan.data, split))
    return torch.cat([torch.as_tensor(x) for x in xs]), torch.cat([torch.as_tensor(y) for y in ys]).numpy()


def sklearn_classification(y: np.ndarray, outputs: torch.Tensor) -> dict[str, float]:
    """CLASSIFICATION's scores by scikit-learn, named as the history names them."""
    p = outputs.softmax(dim=1).detach().numpy()
    pred, onehot = p.argmax(axis=1), np.eye(p.shape[1])[y]
    return {"acc": skm.accuracy_score(y, pred), "f1": skm.f1_score(y, pred, average="macro"),
            "f1_weighted": skm.f1_score(y, pred, average="weighted"),
            "precision_micro": skm.precision_score(y, pred, average="micro"),
            "recall": skm.recall_score(y, pred, average="macro"),
            "auroc": skm.roc_auc_score(y, p, multi_class="ovr", average="macro"),
            "auroc_weighted": skm.roc_auc_score(y, p, multi_class="ovr", average="weighted"),
            "average_precision": skm.average_precision_score(onehot, p, average="macro"),
            "top3_acc": skm.top_k_accuracy_score(y, p, k=3, labels=range(p.shape[1])),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "mcc": skm.matthews_corrcoef(y, pred), "kappa": skm.cohen_kappa_score(y, pred)}


def sklearn_regression(y: np.ndarray, outputs: torch.Tensor) -> dict[str, float]:
    o = outputs.detach().numpy().reshape(y.shape)
    return {"mae": skm.mean_absolute_error(y, o), "r2": skm.r2_score(y, o), "mse": skm.mean_squared_error(y, o),
            "rmse": skm.root_mean_squared_error(y, o), "mape": skm.mean_absolute_percentage_error(y, o),
            "explained_variance": skm.explained_variance_score(y, o)}


def assert_scores(run, expected: dict[str, float], split: str = "val") -> None:
    for name, value in expected.items():
        assert run.metrics[f"{split}_{name}"] == pytest.approx(value, rel=1e-4, abs=1e-5), name


def diabetes(outputs: int = 1) -> dict:
    """sklearn's diabetes progression (targets 25–346, far from 0, so MAPE is meaningful); two targets
    with a scaled copy."""
    x, y = datasets.load_diabetes(return_X_y=True)
    y = y if outputs == 1 else np.stack([y, y / 10 + 5], axis=1)
    return {"table": (x.astype(np.float32), y.astype(np.float32))}


# -- every score is sklearn's --------------------------------------------------------------------------

def test_classification_scores_are_sklearns_on_both_splits_and_in_the_history(train, check):
    recipe = DIGITS + f"test_split: 0.2\nmetrics: {CLASSIFICATION}\n"
    run, plan = train(recipe), check(recipe)
    for split in ("val", "test"):
        x, y = arrays(plan, split)
        assert_scores(run, sklearn_classification(y, run.predict(x)), split)
    best = run.history.iloc[run.metrics["best_epoch"] - 1]
    for key in ("val_f1", "val_auroc", "val_top3_acc", "val_mcc", "val_balanced_accuracy"):
        assert best[key] == pytest.approx(run.metrics[key], abs=1e-6), key


def test_history_columns_follow_the_run_metric_in_recipe_order(train):
    run = train(DIGITS.replace("epochs: 3", "epochs: 1") + "metrics: [mcc, top_k(3), f1(average=weighted)]\n")
    assert list(run.history.columns) == ["epoch", "train_loss", "val_loss", "val_acc", "val_mcc", "val_top3_acc",
                                         "val_f1_weighted", "lr", "seconds"]
    assert list(run.metrics)[:5] == ["val_loss", "val_acc", "val_mcc", "val_top3_acc", "val_f1_weighted"]


def test_two_classes_score_as_sklearns_binary_metrics(train, check):
    recipe = "model: mlp(hidden=[8])\ndata: breast_cancer\nepochs: 2\nmetrics: [auroc, f1, mcc, average_precision]\n"
    run, plan = train(recipe), check(recipe)
    x, y = arrays(plan)
    p = run.predict(x).softmax(dim=1)[:, 1].detach().numpy()
    pred = (p > 0.5).astype(int)
    assert_scores(run, {"auroc": skm.roc_auc_score(y, p), "f1": skm.f1_score(y, pred, average="macro"),
                        "mcc": skm.matthews_corrcoef(y, pred),
                        "average_precision": (skm.average_precision_score(y, p)
                                              + skm.average_precision_score(1 - y, 1 - p)) / 2})


@pytest.mark.parametrize("outputs", [1, 2])
def test_regression_scores_are_sklearns(outputs, train, check):
    recipe = f"model: mlp(hidden=[16])\ndata: table\nepochs: 3\noptimizer: adam(lr=0.05)\nmetrics: {REGRESSION}\n"
    namespace = diabetes(outputs)
    run, plan = train(recipe, namespace), check(recipe, namespace)
    x, y = arrays(plan)
    assert_scores(run, sklearn_regression(y, run.predict(x)))
    best = run.history.iloc[run.metrics["best_epoch"] - 1]
    assert best["val_r2"] == pytest.approx(run.metrics["val_r2"], abs=1e-5)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_balanced_accuracy_ignores_a_class_absent_from_the_targets_as_sklearn_does():
    """torchmetrics' macro recall counts a class that is only predicted as a zero; sklearn's balanced
    accuracy (and nbopt's) averages the classes present in the targets."""
    generator = torch.Generator().manual_seed(0)
    outputs, y = torch.randn(300, 5, generator=generator), torch.randint(0, 4, (300,), generator=generator)
    scores = Scores([Component("balanced_accuracy"), Component("f1")], "classification", 5, None, sync=False)
    scores.update(outputs, y)
    values = {name: float(value) for name, value in scores.scalars().items()}
    pred = outputs.argmax(dim=1).numpy()
    assert 4 in pred  # predicted, never a target
    assert values["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y.numpy(), pred), abs=1e-6)
    assert values["f1"] == pytest.approx(skm.f1_score(y.numpy(), pred, average="macro"), abs=1e-6)


# -- one table for the direction ------------------------------------------------------------------------

def test_the_table_agrees_with_torchmetrics_on_every_direction():
    for name, entry in SCORES.entries.items():
        task = metrics.METRICS[name].task
        built = entry.build(10, 1, False)
        assert built.higher_is_better == metrics.METRICS[name].higher_is_better, name
        assert task in ("classification", "regression"), name


@pytest.mark.parametrize("column, mode, title", [
    ("val_f1", "max", "F1 score"), ("val_f1_weighted", "max", "F1 score (weighted average)"),
    ("val_top5_acc", "max", "top-5 accuracy"), ("test_auroc", "max", "area under the ROC curve"),
    ("val_mape", "min", "mean absolute percentage error"), ("val_rmse", "min", "root mean squared error"),
    ("val_r2", "max", "coefficient of determination"), ("val_mcc", "max", "Matthews correlation coefficient"),
])
def test_history_names_read_back_through_the_table(column, mode, title):
    assert metrics.mode(column) == mode
    assert metrics.direction(column) == ("maximize" if mode == "max" else "minimize")
    assert metrics.lookup(column).title == title


def test_early_stopping_watches_an_extra_metric_in_its_direction(train):
    run = train(DIGITS.replace("epochs: 3", "epochs: 4") + "metrics: [f1]\n"
                "early_stopping: {monitor: val_f1, patience: 4}\n")
    assert run.metrics["best_epoch"] == int(run.history["val_f1"].idxmax()) + 1
    assert run.metrics["val_f1"] == pytest.approx(run.history["val_f1"].max(), abs=1e-6)

    lower = train("model: mlp(hidden=[16])\ndata: table\nepochs: 4\noptimizer: adam(lr=0.05)\nmetrics: [mape]\n"
                  "early_stopping: {monitor: val_mape, patience: 4}\n", diabetes())
    assert lower.metrics["best_epoch"] == int(lower.history["val_mape"].idxmin()) + 1


def test_a_plateau_schedule_watches_an_extra_metric_in_its_direction(train):
    plateau = Component("plateau", (), {"monitor": "val_f1"})
    entry, kwargs = SCHEDULERS.resolve(plateau)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert entry.build(optimizer, ScheduleContext(3, 30), **kwargs).scheduler.mode == "max"
    run = train(DIGITS + "metrics: [f1]\nscheduler: plateau(patience=1, monitor=val_f1)\n")
    assert run.history["val_f1"].notna().all()


def test_compare_ranks_by_the_metric_given_in_its_direction():
    recipe = (DIGITS.replace("epochs: 3", "epochs: 2") + "metrics: [f1, mcc]\nvariants:\n"
              "  slow: {optimizer: 'sgd(lr=0.001)'}\n  fast: {optimizer: 'adam(lr=0.01)'}\n")
    comparison = nbopt.compare(recipe, {}, live=False, metric="val_f1")
    assert comparison.metric_key == "val_f1" and list(comparison.table.columns)[0] == "val_f1"
    assert list(comparison.table.index) == ["fast", "slow"]
    assert comparison.table["val_f1"].is_monotonic_decreasing
    assert comparison.table.loc["fast", "val_f1"] == pytest.approx(comparison.runs["fast"].metrics["val_f1"])


def test_a_sweep_maximises_an_extra_metric_and_its_pruner_hears_it():
    recipe = DIGITS.replace("epochs: 3", "epochs: 2") + "metrics: [f1]\nsearch:\n  optimizer.lr: [0.001, 0.01]\n"
    result = nbopt.sweep(recipe, {}, trials=2, sampler="grid", pruner="none", metric="val_f1", live=False)
    assert result.study.direction == optuna.study.StudyDirection.MAXIMIZE
    best = result.best_trial
    assert best.value == max(t.value for t in result.study.trials)
    assert best.value == pytest.approx(result.best.metrics["val_f1"])
    history = result.best.history
    assert best.intermediate_values == pytest.approx(dict(zip(history["epoch"], history["val_f1"])))


# -- one-line errors with the closest name ---------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("[f11]", "metrics (line 2): unknown metric 'f11' — did you mean 'f1'?"),
    ("[f1(average=weigted)]", "metrics (line 2): f1(average=weigted): unknown average 'weigted' — did you mean "
                              "'weighted'?"),
    ("[auroc(average=micro)]", "metrics (line 2): auroc(average=micro): unknown average 'micro' — did you mean "
                               "'macro'?"),
    ("[f1(avrage=macro)]", "metrics (line 2): f1 has no argument 'avrage' — did you mean 'average'?"),
    ("[top_k(k=0)]", "metrics (line 2): top_k(k=0): k must be a whole number of at least 1, got 0"),
    ("[f1(average=none)]", "metrics (line 2): f1(average=null): unknown average 'None' — choose from: macro, micro, "
                           "weighted"),
    ("[f1, f1(average=macro)]", "metrics (line 2): f1(average=macro) is listed twice (both are val_f1)"),
    ("[acc, f1]", "metrics (line 2): val_acc is always reported; `metrics:` lists the extra ones "
                  "(`%nbopt help metrics`)"),
])
def test_a_wrong_metric_is_one_line_before_any_data(value, message):
    with pytest.raises(RecipeError, match="^" + re.escape(message) + "$"):
        parse_recipe(f"model: mlp\nmetrics: {value}\ndata: digits\n")


@pytest.mark.parametrize("recipe, namespace, message", [
    ("model: mlp\ndata: table\nmetrics: [r2, f1]\n", diabetes(),
     "metrics (line 3): f1 scores classification but this run's task is regression; regression metrics: "
     "explained_variance, mape, mse, r2, rmse"),
    ("model: mlp\ndata: digits\nmetrics: [mape]\n", {},
     "metrics (line 3): mape scores regression but this run's task is classification; classification metrics: "
     "auroc, average_precision, balanced_accuracy, f1, kappa, mcc, precision, recall, top_k"),
    ("model: mlp\ndata: wine\nmetrics: [top_k(k=5)]\n", {},
     "metrics (line 3): top_k(k=5) needs at least 5 classes but the data has 3"),
    ("model: mlp\ndata: digits\nmetrics: [f1]\nearly_stopping: {monitor: val_f2}\n", {},
     "early_stopping.monitor (line 4): cannot monitor 'val_f2'; this run reports val_loss, val_acc, val_f1 — did you "
     "mean 'val_f1'?"),
    ("model: mlp\ndata: digits\nearly_stopping: {monitor: val_f1_weighted}\n", {},
     "early_stopping.monitor (line 3): cannot monitor 'val_f1_weighted'; this run reports val_loss, val_acc — add "
     "f1(average=weighted) to `metrics:` to compute it"),
    ("model: mlp\ndata: digits\nscheduler: plateau(monitor=val_auroc)\n", {},
     "scheduler (line 3): cannot monitor 'val_auroc'; this run reports val_loss, val_acc — add auroc to "
     "`metrics:` to compute it"),
])
def test_a_metric_that_does_not_fit_the_run_is_one_line(recipe, namespace, message, check):
    with pytest.raises(RecipeError, match="^" + re.escape(message) + "$"):
        check(recipe, namespace)


def test_a_lightning_module_logs_its_own_metrics(check):
    import pytorch_lightning as pl

    class Own(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(64, 10)

        def forward(self, x):
            return self.net(x.flatten(1))

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.nn.functional.cross_entropy(self(batch[0]), batch[1]))

    with pytest.raises(RecipeError, match=r"^metrics \(line 3\): `metrics:` are computed by nbopt's own module"):
        check("model: Own\ndata: digits\nmetrics: [f1]\n", {"Own": Own})


@pytest.mark.parametrize("run, message", [
    (lambda recipe: nbopt.sweep(recipe + "search:\n  optimizer.lr: [0.01]\n", {}, trials=1, metric="val_f2",
                                live=False),
     "--metric can be val_loss, val_acc, val_f1, got val_f2 — did you mean 'val_f1'?"),
    (lambda recipe: nbopt.compare(recipe + "variants:\n  a: {}\n  b: {metrics: []}\n", {}, metric="val_f1",
                                  live=False),
     "variant 'b': --metric can be val_loss, val_acc, got val_f1 — add f1 to `metrics:` to compute it"),
])
def test_sweep_and_compare_refuse_a_metric_the_run_does_not_compute(run, message, runs_dir):
    with pytest.raises(RecipeError, match="^" + re.escape(message) + "$"):
        run(DIGITS + "metrics: [f1]\n")
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


# -- help and DDP -------------------------------------------------------------------------------------

def test_help_metrics_lists_every_metric_with_its_arguments(ip, capsys):
    ip.run_line_magic("nbopt", "help metrics")
    shown = capsys.readouterr().out
    assert shown.startswith("metrics: extra validation metrics")
    for name, entry in SCORES.entries.items():
        row = re.search(rf"^    {re.escape(entry.signature_text())}\s+(.*)$", shown, flags=re.MULTILINE)
        assert row and row.group(1).startswith(metrics.METRICS[name].task), name
        if name in AVERAGES:
            assert row.group(1).endswith("average: " + ", ".join(AVERAGES[name])), name
    assert "top_k(k=5) is val_top5_acc" in shown and "val_f1_weighted" in shown
    assert "--metric NAME" in help_text("compare")


@needs_two_cores
def test_ddp_scores_the_whole_validation_split_not_one_process(tmp_path, runs_dir):
    """Two processes each validate half of the split; torchmetrics gathers their counts, so the
    history's F1 at the best epoch is the whole split's — the same as the final score and sklearn's."""
    recipe = ("model: mlp(hidden=[16])\ndata: synthetic(n=400, shape=[8], classes=4, noise=3)\nepochs: 3\n"
              "batch_size: 32\nmetrics: [f1, auroc]\nearly_stopping: {monitor: val_f1, patience: 3}\n")
    (tmp_path / "recipe.yaml").write_text(recipe + "devices: 2\nstrategy: ddp\n")
    code, out, err = finish(start_cli(["run", "recipe.yaml", "--name", "ddp"], tmp_path, runs_dir, tmp_path / "tmp"),
                            timeout=300)
    assert code == 0, err[-3000:]
    run, plan = nbopt.load_run("ddp", {}), nbopt.check(recipe, {})
    x, y = arrays(plan)
    assert len(y) % 2 == 0  # no sample padded in twice: each process validates exactly half
    outputs = run.predict(x)
    assert run.metrics["val_f1"] == pytest.approx(skm.f1_score(y, outputs.argmax(1).numpy(), average="macro"),
                                                  abs=1e-5)
    best = run.history.iloc[run.metrics["best_epoch"] - 1]
    assert best["val_f1"] == pytest.approx(run.metrics["val_f1"], abs=1e-5)
    assert best["val_auroc"] == pytest.approx(run.metrics["val_auroc"], abs=1e-5)
