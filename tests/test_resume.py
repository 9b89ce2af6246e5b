"""Crash-safe runs: a run knows whether its process lives, an unfinished run loads, and any run resumes.

The exactness tests stop a run after an epoch and resume it, then compare it with the same run
left alone: the histories and final metrics agree to 1e-6. In this process a run is stopped by an
exception from a listener (it then reads `failed`); the kernel and `nbopt run` tests kill a real
process with SIGKILL in the middle of an epoch, which nothing in the process can notice.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_folders
from test_parallel import ROOT, finish, start_cli

import nbopt
from nbopt.callbacks.recorder import Listener
from nbopt.liveness import STALE_AFTER_S, Heartbeat, current_status, stamp
from nbopt.plan import check
from nbopt.store import RunFolder
from nbopt.training import execute

TINY = ("model: mlp(hidden=[16])\ndata: synthetic(n=400, shape=[8], classes=3)\nbatch_size: 32\ndropout: 0.2\n"
        "checkpoint_every: 1\n")
EXTRA = {
    "plain": "",
    "scheduler": "scheduler: step(step_size=1, gamma=0.7)\n",
    "augmentation": "augment: [noise(0.3), mixup(0.4)]\n",
    "early stopping": "optimizer: sgd(lr=0.5)\nearly_stopping: {monitor: val_acc, patience: 2}\n",
    "gradual pruning": "prune: {method: l1_unstructured, amount: 0.6, schedule: gradual, finetune: 2}\n",
}
# Epochs of about 0.3 s on 2 cores, so that a kill lands in the middle of one; 8 of them, so that a run killed
# a fraction of a second after epoch 2 is not done yet even on a machine a few times faster.
SLOW = ("model: mlp(hidden=[64, 64])\ndata: synthetic(n=20000, shape=[64], classes=4)\nbatch_size: 16\nepochs: 8\n"
        "checkpoint_every: 1\n")


class CrashAfter(Listener):
    """Raises when epoch `epoch` has been recorded: the run stops there, its last checkpoint one epoch earlier."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch(self, recorder, trainer, row):
        if row["epoch"] == self.epoch:
            raise RuntimeError(f"stopped after epoch {self.epoch}")


def same_run(resumed, uninterrupted) -> None:
    """Same history (time aside) and the same final scores, to 1e-6."""
    columns = [c for c in uninterrupted.history.columns if c != "seconds"]
    assert list(resumed.history.columns) == list(uninterrupted.history.columns)
    np.testing.assert_allclose(resumed.history[columns].to_numpy(float),
                               uninterrupted.history[columns].to_numpy(float), rtol=0, atol=1e-6)
    for key, value in uninterrupted.metrics.items():
        if isinstance(value, (int, float)) and "seconds" not in key:
            assert resumed.metrics[key] == pytest.approx(value, abs=1e-6), key
    assert resumed.status == uninterrupted.status


def wait_for_epochs(folder, epochs: int, process=None, timeout: float = 120.0) -> None:
    history = folder / "history.csv"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"the run ended before epoch {epochs}: {process.communicate()}")
        if history.exists() and len(pd.read_csv(history)) >= epochs:
            return
        time.sleep(0.05)
    pytest.fail(f"the run did not finish epoch {epochs} within {timeout}s")


# -- a run knows whether it is alive -------------------------------------------------------------------

def _status(**fields) -> dict:
    return {"status": "running", **stamp(), **fields}


def test_a_running_run_reads_running_while_its_process_lives():
    assert current_status(_status()) == "running"
    assert current_status(_status(host="elsewhere", pid=1)) == "running"  # another host: the heartbeat decides


def test_a_run_whose_process_is_gone_reads_died():
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert current_status(_status(pid=gone.pid)) == "died"
    # a pid taken by another process since: its start time gives it away
    assert current_status(_status(pid_started=time.time() - 10**6)) == "died"


def test_a_run_without_a_heartbeat_for_ten_minutes_reads_died_on_any_host():
    old = time.time() - STALE_AFTER_S - 1
    assert current_status(_status(host="elsewhere", heartbeat=old)) == "died"
    assert current_status(_status(heartbeat=old)) == "died"
    assert current_status({"status": "finished", "heartbeat": old}) == "finished"


def test_the_heartbeat_stamps_the_folder_until_stopped(tmp_path):
    folder = RunFolder(tmp_path)
    folder.write_status(status="running", heartbeat=0.0)
    beat = Heartbeat(folder, interval=0.02)
    beat.start()
    time.sleep(0.3)
    beat.stop()
    last = folder.read_status()["heartbeat"]
    assert time.time() - last < 1.0
    time.sleep(0.1)
    assert folder.read_status()["heartbeat"] == last


def test_a_run_records_its_process_host_and_heartbeat(train):
    run = train(TINY + "epochs: 1\n", name="alive")
    status = json.loads((run.folder / "run.json").read_text())
    assert status["pid"] == os.getpid() and status["host"] == socket.gethostname()
    assert time.time() - status["heartbeat"] < 60 and status["status"] == "finished"


# -- resuming gives the run it would have been ---------------------------------------------------------

@pytest.mark.parametrize("case", list(EXTRA))
def test_a_resumed_run_ends_as_the_uninterrupted_one(train, case):
    recipe = TINY + "epochs: 5\n" + EXTRA[case]
    uninterrupted = train(recipe, name="whole")
    with pytest.raises(RuntimeError, match="stopped after epoch 3"):
        execute(check(recipe, {}), name="cut", live=False, listeners=[CrashAfter(3)])
    assert nbopt.runs().loc["cut", "status"] == "failed"
    resumed = train(recipe, resume="cut")
    assert resumed.folder.name == "cut" and resumed.name == "cut"
    same_run(resumed, uninterrupted)
    assert json.loads((resumed.folder / "run.json").read_text())["status"] == uninterrupted.status


class StopInEpoch(Listener):
    """Presses Stop at the third step of epoch `epoch`, as the notebook's stop button would."""

    def __init__(self, guard, epoch: int):
        self.guard, self.epoch = guard, epoch

    def on_step(self, recorder, trainer):
        if len(recorder.rows) == self.epoch - 1 and recorder.step_in_epoch == 3:
            self.guard.request_stop()


def test_an_interrupted_run_resumes_from_its_last_whole_epoch(train):
    from nbopt.callbacks.interrupt import InterruptGuard
    recipe = TINY + "epochs: 5\nscheduler: step(step_size=1, gamma=0.7)\n"
    guard = InterruptGuard()
    stopped = execute(check(recipe, {}), name="cut", live=False, stop=guard, listeners=[StopInEpoch(guard, 3)])
    assert stopped.status == "interrupted" and len(stopped.history) == 3  # the cut-short epoch is recorded
    resumed = train(recipe, resume="cut")
    same_run(resumed, train(recipe, name="whole"))


def test_a_crash_in_the_finetuning_resumes_into_it(train):
    recipe = TINY + "epochs: 3\nprune: {method: l1_unstructured, amount: 0.6, finetune: 3}\n"
    uninterrupted = train(recipe, name="whole")
    with pytest.raises(RuntimeError):
        execute(check(recipe, {}), name="cut", live=False, listeners=[CrashAfter(5)])
    resumed = train(recipe, resume="cut")
    same_run(resumed, uninterrupted)
    assert resumed.metrics["compression"]["before"]["model"] == "dense"


@pytest.mark.parametrize("crash_after", [2, 4, 6], ids=["before removing", "between removals", "last fine-tune"])
def test_a_run_that_removes_channels_resumes_into_its_smaller_model(train, crash_after):
    """train 2 → remove channels (1/2) → fine-tune 2 → remove (2/2) → fine-tune 2: the resumed run repeats
    the removals before its checkpoint on fresh weights (same shapes), then loads the checkpoint's weights."""
    recipe = (TINY.replace("hidden=[16]", "hidden=[32, 16]") + "epochs: 2\n"
              "prune: {method: channels, amount: 0.5, steps: 2, finetune: 2}\n")
    uninterrupted = train(recipe, name="whole")
    with pytest.raises(RuntimeError):
        execute(check(recipe, {}), name="cut", live=False, listeners=[CrashAfter(crash_after)])
    resumed = train(recipe, resume="cut")
    same_run(resumed, uninterrupted)
    assert resumed.metrics["parameters"] < uninterrupted.metrics["compression"]["before"]["parameters"]


def test_a_run_that_removed_channels_loads_with_its_smaller_model(train):
    recipe = (TINY.replace("hidden=[16]", "hidden=[32, 16]") + "epochs: 2\n"
              "prune: {method: channels, amount: 0.5, steps: 2, finetune: 2}\n")
    run = train(recipe, name="small")
    loaded = nbopt.load_run("small", {})
    assert sum(p.numel() for p in loaded.model.parameters()) == run.metrics["parameters"]
    x = torch.randn(5, 8)
    torch.testing.assert_close(loaded.predict(x), run.predict(x))
    with pytest.raises(RuntimeError):  # died after the first removal: its best.pt has that step's shape
        execute(check(recipe, {}), name="half", live=False, listeners=[CrashAfter(4)])
    half = nbopt.load_run("half", {})
    assert half.model is not None and half.status == "failed"
    assert run.metrics["parameters"] < sum(p.numel() for p in half.model.parameters()) < \
        run.metrics["compression"]["before"]["parameters"]


def test_a_run_that_removes_channels_globally_refuses_to_resume(train):
    recipe = TINY + "epochs: 2\nprune: {method: channels, amount: 0.5, global: true, finetune: 2}\n"
    with pytest.raises(RuntimeError):
        execute(check(recipe, {}), name="cut", live=False, listeners=[CrashAfter(3)])
    with pytest.raises(nbopt.RecipeError, match=r"run 'cut' removes channels globally"):
        train(recipe, resume="cut")


def test_a_checkpoint_from_before_callbacks_were_bundled_resumes(train, runs_dir):
    recipe = TINY + "epochs: 4\n"
    with pytest.raises(RuntimeError):
        execute(check(recipe, {}), name="old", live=False, listeners=[CrashAfter(2)])
    path = runs_dir / "old" / "last.ckpt"
    saved = torch.load(path, weights_only=True)
    saved["callbacks"].update(saved["callbacks"].pop("Bundle"))  # each callback's state on its own, as it was
    torch.save(saved, path)
    same_run(train(recipe, resume="old"), train(recipe, name="whole"))


def test_raising_epochs_trains_a_finished_run_further(train):
    train(TINY + "epochs: 3\n", name="short")
    longer = train(TINY + "epochs: 5\n", resume="short")
    same_run(longer, train(TINY + "epochs: 5\n", name="long"))
    assert len(pd.read_csv(longer.folder / "history.csv")) == 5


def test_checkpoint_every_thins_the_checkpoints(train, runs_dir):
    recipe = TINY.replace("checkpoint_every: 1", "checkpoint_every: 2") + "epochs: 5\n"
    with pytest.raises(RuntimeError):
        execute(check(recipe, {}), name="thin", live=False, listeners=[CrashAfter(4)])
    saved = torch.load(runs_dir / "thin" / "last.ckpt", weights_only=True)
    assert len(saved["callbacks"]["Bundle"]["Recorder"]["rows"]) == 2  # written after epoch 2, not 3
    same_run(train(recipe, resume="thin"), train(recipe, name="whole"))


def test_short_epochs_are_checkpointed_by_time_and_a_run_without_one_starts_over(train, runs_dir):
    recipe = TINY.replace("checkpoint_every: 1\n", "") + "epochs: 4\n"  # auto: these epochs take milliseconds
    with pytest.raises(RuntimeError):
        execute(check(recipe, {}), name="early", live=False, listeners=[CrashAfter(3)])
    assert not (runs_dir / "early" / "last.ckpt").exists()
    resumed = train(recipe, resume="early")
    same_run(resumed, train(recipe, name="whole"))
    assert (runs_dir / "early" / "last.ckpt").exists()  # the last epoch always writes one


class CrashInRun(CrashAfter):
    """Crashes the `run`-th run that starts (the second variant of a comparison, say) after epoch `epoch`."""

    def __init__(self, run: int, epoch: int):
        super().__init__(epoch)
        self.run, self.started = run, 0

    def on_start(self, folder):
        self.started += 1

    def on_epoch(self, recorder, trainer, row):
        if self.started == self.run:
            super().on_epoch(recorder, trainer, row)


def test_a_comparison_resumes_loading_finished_variants_and_resuming_the_broken_one(runs_dir):
    recipe = TINY + "epochs: 4\nvariants:\n  adam: {}\n  sgd: {optimizer: 'sgd(lr=0.3)'}\n"
    with pytest.raises(RuntimeError, match="stopped after epoch 3"):
        nbopt.compare(recipe, {}, live=False, listeners=[CrashInRun(2, 3)])
    [group] = [path.name for path in runs_dir.iterdir()]
    adam_before = json.loads((runs_dir / group / "adam" / "run.json").read_text())
    resumed = nbopt.compare(recipe, {}, resume=True, live=False)
    assert run_folders(runs_dir) == [f"{group}/adam", f"{group}/sgd"], "nothing trained anew"
    assert json.loads((runs_dir / group / "adam" / "run.json").read_text()) == adam_before, "the finished one loaded"
    assert "resumed" in json.loads((runs_dir / group / "sgd" / "run.json").read_text())
    assert nbopt.runs().loc[group, ["kind", "status", "runs"]].tolist() == ["compare", "finished", 2]
    again = nbopt.compare(recipe, {}, live=False)  # the same comparison, whole, in a new comparison folder
    for name in ("adam", "sgd"):
        same_run(resumed.runs[name], again.runs[name])
    pd.testing.assert_frame_equal(resumed.table.drop(columns="time (s)"), again.table.drop(columns="time (s)"))
    assert nbopt.compare(recipe, {}, resume=True, live=False).runs["sgd"].name == again.runs["sgd"].name != \
        resumed.runs["sgd"].name, "the latest comparison is the one that goes on"


def test_compare_resume_is_a_switch_of_the_magic():
    from nbopt.helptext import help_text
    assert "--resume" in help_text("compare") and "died go on from their checkpoints" in help_text("compare")


# -- refusals, one line each ---------------------------------------------------------------------------

def test_resuming_a_finished_run_is_refused(train):
    train(TINY + "epochs: 2\n", name="done")
    with pytest.raises(nbopt.RecipeError, match=r"^run 'done' finished its 2 epochs; there is nothing to resume "
                                                r"\(raise `epochs`"):
        train(TINY + "epochs: 2\n", resume="done")


def test_resuming_with_a_changed_recipe_names_the_changed_keys(train):
    with pytest.raises(RuntimeError):
        execute(check(TINY + "epochs: 4\n", {}), name="cut", live=False, listeners=[CrashAfter(2)])
    changed = TINY.replace("batch_size: 32", "batch_size: 16") + "epochs: 4\noptimizer: sgd(lr=0.1)\n"
    with pytest.raises(nbopt.RecipeError) as refused:
        train(changed, resume="cut")
    assert str(refused.value).endswith("cannot resume run 'cut' with a different recipe: `batch_size`, `optimizer` "
                                       "changed (only `epochs` may change when resuming)")
    assert "\n" not in str(refused.value)


def test_resuming_with_fewer_epochs_than_were_trained_is_refused(train):
    with pytest.raises(RuntimeError):
        execute(check(TINY + "epochs: 5\n", {}), name="cut", live=False, listeners=[CrashAfter(4)])
    with pytest.raises(nbopt.RecipeError, match=r"run 'cut' has trained 4 epochs already; `epochs: 2` would end "
                                                r"before where it stopped"):
        train(TINY + "epochs: 2\n", resume="cut")


def test_resuming_a_run_that_is_still_alive_is_refused(train, runs_dir):
    train(TINY + "epochs: 1\n", name="busy")
    RunFolder(runs_dir / "busy").write_status(status="running", **stamp())
    with pytest.raises(nbopt.RecipeError, match=rf"run 'busy' is still running \(process {os.getpid()} on "):
        train(TINY + "epochs: 1\n", resume="busy")


def test_a_new_name_for_a_resumed_run_is_refused(train, runs_dir):
    with pytest.raises(RuntimeError):
        execute(check(TINY + "epochs: 3\n", {}), name="cut", live=False, listeners=[CrashAfter(2)])
    with pytest.raises(nbopt.RecipeError, match=r"^--name other and --resume cut go separately: a resumed run keeps "
                                                r"its own folder and name; leave out --name$"):
        train(TINY + "epochs: 3\n", name="other", resume="cut")
    assert run_folders(runs_dir) == ["cut"]


def test_checkpoint_every_must_be_a_positive_number_of_epochs(check):
    with pytest.raises(nbopt.RecipeError, match=r"^checkpoint_every \(line 3\): checkpoint_every must be at least 1 "
                                                r"\(or auto\), got 0$"):
        check("model: mlp\ndata: iris\ncheckpoint_every: 0\n")
    assert check("model: mlp\ndata: iris\n").recipe.checkpoint_every == "auto"


def test_resume_is_an_option_of_train_everywhere():
    from nbopt.helptext import help_text
    shown = help_text("train")
    assert "--resume NAME" in shown and "`epochs` may be raised to train further" in shown


# -- real processes killed mid-epoch ------------------------------------------------------------------

def test_a_killed_nbopt_run_reads_died_loads_and_resumes_exactly(tmp_path, runs_dir, train):
    (tmp_path / "recipe.yaml").write_text(SLOW)
    process = start_cli(["run", "recipe.yaml", "--name", "killed"], tmp_path, runs_dir, tmp_path / "tmp")
    wait_for_epochs(runs_dir / "killed", 2, process)
    time.sleep(0.4)  # into epoch 3
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()

    table = nbopt.runs()
    assert table.loc["killed", "status"] == "died"
    loaded = nbopt.load_run("killed", {})
    assert loaded.status == "died" and len(loaded.history) >= 2
    assert loaded.metrics["recomputed"] == "val" and "recomputed from its best weights" in loaded.note
    best = torch.load(loaded.checkpoint, weights_only=True)
    assert all(torch.equal(best[k], v) for k, v in loaded.model.state_dict().items())
    assert loaded.metrics["best_epoch"] == int(loaded.history["epoch"][loaded.history["val_loss"].idxmin()])

    code, out, err = finish(start_cli(["run", "recipe.yaml", "--resume", "killed"], tmp_path, runs_dir,
                                      tmp_path / "tmp"), timeout=300)
    assert code == 0, err[-3000:]
    same_run(nbopt.load_run("killed", {}), train(SLOW, name="whole"))
    assert nbopt.runs().loc["killed", "status"] == "finished"


def test_the_cli_refuses_to_resume_a_finished_run_in_one_line(tmp_path, runs_dir, train):
    train(TINY + "epochs: 2\n", name="done")
    (tmp_path / "recipe.yaml").write_text(TINY + "epochs: 2\n")
    code, out, err = finish(start_cli(["run", "recipe.yaml", "--resume", "done"], tmp_path, runs_dir,
                                      tmp_path / "tmp"), timeout=120)
    assert code == 2
    assert err.strip().splitlines() == ["nbopt: run 'done' finished its 2 epochs; there is nothing to resume (raise "
                                        "`epochs` to train a run without compression further)"]


def test_a_killed_kernel_leaves_a_died_run_that_the_magic_resumes(kernel, tmp_path, runs_dir, monkeypatch, train):
    from jupyter_client.manager import start_new_kernel
    runs = tmp_path / "kernel-runs"
    env = dict(os.environ, NBOPT_RUNS_DIR=str(runs), OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=env, startup_timeout=120)
    try:
        kc.execute("%load_ext nbopt\n")
        kc.execute(f"%%nbopt train --name doomed\n{SLOW}")
        wait_for_epochs(runs / "doomed", 1)
        time.sleep(0.4)  # into epoch 2
        os.kill(km.provisioner.pid, signal.SIGKILL)
        km.provisioner.process.wait(timeout=30)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    monkeypatch.setenv("NBOPT_RUNS_DIR", str(runs))
    assert nbopt.runs().loc["doomed", "status"] == "died"
    assert nbopt.load_run("doomed", {}).status == "died"
    reply, outputs = kernel.execute(f"%%nbopt train --resume {runs / 'doomed'} --out resumed\n{SLOW}", timeout=300)
    assert reply["status"] == "ok", kernel.errors(outputs)
    reply, outputs = kernel.execute("print(resumed.status, resumed.folder.name)")
    assert kernel.text(outputs).strip() == "finished doomed"
    monkeypatch.setenv("NBOPT_RUNS_DIR", str(runs_dir))
    same_run(nbopt.load_run(str(runs / "doomed"), {}), train(SLOW, name="whole"))


SLOW_DDP = SLOW.replace("epochs: 8\n", "epochs: 4\ndevices: 2\nstrategy: ddp\n")


def test_a_killed_two_process_ddp_run_resumes_on_two_processes_exactly(tmp_path, runs_dir):
    """Both ranks of `nbopt run` are SIGKILLed in the middle of epoch 3, as a pre-empted job is; the resumed
    run (2 processes again) ends with the history and scores of the same DDP run left alone."""
    (tmp_path / "recipe.yaml").write_text(SLOW_DDP)
    process = start_cli(["run", "recipe.yaml", "--name", "ddp-killed"], tmp_path, runs_dir, tmp_path / "tmp")
    wait_for_epochs(runs_dir / "ddp-killed", 2, process, timeout=300)
    time.sleep(0.3)  # into epoch 3
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert nbopt.runs().loc["ddp-killed", "status"] == "died"
    code, out, err = finish(start_cli(["run", "recipe.yaml", "--resume", "ddp-killed"], tmp_path, runs_dir,
                                      tmp_path / "tmp"), timeout=400)
    assert code == 0, err[-3000:]
    assert re.search(r"^ddp-killed: resumed from its last checkpoint, after epoch [23]$", out, re.M), out
    code, out, err = finish(start_cli(["run", "recipe.yaml", "--name", "ddp-whole"], tmp_path, runs_dir,
                                      tmp_path / "tmp"), timeout=400)
    assert code == 0, err[-3000:]
    same_run(nbopt.load_run("ddp-killed", {}), nbopt.load_run("ddp-whole", {}))
    assert json.loads((runs_dir / "ddp-killed" / "run.json").read_text())["status"] == "finished"


def test_compare_resume_in_a_kernel_loads_the_finished_variants(kernel):
    cell = TINY + "epochs: 2\nvariants:\n  kv-adam: {}\n  kv-sgd: {optimizer: 'sgd(lr=0.3)'}\n"
    reply, outputs = kernel.execute("%%nbopt compare --out first\n" + cell, timeout=300)
    assert reply["status"] == "ok", kernel.errors(outputs)
    reply, outputs = kernel.execute("%%nbopt compare --resume --out again\n" + cell, timeout=300)
    assert reply["status"] == "ok", kernel.errors(outputs)
    reply, outputs = kernel.execute("from pathlib import Path\n"
                                    "print(sorted(p.parent.name for p in Path(r'%s').glob('*/kv-*/run.json')),"
                                    " (first.table[['val_acc', 'epochs run']] == again.table[['val_acc', "
                                    "'epochs run']]).all().all())" % kernel.runs)
    assert kernel.text(outputs).strip() == "['kv-adam', 'kv-sgd'] True"
