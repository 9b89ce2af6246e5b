"""The magics in a real IPython shell, and how a real Jupyter kernel shows their output and errors."""
from __future__ import annotations

import math
import re

import pytest
from IPython.core.error import UsageError

import nbopt
from nbopt import RecipeError
from nbopt.run import Run

RECIPE = "model: mlp(hidden=[8])\ndata: iris\nepochs: 2\n"


def cell(ip, line: str, body: str):
    return ip.run_cell(f"%%nbopt {line}\n{body}")


def test_train_leaves_a_run_in_the_named_variable_and_in_nbopt_last(ip, runs_dir, capsys):
    result = cell(ip, "train --name X --out myrun", RECIPE)
    assert result.success, result.error_in_exec
    run = ip.user_ns["myrun"]
    assert isinstance(run, Run) and nbopt.last is run
    assert run.name == "X" and run.folder == runs_dir / "X" and run.status == "finished"
    assert len(run.history) == 2
    shown = capsys.readouterr().out
    assert "epoch 1/2" in shown and "epoch 2/2" in shown and "nbopt run 'X'" in shown


def test_train_defaults_to_the_variable_run(ip):
    assert cell(ip, "train", RECIPE).success
    assert isinstance(ip.user_ns["run"], Run) and ip.user_ns["run"] is nbopt.last


def test_recipe_names_are_the_notebooks_variables(ip):
    ip.run_cell("import torch\nnet = torch.nn.Sequential(torch.nn.Linear(4, 3))\nbefore = net[0].weight.clone()")
    assert cell(ip, "train --out r", "model: net\ndata: iris\nepochs: 2\noptimizer: sgd(lr=0.5)\n").success
    r = ip.user_ns["r"]
    assert r.model is not ip.user_ns["net"]
    assert ip.run_cell("assert torch.equal(net[0].weight, before)").success, "the notebook's net was trained"


def test_dry_run_trains_nothing_and_shows_the_plan(ip, runs_dir, capsys):
    result = cell(ip, "train --dry-run --out planned", "model: mlp(hidden=[16])\ndata: digits\nepochs: 3\n"
                                                      "batch_size: 32\n")
    assert result.success, result.error_in_exec
    assert not runs_dir.exists() or not any(runs_dir.iterdir()), "a dry run created a run folder"
    assert "planned" not in ip.user_ns
    shown = capsys.readouterr().out
    assert "nbopt plan (nothing trained)" in shown
    params = 64 * 16 + 16 + 16 * 10 + 10
    assert f"mlp(hidden=[16]) · {params:,} parameters" in shown
    from sklearn.datasets import load_digits
    n = len(load_digits().target)
    val = math.ceil(0.2 * n)
    assert re.search(rf"splits\s+train {n - val:,}, val {val:,} \(seed 0\)", shown)
    assert re.search(rf"training\s+3 epochs × {math.ceil((n - val) / 32)} steps, batch size 32", shown)
    assert re.search(r"sample shape +\[1, 8, 8\]", shown)


def test_bad_recipe_fails_the_cell_with_one_line(ip, runs_dir, capsys):
    result = cell(ip, "train", "model: mlp\ndata: iris\noptimizer: adma\n")
    assert not result.success
    assert isinstance(result.error_in_exec, RecipeError)
    captured = capsys.readouterr()
    shown = (captured.out + captured.err).strip()
    assert shown == "RecipeError: optimizer (line 3): unknown optimizer 'adma' — did you mean 'adam'?"
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_bad_magic_options(ip):
    with pytest.raises(UsageError, match=re.escape("--out must be a Python variable name, got '1x'")):
        ip.run_cell_magic("nbopt", "train --out 1x", RECIPE)
    with pytest.raises(UsageError, match=re.escape(
            "%%nbopt train is a cell magic: write the recipe in the lines below `%%nbopt train`")):
        ip.run_line_magic("nbopt", "train")
    with pytest.raises(UsageError, match=re.escape("unknown cell command 'trian'")):
        ip.run_cell_magic("nbopt", "trian", RECIPE)


def test_a_command_called_the_wrong_way_is_a_usage_error(ip):
    with pytest.raises(UsageError, match=re.escape("%nbopt runs takes no cell: write it on a line of its own")):
        ip.run_cell_magic("nbopt", "runs", RECIPE)
    with pytest.raises(UsageError, match=re.escape("%%nbopt sweep is a cell magic")):
        ip.run_line_magic("nbopt", "sweep --trials 3")
    with pytest.raises(UsageError, match="invalid int value: 'many'"):
        ip.run_cell_magic("nbopt", "compare --repeats many", RECIPE)
    with pytest.raises(UsageError, match="invalid choice: 'bayes'"):
        ip.run_cell_magic("nbopt", "sweep --sampler bayes", RECIPE)
    with pytest.raises(UsageError, match=re.escape("`check` is a shell command (nbopt check)")):
        ip.run_line_magic("nbopt", "check")


def test_unknown_subcommand_is_a_usage_error(ip):
    with pytest.raises(UsageError, match=re.escape("unknown command 'bogus'; see `%nbopt help`")):
        ip.run_line_magic("nbopt", "bogus")
    result = ip.run_cell("%nbopt bogus")
    assert isinstance(result.error_in_exec, UsageError)


def test_runs_lists_the_recorded_runs(ip, runs_dir, capsys):
    ip.run_line_magic("nbopt", "runs")
    assert capsys.readouterr().out.strip() == f"No runs recorded in {runs_dir} yet."
    assert cell(ip, "train --name first", RECIPE).success
    assert cell(ip, "train --name second", "model: mlp(hidden=[8])\ndata: wine\nepochs: 1\n").success
    table = ip.run_line_magic("nbopt", "runs")
    assert sorted(table.index) == ["first", "second"]
    assert table.loc["first", ["status", "data"]].tolist() == ["finished", "iris"]
    assert table.loc["second", "data"] == "wine" and table.loc["second", "score"].startswith("val_acc 0.")


def test_export_writes_a_recipe_that_check_accepts(ip, tmp_path, capsys):
    assert cell(ip, "train --name baseline", RECIPE + "optimizer: adam(lr=3e-3)\n").success
    ip.run_line_magic("nbopt", "export baseline --to file.yaml")
    exported = tmp_path / "file.yaml"
    assert exported.exists()
    assert "file.yaml" in capsys.readouterr().out
    plan = nbopt.check(exported.read_text(), {})
    assert plan.recipe.optimizer.kwargs == {"lr": 0.003} and plan.recipe.epochs == 2
    ip.run_line_magic("nbopt", "export baseline")
    assert (tmp_path / "baseline.yaml").read_text() == exported.read_text()


def test_export_of_an_unknown_run_suggests(ip, runs_dir):
    assert cell(ip, "train --name baseline", RECIPE).success
    with pytest.raises(RecipeError, match=re.escape(f"no run named 'baselin' in {runs_dir} — did you mean 'baseline'?")):
        ip.run_line_magic("nbopt", "export baselin")


# -- in a real kernel ---------------------------------------------------------------------------------

def test_kernel_shows_a_recipe_error_as_one_line(kernel):
    reply, outputs = kernel.execute("%%nbopt train\nmodel: mlp\ndata: iris\nbatch_size: -3\n")
    assert reply["status"] == "error"
    errors = kernel.errors(outputs)
    assert len(errors) == 1
    error = errors[0]
    assert error["ename"] == "RecipeError"
    assert len(error["traceback"]) == 1, error["traceback"]
    line = re.sub(r"\x1b\[[0-9;]*m", "", error["traceback"][0])
    assert line == "RecipeError: batch_size (line 3): must be greater than or equal to 1, got -3"
    assert "File " not in line and "\n" not in line


def test_kernel_shows_live_output_and_a_summary(kernel):
    reply, outputs = kernel.execute("%%nbopt train --name shown --out shown\n" + RECIPE)
    assert reply["status"] == "ok", kernel.errors(outputs)
    data = [m["content"].get("data", {}) for m in outputs]
    assert any("image/png" in d for d in data), "no training curves were shown"
    assert any("nbopt run 'shown'" in d.get("text/html", "") for d in data), "no summary was shown"
    reply, outputs = kernel.execute("print(type(shown).__name__, shown.status, len(shown.history))")
    assert kernel.text(outputs).split() == ["Run", "finished", "2"]
