"""Shared fixtures: every test trains into its own temporary folder, never into the repository.

Everything here uses the real libraries: Lightning trains for real, IPython is a real shell, and the
kernel tests talk to a real ipykernel through jupyter_client.
"""
from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import pytest


def pytest_configure(config):
    """Tiny models train fastest on one thread; more threads only contend for the CPU (test speed only)."""
    import torch

    torch.set_num_threads(1)


def run_folders(root: Path) -> list[str]:
    """Every run folder under a runs folder, as `runs` names them: `plain`, `optimizers/adam`, `S/trial0`."""
    return sorted(path.parent.relative_to(root).as_posix() for path in root.glob("**/run.json"))


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch) -> Path:
    """Runs go to ``tmp_path/runs``; the working folder is ``tmp_path`` (for exported files)."""
    folder = tmp_path / "runs"
    monkeypatch.setenv("NBOPT_RUNS_DIR", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


@pytest.fixture
def train():
    """``nbopt.train`` with an explicit (default: empty) namespace and no live output."""
    import nbopt

    def _train(recipe, namespace=None, **options):
        options.setdefault("live", False)
        return nbopt.train(recipe, {} if namespace is None else namespace, **options)

    return _train


@pytest.fixture
def check():
    import nbopt

    def _check(recipe, namespace=None):
        return nbopt.check(recipe, {} if namespace is None else namespace)

    return _check


# -- a real IPython shell ---------------------------------------------------------------------------

@pytest.fixture
def ip():
    """The process's IPython shell with nbopt loaded; names a test defines are removed afterwards."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbopt")
    before = set(shell.user_ns)
    yield shell
    for name in set(shell.user_ns) - before:
        shell.user_ns.pop(name, None)


# -- a real Jupyter kernel --------------------------------------------------------------------------

class Kernel:
    """A running ipykernel and helpers to execute code in it and collect what the notebook would show."""

    def __init__(self, km, kc, runs: Path, cwd: Path):
        self.km, self.kc, self.runs, self.cwd = km, kc, runs, cwd

    def interrupt_when(self, path: Path) -> tuple:
        """An `on_busy` for execute() that interrupts the kernel once `path` exists (a run's history file:
        its first epoch is done), and the list that gets the time it did."""
        sent: list[float] = []

        def interrupt() -> bool:
            if not path.exists():
                return False
            self.km.interrupt_kernel()
            sent.append(time.monotonic())
            return True

        return interrupt, sent

    def execute(self, code: str, timeout: float = 120, on_busy=None, answer: str | None = None,
                allow_stdin: bool = True) -> tuple[dict, list[dict]]:
        """Run `code`; return the execute_reply content and the iopub messages of this execution.

        `on_busy` (optional) is called repeatedly while the cell runs; when it returns True it is not
        called again (used to interrupt the kernel at the right moment). `answer` is typed into the
        notebook's input box when the cell asks (its `input_request` joins the messages);
        `allow_stdin=False` is a front end without one.
        """
        msg_id = self.kc.execute(code, allow_stdin=allow_stdin)
        outputs: list[dict] = []
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            if time.monotonic() > deadline:
                raise TimeoutError(f"cell did not finish within {timeout}s: {code[:80]!r}")
            if on_busy is not None and on_busy():
                on_busy = None
            if answer is not None and self.kc.stdin_channel.msg_ready():
                request = self.kc.get_stdin_msg(timeout=1)
                outputs.append(request)
                self.kc.input(answer)
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
            elif msg["msg_type"] not in ("status", "execute_input"):
                outputs.append(msg)
        reply = self.kc.get_shell_msg(timeout=30)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=30)
        return reply["content"], outputs

    @staticmethod
    def text(outputs: list[dict]) -> str:
        """All stream text and text/plain of displays and results, as a notebook would show it."""
        parts = []
        for msg in outputs:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                parts.append(content["text"])
            elif msg["msg_type"] in ("display_data", "update_display_data", "execute_result"):
                parts.append(content["data"].get("text/plain", ""))
        return "".join(parts)

    @staticmethod
    def errors(outputs: list[dict]) -> list[dict]:
        return [msg["content"] for msg in outputs if msg["msg_type"] == "error"]


@pytest.fixture(scope="session")
def kernel(tmp_path_factory):
    """One real kernel for the session (starting one imports torch: seconds), nbopt loaded."""
    from jupyter_client.manager import start_new_kernel

    home = tmp_path_factory.mktemp("kernel")
    env = dict(os.environ, NBOPT_RUNS_DIR=str(home / "runs"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    # the kernel must import the nbopt under test, from this checkout
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(home), env=env, startup_timeout=120)
    k = Kernel(km, kc, home / "runs", home)
    reply, outputs = k.execute("%load_ext nbopt", timeout=120)
    assert reply["status"] == "ok", Kernel.errors(outputs)
    yield k
    kc.stop_channels()
    km.shutdown_kernel(now=True)
