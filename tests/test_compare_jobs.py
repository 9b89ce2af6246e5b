"""`compare --jobs N`: variants × repeats trained in N worker processes, with the results of one job."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
from conftest import run_folders
from test_resume import same_run
from torch import nn

import nbopt
from nbopt.callbacks.interrupt import InterruptGuard

TINY = "model: mlp(hidden=[16])\ndata: synthetic(n=300, shape=[8], classes=3)\nbatch_size: 32\nepochs: 3\n"
VARIANTS = TINY + ("variants:\n  adam: {}\n  sgd: {optimizer: 'sgd(lr=0.3)'}\n"
                   "  student: {model: 'mlp(hidden=[4])', distill: {teacher: adam}}\n")


def test_two_jobs_give_what_one_job_gives_distillation_included(runs_dir):
    one = nbopt.compare(VARIANTS, {}, repeats=2, name="one", live=False)
    two = nbopt.compare(VARIANTS, {}, repeats=2, name="two", jobs=2, live=False)
    for variant in ("adam", "sgd", "student"):
        assert len(two.all_runs[variant]) == 2
        for alone, parallel in zip(one.all_runs[variant], two.all_runs[variant]):
            assert alone.recipe.seed == parallel.recipe.seed
            same_run(parallel, alone)
    assert two.table.drop(columns="time (s)").equals(one.table.drop(columns="time (s)"))
    assert [name for name in run_folders(runs_dir) if name.startswith("two/")] == [
        f"two/{variant}-seed{seed}" for variant in ("adam", "sgd", "student") for seed in (0, 1)]
    assert json.loads((runs_dir / "two" / "group.json").read_text())["status"] == "finished"


def _pids(runs_dir, group: str) -> dict[str, int]:
    """Run name → the process that trained it (run.json records it)."""
    return {path.parent.name: json.loads(path.read_text())["pid"] for path in runs_dir.glob(f"{group}/*/run.json")}


def test_each_worker_trains_one_run_after_another(runs_dir):
    nbopt.compare(TINY + "variants:\n  a: {}\n  b: {optimizer: sgd}\n", {}, repeats=3, jobs=2, name="few",
                  live=False)
    pids = _pids(runs_dir, "few")
    assert len(pids) == 6 and len(set(pids.values())) == 2 and os.getpid() not in pids.values(), pids


def test_workers_of_a_killed_comparison_finish_their_runs_and_leave(runs_dir, tmp_path):
    """A kernel killed mid-comparison: each worker records the run it was training, starts no other, and exits."""
    script = textwrap.dedent(f"""
        import nbopt
        recipe = {TINY.replace("epochs: 3", "epochs: 2000")!r} + "variants:\\n  a: {{}}\\n  b: {{}}\\n  c: {{}}\\n"
        nbopt.compare(recipe, {{}}, jobs=2, name="orphans", live=False)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "NBOPT_RUNS_DIR": str(runs_dir)})
    try:
        deadline = time.monotonic() + 120
        while len(list(runs_dir.glob("orphans/*/history.csv"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(parent.pid, signal.SIGKILL)
    finally:
        parent.wait()
    workers = set(_pids(runs_dir, "orphans").values())
    assert len(workers) == 2 and parent.pid not in workers
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "the workers outlived their comparison"
    statuses = {name: json.loads((runs_dir / "orphans" / name / "run.json").read_text())["status"]
                for name in _pids(runs_dir, "orphans")}
    assert statuses == {"a": "finished", "b": "finished"}, statuses  # c never started


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:  # a zombie (exited, not yet reaped) counts as gone
            return stat.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_stop_reaches_every_worker_and_keeps_what_they_trained(runs_dir):
    guard = InterruptGuard()

    def stop_once_both_workers_trained():
        """Stop after each worker has an epoch on disk: a fixed delay lets a fast machine finish a run first."""
        while len(list(runs_dir.glob("stop/*/history.csv"))) < 2:
            time.sleep(0.05)
        guard.request_stop()

    threading.Thread(target=stop_once_both_workers_trained, daemon=True).start()
    long = TINY.replace("epochs: 3", "epochs: 100000")
    stopped = nbopt.compare(long + "variants:\n  a: {}\n  b: {optimizer: sgd}\n  c: {}\n", {}, jobs=2, name="stop",
                            stop=guard, live=False)
    assert stopped.interrupted
    assert sorted(stopped.runs) == ["a", "b"], "the third never started"
    assert {run.status for run in stopped.runs.values()} == {"interrupted"}
    assert all(0 < len(run.history) < 100000 for run in stopped.runs.values())
    assert nbopt.runs().loc["stop", "status"] == "interrupted"


class FailsInTraining(nn.Module):
    """Trains for a while, then raises: a bug that shows only after the checks."""

    def __init__(self):
        super().__init__()
        self.layer, self.calls = nn.Linear(8, 3), 0

    def forward(self, x):
        self.calls += self.training
        if self.calls > 20:
            raise ValueError("boom in forward")
        return self.layer(x)


def test_a_run_that_fails_in_a_worker_fails_the_comparison(runs_dir):
    recipe = TINY.replace("model: mlp(hidden=[16])\n", "") + "variants:\n  fine: {model: 'mlp'}\n  bad: {model: net}\n"
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match=r"^ValueError: boom in forward$"):
        nbopt.compare(recipe, {"net": FailsInTraining()}, jobs=2, name="failing", live=False)
    assert nbopt.runs().loc["failing", "status"] == "failed"
    assert torch.get_num_threads() == threads, "the comparison's process keeps the user's thread count"


def test_a_worker_killed_mid_run_fails_the_comparison_and_says_so(runs_dir):
    def kill_a_worker_once_it_trains():
        while not (found := list(runs_dir.glob("killed/*/history.csv"))):
            time.sleep(0.05)
        os.kill(json.loads((found[0].parent / "run.json").read_text())["pid"], signal.SIGKILL)

    threading.Thread(target=kill_a_worker_once_it_trains, daemon=True).start()
    long = TINY.replace("epochs: 3", "epochs: 100000")
    with pytest.raises(RuntimeError, match=r"^the worker training [ab] died \(killed by SIGKILL\)$"):
        nbopt.compare(long + "variants:\n  a: {}\n  b: {}\n", {}, jobs=2, name="killed", live=False)
    assert nbopt.runs().loc["killed", "status"] == "failed"


def test_jobs_must_be_positive_and_leave_devices_alone(runs_dir):
    with pytest.raises(nbopt.RecipeError, match=r"^--jobs must be at least 1, got 0$"):
        nbopt.compare(VARIANTS, {}, jobs=0, live=False)
    with pytest.raises(nbopt.RecipeError, match=r"^variant 'ddp' trains on several devices, which --jobs 2 would "
                                                r"share out as well; use --jobs 1 with devices$"):
        nbopt.compare(TINY + "variants:\n  one: {}\n  ddp: {devices: 2, strategy: ddp}\n", {}, jobs=2, live=False)
    assert run_folders(runs_dir) == []


def test_compare_jobs_in_a_kernel_draws_the_live_figure_and_the_table(kernel):
    cell = TINY.replace("epochs: 3", "epochs: 40") + "variants:\n  kj-adam: {}\n  kj-sgd: {optimizer: 'sgd(lr=0.3)'}\n"
    reply, outputs = kernel.execute("%%nbopt compare --jobs 2 --name kernel-jobs --out kj\n" + cell, timeout=300)
    assert reply["status"] == "ok", kernel.errors(outputs)
    figures = [m["content"]["data"] for m in outputs if m["msg_type"] in ("display_data", "update_display_data")
               and "image/png" in m["content"]["data"]]
    assert figures and figures[-1]["text/plain"] == "<compare curves>"
    reply, outputs = kernel.execute("print(sorted(kj.runs), [len(r.history) for r in kj.runs.values()])")
    assert kernel.text(outputs).strip() == "['kj-adam', 'kj-sgd'] [40, 40]"
