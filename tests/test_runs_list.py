"""The runs table: one row per train, compare and sweep, their runs folded inside, scores that name their
metric; deleting runs from the API, the shell (asking on a terminal) and a kernel; old flat folders."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pexpect
import pytest
from cli_command import nbopt_command
from conftest import run_folders

import nbopt
from nbopt.store import RunFolder

TINY = "model: mlp(hidden=[16])\ndata: synthetic(n=300, shape=[8], classes=3)\nbatch_size: 32\nepochs: 2\n"
VARIANTS = TINY + "variants:\n  adam: {}\n  sgd: {optimizer: 'sgd(lr=0.3)'}\n"
SEARCH = TINY + "search:\n  optimizer.lr: [0.01, 0.001]\n"


@pytest.fixture
def recorded(tmp_path, monkeypatch, runs_dir):
    """A plain run, a comparison and a sweep, in that order."""
    monkeypatch.chdir(tmp_path)
    plain = nbopt.train(TINY, {}, name="plain", live=False)
    time.sleep(1)  # the table orders by start time, to the second
    comparison = nbopt.compare(VARIANTS, {}, name="optimizers", live=False)
    time.sleep(1)
    swept = nbopt.sweep(SEARCH, {}, sampler="grid", pruner="none", study="lrs", live=False)
    return plain, comparison, swept


def test_compare_variants_and_sweep_trials_are_recorded_inside_their_parent(recorded, runs_dir):
    plain, comparison, swept = recorded
    assert run_folders(runs_dir) == ["lrs/trial0", "lrs/trial1", "optimizers/adam", "optimizers/sgd", "plain"]
    assert comparison.runs["adam"].name == "optimizers/adam"
    assert {t.user_attrs["run"] for t in swept.study.trials} == {"lrs/trial0", "lrs/trial1"}
    loaded = nbopt.load("optimizers/sgd", {})
    assert loaded.metrics["val_acc"] == pytest.approx(comparison.runs["sgd"].metrics["val_acc"])


def test_the_table_folds_each_compare_and_sweep_into_one_row_whose_score_names_its_metric(recorded):
    plain, comparison, swept = recorded
    table = nbopt.runs()
    assert list(table.index) == ["lrs", "optimizers", "plain"], "newest first, one row each"
    assert table["kind"].tolist() == ["sweep", "compare", "train"]
    assert table["runs"].tolist() == [2, 2, 1]
    assert table["status"].tolist() == ["finished"] * 3
    winner = max(comparison.runs, key=lambda name: comparison.runs[name].metrics["val_acc"])
    best = comparison.runs[winner].metrics["val_acc"]
    assert table.loc["optimizers", "score"] == f"val_acc {best:.4g} ({winner})"
    assert table.loc["lrs", "score"] == f"val_acc {swept.study.best_value:.4g} (trial{swept.study.best_trial.number})"
    assert table.loc["plain", "score"] == f"val_acc {plain.metrics['val_acc']:.4g}"
    assert table.loc["plain", "epochs"] == 2


def test_all_unfolds_every_run_under_its_parent(recorded):
    table = nbopt.runs(all=True)
    assert list(table.index) == ["lrs", "lrs/trial0", "lrs/trial1", "optimizers", "optimizers/adam",
                                 "optimizers/sgd", "plain"]
    assert table.loc["optimizers/adam", "kind"] == "variant" and table.loc["lrs/trial1", "kind"] == "trial"


def test_a_regression_score_says_it_is_a_mean_absolute_error(runs_dir):
    run = nbopt.train("model: mlp(hidden=[16])\ndata: synthetic(n=300, shape=[8], classes=0)\nepochs: 2\n", {},
                      name="reg", live=False)
    assert nbopt.runs().loc["reg", "score"] == f"val_mae {run.metrics['val_mae']:.4g}"


def test_runs_of_earlier_versions_in_flat_folders_still_list_and_load(runs_dir):
    """Before groups, every compare variant and sweep trial was a top-level folder like this one."""
    run = nbopt.train(TINY, {}, name="adam", live=False)
    folder = RunFolder(runs_dir / "S-trial0")
    (runs_dir / "adam").rename(folder.path)
    status = folder.read_status()
    folder.write_status(name="S-trial0")
    assert "kind" not in status
    table = nbopt.runs()
    assert table.loc["S-trial0", ["kind", "status", "runs"]].tolist() == ["train", "finished", 1]
    assert nbopt.load("S-trial0", {}).metrics["val_acc"] == pytest.approx(run.metrics["val_acc"])


def test_loading_a_compare_by_its_name_says_which_runs_it_holds(recorded):
    with pytest.raises(nbopt.RecipeError, match=r"^'optimizers' is a compare of 2 runs; name one of them: "
                                                r"optimizers/adam, optimizers/sgd$"):
        nbopt.load("optimizers", {})


def test_a_compare_whose_process_died_reads_died(tmp_path, runs_dir):
    """The process is killed while the second variant trains: the comparison is not `running` for ever."""
    script = ("import nbopt, sys\nnbopt.compare(sys.argv[1], {}, name='killed', live=False)\n")
    slow = TINY.replace("epochs: 2", "epochs: 5000") + "variants:\n  a: {epochs: 1}\n  b: {}\n"
    env = dict(os.environ, NBOPT_RUNS_DIR=str(runs_dir), OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-c", script, slow], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (runs_dir / "killed" / "b" / "history.csv").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the second variant never trained"
        time.sleep(0.2)
    assert nbopt.runs().loc["killed", "status"] == "running"
    process.send_signal(signal.SIGKILL)
    process.wait()
    table = nbopt.runs(all=True)
    assert table.loc[["killed", "killed/a", "killed/b"], "status"].tolist() == ["died", "finished", "died"]


# -- deleting ----------------------------------------------------------------------------------------------

def test_delete_runs_by_name_and_keep_the_newest(recorded, runs_dir):
    assert nbopt.delete_runs("optimizers/sgd") == ["optimizers/sgd"]
    assert run_folders(runs_dir) == ["lrs/trial0", "lrs/trial1", "optimizers/adam", "plain"]
    assert nbopt.runs().loc["optimizers", "runs"] == 1
    assert nbopt.delete_runs(keep_last=1) == ["optimizers", "plain"]
    assert sorted(path.name for path in runs_dir.iterdir()) == ["lrs"]
    assert nbopt.delete_runs(keep_last=1) == []


def test_a_bad_name_or_a_running_run_deletes_nothing(recorded, runs_dir):
    before = run_folders(runs_dir)
    with pytest.raises(nbopt.RecipeError, match=r"^no run named 'optimizer' in .* did you mean 'optimizers'\?$"):
        nbopt.delete_runs("plain", "optimizer")
    RunFolder(runs_dir / "lrs" / "trial1").write_status(status="running", pid=os.getpid(), heartbeat=time.time())
    with pytest.raises(nbopt.RecipeError, match=r"^'lrs' is still running; stop it \(or wait for it\) before "
                                                r"deleting it$"):
        nbopt.delete_runs("plain", "lrs")
    assert nbopt.delete_runs(keep_last=0) == ["optimizers", "plain"], "--keep-last keeps what still runs"
    assert run_folders(runs_dir) == [path for path in before if path.startswith("lrs/")]


def test_the_shell_asks_on_a_terminal_and_refuses_without_one(recorded, runs_dir, tmp_path):
    env = dict(os.environ, NBOPT_RUNS_DIR=str(runs_dir))
    command = nbopt_command()
    piped = subprocess.run([*command, "runs", "--rm", "plain"], env=env, cwd=tmp_path, capture_output=True,
                           text=True, stdin=subprocess.DEVNULL)
    assert piped.returncode == 2
    assert piped.stderr.strip() == ("nbopt: deleting plain needs a yes, and there is no terminal to ask on; add "
                                    "--yes to delete without asking")
    terminal = pexpect.spawn(command[0], [*command[1:], "runs", "--rm", "plain", "optimizers"], env=env,
                             cwd=str(tmp_path), encoding="utf-8", timeout=60)
    terminal.expect(r"Delete plain, optimizers \(2 runs\) \(\d+\.\d MB\)\? \[y/N\] ")
    terminal.sendline("n")
    terminal.expect("Nothing deleted.")
    terminal.expect(pexpect.EOF)
    assert "plain" in run_folders(runs_dir)
    terminal = pexpect.spawn(command[0], [*command[1:], "runs", "--rm", "plain"], env=env, cwd=str(tmp_path),
                             encoding="utf-8", timeout=60)
    terminal.expect(r"\[y/N\] ")
    terminal.sendline("y")
    terminal.expect(r"Deleted plain \(\d+\.\d MB\)\.")
    terminal.expect(pexpect.EOF)
    yes = subprocess.run([*command, "runs", "--keep-last", "1", "--yes"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, stdin=subprocess.DEVNULL)
    assert yes.returncode == 0, yes.stderr
    assert yes.stdout.startswith("Deleted optimizers (2 runs) (")
    listed = subprocess.run([*command, "runs", "--all"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert [line.split()[0] for line in listed.stdout.splitlines()[2:]] == ["lrs", "lrs/trial0", "lrs/trial1"]


def test_runs_in_a_kernel_is_a_table_and_deletes_with_yes(kernel):
    cell = TINY + "variants:\n  k-adam: {}\n  k-sgd: {optimizer: 'sgd(lr=0.3)'}\n"
    reply, outputs = kernel.execute("%%nbopt compare --name kernel-compare --out kc\n" + cell, timeout=300)
    assert reply["status"] == "ok", kernel.errors(outputs)
    reply, outputs = kernel.execute("%nbopt runs --all")
    [result] = [msg["content"]["data"] for msg in outputs if msg["msg_type"] == "execute_result"]
    assert "<table" in result["text/html"] and "kernel-compare/k-sgd" in result["text/html"]
    reply, outputs = kernel.execute("%nbopt runs --rm kernel-compare/k-sgd", answer="n")
    [asked] = [msg["content"]["prompt"] for msg in outputs if msg["msg_type"] == "input_request"]
    assert re.fullmatch(r"Delete kernel-compare/k-sgd \(\d+\.\d MB\)\? \[y/N\] ", asked)
    assert kernel.text(outputs).strip() == "Nothing deleted."
    reply, outputs = kernel.execute("%nbopt runs --rm kernel-compare/k-sgd", allow_stdin=False)
    assert reply["status"] == "error" and reply["evalue"].endswith("add --yes to delete without asking")
    assert (kernel.runs / "kernel-compare" / "k-sgd").is_dir()
    reply, outputs = kernel.execute("%nbopt runs --rm kernel-compare --yes")
    assert kernel.text(outputs).startswith("Deleted kernel-compare (2 runs) (")
    assert not (kernel.runs / "kernel-compare").exists()
    reply, outputs = kernel.execute("import nbopt; print('kernel-compare' in nbopt.runs().index)")
    assert kernel.text(outputs).strip() == "False"


def test_a_named_comparison_resumes_its_own_folder(runs_dir):
    first = nbopt.compare(VARIANTS, {}, name="named", live=False)
    again = nbopt.compare(VARIANTS, {}, name="named", resume=True, live=False)
    assert run_folders(runs_dir) == ["named/adam", "named/sgd"], "loaded, not trained again"
    assert again.table.equals(first.table)
    group = json.loads((runs_dir / "named" / "group.json").read_text())
    assert group["kind"] == "compare" and group["metric"] == "val_acc" and group["status"] == "finished"
