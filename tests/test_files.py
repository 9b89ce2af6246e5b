"""`data: csv(path=FILE)` / `parquet(path=FILE)`, `run.predict` on tables, and `balance:` for imbalanced classes.

The tables are real files written with pandas (breast_cancer and wine with a text column added), and
runs train on them for real; the class weights are checked against scikit-learn's own.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nbopt
from nbopt import RecipeError
from nbopt.components import Component, parse_component
from nbopt.techniques.losses import build_loss

ROOT = Path(__file__).resolve().parents[1]


def cancer_table(malignant: int | None = None) -> pd.DataFrame:
    """breast_cancer as a file would hold it: text labels and a text `size` column; `malignant` thins that class."""
    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = np.where(frame.pop("target") == 0, "malignant", "benign")
    frame["size"] = pd.cut(frame["mean radius"], [0, 12, 15, 100], labels=["small", "medium", "large"]).astype(str)
    if malignant is not None:
        frame = pd.concat([frame[frame.diagnosis == "benign"],
                           frame[frame.diagnosis == "malignant"].sample(malignant, random_state=0)])
    return frame.sample(frac=1, random_state=0).reset_index(drop=True)


def recipe(data: str, target: str, extra: str = "") -> str:
    return f"model: mlp(hidden=[16])\ndata: {data}\ntarget: {target}\n{extra}"


@pytest.fixture(scope="module")
def cancer_run(tmp_path_factory):
    """One run trained on a CSV file, shared by the predict tests; with the table as read back from the file."""
    folder = tmp_path_factory.mktemp("cancer")
    cancer_table().to_csv(folder / "cancer.csv", index=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NBOPT_RUNS_DIR", str(folder / "runs"))
        patch.chdir(folder)
        run = nbopt.train(recipe("csv(path='cancer.csv')", "diagnosis", "epochs: 6\n"), {}, live=False)
    return run, pd.read_csv(folder / "cancer.csv")


# -- reading files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_file_is_one_hot_encoded_like_a_dataframe(kind, tmp_path, check):
    frame = cancer_table()
    getattr(frame, f"to_{kind}")(tmp_path / f"cancer.{kind}", index=False)
    read = pd.read_csv(tmp_path / "cancer.csv") if kind == "csv" else pd.read_parquet(tmp_path / "cancer.parquet")
    plan = check(recipe(f"{kind}(path='cancer.{kind}')", "diagnosis", "normalize: none\n"))
    d = plan.data
    assert d.description == (f"cancer.{kind}: {'CSV' if kind == 'csv' else 'Parquet'} file, 569 rows, 33 feature "
                             "columns → 'diagnosis'")
    assert d.input_shape == (33,)  # 30 measurements, size one-hot into 3 columns
    assert d.task == "classification" and d.classes == ["benign", "malignant"]  # sorted, whatever the file's order
    assert d.sizes == {"train": 455, "val": 114}
    x = torch.cat([d.train.x, d.val.x]).numpy()
    y = torch.cat([d.train.y, d.val.y]).numpy()
    assert np.bincount(y).tolist() == [357, 212]  # malignant is class 1, as in d.classes
    expected = pd.get_dummies(read.drop(columns="diagnosis"), dtype=np.float32).to_numpy(np.float32)
    assert np.array_equal(np.sort(x, axis=0), np.sort(expected, axis=0))  # every column holds the file's values
    assert list(d.inputs.encoded[-3:]) == ["size_large", "size_medium", "size_small"]


def test_a_float_target_in_a_file_is_regression(tmp_path, train):
    wine = load_wine(as_frame=True).frame
    wine["colour"] = np.where(wine["color_intensity"] > 5, "dark", "light")
    wine.to_csv(tmp_path / "wine.csv", index=False)
    run = train(recipe("csv(path='wine.csv')", "alcohol", "epochs: 2\n"))
    assert run.metric_key == "val_mae" and "val_mae" in run.history.columns
    outputs = run.predict(pd.read_csv(tmp_path / "wine.csv").head(4))
    assert outputs.shape == (4, 1) and torch.isfinite(outputs).all()


def test_a_parquet_category_column_keeps_its_unused_categories(tmp_path, check):
    frame = cancer_table()
    frame["size"] = pd.Categorical(frame["size"], categories=["small", "medium", "large", "huge"])
    frame.to_parquet(tmp_path / "cancer.parquet")
    inputs = check(recipe("parquet('cancer.parquet')", "diagnosis")).data.inputs
    assert inputs.encoded[-4:] == ["size_small", "size_medium", "size_large", "size_huge"]
    # the same rows with `size` as plain text encode identically
    as_text = frame.assign(size=frame["size"].astype(str))
    assert torch.equal(inputs.encode(as_text), inputs.encode(frame))


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, check, monkeypatch):
    cancer_table().to_parquet(tmp_path / "cancer.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now fails, as when it is not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(RecipeError, match="^" + re.escape(
            "data (line 2): reading parquet files needs pyarrow: pip install nbopt[parquet]") + "$"):
        check(recipe("parquet(path='cancer.parquet')", "diagnosis"))


def test_file_mistakes_are_one_line_errors(tmp_path, check):
    with pytest.raises(RecipeError, match="^" + re.escape(
            f"data (line 2): there is no file 'nope.csv' (relative paths start in the working folder, {tmp_path})")
            + "$"):
        check(recipe("csv(path='nope.csv')", "diagnosis"))
    with pytest.raises(RecipeError, match="^" + re.escape(  # an unquoted file name is read as text too
            f"data (line 2): there is no file 'cancer.csv' (relative paths start in the working folder, {tmp_path})")):
        check(recipe("csv(path=cancer.csv)", "diagnosis"))
    (tmp_path / "broken.parquet").write_text("not a parquet file")
    with pytest.raises(RecipeError, match=r"^data \(line 2\): cannot read 'broken.parquet' as Parquet: \S"):
        check(recipe("parquet('broken.parquet')", "diagnosis"))
    cancer_table().to_csv(tmp_path / "cancer.csv", index=False)
    with pytest.raises(RecipeError, match="^" + re.escape(
            "target: 'cancer.csv' is a CSV file; say which column to predict with `target: COLUMN`") + "$"):
        check("model: mlp\ndata: csv('cancer.csv')\n")
    gaps = cancer_table()
    gaps.loc[3, "mean area"] = np.nan
    gaps.to_csv(tmp_path / "gaps.csv", index=False)
    with pytest.raises(RecipeError, match="^" + re.escape(
            "data (line 2): 'gaps.csv' has 1 NaN value among 18,777, the first at row 3, column 'mean area'; fill "
            "or drop them before training, as they make every loss NaN") + "$"):
        check(recipe("csv('gaps.csv')", "diagnosis"))


# -- run.predict on tables ---------------------------------------------------------------------------

def test_predict_on_a_dataframe_equals_predict_on_the_encoded_rows(cancer_run):
    run, table = cancer_run
    rows = table.head(20)
    encoded = pd.get_dummies(rows.drop(columns="diagnosis"), dtype=np.float32)
    encoded = encoded.reindex(columns=run.inputs.encoded, fill_value=0).to_numpy(np.float32)
    # the target column is ignored, and the column order does not matter
    shuffled = rows[list(reversed(rows.columns))]
    assert torch.allclose(run.predict(shuffled), run.predict(encoded))
    assert torch.allclose(run.predict(rows.drop(columns="diagnosis")), run.predict(torch.from_numpy(encoded)))
    labels = run.predict(rows, labels=True)
    assert set(labels) <= {"benign", "malignant"}
    assert labels == [run.classes[i] for i in run.predict(rows).argmax(1).tolist()]
    accuracy = np.mean(np.array(run.predict(table, labels=True)) == table["diagnosis"].to_numpy())
    assert accuracy > 0.9  # trained: not a constant answer


def test_predict_encodes_single_rows_and_unseen_categories(cancer_run):
    run, table = cancer_run
    row = table.drop(columns="diagnosis").iloc[0].to_dict()
    assert torch.allclose(run.predict(row), run.predict(table.head(1)))
    assert torch.allclose(run.predict(table.iloc[0]), run.predict(table.head(1)))
    x = run.inputs.encode(table.head(3).assign(size="gigantic"))
    assert x[:, -3:].abs().sum() == 0  # a value training never saw: all-zero dummies
    assert torch.equal(x[:, :-3], run.inputs.encode(table.head(3))[:, :-3])


def test_predict_refuses_missing_and_mistyped_columns_by_name(cancer_run):
    run, table = cancer_run
    with pytest.raises(RecipeError, match="^" + re.escape(
            "the rows lack the training column(s) 'mean radius', 'size'; predict needs every feature column "
            "the run was trained on") + "$"):
        run.predict(table.drop(columns=["mean radius", "size"]))
    with pytest.raises(RecipeError, match="^" + re.escape(
            "column(s) 'mean area' held numbers in training but not here; convert them to numbers first") + "$"):
        run.predict(table.head(2).assign(**{"mean area": ["1.0", "2.0"]}))


NO_WARNINGS = """
import numpy as np, pandas as pd, nbopt
from sklearn.datasets import load_breast_cancer
frame = load_breast_cancer(as_frame=True).frame
frame["size"] = np.where(frame["mean radius"] > 14, "large", "small")
run = nbopt.train("model: mlp\\ndata: frame\\ntarget: target\\nepochs: 1\\n", {"frame": frame}, live=False)
encoded = pd.DataFrame(run.inputs.encode(frame.head(3)).numpy()).to_numpy()
assert not encoded.flags.writeable
print(run.predict(frame.head(3)).shape, run.predict(encoded).shape)
"""


def test_a_notebook_dataframe_trains_and_predicts_without_warnings(tmp_path):
    """pandas' copy-on-write arrays are read-only, and torch warns on those unless nbopt copies them.

    In a fresh process with warnings as errors: torch warns about it only once per process.
    """
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", NO_WARNINGS], cwd=tmp_path,
                          capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["torch.Size([3,", "2])", "torch.Size([3,", "2])"]


# -- balance ---------------------------------------------------------------------------------------

def test_balance_weights_equal_scikit_learns_from_the_training_split(check):
    wine = load_wine(as_frame=True).frame
    thin = pd.concat([wine[wine.target != 2], wine[wine.target == 2].head(12)])
    plan = check(recipe("frame", "target", "balance: weights\n"), {"frame": thin})
    y = plan.data.train.y.numpy()  # the training split's labels
    expected = compute_class_weight("balanced", classes=np.unique(y), y=y)
    assert torch.allclose(plan.class_weights, torch.tensor(expected, dtype=torch.float32))
    assert plan.data.class_counts == np.bincount(y).tolist()
    assert check(recipe("frame", "target"), {"frame": thin}).class_weights is None


def test_weighted_losses_average_like_torch_cross_entropy_with_weights():
    torch.manual_seed(0)
    logits, y = torch.randn(50, 3), torch.randint(0, 3, (50,))
    weights = torch.tensor([0.5, 2.0, 4.0])
    weighted = build_loss(Component("cross_entropy"), "classification", 3, class_weights=weights)
    assert torch.allclose(weighted(logits, y), F.cross_entropy(logits, y, weight=weights))
    soft = F.one_hot(y, 3).float()  # mixup's targets: weighed by their mix of classes
    assert torch.allclose(weighted(logits, soft), weighted(logits, y))
    # without weights every loss averages as before
    assert torch.allclose(build_loss(Component("cross_entropy"), "classification", 3)(logits, y),
                          F.cross_entropy(logits, y))
    outputs, targets = torch.randn(50, 1), torch.randn(50)
    assert torch.allclose(build_loss(Component("mse"), "regression", None)(outputs, targets),
                          F.mse_loss(outputs[:, 0], targets))


@pytest.mark.parametrize("loss, task, outputs_shape, soft", [
    ("cross_entropy", "classification", (50, 3), False), ("cross_entropy", "classification", (50, 3), True),
    ("cross_entropy(label_smoothing=0.1)", "classification", (50, 3), False), ("nll", "classification", (50, 3), False),
    ("bce", "classification", (50, 3), False), ("mse", "classification", (50, 3), True),
    ("huber", "classification", (50, 3), False), ("l1", "classification", (50, 3), False),
    ("mse", "regression", (50, 1), False), ("huber(delta=0.5)", "regression", (50, 4), False),
    ("l1", "regression", (50, 4), False)])
def test_an_unweighted_loss_is_the_mean_of_its_per_sample_losses(loss, task, outputs_shape, soft):
    """Unweighted, torch's own mean replaces nbopt's per-sample average: the same value, within float rounding."""
    torch.manual_seed(0)
    outputs = torch.randn(*outputs_shape)
    if task == "regression":
        targets = torch.randn(50) if outputs_shape[1] == 1 else torch.randn(*outputs_shape)
    else:
        targets = torch.randint(0, 3, (50,))
        targets = F.one_hot(targets, 3).float() * 0.7 + 0.1 if soft else targets
    component = parse_component(loss)
    fast = build_loss(component, task, 3 if task == "classification" else None)
    per_sample = build_loss(component, task, 3 if task == "classification" else None,
                            class_weights=torch.ones(3) if task == "classification" else None)
    if task == "regression":
        per_sample.mean_fn = None  # the per-sample average of a regression loss, as before
    assert (fast.mean_fn is not None) == (loss != "nll")
    assert torch.allclose(fast(outputs, targets), per_sample(outputs, targets), rtol=1e-6, atol=1e-7)


def test_oversample_draws_every_class_evenly_with_a_seed(check):
    frame = cancer_table(malignant=40)
    plan = check(recipe("frame", "diagnosis", "balance: oversample\nseed: 3\n"), {"frame": frame})
    counts = plan.data.class_counts
    assert counts[1] / sum(counts) < 0.11
    epoch = torch.cat([y for _, y in plan.data.train])
    assert len(epoch) == plan.data.sizes["train"] == sum(counts)  # an epoch keeps its length
    drawn = np.bincount(epoch.numpy(), minlength=2) / len(epoch)
    assert abs(drawn[1] - 0.5) < 0.08, drawn
    again = check(recipe("frame", "diagnosis", "balance: oversample\nseed: 3\n"), {"frame": frame})
    assert torch.equal(torch.cat([y for _, y in again.data.train]), epoch)
    plain = check(recipe("frame", "diagnosis", "seed: 3\n"), {"frame": frame})
    assert np.bincount(torch.cat([y for _, y in plain.data.train]).numpy()).tolist() == counts


def test_the_plan_shows_class_counts_and_what_balancing_does(check):
    frame = cancer_table(malignant=40)
    weights = check(recipe("frame", "diagnosis", "balance: weights\n"), {"frame": frame})
    benign, malignant = weights.data.class_counts
    assert dict(weights.rows())["train classes"] == f"benign: {benign}, malignant: {malignant}"
    w = weights.class_weights.tolist()
    assert f"balance: class weights in the loss benign ×{w[0]:.3g}, malignant ×{w[1]:.3g}" in weights.techniques()
    oversample = check(recipe("frame", "diagnosis", "balance: oversample\n"), {"frame": frame})
    share = round(100 * malignant / (benign + malignant))
    assert (f"balance: oversample, each class drawn 1/2 of the time (training split: benign {100 - share}%, "
            f"malignant {share}%)") in oversample.techniques()


def test_balance_weights_raises_the_recall_of_a_rare_class(tmp_path, train, check):
    cancer_table(malignant=40).to_csv(tmp_path / "thin.csv", index=False)
    base = recipe("csv('thin.csv')", "diagnosis", "epochs: 3\noptimizer: sgd(lr=0.05)\nval_split: 0.5\n")

    def recall(extra: str) -> tuple[float, float]:
        run = train(base + extra)
        val = check(base).data.val
        x, y = val.x, val.y
        predicted = run.predict(x).argmax(1)
        return float((predicted[y == 1] == 1).float().mean()), float((predicted[y == 0] == 0).float().mean())

    plain, balanced = recall(""), recall("balance: weights\n")
    assert balanced[0] >= plain[0] + 0.25, (plain, balanced)
    assert balanced[1] > 0.8  # not by calling everything malignant


def test_balance_is_refused_where_it_cannot_work(check):
    wine = load_wine(as_frame=True).frame
    with pytest.raises(RecipeError, match="^" + re.escape(
            "balance (line 4): balance evens out classes but the task is regression; remove `balance:`") + "$"):
        check(recipe("frame", "alcohol", "balance: weights\n"), {"frame": wine})
    x, y = torch.randn(40, 4), torch.arange(40) % 2
    loaders = (DataLoader(TensorDataset(x, y), batch_size=8), DataLoader(TensorDataset(x, y), batch_size=8))
    with pytest.raises(RecipeError, match=r"^balance \(line 3\): balance counts the classes of in-memory data, "
                                          r"but your DataLoaders bring their own batches; "):
        check("model: mlp\ndata: loaders\nbalance: oversample\n", {"loaders": loaders})

    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 2)

        def forward(self, x):
            return self.layer(x)

    with pytest.raises(RecipeError, match=r"^balance \(line 3\): your LightningModule computes its own loss"):
        check("model: lit\ndata: xy\nbalance: weights\n", {"lit": Lit(), "xy": (x.numpy(), y.numpy())})
    with pytest.raises(RecipeError, match="^" + re.escape(
            "balance (line 1): must be 'weights' or 'oversample', got 'even'") + "$"):
        check("balance: even\nmodel: mlp\ndata: digits\n")
    assert check("model: mlp\ndata: digits\nbalance: none\n").recipe.balance is None


# -- in a real Jupyter kernel ------------------------------------------------------------------------

def test_kernel_trains_on_a_csv_file_and_predicts_a_dataframe(kernel):
    cancer_table().to_csv(kernel.cwd / "kernel-cancer.csv", index=False)
    cell = "%%nbopt train --name csv-kernel --out crun\n" + recipe("csv(path='kernel-cancer.csv')", "diagnosis",
                                                                   "epochs: 2\nbalance: weights\n")
    reply, outputs = kernel.execute(cell, timeout=180)
    assert reply["status"] == "ok", kernel.errors(outputs)
    reply, outputs = kernel.execute(textwrap.dedent("""
        import json
        import pandas as pd
        table = pd.read_csv('kernel-cancer.csv')
        print(json.dumps({"labels": crun.predict(table.head(6), labels=True), "truth": table.diagnosis[:6].tolist(),
                          "classes": crun.classes, "shape": list(crun.predict(table).shape)}))
    """), timeout=60)
    assert reply["status"] == "ok", kernel.errors(outputs)
    result = json.loads(kernel.text(outputs).strip().splitlines()[-1])
    assert result["classes"] == ["benign", "malignant"] and result["shape"] == [569, 2]
    assert sum(a == b for a, b in zip(result["labels"], result["truth"])) >= 5
    reply, outputs = kernel.execute("crun.predict(table.drop(columns=['size']))", timeout=60)
    assert kernel.text(outputs) == "" and kernel.errors(outputs)[0]["ename"] == "RecipeError"
    assert kernel.errors(outputs)[0]["traceback"] == [
        "RecipeError: the rows lack the training column(s) 'size'; predict needs every feature column the run "
        "was trained on"]


def test_a_file_reader_without_its_path_says_what_to_write(check):
    with pytest.raises(RecipeError, match=r"^data \(line 2\): csv needs path: write csv\(path, sep=','\)$"):
        check("model: mlp\ndata: csv\ntarget: y\n")
