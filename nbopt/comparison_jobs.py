"""``compare --jobs N``: a comparison's runs trained in N worker processes at once.

Up to N workers are forked, each as the first run that finds no idle worker starts, and each trains one
run after another on one thread (nbopt._perf.one_thread_after_fork): a fork per worker rather than per
run spares every run the fork and the copy-on-write page faults after it. A worker prepares each run
it is given (checks the variant's recipe for that seed, builds its model) and trains it with the same
``execute`` as one job would, into its own run folder. This process hands the runs out in the order
one job trains them (a distilling variant once its teacher's run of that seed is done), draws their
curves from their folders' history files while they train, and loads each finished run from its
folder, on one thread while the workers hold the cores. Forked workers inherit the notebook's objects,
as ``sweep --jobs`` workers do. benchmarks/compare_jobs.py measures the speed-up.
"""
from __future__ import annotations

import contextlib
import csv
import multiprocessing
import multiprocessing.connection
import os
import signal
from pathlib import Path
from typing import Callable

from nbopt._perf import one_thread_after_fork, one_thread_while_workers_train
from nbopt.callbacks.recorder import Listener

POLL_S = 0.2  # how often the folders of running runs are read for the live figure
EXIT_WAIT_S = 10.0  # how long an idle worker may take to leave once told to
PARENT_CHECK_S = 1.0  # how often an idle worker checks that the comparison's process is still there


class _Announce(Listener):
    """Tells the parent where the worker's run folder is, as soon as the run has one."""

    def __init__(self, connection, task_id: int):
        self.connection, self.task_id = connection, task_id

    def on_start(self, folder) -> None:
        self.connection.send((self.task_id, "folder", str(folder.path.resolve())))


def _serve(prepare: Callable, tasks: list, connection, parent: int) -> None:
    """A worker: prepare and train each task it is sent, with the folders of the runs done so far, until None.

    Its messages go straight down its own pipe (a multiprocessing Queue's feeder thread held the GIL for
    up to a switch interval, 5 ms, as a run ended). Between runs it ignores SIGINT: a stop concerns a run
    in training, whose own guard hears it (the guard puts this setting back when its run ends), and Ctrl-C
    in a terminal reaches every process of the group. When the comparison's process is gone (a killed
    kernel), the run in training finishes and is recorded, and the worker leaves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    one_thread_after_fork()
    while (item := _next_task(connection, parent)) is not None:
        task_id, ended = item
        try:
            prepared = prepare(tasks[task_id], ended)
            run = prepared([_Announce(connection, task_id)]) if callable(prepared) else prepared
            message = (task_id, "done", str(Path(run.folder).resolve()))
        except BaseException as exc:  # the parent raises it: one job would have
            message = (task_id, "error", f"{type(exc).__name__}: {exc}")
        try:
            connection.send(message)
        except OSError:  # the comparison's process is gone; the run's folder has it all
            return


def _next_task(connection, parent: int):
    """What the parent sends next; None when it says so or is gone."""
    while not connection.poll(PARENT_CHECK_S):
        if os.getppid() != parent:
            return None
    try:
        return connection.recv()
    except EOFError:
        return None


def _history_rows(folder: str) -> list[dict]:
    try:
        with open(Path(folder) / "history.csv", newline="") as handle:
            return [{key: float(value) if value not in ("", None) else None for key, value in row.items()}
                    for row in csv.DictReader(handle)]
    except (OSError, ValueError):
        return []


class _Workers:
    """Up to `count` worker processes, each with a pipe to this one: `idle` ones wait for a task, `running`
    maps task → worker. A worker is forked when a task finds none idle, so the first run starts after one
    fork, not after all of them."""

    def __init__(self, count: int, prepare: Callable, tasks: list):
        self.count, self.prepare, self.tasks = count, prepare, tasks
        self.connections, self.processes = [], []
        self.idle, self.running, self.stopped = [], {}, set()

    @property
    def free(self) -> int:
        """How many tasks could start now."""
        return len(self.idle) + self.count - len(self.processes)

    def _fork(self) -> int:
        context = multiprocessing.get_context("fork")
        here, there = context.Pipe()
        process = context.Process(target=_serve, args=(self.prepare, self.tasks, there, os.getpid()), daemon=True)
        process.start()
        there.close()  # the worker's end lives in the worker only, so its death reads as the end of the pipe
        self.connections.append(here)
        self.processes.append(process)
        return len(self.processes) - 1

    def start(self, task, task_id: int, ended: dict) -> None:
        worker = self.idle.pop(0) if self.idle else self._fork()
        self.connections[worker].send((task_id, dict(ended)))
        self.running[task] = worker

    def messages(self, timeout: float) -> list[tuple[object, tuple | None]]:
        """(task, message) for each running worker that spoke within `timeout`; message None: it died."""
        by_connection = {self.connections[worker]: task for task, worker in self.running.items()}
        found = []
        for connection in multiprocessing.connection.wait(list(by_connection), timeout):
            try:
                found.append((by_connection[connection], connection.recv()))
            except (EOFError, OSError):
                found.append((by_connection[connection], None))
        return found

    def ended(self, task) -> None:
        """The worker of `task` is idle again."""
        self.idle.append(self.running.pop(task))

    def died(self, task) -> str:
        """How the worker of `task`, whose pipe closed without a word, ended."""
        process = self.processes[self.running.pop(task)]
        process.join(EXIT_WAIT_S)
        code = process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def stop(self) -> None:
        """SIGINT, once a run: each running run stops after its current step and records itself as interrupted."""
        for task, worker in self.running.items():
            process = self.processes[worker]
            if process.is_alive() and task not in self.stopped:
                self.stopped.add(task)
                os.kill(process.pid, signal.SIGINT)

    def close(self) -> None:
        for connection, process in zip(self.connections, self.processes):
            if process.is_alive():
                with contextlib.suppress(OSError):
                    connection.send(None)
        for process in self.processes:
            process.join(EXIT_WAIT_S)
            if process.is_alive():
                process.kill()
                process.join()
        for connection in self.connections:
            connection.close()


def train_in_workers(tasks: list, prepare: Callable, ready: Callable, load: Callable, done: dict, jobs: int, guard,
                     board, label: Callable) -> None:
    """Train `tasks` in `jobs` workers; `done` gets task → Run for each that ended (all, unless stopped).

    `prepare(task, ended)` runs in a worker, with `ended` the folders of the runs done so far (task →
    folder), and gives a Run (nothing to train) or a `train(listeners)` callable; `ready(task, ended)`
    says whether a task may start given those; `load(task, folder)` makes the Run of a finished folder
    here, after the next runs have started in the freed workers. A stop (`guard`, Ctrl-C) stops every
    worker's run after its current step; a run that fails stops the others and raises here, as it
    would with one job."""
    pending, folders, finished, ended = list(tasks), {}, [], {}
    failure = None
    guard.arm()  # Ctrl-C asks for a stop, which reaches every worker, instead of raising mid-bookkeeping
    workers = _Workers(min(jobs, len(tasks)), prepare, tasks)
    try:
        with one_thread_while_workers_train():
            while (pending and not guard.requested and failure is None) or workers.running:
                for task in [t for t in pending if ready(t, ended)][:workers.free]:
                    if guard.requested or failure is not None:
                        break
                    pending.remove(task)
                    workers.start(task, tasks.index(task), ended)
                while finished:
                    task, folder = finished.pop(0)
                    done[task] = load(task, folder)
                failure = _collect(workers, folders, finished, ended, label) or failure
                if guard.requested or failure is not None:
                    workers.stop()
                if board is not None:
                    board.follow({label(t): _history_rows(folders[t]) for t in workers.running if t in folders},
                                 len(done), len(tasks))
    except KeyboardInterrupt:
        guard.request_stop()
        workers.stop()
        while workers.running:
            _collect(workers, folders, finished, ended, label)
    finally:
        guard.release()
        workers.close()
    for task, folder in finished:
        done[task] = load(task, folder)
    if failure is not None:
        raise RuntimeError(failure)


def _collect(workers: _Workers, folders, finished: list, ended: dict, label: Callable) -> str | None:
    """Read the workers' messages for up to POLL_S; a finished run's (task, folder) goes to `finished` and
    `ended`. A failure's text, else None."""
    failure = None
    for task, message in workers.messages(POLL_S):
        if message is None:  # killed before it could say anything
            failure = f"the worker training {label(task)} died ({workers.died(task)})"
            continue
        _, kind, value = message
        if kind == "folder":
            folders[task] = value
            continue
        workers.ended(task)
        if kind == "error":
            failure = value
            continue
        finished.append((task, value))
        ended[task] = value
    return failure
