"""The benchmark scripts still run: each in its smallest mode, as a subprocess from the repository root.

They measure nothing here (tiny sizes, a machine busy with the other tests); the point is that they never
rot: every variant trains, the tables come out, and gpu.py refuses cleanly where there is no GPU.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("NBOPT_RUNS_DIR", None)  # each script picks its own temporary runs folder
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def table_rows(output: str) -> list[str]:
    """The first cells of the Markdown table rows in the output."""
    return [line.split("|")[1].strip() for line in output.splitlines() if line.startswith("| ")]


def test_gpu_benchmark_dry_run_trains_every_variant_on_the_cpu():
    done = run_script("benchmarks/gpu.py", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = table_rows(done.stdout)
    for variant in ("(a) hand-written loop", "(b) plain Lightning", "(c) nbopt"):
        assert rows.count(variant) == 2, (variant, done.stdout)  # without and with augmentation
    for ratio in ("(c)/(a)", "(c)/(b)"):
        assert ratio in rows, done.stdout
    assert "augmentation alone:" in done.stdout
    assert any(row.startswith("augmentation <") for row in rows), done.stdout


def test_gpu_benchmark_refuses_in_one_line_without_a_gpu():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU, so gpu.py would run in full")
    done = run_script("benchmarks/gpu.py")
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "needs a CUDA GPU" in done.stderr and "--dry-run" in done.stderr


def test_compare_jobs_benchmark_quick_gives_both_settings_and_equal_tables():
    done = run_script("benchmarks/compare_jobs.py", "--quick")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"jobs=1", "jobs=2"} <= set(table_rows(done.stdout)), done.stdout
    assert "speed-up jobs=2 over jobs=1:" in done.stdout
    assert "tables equal (time column aside): yes" in done.stdout
    comparison = done.stdout.split("the comparison (first jobs=1 measurement):", 1)[1]
    names = {line.split()[0] for line in comparison.splitlines() if line.strip()}
    assert {"adam", "sgd", "adamw"} <= names, comparison
