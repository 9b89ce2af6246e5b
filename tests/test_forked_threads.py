"""Forked workers (compare and sweep `--jobs`, DDP in a notebook) on a machine with more cores than workers.

GNU OpenMP, torch's on Linux, cannot start a team of threads in a process forked from one that has used
a team: a worker given two threads waited forever in its first step. These run where each worker would get
four threads (8 cores, 2 workers), in a process that has trained on two threads first, as a notebook has.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

RECIPE = "model: mlp(hidden=[64])\ndata: digits\nepochs: 1\n"
SCRIPT = """
import os, sys, warnings
warnings.simplefilter("ignore")
import torch, nbopt
import lightning_fabric.utilities.distributed as fabric
torch.set_num_threads(2)
nbopt.train({recipe!r}, {{}}, live=False)  # this process has used a team of two OpenMP threads
os.cpu_count = fabric._num_cpus_available = lambda: 8
kind = sys.argv[1]
if kind == "compare":
    nbopt.compare({recipe!r} + "variants:\\n  a: {{}}\\n  b: {{optimizer: sgd}}\\n", {{}}, jobs=2, live=False)
elif kind == "sweep":
    nbopt.sweep({recipe!r} + "search:\\n  batch_size: [32, 64]\\n", {{}}, jobs=2, trials=2, live=False)
else:
    assert nbopt.train({recipe!r} + "devices: 2\\nstrategy: ddp_notebook\\n", {{}}, live=False).status == "finished"
print("done")
"""


@pytest.mark.parametrize("kind", ["compare", "sweep", "ddp_notebook"])
def test_forked_workers_finish_on_a_machine_with_more_cores_than_workers(kind, runs_dir):
    process = subprocess.Popen([sys.executable, "-c", SCRIPT.format(recipe=RECIPE), kind], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"},
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the hung workers too
        process.communicate()
        pytest.fail(f"{kind}: a forked worker never finished")
    assert process.returncode == 0 and out.strip().endswith("done"), err[-2000:]
