"""``%nbopt panel`` in a real JupyterLab in a real (headless) Chromium, driven with Playwright.

A private JupyterLab server opens a test notebook; the panel renders, the epochs and the learning
rate are set by typing into the sliders' text boxes, Train shows the run's summary inside the panel,
and As cell writes a ``%%nbopt train`` cell with those settings into the notebook, below the panel.

Needs JupyterLab, Playwright's Python package and a Chromium (Debian's ``chromium``; Playwright's own
browser download is never used). Screenshots go to ``$NBOPT_SCREENSHOTS`` (default:
``test-artifacts/screenshots`` in the repository), also when the test fails.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MINUTE = 60_000  # ms: Playwright's waits, on two shared cores
SERVER_START = 120  # s
TRAIN_WAIT = 5 * MINUTE
EPOCHS = 2
LR = "1.0e-2"  # as the slider's readout writes it (a log slider: steps of 10^0.1)

missing = [what for what, ok in (
    ("chromium (apt-get install chromium)", Path(CHROMIUM).exists()),
    ("playwright (pip install playwright)", importlib.util.find_spec("playwright") is not None),
    ("jupyterlab (pip install jupyterlab)", importlib.util.find_spec("jupyterlab") is not None),
) if not ok]
pytestmark = pytest.mark.skipif(bool(missing), reason="browser test needs " + ", ".join(missing))

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
CELLS = ["%load_ext nbopt", "%nbopt panel", "# the last cell"]


def screenshot_dir() -> Path:
    folder = Path(os.environ.get("NBOPT_SCREENSHOTS") or ROOT / "test-artifacts" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path, cells: list[str]) -> None:
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"cell{i}", "metadata": {},
                   "outputs": [], "source": source} for i, source in enumerate(cells)],
        "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                    "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook, indent=1))


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server of this environment on 127.0.0.1 with a private token and private settings.

    Yields (base URL, token, notebook folder, server log path)."""
    home = tmp_path / "lab"
    dirs = {name: home / name for name in ("config", "data", "runtime", "settings", "workspaces", "ipython",
                                            "notebooks")}
    for folder in dirs.values():
        folder.mkdir(parents=True)
    news = dirs["settings"] / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    token, port = secrets.token_hex(16), free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
               JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
               JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]), IPYTHONDIR=str(dirs["ipython"]),
               NBOPT_RUNS_DIR=str(home / "runs"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    log = home / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
             f"--port={port}", f"--ServerApp.token={token}", f"--ServerApp.root_dir={dirs['notebooks']}",
             "--ServerApp.open_browser=False", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=dirs["notebooks"])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START
        while True:
            assert server.poll() is None, "JupyterLab exited:\n" + log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "JupyterLab did not answer:\n" + log.read_text()[-3000:]
            time.sleep(0.5)
        yield base, token, dirs["notebooks"], log
    finally:
        server.terminate()  # the server shuts its kernels down
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
        shutil.copyfile(log, screenshot_dir() / "jupyterlab-server.log")


def cell_texts(page) -> list[str]:
    return page.locator(".jp-NotebookPanel .jp-Cell .jp-InputArea .cm-content").evaluate_all(
        "nodes => nodes.map(n => n.cmView ? n.cmView.view.state.doc.toString() : n.innerText)")


def run_all_cells(page, notebook, attempts: int = 3) -> None:
    """Run > Run All Cells, again if the first cell never starts: a kernel that JupyterLab already shows by
    name can still drop the first execute requests while it connects."""
    import re

    from playwright.sync_api import expect

    first_prompt = notebook.locator(".jp-Cell").first.locator(".jp-InputPrompt")
    for attempt in range(attempts):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            expect(first_prompt).to_have_text(re.compile(r"\[(\*|\d+)\]"), timeout=MINUTE / 2)
            return
        except AssertionError:  # what Playwright's expect raises on a timeout
            if attempt == attempts - 1:
                raise


def test_panel_trains_and_writes_its_cell_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    base, token, notebooks, log = lab
    write_notebook(notebooks / "panel.ipynb", CELLS)
    shots = screenshot_dir()
    expect.set_options(timeout=MINUTE)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        page = browser.new_page()
        step = "open"
        try:
            page.goto(f"{base}/lab/tree/panel.ipynb?token={token}", timeout=2 * MINUTE)
            notebook = page.locator(".jp-NotebookPanel")
            expect(notebook.locator(".jp-Cell")).to_have_count(len(CELLS))
            # a fresh server can report "idle" before the kernel exists: wait for the kernel's name
            expect(notebook.locator(".jp-Toolbar .jp-KernelName")).to_contain_text("Python", timeout=2 * MINUTE)
            page.screenshot(path=str(shots / "1-opened.png"))

            step = "run all"
            run_all_cells(page, notebook)
            panel = notebook.locator(".jp-Cell").nth(1).locator(".jp-OutputArea")
            expect(panel.get_by_text("nbopt panel", exact=True)).to_be_visible(timeout=2 * MINUTE)
            for label in ("model", "data", "epochs", "learning rate", "optimizer", "scheduler"):
                expect(panel.locator(".widget-label", has_text=label).first).to_be_visible()
            for name in ("Train", "Compare with last", "Sweep", "Stop", "As cell"):
                expect(panel.get_by_role("button", name=name, exact=True)).to_be_visible()
            page.screenshot(path=str(shots / "2-panel.png"), full_page=True)

            step = "set epochs and learning rate"
            set_slider(panel, "epochs", str(EPOCHS))
            set_slider(panel, "learning rate", LR)
            page.screenshot(path=str(shots / "3-settings.png"), full_page=True)

            step = "train"
            panel.get_by_role("button", name="Train", exact=True).click()
            summary = panel.locator(".widget-html-content", has_text="nbopt run")
            expect(summary).to_be_visible(timeout=TRAIN_WAIT)
            expect(summary).to_contain_text("finished")
            expect(summary).to_contain_text(f"epochs run{EPOCHS}")
            expect(panel.locator("img.widget-image").first).to_be_visible()
            summary.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "4-trained.png"), full_page=True)

            step = "as cell"
            # another cell is the active one (as after Run All, or after clicking elsewhere): clicking a
            # button in the panel must make the panel's cell active, so the new cell lands below the panel
            last = notebook.locator(".jp-Cell").nth(len(CELLS) - 1)
            last.locator(".cm-content").click()
            page.keyboard.press("Escape")
            expect(last).to_have_class(re.compile(r"\bjp-mod-active\b"))
            panel.get_by_role("button", name="As cell", exact=True).click()
            expect(notebook.locator(".jp-Cell")).to_have_count(len(CELLS) + 1)
            new_cell = notebook.locator(".jp-Cell").nth(2)
            expect(new_cell.locator(".cm-content")).to_contain_text("%%nbopt train")
            texts = cell_texts(page)
            page.screenshot(path=str(shots / "5-as-cell.png"), full_page=True)
            assert texts[:2] == CELLS[:2] and texts[3] == CELLS[2], f"the new cell is not right below the panel: {texts}"
            written = texts[2]
            assert written.startswith("%%nbopt train\n"), written
            for setting in (f"epochs: {EPOCHS}", "optimizer: adam(lr=0.01)", "model: mlp", "data: digits"):
                assert re.search(rf"(^|[\s{{,]){re.escape(setting)}([,}}\s]|$)", written), (setting, written)
            expect(new_cell).to_have_class(re.compile(r"\bjp-mod-active\b"))

            step = "run the new cell"
            new_cell.locator(".cm-content").click()
            page.keyboard.press("Shift+Enter")
            output = new_cell.locator(".jp-OutputArea")
            expect(output).to_contain_text("nbopt run", timeout=TRAIN_WAIT)
            expect(output).to_contain_text("finished")
            expect(output).to_contain_text(f"epochs run{EPOCHS}")
            new_cell.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "6-new-cell-trained.png"), full_page=True)
        finally:
            page.screenshot(path=str(shots / "final.png"), full_page=True)
            print(f"browser test: last step '{step}'; screenshots in {shots}")
            browser.close()


def set_slider(panel, label: str, text: str) -> None:
    """Type into a slider's readout (its text box) and press Enter, as a user does."""
    from playwright.sync_api import expect

    slider = panel.locator(".widget-slider", has=panel.page.locator(".widget-label", has_text=label)).first
    readout = slider.locator(".widget-readout")
    readout.click()
    readout.press("Control+A")
    readout.press_sequentially(text)
    readout.press("Enter")
    expect(readout).to_have_text(text)
