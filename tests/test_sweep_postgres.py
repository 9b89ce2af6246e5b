"""Sweeps that share a study through a real PostgreSQL server, as several machines would.

The session fixture starts a private PostgreSQL server (its own data folder in a temporary folder,
loopback only, a free port) and stops it at the end. Connections over the unix socket are trusted
(the fixture's own setup); connections over TCP need a password, so the password in the storage URL
really matters, and the tests check it never shows in anything a user sees.

Needs PostgreSQL's server programs (Debian/Ubuntu: ``apt-get install postgresql``) and the
``psycopg2-binary`` package; the tests are skipped only when ``initdb`` cannot be found.
"""
from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import optuna
import pandas as pd
import pytest
from cli_command import nbopt_command
from conftest import run_folders
from optuna.trial import TrialState

from nbopt import RecipeError
from nbopt.sweeps import sweep

ROOT = Path(__file__).resolve().parents[1]


def _server_programs() -> Path | None:
    """The folder of initdb/pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent  # a link on PATH: the folder that also holds psql
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A running private server: `database()` makes a fresh database owned by a role with a password."""

    ROLE = "sweeper"

    def __init__(self, bindir: Path, folder: Path, port: int, as_postgres: bool):
        self.bindir, self.folder, self.port, self.as_postgres = bindir, folder, port, as_postgres
        self.password = "pw-" + secrets.token_hex(8)  # unique, so finding it in any output is unambiguous
        self._count = itertools.count()

    def command(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        path = self.bindir / program
        argv = [str(path) if path.exists() else shutil.which(program) or program, *args]
        if self.as_postgres:  # the server refuses to run as root
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            log = (self.folder / "log").read_text() if (self.folder / "log").exists() else ""
            raise RuntimeError(f"{program} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{log}")
        return result

    def sql(self, statement: str, database: str = "postgres") -> None:
        """As the superuser, over the trusted unix socket."""
        self.command("psql", "-h", str(self.folder), "-p", str(self.port), "-U", "nbopt", "-d", database,
                     "-v", "ON_ERROR_STOP=1", "-c", statement)

    def database(self) -> str:
        name = f"optuna{next(self._count)}"
        self.sql(f"CREATE DATABASE {name} OWNER {self.ROLE}")
        return name

    def url(self, database: str, password: str | None = None) -> str:
        password = self.password if password is None else password
        return f"postgresql+psycopg2://{self.ROLE}:{password}@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="session")
def postgres():
    bindir = _server_programs()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed: no initdb on PATH or under /usr/lib/postgresql/*/bin "
                    "(Debian/Ubuntu: apt-get install postgresql)")
    as_postgres = os.geteuid() == 0
    folder = Path(tempfile.mkdtemp(prefix="nbopt-pg-"))
    if as_postgres:
        shutil.chown(folder, "postgres")
    server = Postgres(bindir, folder, _free_port(), as_postgres)
    started = False
    try:
        server.command("initdb", "-D", str(folder / "data"), "-U", "nbopt", "--auth-local=trust",
                       "--auth-host=scram-sha-256", "--no-sync")
        server.command("pg_ctl", "-D", str(folder / "data"), "-l", str(folder / "log"), "-w", "-t", "60", "-o",
                       f"-p {server.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        started = True
        server.sql(f"CREATE ROLE {Postgres.ROLE} LOGIN PASSWORD '{server.password}'")
        yield server
    finally:
        if started:
            server.command("pg_ctl", "-D", str(folder / "data"), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(folder, ignore_errors=True)


RECIPE = """\
model: mlp(hidden=[32])
data: digits
epochs: 2
batch_size: 128
optimizer: adam(lr=1e-2)
search:
  optimizer.lr: [0.03, 0.01, 0.003]
  batch_size: [64, 128]
"""
GRID = {tuple(sorted({"optimizer.lr": lr, "batch_size": bs}.items()))
        for lr, bs in itertools.product([0.03, 0.01, 0.003], [64, 128])}


def test_three_workers_share_one_grid_and_run_every_point_exactly_once(postgres, tmp_path):
    database = postgres.database()  # empty: the workers also race to create Optuna's tables
    url = postgres.url(database)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    workers = []
    for i in range(3):
        machine = tmp_path / f"machine{i}"  # each worker its own working and runs folder, like another machine
        machine.mkdir()
        env = dict(os.environ, NBOPT_RUNS_DIR=str(machine / "runs"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                   NBOPT_TEST_STORAGE=url, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        # the first worker gets the URL on its command line, the others read it from a variable
        storage = url if i == 0 else "$NBOPT_TEST_STORAGE"
        command = nbopt_command() + ["sweep", str(recipe), "--sampler", "grid", "--pruner", "none",
                                     "--storage", storage, "--study", "S"]
        workers.append((machine, subprocess.Popen(command, cwd=machine, env=env, stdout=subprocess.PIPE,
                                                  stderr=subprocess.PIPE, text=True)))
    outputs = []
    try:
        for machine, worker in workers:
            out, err = worker.communicate(timeout=540)
            outputs.append((worker.returncode, out, err))
    finally:
        for _, worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for returncode, out, err in outputs:
        assert postgres.password not in out + err, "a worker printed the storage password"
        assert returncode == 0, f"a worker failed:\n{out}\n{err}"
        assert "Traceback" not in err, err
    printed = "".join(out for _, out, _ in outputs)
    assert f"postgresql+psycopg2://{postgres.ROLE}:***@127.0.0.1:{postgres.port}/{database}" in printed

    study = optuna.load_study(study_name="S", storage=url)
    assert len(study.trials) == 6, "nothing lost, nothing repeated"
    assert {t.state for t in study.trials} == {TrialState.COMPLETE}
    assert sorted(tuple(sorted(t.params.items())) for t in study.trials) == sorted(GRID)
    pids = {worker.pid: machine for machine, worker in workers}
    for trial in study.trials:
        machine = pids[trial.user_attrs["pid"]]  # run by one of the three workers …
        assert (machine / "runs" / trial.user_attrs["run"] / "best.pt").exists()  # … into its own runs folder
    assert study.user_attrs["nbopt_grid_size"] == 6


def test_a_sweep_against_postgres_never_shows_the_password(postgres, tmp_path, capsys):
    url = postgres.url(postgres.database())
    result = sweep(RECIPE, {}, sampler="grid", pruner="none", storage=url, study="S", live=True)
    assert len(result.study.trials) == 6
    assert {t.state for t in result.study.trials} == {TrialState.COMPLETE}
    shown = capsys.readouterr()
    seen = {"printed": shown.out + shown.err, "repr": repr(result), "html": result._repr_html_(),
            "storage": result.storage, "trials": result.trials.to_string()}
    for where, text in seen.items():
        assert postgres.password not in text, f"the password shows in the {where}"
    masked = f"postgresql+psycopg2://{postgres.ROLE}:***@127.0.0.1:{postgres.port}/"
    assert masked in repr(result) and masked in result._repr_html_()
    assert result.best is not None and Path(result.best.checkpoint).exists()

    # the same sweep again, reading the URL from a variable: the finished grid runs nothing
    os.environ["NBOPT_TEST_STORAGE"] = url
    try:
        again = sweep(RECIPE, {}, sampler="grid", pruner="none", storage="$NBOPT_TEST_STORAGE", study="S",
                      live=False)
    finally:
        del os.environ["NBOPT_TEST_STORAGE"]
    assert len(again.study.trials) == 6 and postgres.password not in repr(again)


def test_a_wrong_password_is_a_recipe_error_that_does_not_show_it(postgres, tmp_path, runs_dir):
    database = postgres.database()
    wrong = "wrong-" + secrets.token_hex(6)
    with pytest.raises(RecipeError) as caught:
        sweep(RECIPE, {}, sampler="grid", storage=postgres.url(database, wrong), study="S", live=False)
    message = str(caught.value)
    assert message.startswith(f"cannot open the sweep storage postgresql+psycopg2://{postgres.ROLE}:***@127.0.0.1:"
                              f"{postgres.port}/{database}: ")
    assert "password authentication failed" in message
    assert wrong not in message and postgres.password not in message
    assert not runs_dir.exists()

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    env = dict(os.environ, NBOPT_RUNS_DIR=str(runs_dir), PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get(
        "PYTHONPATH", ""))
    result = subprocess.run(nbopt_command() + ["sweep", str(recipe), "--storage", postgres.url(database, wrong),
                                               "--study", "S"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert wrong not in result.stdout + result.stderr
    assert result.stderr.startswith("nbopt: cannot open the sweep storage ") and "Traceback" not in result.stderr


EPOCHS = 6  # the kill must land between the first epoch and the last (about 0.3 s each): a loaded machine polls late

SLOW_RECIPE = f"""\
model: mlp(hidden=[64, 64])
data: synthetic(n=12000, shape=[64], classes=4)
epochs: {EPOCHS}
batch_size: 16
checkpoint_every: 1
optimizer: sgd(lr=0.05)
search:
  optimizer.lr: [0.05, 0.02, 0.01, 0.005, 0.002, 0.001]
"""


def _running_trial_of(storage, pid: int):
    """The victim's trial once it has a checkpoint to resume from (an epoch recorded and last.ckpt written)."""
    try:
        trials = optuna.load_study(study_name="K", storage=storage).trials
    except KeyError:  # the workers have not created the study yet
        return None
    for trial in trials:
        attrs = trial.user_attrs
        if trial.state == TrialState.RUNNING and attrs.get("pid") == pid and attrs.get("epoch", 0) >= 1 \
                and (Path(attrs.get("run_folder", "/nonexistent")) / "last.ckpt").exists():
            return trial
    return None


def test_a_worker_killed_mid_trial_loses_nothing_and_its_trial_resumes_from_its_checkpoint(postgres, tmp_path):
    """Three `nbopt sweep` workers share a PostgreSQL study and a runs folder (a cluster's shared disk); one is
    SIGKILLed in the middle of a trial. A live worker sees the dead worker's trial (its pid is gone), fails
    it in the study and queues its parameters with its run folder; the next worker to take it resumes that
    run from its last checkpoint. The study ends with exactly the grid's 6 complete trials."""
    import signal
    import time

    url = postgres.url(postgres.database())
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(SLOW_RECIPE)
    env = dict(os.environ, NBOPT_RUNS_DIR=str(tmp_path / "runs"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = nbopt_command() + ["sweep", str(recipe), "--sampler", "grid", "--pruner", "none", "--storage", url,
                                 "--study", "K"]
    workers = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(3)]
    victim, survivors = workers[0], workers[1:]
    try:
        deadline, killed, storage = time.monotonic() + 240, None, None
        while killed is None and time.monotonic() < deadline and victim.poll() is None:
            try:
                storage = storage or optuna.storages.RDBStorage(url)
            except Exception:  # the workers are still creating Optuna's tables
                time.sleep(0.5)
                continue
            killed = _running_trial_of(storage, victim.pid)
            time.sleep(0.2)
        assert killed is not None, f"the victim never got a checkpointed trial: {victim.communicate(timeout=60)}"
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        outputs = [worker.communicate(timeout=480) for worker in survivors]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for worker, (out, err) in zip(survivors, outputs):
        assert worker.returncode == 0 and "Traceback" not in err, f"{out}\n{err}"

    study = optuna.load_study(study_name="K", storage=url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6, [t.state for t in study.trials]
    assert sorted(t.params["optimizer.lr"] for t in complete) == [0.001, 0.002, 0.005, 0.01, 0.02, 0.05]
    assert [t.number for t in study.trials if t.state == TrialState.FAIL] == [killed.number]
    resumed = [t for t in complete if t.user_attrs["run_folder"] == killed.user_attrs["run_folder"]]
    victim_run = Path(killed.user_attrs["run_folder"]) / "run.json"
    assert len(resumed) == 1 and resumed[0].params == killed.params, (
        f"the killed trial went on in its own run; its folder says {victim_run.read_text()}; the workers said "
        + "\n".join(err[-2000:] for _, err in outputs))
    folder = Path(killed.user_attrs["run_folder"])
    status = json.loads((folder / "run.json").read_text())
    assert status["status"] == "finished" and "resumed" in status
    history = pd.read_csv(folder / "history.csv")
    assert list(history["epoch"]) == list(range(1, EPOCHS + 1)), "one history: the epochs before the kill and after"
    assert resumed[0].intermediate_values.keys() == set(range(1, EPOCHS + 1)), "the pruner sees every epoch"
    runs = run_folders(tmp_path / "runs")
    assert len(runs) == 6, f"no run folder for the restart of the killed trial: {runs}"
