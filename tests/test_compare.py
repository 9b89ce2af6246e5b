"""`compare` / `%%nbopt compare`: variants trained on the same split, seed and starting weights."""
from __future__ import annotations

import re

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

import nbopt
from nbopt import RecipeError


def compare(recipe, namespace=None, **options):
    return nbopt.compare(recipe, {} if namespace is None else namespace, live=False, **options)


def no_runs(folder) -> bool:
    return not folder.exists() or not any(folder.iterdir())


TINY = "data: synthetic(n=100, shape=[4], classes=2)\nbatch_size: 32\n"  # 80 train (3 batches), 20 val
COMPARED = ["train_loss", "val_loss", "val_acc", "lr"]


class Net(nn.Module):
    def __init__(self, hidden: int = 5):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, x):
        return self.layers(x)


# -- same split, same seed, same starting weights ------------------------------------------------------------

def test_variants_share_the_split_and_the_starting_weights():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    comparison = compare("model: net\n" + TINY + "epochs: 2\noptimizer: adam(lr=0.01)\nvariants:\n"
                         "  two: {}\n  three: {epochs: 3}\n  frozen: {optimizer: 'sgd(lr=0)', epochs: 1}\n",
                         {"net": net})
    two, three, frozen = (comparison.runs[k] for k in ("two", "three", "frozen"))
    assert len(two.history) == 2 and len(three.history) == 3 and len(frozen.history) == 1
    # same split, same starting weights, same batches: the first two epochs are the same numbers
    pd.testing.assert_frame_equal(two.history[COMPARED], three.history[COMPARED].iloc[:2])
    # the weights a variant starts from are the notebook's, which stay as they were
    for key, value in frozen.model.state_dict().items():
        assert torch.equal(value, initial[key]), f"'frozen' did not start from the notebook's weights ({key})"
    for key, value in net.state_dict().items():
        assert torch.equal(value, initial[key]), "compare changed the notebook's model"
    assert not torch.equal(two.model[0].weight, initial["0.weight"])


def test_a_variant_can_change_the_model():
    comparison = compare("model: mlp(hidden=[8])\n" + TINY + "epochs: 1\nvariants:\n  small: {}\n"
                         "  wide: {model: 'mlp(hidden=[32])'}\n  custom: {model: 'Net(hidden=3)'}\n"
                         "  deeper: {model: 'mlp(hidden=[8, 8])', activation: tanh}\n", {"Net": Net})
    runs = comparison.runs
    assert set(runs) == {"small", "wide", "custom", "deeper"}
    assert isinstance(runs["custom"].model, Net) and runs["custom"].model.layers[0].out_features == 3
    assert runs["wide"].model[1].out_features == 32
    assert any(isinstance(m, nn.Tanh) for m in runs["deeper"].model.modules())
    expected = {name: sum(p.numel() for p in run.model.parameters()) for name, run in runs.items()}
    assert comparison.table["parameters"].to_dict() == expected
    assert expected["small"] == 4 * 8 + 8 + 8 * 2 + 2


def test_a_variant_adjusts_early_stopping_setting_by_setting():
    comparison = compare("model: mlp(hidden=[8])\n" + TINY + "epochs: 1\n"
                         "early_stopping: {monitor: val_acc, patience: 5}\nvariants:\n"
                         "  impatient: {early_stopping: {patience: 1}}\n")
    stopping = comparison.runs["impatient"].recipe.early_stopping
    assert (stopping.monitor, stopping.patience) == ("val_acc", 1)
    assert comparison.verdict == ""  # nothing to rank with one variant
    assert list(comparison.table.index) == ["impatient"]


def test_table_has_one_row_per_variant_sorted_best_first():
    comparison = compare("model: mlp(hidden=[8])\n" + TINY + "epochs: 2\nvariants:\n"
                         "  frozen: {optimizer: 'sgd(lr=0)'}\n  learns: {optimizer: 'adam(lr=0.05)'}\n"
                         "  slow: {optimizer: 'sgd(lr=0.001)', epochs: 1}\n")
    table = comparison.table
    assert table.index.name == "variant"
    assert sorted(table.index) == ["frozen", "learns", "slow"]
    assert list(table.columns) == ["val_acc", "best epoch", "epochs run", "time (s)", "parameters"]
    assert table["val_acc"].is_monotonic_decreasing
    assert table.index[0] == "learns"
    for name, run in comparison.runs.items():
        row = table.loc[name]
        assert row["val_acc"] == pytest.approx(run.metrics["val_acc"])
        assert row["best epoch"] == run.metrics["best_epoch"]
        assert row["epochs run"] == len(run.history) == run.recipe.epochs
        assert row["time (s)"] == pytest.approx(run.metrics["seconds"]) and row["time (s)"] > 0
    assert comparison.verdict.startswith(f"'{table.index[0]}' leads '{table.index[1]}' by ")
    assert "use --repeats 3 or more" in comparison.verdict
    fig = comparison.plot()
    assert isinstance(fig, Figure)
    assert {line.get_label() for line in fig.axes[1].get_lines()} == {"frozen", "learns", "slow"}
    assert "nbopt compare" in repr(comparison) and "learns" in comparison._repr_html_()


def test_regression_table_sorts_lowest_error_first():
    comparison = compare("model: mlp(hidden=[8])\ndata: synthetic(n=100, shape=[4], classes=0)\nbatch_size: 32\n"
                         "epochs: 2\nvariants:\n  frozen: {optimizer: 'sgd(lr=0)'}\n"
                         "  learns: {optimizer: 'adam(lr=0.05)'}\n")
    assert comparison.table.columns[0] == "val_mae"
    assert comparison.table["val_mae"].is_monotonic_increasing
    assert comparison.table.index[0] == "learns"


# -- repeats --------------------------------------------------------------------------------------------------

def test_repeats_give_mean_std_and_a_verdict_beyond_the_seed_spread():
    comparison = compare("model: mlp(hidden=[8])\n" + TINY + "epochs: 2\nseed: 5\nvariants:\n"
                         "  frozen: {optimizer: 'sgd(lr=0)'}\n  learns: {optimizer: 'adam(lr=0.05)'}\n", repeats=3)
    table = comparison.table
    assert list(table.columns) == ["val_acc", "val_acc std", "seeds", "best epoch", "epochs run", "time (s)",
                                   "parameters"]
    for name, runs in comparison.all_runs.items():
        assert [run.recipe.seed for run in runs] == [5, 6, 7]
        scores = pd.Series([run.metrics["val_acc"] for run in runs])
        assert table.loc[name, "val_acc"] == pytest.approx(scores.mean())
        assert table.loc[name, "val_acc std"] == pytest.approx(scores.std(ddof=1))
        assert table.loc[name, "seeds"] == 3
        assert comparison.runs[name] is runs[0]
    frozen = comparison.all_runs["frozen"]
    assert frozen[0].history["val_loss"].iloc[0] != frozen[1].history["val_loss"].iloc[0]  # seeds differ
    lead = table["val_acc"].iloc[0] - table["val_acc"].iloc[1]
    spread = table["val_acc std"].max()
    assert table.index[0] == "learns" and lead > spread
    assert comparison.verdict == (f"'learns' leads 'frozen' by {lead:.4g} val_acc, more than the seed-to-seed "
                                  f"spread (std up to {spread:.4g}) over 3 seeds.")


def test_repeats_verdict_says_when_the_lead_is_within_the_spread():
    comparison = compare("model: mlp(hidden=[8])\n" + TINY + "epochs: 1\nvariants:\n  a: {}\n  b: {}\n", repeats=2)
    table = comparison.table
    assert table["val_acc"].iloc[0] == table["val_acc"].iloc[1]  # the same recipe, the same seeds
    assert table["val_acc std"].iloc[0] > 0
    assert "within the seed-to-seed spread" in comparison.verdict
    assert "over 2 seeds: the ranking may be noise" in comparison.verdict


def test_a_tie_in_one_run_is_called_a_tie_and_epochs_are_whole_numbers():
    comparison = compare("model: mlp(hidden=[8])\n" + TINY + "epochs: 2\nvariants:\n  a: {}\n  b: {}\n")
    assert comparison.verdict == ("'a' and 'b' tie on val_acc in a single run; use --repeats 3 or more to compare "
                                  "them over several seeds.")
    assert comparison.table["epochs run"].tolist() == [2, 2]
    assert " 2.0 " not in comparison.table.to_string()


# -- mistakes: before any training -----------------------------------------------------------------------------

def test_an_invalid_variant_fails_before_any_training(runs_dir):
    with pytest.raises(RecipeError, match=re.escape(
            "variant 'bad': optimizer (line 7): unknown optimizer 'adma' — did you mean 'adam'?")):
        compare("model: mlp(hidden=[8])\n" + TINY + "variants:\n  good: {}\n  bad:\n    optimizer: adma\n")
    assert no_runs(runs_dir)


def test_a_variant_whose_model_does_not_fit_fails_before_any_training(runs_dir):
    with pytest.raises(RecipeError, match=re.escape("variant 'images': model (line 5): cnn needs images")):
        compare("model: mlp(hidden=[8])\n" + TINY + "variants:\n  images: {model: cnn}\n  good: {}\n")
    assert no_runs(runs_dir)


@pytest.mark.parametrize("recipe, message", [
    ("model: mlp\ndata: wine\n", "variants: compare needs a `variants:` mapping of name → changes"),
    ("model: mlp\ndata: wine\nvariants:\n  bad: 3\n",
     "variants.bad (line 4): variant 'bad' must be a mapping of recipe keys to new values, got 3"),
    ("model: mlp\ndata: wine\nvariants:\n  a: {}\n  b: {data: 'synthetic(n=50, classes=0)'}\n",
     "the variants report different metrics (val_acc, val_mae); compare variants of the same task"),
])
def test_compare_recipe_mistakes(recipe, message, runs_dir):
    with pytest.raises(RecipeError, match=re.escape(message)):
        compare(recipe)
    assert no_runs(runs_dir)


def test_repeats_below_one_is_refused():
    with pytest.raises(RecipeError, match=re.escape("--repeats must be at least 1, got 0")):
        compare("model: mlp\ndata: wine\nvariants: {a: {}}\n", repeats=0)


# -- the cell magic, in a real IPython shell -------------------------------------------------------------------

CELL = "model: mlp(hidden=[8])\n" + TINY + "epochs: 1\nvariants:\n  adam: {}\n  sgd: {optimizer: 'sgd(lr=0.1)'}\n"


def test_compare_magic_leaves_a_comparison(ip, capsys):
    from nbopt.comparison import Comparison
    ip.run_cell_magic("nbopt", "compare", CELL)
    comparison = ip.user_ns["comparison"]
    assert isinstance(comparison, Comparison)
    assert set(comparison.runs) == {"adam", "sgd"} and comparison.repeats == 1
    out = capsys.readouterr().out
    assert "val_acc" in out and comparison.verdict in out


def test_compare_magic_repeats_and_out(ip):
    from nbopt.comparison import Comparison
    ip.run_cell_magic("nbopt", "compare --repeats 2 --out cmp", CELL)
    cmp = ip.user_ns["cmp"]
    assert isinstance(cmp, Comparison) and "comparison" not in ip.user_ns
    assert cmp.repeats == 2 and all(len(runs) == 2 for runs in cmp.all_runs.values())
    assert "val_acc std" in cmp.table.columns


def test_compare_magic_with_an_invalid_variant_shows_the_error_and_trains_nothing(ip, runs_dir, capsys):
    result = ip.run_cell("%%nbopt compare\nmodel: mlp\ndata: wine\nvariants:\n  bad: {optimizer: adma}\n")
    assert isinstance(result.error_in_exec, RecipeError)
    assert "variant 'bad'" in str(result.error_in_exec)
    assert "comparison" not in ip.user_ns
    assert no_runs(runs_dir)
    shown = capsys.readouterr()
    assert "Traceback" not in shown.out + shown.err


def test_the_table_gives_the_held_out_test_score_when_there_is_one():
    recipe = "model: mlp(hidden=[8])\n" + TINY + "epochs: 2\ntest_split: 0.2\nvariants:\n  a: {}\n  b: {optimizer: sgd}\n"
    comparison = compare(recipe, repeats=2)
    tested = [run.metrics["test_acc"] for run in comparison.all_runs["a"]]
    assert comparison.table.loc["a", "test_acc"] == pytest.approx(sum(tested) / 2)
    assert list(comparison.table.columns[:4]) == ["val_acc", "val_acc std", "test_acc", "test_acc std"]
    assert "test_acc" not in compare(recipe.replace("test_split: 0.2\n", "")).table


def test_runs_that_stopped_early_on_every_seed_need_no_status_column():
    recipe = "model: mlp(hidden=[8])\n" + TINY + "epochs: 30\nearly_stopping: {monitor: val_acc, patience: 1}\nvariants:\n  a: {}\n"
    comparison = compare(recipe, repeats=2)
    assert {run.status for run in comparison.all_runs["a"]} == {"stopped early"}
    assert "status" not in comparison.table

