"""`devices:` and `strategy:` — data-parallel training on CPU with two processes (gloo), for real.

From a shell (`nbopt run`) this is Lightning's regular DDP: rank 1 re-runs the command and must stay
quiet and leave no run folder behind. In a notebook it is the fork-based notebook strategy: the
workers write the run folder, the kernel shows it live and loads the records back. Every test that
starts processes has a time limit (subprocess timeouts, kernel message timeouts), so a hang fails
the test instead of blocking the suite, and the kernel tests check that no worker outlives its cell.

Not tested here because it needs a GPU: the refusal of a notebook DDP launch once CUDA has been
initialised in the kernel, NCCL, and FSDP / DeepSpeed actually running. One node under SLURM is tested
with the variables srun sets, and `nodes: 2` with two torchrun launchers on this machine's loopback,
each playing one node.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from cli_command import nbopt_command

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic(n=2000, shape=[1, 16, 16], classes=4, noise=6)"

needs_two_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two processes need two CPU cores")


# -- helpers ------------------------------------------------------------------------------------------

def start_cli(args: list[str], cwd: Path, runs: Path, tmp: Path, env: dict | None = None) -> subprocess.Popen:
    """`nbopt ARGS` as a user would type it; TMPDIR is private so that leftovers of rank 1 show."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, NBOPT_RUNS_DIR=str(runs), OMP_NUM_THREADS="1", TMPDIR=str(tmp),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {}))
    return subprocess.Popen(nbopt_command() + args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """Wait for a command; on a hang kill its whole process group (rank 1 included) and fail."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        out, err = process.communicate()
        pytest.fail(f"`nbopt` did not finish within {timeout}s (hang?)\nstdout:\n{out}\nstderr:\n{err[-3000:]}")
    return process.returncode, out, err


COUNTING_MODEL = '''
"""The built-in cnn(width=8), noting the size of every training batch it sees, one file per process."""
import os

import torch
from torch import nn

from nbopt.models.builtin import cnn


class Counted(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = cnn((1, 16, 16), 4, width=8)

    def forward(self, x):
        if self.training:
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            with open(os.path.join(os.path.dirname(__file__), f"batches-rank{rank}.txt"), "a") as out:
                out.write(f"{len(x)}\\n")
        return self.net(x)
'''

EPOCHS = 3


def cli_recipe(batch_size: int, devices: int) -> str:
    text = (f"model: counting:Counted\ndata: {DATA}\nepochs: {EPOCHS}\nbatch_size: {batch_size}\n"
            "optimizer: sgd(lr=0.05, momentum=0.9)\nscheduler: onecycle(max_lr=0.1)\n")
    if devices != 1:
        text += f"devices: {devices}\nstrategy: ddp\n"
    return text


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """The same recipe twice from a shell: 2 processes × batch 32, and 1 process × batch 64 (the
    same global batch). Run once for the module; the tests below look at different sides of it."""
    base = tmp_path_factory.mktemp("cli-ddp")
    runs = base / "runs"
    started = {}
    for label, batch_size, devices in (("two", 32, 2), ("one", 64, 1)):
        project = base / label
        project.mkdir()
        (project / "counting.py").write_text(COUNTING_MODEL)
        (project / "recipe.yaml").write_text(cli_recipe(batch_size, devices))
        started[label] = start_cli(["run", str(project / "recipe.yaml"), "--name", label], project, runs,
                                   base / f"tmp-{label}")
    results = {}
    for label, process in started.items():
        code, out, err = finish(process, timeout=400)
        results[label] = {"code": code, "out": out, "err": err, "project": base / label,
                          "folder": runs / label, "tmp": base / f"tmp-{label}"}
    return {"runs": runs, **results}


def batches(project: Path, rank: int) -> list[int]:
    path = project / f"batches-rank{rank}.txt"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


# -- nbopt run: regular DDP, rank 1 re-runs the command --------------------------------------------------

@needs_two_cores
def test_cli_ddp_records_one_run_with_every_epoch_and_rank_1_stays_quiet(cli_runs):
    two = cli_runs["two"]
    assert two["code"] == 0, two["err"][-3000:]
    # one run folder, made by rank 0; rank 1's scratch folder is gone with it
    assert sorted(p.name for p in cli_runs["runs"].iterdir()) == ["one", "two"]
    assert list(two["tmp"].glob("nbopt-rank-*")) == []
    folder = two["folder"]
    assert {"recipe.yaml", "history.csv", "best.pt", "run.json", "metrics.json"} <= {p.name for p in folder.iterdir()}
    history = pd.read_csv(folder / "history.csv")
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert history[["train_loss", "val_loss", "val_acc", "lr"]].notna().all().all()
    status = json.loads((folder / "run.json").read_text())
    assert status["status"] == "finished" and status["epochs_run"] == EPOCHS
    # one line per epoch and one summary: rank 1 printed nothing of its own
    epoch_lines = [line for line in two["out"].splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == [f"{n}/{EPOCHS}" for n in range(1, EPOCHS + 1)]
    assert two["out"].count("Best weights:") == 1 and two["out"].count("status") == 1


@needs_two_cores
def test_cli_ddp_takes_the_same_optimizer_steps_as_one_process_with_the_global_batch(cli_runs):
    two, one = cli_runs["two"], cli_runs["one"]
    assert two["code"] == 0 and one["code"] == 0, two["err"][-2000:] + one["err"][-2000:]
    rank0, rank1, single = batches(two["project"], 0), batches(two["project"], 1), batches(one["project"], 0)
    # 1,600 training samples: 25 steps of 64 per epoch in one process; in two, each process takes
    # half of every epoch in batches of 32, so also 25 steps, and step i of the pair is step i alone
    train_samples = 1600
    assert len(single) == EPOCHS * -(-train_samples // 64)
    assert len(rank0) == len(rank1) == len(single), (len(rank0), len(rank1), len(single))
    assert [a + b for a, b in zip(rank0, rank1)] == single
    assert sum(rank0) == sum(rank1) == EPOCHS * train_samples // 2

    h2, h1 = pd.read_csv(two["folder"] / "history.csv"), pd.read_csv(one["folder"] / "history.csv")
    # a one-cycle schedule is sized from the steps each process will take: same length, same LRs
    assert h2["lr"].tolist() == pytest.approx(h1["lr"].tolist(), rel=1e-6)
    # the same batches in the same order from the same weights: the same model, up to the order of
    # floating-point sums (all-reduce vs one big batch). Tolerance: val_loss 1e-3 relative, val_acc 0.01.
    assert h2["val_loss"].tolist() == pytest.approx(h1["val_loss"].tolist(), rel=1e-3)
    assert h2["val_acc"].tolist() == pytest.approx(h1["val_acc"].tolist(), abs=0.01)


def test_dry_run_shows_the_optimizer_steps_each_process_takes(check):
    """The plan's "epochs × steps" are optimizer steps per epoch: with 2 processes × batch 32 that is
    the same number as 1 process × batch 64 (what the run above really takes), not twice as many."""
    def steps(batch_size, devices):
        rows = dict(check(cli_recipe(batch_size, devices).replace("counting:Counted", "cnn(width=8)")).rows())
        return int(re.match(rf"{EPOCHS} epochs × (\d+) steps", rows["training"]).group(1))

    assert steps(64, 1) == 25
    assert steps(32, 2) == steps(64, 1)


@needs_two_cores
def test_cli_ddp_final_metrics_score_the_whole_validation_split(cli_runs):
    """metrics.json scores the returned (best) weights on the validation split; the history scored the
    same weights at their epoch on the same split, so the two must agree — with 1 process or 2."""
    for label in ("one", "two"):
        run = cli_runs[label]
        assert run["code"] == 0, run["err"][-3000:]
        metrics = json.loads((run["folder"] / "metrics.json").read_text())
        history = pd.read_csv(run["folder"] / "history.csv")
        best = history.iloc[metrics["best_epoch"] - 1]
        assert metrics["val_loss"] == pytest.approx(best["val_loss"], rel=1e-4), label
        assert metrics["val_acc"] == pytest.approx(best["val_acc"], abs=1e-6), label


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@needs_two_cores
def test_cli_under_srun_records_one_run(tmp_path, runs_dir):
    """`srun --ntasks-per-node=2 nbopt run recipe.yaml` on one node — the command nbopt's own messages
    recommend. SLURM starts both processes and gives them their rank in SLURM_PROCID/SLURM_LOCALID
    (not LOCAL_RANK); emulated here with the variables srun sets, so no cluster is needed."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: cnn(width=8)\ndata: {DATA}\nepochs: 2\nbatch_size: 32\ndevices: 2\nstrategy: ddp\n")
    port = free_port()
    tasks = []
    for rank in (0, 1):
        slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_JOB_NAME": "nbopt",
                 "SLURM_JOB_ID": "4242", "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(port),
                 "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0"}
        tasks.append(start_cli(["run", str(recipe), "--name", "srun"], tmp_path, runs_dir, tmp_path / f"tmp{rank}",
                               env=slurm))
    results = [finish(task, timeout=400) for task in tasks]
    assert [code for code, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    assert sorted(p.name for p in runs_dir.iterdir()) == ["srun"], "rank 1 made a run folder of its own"
    assert results[1][1].strip() == "", f"rank 1 printed:\n{results[1][1]}"
    assert pd.read_csv(runs_dir / "srun" / "history.csv")["epoch"].tolist() == [1, 2]


@needs_two_cores
def test_cli_two_nodes_under_torchrun_record_one_run(tmp_path, runs_dir):
    """`nodes: 2`: the torchrun command nbopt's message prints, run once per "node" (here two launchers on
    loopback, one process each). Node 0 records the run; node 1 trains its half and stays quiet."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: cnn(width=8)\ndata: {DATA}\nepochs: 2\nbatch_size: 32\nnodes: 2\nstrategy: ddp\n")
    torchrun = Path(sys.executable).parent / "torchrun"
    port = free_port()
    tasks = []
    for node in (0, 1):
        env = dict(os.environ, NBOPT_RUNS_DIR=str(runs_dir), OMP_NUM_THREADS="1", TMPDIR=str(tmp_path),
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        command = [str(torchrun), "--nnodes=2", "--nproc-per-node=1", f"--node-rank={node}", "--master-addr=127.0.0.1",
                   f"--master-port={port}", *nbopt_command(), "run", str(recipe), "--name", "two-nodes"]
        tasks.append(subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True))
    results = [finish(task, timeout=400) for task in tasks]
    assert [code for code, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    assert sorted(p.name for p in runs_dir.iterdir()) == ["two-nodes"], "node 1 made a run folder of its own"
    assert "epoch 2/2" in results[0][1] and results[1][1].strip() == "", results[1][1]
    assert pd.read_csv(runs_dir / "two-nodes" / "history.csv")["epoch"].tolist() == [1, 2]


def test_two_nodes_outside_a_launcher_print_the_commands_that_start_them(tmp_path, runs_dir):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(BASE + "nodes: 2\ndevices: 2\n")
    code, out, err = finish(start_cli(["run", str(recipe)], tmp_path, runs_dir, tmp_path / "tmp"), timeout=120)
    assert code == 2
    assert err.strip() == (
        "nbopt: nodes (line 3): nodes: 2 needs a launcher that starts nbopt on every machine: srun --nodes=2 "
        "--ntasks-per-node=2 nbopt run RECIPE.yaml on a SLURM cluster, or on each of the 2 machines: torchrun "
        "--nnodes=2 --nproc-per-node=2 --rdzv-backend=c10d --rdzv-endpoint=FIRST_MACHINE:29500 $(which nbopt) "
        "run RECIPE.yaml")
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


# -- pre-flight: refused before anything starts, with what to do instead --------------------------------

BASE = "model: cnn(width=8)\ndata: synthetic(n=200, shape=[1, 16, 16], classes=4)\n"


@pytest.mark.parametrize("lines, key, line, message", [
    ("devices: 99\n", "devices", 3,
     rf"devices: 99 but this machine has {os.cpu_count()} CPU cores \(one process per device\)"),
    ("devices: 2\nstrategy: fsdp\n", "strategy", 4,
     r"fsdp shards the model across GPUs and Lightning runs it on GPUs only; this machine has none — "
     r"use strategy: ddp on CPU"),
    ("strategy: deepspeed\n", "strategy", 3, r"deepspeed needs GPUs; this machine has none — use strategy: ddp on CPU"),
    ("devices: 2\nstrategy: ddp_spawn\n", "strategy", 4,
     r"ddp_spawn pickles the whole Trainer into new processes, and a run's live callbacks cannot be pickled; use "
     r"strategy: ddp, which forks a notebook's kernel and starts one process per device from `nbopt run`"),
    ("devices: 2\nstrategy: dpp\n", "strategy", 4, r"unknown strategy 'dpp' — did you mean 'ddp'\?"),
    ("devices: 2\nstrategy: ddp_notebok\n", "strategy", 4,
     r"unknown strategy 'ddp_notebok' — did you mean 'ddp_notebook'\?"),
    ("devices: 0\n", "devices", 3, r"devices must be at least 1, got 0"),
    ("nodes: 0\n", "nodes", 3, r"nodes must be at least 1, got 0"),
])
def test_preflight_refuses_with_a_pinned_message(check, lines, key, line, message):
    import torch

    import nbopt

    if torch.cuda.is_available() and ("fsdp" in lines or "deepspeed" in lines or "99" in lines):
        pytest.skip("the CPU-only messages; this machine has a GPU")
    with pytest.raises(nbopt.RecipeError) as info:
        check(BASE + lines)
    assert info.value.key == key and info.value.line == line
    assert re.fullmatch(rf"{key} \(line {line}\): {message}", str(info.value)), str(info.value)


def test_preflight_error_in_the_cli_is_one_line_and_starts_nothing(tmp_path, runs_dir):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(BASE + "devices: 2\nstrategy: dpp\n")
    code, out, err = finish(start_cli(["run", str(recipe)], tmp_path, runs_dir, tmp_path / "tmp"), timeout=120)
    assert code == 2
    assert err.strip() == "nbopt: strategy (line 4): unknown strategy 'dpp' — did you mean 'ddp'?"
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


# -- in a real Jupyter kernel: the fork-based notebook strategy ------------------------------------------

def kernel_workers(kernel) -> list[tuple[int, str]]:
    """Python processes below the kernel (DDP workers), leaving out multiprocessing's resource tracker."""
    import psutil

    found = []
    try:
        children = psutil.Process(kernel.km.provisioner.process.pid).children(recursive=True)
    except psutil.Error:
        return found
    for child in children:
        try:
            command = " ".join(child.cmdline()) or child.name()
            status = child.status()
        except psutil.Error:
            continue
        if "resource_tracker" in command or "semaphore_tracker" in command:
            continue
        found.append((child.pid, f"{status}: {command}"))
    return found


def assert_no_workers_left(kernel, grace: float = 15.0) -> None:
    deadline = time.monotonic() + grace
    while (left := kernel_workers(kernel)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"worker processes outlived the cell: {left}"


def run_cell(kernel, code: str, timeout: float, **options):
    """`kernel.execute`, and on a hang: interrupt the kernel and kill its workers, so the next test starts clean."""
    try:
        return kernel.execute(code, timeout=timeout, **options)
    except TimeoutError:
        import psutil

        kernel.km.interrupt_kernel()
        for pid, _ in kernel_workers(kernel):
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        raise


def kernel_json(kernel, code: str) -> dict:
    """Run `code` whose last line prints one JSON document, and return it."""
    reply, outputs = run_cell(kernel, code, timeout=60)
    assert reply["status"] == "ok", kernel.errors(outputs)
    return json.loads(kernel.text(outputs).strip().splitlines()[-1])


# The LR grows six-fold every epoch until training diverges, so the best epoch is the first: loading
# the best weights is then visibly different from keeping the last ones.
DIVERGING = (f"model: cnn(width=8)\ndata: {DATA}\nepochs: 4\nbatch_size: 32\ndevices: 2\nstrategy: ddp\n"
             "optimizer: sgd(lr=0.05, momentum=0.9)\nscheduler: exponential(gamma=6)\n")


@needs_two_cores
def test_kernel_ddp_trains_shows_live_epochs_and_returns_the_best_weights(kernel):
    before = kernel_workers(kernel)
    started = time.monotonic()
    reply, outputs = run_cell(kernel, "%%nbopt train --name par-ddp --out prun\n" + DIVERGING, timeout=300)
    assert reply["status"] == "ok", kernel.errors(outputs)
    seconds = time.monotonic() - started

    # live output: the workers' epochs, read from the run folder, updated in place in the cell
    updates = [m["content"]["data"].get("text/plain", "") for m in outputs if m["msg_type"] == "update_display_data"]
    epoch_updates = [u for u in updates if re.search(r"par-ddp · epoch [1-4]/4 · 2 processes · val_loss", u)]
    assert epoch_updates, f"no live epoch update in {len(updates)} updates ({seconds:.0f}s): {updates[:5]}"
    assert any(u.startswith("<curves of par-ddp>") for u in updates)

    result = kernel_json(kernel, textwrap.dedent("""
        import json, torch
        saved = torch.load(prun.checkpoint, weights_only=True)
        own = prun.model.state_dict()
        print(json.dumps({
            "status": prun.status, "epochs": prun.history["epoch"].tolist(),
            "val_loss": prun.history["val_loss"].tolist(), "columns": list(prun.history.columns),
            "metrics": prun.metrics, "epoch_seconds": prun.history["seconds"].tolist(),
            "same_keys": sorted(saved) == sorted(own),
            "same_weights": all(torch.equal(saved[k], own[k]) for k in own),
        }))
    """))
    assert result["status"] == "finished"
    assert result["epochs"] == [1, 2, 3, 4]
    assert result["columns"][:6] == ["epoch", "train_loss", "val_loss", "val_acc", "lr", "seconds"]
    metrics = result["metrics"]
    assert {"val_loss", "val_acc", "best_epoch", "epochs_run", "seconds"} <= set(metrics)
    assert metrics["epochs_run"] == 4
    # the time is the epochs' own; starting the worker processes is counted apart
    assert metrics["seconds"] == pytest.approx(sum(result["epoch_seconds"]))
    assert metrics["startup_seconds"] > 0
    # the best epoch's weights came back from the workers: the model scores what that epoch scored
    val_loss = result["val_loss"]
    best = min(range(4), key=lambda i: val_loss[i])
    assert metrics["best_epoch"] == best + 1
    assert metrics["val_loss"] == pytest.approx(val_loss[best], rel=1e-4)
    assert metrics["val_loss"] < val_loss[-1]  # not the last (diverged) weights
    assert result["same_keys"] and result["same_weights"]
    assert_no_workers_left(kernel)
    assert len(kernel_workers(kernel)) <= len(before)


LAGGING_READER = textwrap.dedent("""
    import threading, time
    import nbopt.display.live, nbopt.fitting
    _read, _finish, boards = nbopt.fitting.Fitter._read_history, nbopt.display.live.LiveOutput.finish, []

    def lagging(self):  # the kernel's watcher thread reads the workers' records slowly, one record behind
        rows = _read(self)
        if threading.current_thread() is threading.main_thread():
            return rows
        time.sleep(0.5)
        return rows[:-1]

    def keep(self, run):
        boards.append(self)
        _finish(self, run)

    nbopt.fitting.Fitter._read_history, nbopt.display.live.LiveOutput.finish = lagging, keep
""")


@needs_two_cores
def test_kernel_ddp_final_figure_shows_every_epoch_even_when_the_records_arrive_late(kernel):
    """The figure that stays comes from the final history, not from the last rows the watcher read."""
    reply, outputs = run_cell(kernel, LAGGING_READER, timeout=30)
    assert reply["status"] == "ok", kernel.errors(outputs)
    try:
        reply, outputs = run_cell(kernel, "%%nbopt train --name par-late --out late\n" + DIVERGING, timeout=300)
        assert reply["status"] == "ok", kernel.errors(outputs)
        result = kernel_json(kernel, "import json\nprint(json.dumps({'history': late.history['epoch'].tolist(), "
                                     "'figure': sorted(set(boards[-1].figure_info.curves['epoch'].tolist()))}))")
    finally:
        run_cell(kernel, "nbopt.fitting.Fitter._read_history, nbopt.display.live.LiveOutput.finish = _read, _finish",
                 timeout=30)
    live = [m["content"]["data"].get("text/plain", "") for m in outputs if m["msg_type"] == "update_display_data"]
    seen = [int(e) for e in re.findall(r"par-late · epoch (\d)/4 · 2 processes", "\n".join(live))]
    assert seen and max(seen) < 4  # the watcher never saw the last epoch ...
    assert result == {"history": [1, 2, 3, 4], "figure": [1, 2, 3, 4]}  # ... and the figure shows it all the same
    assert_no_workers_left(kernel)


@needs_two_cores
def test_kernel_ddp_trains_like_one_process_with_the_global_batch(kernel):
    """The notebook strategy shares the batches like `nbopt run` does: 2 × 32 per step is the same
    training as 1 × 64 (same tolerance as the shell test above)."""
    one = cli_recipe(64, 1).replace("counting:Counted", "cnn(width=8)")
    two = cli_recipe(32, 2).replace("counting:Counted", "cnn(width=8)")
    for name, recipe in (("par-eq1", one), ("par-eq2", two)):
        reply, outputs = run_cell(kernel, f"%%nbopt train --name {name} --out {name.replace('-', '_')}\n" + recipe,
                                  timeout=300)
        assert reply["status"] == "ok", kernel.errors(outputs)
    result = kernel_json(kernel, "import json\nprint(json.dumps({k: r.history[['lr', 'val_loss', 'val_acc']]"
                                 ".to_dict('list') for k, r in (('one', par_eq1), ('two', par_eq2))}))")
    one, two = result["one"], result["two"]
    assert len(two["val_loss"]) == len(one["val_loss"]) == EPOCHS
    assert two["lr"] == pytest.approx(one["lr"], rel=1e-6)
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-3)
    assert two["val_acc"] == pytest.approx(one["val_acc"], abs=0.01)
    assert_no_workers_left(kernel)


@needs_two_cores
def test_kernel_ddp_early_stopping_stops_both_ranks(kernel):
    # a tiny LR cannot improve val_loss by min_delta: epoch 1 sets the best, epoch 2 exhausts patience 1
    recipe = (f"model: cnn(width=8)\ndata: {DATA}\nepochs: 200\nbatch_size: 64\ndevices: 2\nstrategy: ddp\n"
              "optimizer: sgd(lr=1e-7)\nearly_stopping: {monitor: val_loss, patience: 1, min_delta: 0.01}\n")
    started = time.monotonic()
    reply, outputs = run_cell(kernel, "%%nbopt train --name par-es --out esrun\n" + recipe, timeout=240)
    assert reply["status"] == "ok", kernel.errors(outputs)
    assert time.monotonic() - started < 240
    result = kernel_json(kernel, "import json\nprint(json.dumps({'status': esrun.status, "
                                 "'epochs': esrun.history['epoch'].tolist(), 'best': esrun.metrics['best_epoch'], "
                                 "'val_loss': esrun.history['val_loss'].tolist()}))")
    assert result["epochs"] == [1, 2], result
    # the weights kept are those of the lower val_loss, even when it is lower by less than min_delta
    assert result["best"] == 1 + result["val_loss"].index(min(result["val_loss"]))
    assert result["status"] == "stopped early", result
    assert_no_workers_left(kernel)


@needs_two_cores
def test_kernel_interrupt_during_ddp_keeps_the_run_and_leaves_no_workers(kernel):
    interrupt_after_first_epoch, sent = kernel.interrupt_when(kernel.runs / "par-int" / "history.csv")
    recipe = f"model: cnn(width=8)\ndata: {DATA}\nepochs: 500\nbatch_size: 64\ndevices: 2\nstrategy: ddp\n"
    reply, outputs = run_cell(kernel, "%%nbopt train --name par-int --out irun\n" + recipe, timeout=300,
                              on_busy=interrupt_after_first_epoch)
    assert sent, "training never wrote its first epoch"
    assert reply["status"] == "ok", kernel.errors(outputs)  # the cell ends normally, it is not an error
    assert time.monotonic() - sent[0] < 60, "the workers took too long to stop"
    assert "Interrupted after" in kernel.text(outputs)
    result = kernel_json(kernel, "import json\nprint(json.dumps({'status': irun.status, 'rows': len(irun.history), "
                                 "'complete': bool(irun.history['val_loss'].notna().all()), 'note': irun.note}))")
    assert result["status"] == "interrupted"
    assert 1 <= result["rows"] < 500 and result["complete"]
    assert result["note"].startswith(f"Interrupted after {result['rows']} epoch(s)")
    assert json.loads((kernel.runs / "par-int" / "run.json").read_text())["status"] == "interrupted"
    assert kernel.km.is_alive()
    assert_no_workers_left(kernel)
    reply, outputs = run_cell(kernel, "print(6 * 7)", timeout=30)
    assert reply["status"] == "ok" and kernel.text(outputs).strip() == "42"


@needs_two_cores
def test_kernel_stop_request_reaches_the_ddp_workers(kernel):
    """`stop.request_stop()` — what the panel's Stop button calls, from another thread — stops DDP
    training too, not only the kernel's SIGINT."""
    history = kernel.runs / "par-stop" / "history.csv"
    epochs = 20
    recipe = f"model: cnn(width=8)\ndata: {DATA}\nepochs: {epochs}\nbatch_size: 64\ndevices: 2\nstrategy: ddp\n"
    code = textwrap.dedent(f"""
        import json, os, threading, time, nbopt
        from nbopt.callbacks.interrupt import InterruptGuard

        guard = InterruptGuard()

        def stop_after_first_epoch():
            while not os.path.exists({str(history)!r}):
                time.sleep(0.05)
            guard.request_stop()

        threading.Thread(target=stop_after_first_epoch, daemon=True).start()
        srun = nbopt.train({recipe!r}, name="par-stop", stop=guard, live=False)
        print(json.dumps({{"status": srun.status, "rows": len(srun.history)}}))
    """)
    result = json.loads(kernel.text(run_cell(kernel, code, timeout=300)[1]).strip().splitlines()[-1])
    assert result["status"] == "interrupted"
    assert result["rows"] < epochs, f"training ran all {epochs} epochs after the stop request: {result}"
    assert_no_workers_left(kernel)


@needs_two_cores
def test_kernel_sweep_prunes_a_ddp_trial_early(kernel):
    """A sweep whose trials train on 2 processes: the pruner hears every epoch from the workers and
    stops a hopeless trial early, on both ranks."""
    recipe = (f"model: cnn(width=8)\ndata: {DATA}\nepochs: 10\nbatch_size: 64\ndevices: 2\nstrategy: ddp\n"
              "optimizer: sgd(lr=0.05, momentum=0.9)\nsearch:\n  optimizer.lr: [0.05, 0.03, 0.02, 1.0e-7]\n")
    code = textwrap.dedent(f"""
        import json
        from nbopt.sweeps import sweep
        result = sweep({recipe!r}, sampler="grid", pruner="median", study="ddp-pruning", live=False)
        print(json.dumps(result.trials[["optimizer.lr", "state", "epochs"]].to_dict("records")))
    """)
    reply, outputs = run_cell(kernel, code, timeout=400)
    assert reply["status"] == "ok", kernel.errors(outputs)
    trials = json.loads(kernel.text(outputs).strip().splitlines()[-1])
    by_lr = {t["optimizer.lr"]: t for t in trials}
    assert [by_lr[lr]["state"] for lr in (0.05, 0.03, 0.02)] == ["complete"] * 3, trials
    assert by_lr[1e-7]["state"] == "pruned", trials
    assert by_lr[1e-7]["epochs"] < 10, trials
    assert_no_workers_left(kernel)


@needs_two_cores
def test_kernel_error_in_one_rank_ends_the_cell_with_that_error_and_no_workers(kernel):
    reply, outputs = run_cell(kernel, textwrap.dedent("""
        import torch
        from torch import nn

        class FailsOnRank1(nn.Module):
            def __init__(self):
                super().__init__()
                self.layers = nn.Sequential(nn.Flatten(), nn.Linear(256, 4))
                self.steps = 0

            def forward(self, x):
                if self.training:
                    self.steps += 1
                    if self.steps > 1 and torch.distributed.is_initialized() and torch.distributed.get_rank() == 1:
                        raise RuntimeError("broken on rank 1 on purpose")
                return self.layers(x)
    """), timeout=30)
    assert reply["status"] == "ok", kernel.errors(outputs)
    recipe = f"model: FailsOnRank1\ndata: {DATA}\nepochs: 3\nbatch_size: 64\ndevices: 2\nstrategy: ddp\n"
    started = time.monotonic()
    reply, outputs = run_cell(kernel, "%%nbopt train --name par-fail --out frun\n" + recipe, timeout=240)
    assert reply["status"] == "error"
    # the cell ends with the user's own exception, and says which process raised it
    assert "broken on rank 1 on purpose" in reply["evalue"], (reply["ename"], reply["evalue"][-2000:])
    assert reply["evalue"].strip().endswith("RuntimeError: broken on rank 1 on purpose"), reply["evalue"][-500:]
    assert re.search(r"\b(process|rank) 1\b", reply["evalue"], re.IGNORECASE), reply["evalue"][:500]
    # one line: the process, where its traceback went, and its error — not the worker's traceback as the message
    assert "\n" not in reply["evalue"].strip(), reply["evalue"][:1000]
    assert reply["evalue"].startswith("process 1 of 2 failed (its traceback is in "), reply["evalue"]
    trace = (kernel.runs / "par-fail" / "error.txt").read_text()
    assert "Traceback" in trace and "broken on rank 1 on purpose" in trace
    assert time.monotonic() - started < 240
    assert json.loads((kernel.runs / "par-fail" / "run.json").read_text())["status"] == "failed"
    assert kernel.km.is_alive()
    assert_no_workers_left(kernel)
    reply, outputs = run_cell(kernel, "print('still here')", timeout=30)
    assert reply["status"] == "ok" and kernel.text(outputs).strip() == "still here"


def test_kernel_refuses_several_nodes_and_prints_the_commands(kernel):
    reply, outputs = run_cell(kernel, "%%nbopt train\n" + BASE + "name: big\nnodes: 4\ndevices: 2\n", timeout=60)
    assert reply["status"] == "error" and reply["ename"] == "RecipeError"
    [error] = kernel.errors(outputs)
    assert re.sub(r"\x1b\[[0-9;]*m", "", error["traceback"][0]) == (
        "RecipeError: nodes (line 4): nodes: 4 needs a process on every machine, which a notebook kernel cannot "
        "start; %nbopt export big --to big.yaml, then in a shell: srun --nodes=4 --ntasks-per-node=2 nbopt run "
        "big.yaml on a SLURM cluster, or on each of the 4 machines: torchrun --nnodes=4 --nproc-per-node=2 "
        "--rdzv-backend=c10d --rdzv-endpoint=FIRST_MACHINE:29500 $(which nbopt) run big.yaml")
    assert_no_workers_left(kernel, grace=0)


def test_kernel_refuses_fsdp_on_cpu_in_one_line(kernel):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU-only message; this machine has a GPU")
    reply, outputs = run_cell(kernel, "%%nbopt train\n" + BASE + "devices: 2\nstrategy: fsdp\n", timeout=60)
    assert reply["status"] == "error" and reply["ename"] == "RecipeError"
    [error] = kernel.errors(outputs)
    assert len(error["traceback"]) == 1, error["traceback"]
    assert "strategy (line 4): fsdp shards the model across GPUs" in re.sub(r"\x1b\[[0-9;]*m", "", error["traceback"][0])
    assert_no_workers_left(kernel, grace=0)
