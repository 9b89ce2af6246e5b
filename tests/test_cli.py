"""`nbopt run RECIPE.yaml`: the same recipes from a shell, in a subprocess like a user would run them."""
from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from cli_command import nbopt_command

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], cwd: Path, runs: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, NBOPT_RUNS_DIR=str(runs), OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(nbopt_command() + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_run_trains_prints_one_line_per_epoch_and_writes_the_run_folder(tmp_path, runs_dir):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: mlp(hidden=[8])\ndata: iris\nepochs: 3\noptimizer: adam(lr=1e-2)\n")
    result = run_cli(["run", str(recipe), "--name", "cli"], tmp_path, runs_dir)
    assert result.returncode == 0, result.stderr
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 3
    for n, line in enumerate(epoch_lines, 1):
        assert re.match(rf"epoch {n}/3  train_loss \S+  val_loss \S+  val_acc \S+  lr 0\.01  \S+s$", line), line
    folder = runs_dir / "cli"
    assert {"recipe.yaml", "history.csv", "best.pt", "run.json", "metrics.json"} <= {p.name for p in folder.iterdir()}
    assert f"Best weights: {folder / 'best.pt'}" in result.stdout
    history = pd.read_csv(folder / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    # what was printed is what was recorded
    printed = [float(re.search(r"val_loss (\S+)", line).group(1)) for line in epoch_lines]
    assert printed == pytest.approx(history["val_loss"].tolist(), rel=1e-3)
    assert json.loads((folder / "run.json").read_text())["status"] == "finished"


def test_import_paths_resolve_from_the_recipes_folder(tmp_path, runs_dir):
    project = tmp_path / "project"
    project.mkdir()
    (project / "mymodels.py").write_text(textwrap.dedent("""
        import numpy as np
        from torch import nn

        class Net(nn.Module):
            def __init__(self, hidden=6):
                super().__init__()
                self.layers = nn.Sequential(nn.Linear(5, hidden), nn.ReLU(), nn.Linear(hidden, 2))

            def forward(self, x):
                return self.layers(x)

        rng = np.random.default_rng(0)
        X = rng.normal(size=(80, 5)).astype(np.float32)
        y = (X[:, 0] > 0).astype(np.int64)
        table = (X, y)
    """))
    (project / "recipe.yaml").write_text("model: mymodels:Net\ndata: mymodels:table\nepochs: 2\n")
    elsewhere = tmp_path / "elsewhere"  # run from another folder: the recipe's folder is what counts
    elsewhere.mkdir()
    result = run_cli(["run", str(project / "recipe.yaml"), "--name", "imported"], elsewhere, runs_dir)
    assert result.returncode == 0, result.stderr
    run_json = json.loads((runs_dir / "imported" / "run.json").read_text())
    assert run_json["status"] == "finished" and run_json["model"] == "mymodels:Net"
    assert len(pd.read_csv(runs_dir / "imported" / "history.csv")) == 2
    metrics = json.loads((runs_dir / "imported" / "metrics.json").read_text())
    assert metrics["parameters"] == 5 * 6 + 6 + 6 * 2 + 2


def test_bad_recipe_exits_2_with_one_line_on_stderr(tmp_path, runs_dir):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model: mlp\ndata: iris\noptimizer: adma\n")
    result = run_cli(["run", str(recipe)], tmp_path, runs_dir)
    assert result.returncode == 2
    assert result.stderr.strip() == "nbopt: optimizer (line 3): unknown optimizer 'adma' — did you mean 'adam'?"
    assert "Traceback" not in result.stdout + result.stderr
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
    missing = run_cli(["run", str(tmp_path / "missing.yaml")], tmp_path, runs_dir)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (f"nbopt: cannot read the recipe file: No such file or directory: "
                                      f"{tmp_path / 'missing.yaml'}")


def test_runs_and_export_read_the_recorded_runs(tmp_path, runs_dir, capsys):
    """`nbopt runs` and `nbopt export` show what nbopt.runs() and nbopt.export() give, as the magics do."""
    from nbopt.cli import main
    from nbopt.store import RunFolder
    assert main(["runs"]) == 0
    assert capsys.readouterr().out.strip() == f"No runs recorded in {runs_dir} yet."
    folder = RunFolder.create("recorded")
    folder.write_recipe("model: mlp\ndata: iris\n")
    folder.write_status(started="2024-01-01 10:00:00", status="finished", epochs_run=3, best=0.9, metric="val_acc",
                        model="mlp", data="iris")
    assert main(["runs"]) == 0
    header, _, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["kind", "started", "status", "runs", "epochs", "score", "model", "data"]
    assert row.split() == ["recorded", "train", "2024-01-01", "10:00:00", "finished", "1", "3", "val_acc", "0.9", "mlp",
                           "iris"]
    assert main(["export", "recorded", "--to", "out.yaml"]) == 0
    assert capsys.readouterr().out.strip() == "Wrote out.yaml"
    assert (tmp_path / "out.yaml").read_text() == "model: mlp\ndata: iris\n"
    assert main(["export", "recordd"]) == 2
    assert "did you mean 'recorded'?" in capsys.readouterr().err


def test_help_and_a_bad_option_from_the_shell(capsys):
    from nbopt.cli import main
    assert main(["help", "sweep"]) == 0
    assert "--allow-space-change" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["sweep", "recipe.yaml", "--sampler", "bayes"])
    assert exited.value.code == 2 and "invalid choice: 'bayes'" in capsys.readouterr().err
