"""The tutorials' Binder image: its requirements install into a fresh environment and nbopt works there.

Binder builds from ``binder/requirements.txt``, which takes torch's CPU build from PyTorch's own index. Where
that index cannot be reached (an offline CI machine), the test is skipped and says so; it never passes
without installing.
"""
from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "binder" / "requirements.txt"


def _lines() -> list[str]:
    return [line.strip() for line in REQUIREMENTS.read_text().splitlines() if line.strip() and
            not line.startswith("#")]


def test_binder_requirements_install_into_a_fresh_venv_and_nbopt_trains(tmp_path):
    venv.create(tmp_path / "env", with_pip=True)
    python = str(tmp_path / "env" / "bin" / "python")
    options = [part for line in _lines() if line.startswith("--") for part in line.split()]
    torch_line = next(line for line in _lines() if line.startswith("torch"))
    probe = subprocess.run([python, "-m", "pip", "download", "--no-deps", "--retries", "0", "--timeout", "15", "-q",
                            "-d", str(tmp_path / "probe"), *options, torch_line], capture_output=True, text=True,
                           timeout=600)
    if probe.returncode != 0:
        reason = next((line for line in probe.stderr.splitlines() if "ERROR" in line), probe.stderr[-200:])
        pytest.skip(f"the Binder requirements' package index cannot be reached from here ({torch_line}): {reason}")
    # No retries: where PyTorch's index cannot be reached, every other package would wait for it in vain.
    installed = subprocess.run([python, "-m", "pip", "install", "-q", "--retries", "0", "-r", str(REQUIREMENTS)],
                               cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert installed.returncode == 0, installed.stderr[-3000:]
    script = "import nbopt; print(nbopt.train('model: mlp\\ndata: digits\\nepochs: 1\\n', {}, live=False).status)"
    trained = subprocess.run([python, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert trained.stdout.strip() == "finished", trained.stderr[-3000:]
