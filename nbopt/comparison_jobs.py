"""``compare --jobs N``: a comparison's runs trained in N forked worker processes at once.

Each run is the same ``execute`` of the same plan as with one job, in a process of its own on one
thread (nbopt._perf.one_thread_after_fork), writing its own run folder. This process starts the runs
in the order one job would (a distilling variant once its teacher's run of that seed is done), draws
their curves from their folders' history files while they train, and loads each finished run from
its folder. Forked workers inherit the notebook's objects, as ``sweep --jobs`` workers do.
"""
from __future__ import annotations

import csv
import multiprocessing
import os
import queue as queues
import signal
from pathlib import Path
from typing import Callable

from nbopt._perf import one_thread_after_fork
from nbopt.callbacks.recorder import Listener

POLL_S = 0.2  # how often the folders of running runs are read for the live figure


class _Announce(Listener):
    """Tells the parent where the worker's run folder is, as soon as the run has one."""

    def __init__(self, messages, task_id: int):
        self.messages, self.task_id = messages, task_id

    def on_start(self, folder) -> None:
        self.messages.put((self.task_id, "folder", str(folder.path.resolve())))


def _work(train: Callable, task_id: int, messages) -> None:
    one_thread_after_fork()
    try:
        run = train([_Announce(messages, task_id)])
        messages.put((task_id, "done", str(Path(run.folder).resolve())))
    except BaseException as exc:  # the parent raises it: one job would have
        messages.put((task_id, "error", f"{type(exc).__name__}: {exc}"))


def _history_rows(folder: str) -> list[dict]:
    try:
        with open(Path(folder) / "history.csv", newline="") as handle:
            return [{key: float(value) if value not in ("", None) else None for key, value in row.items()}
                    for row in csv.DictReader(handle)]
    except (OSError, ValueError):
        return []


def train_in_workers(tasks: list, prepare: Callable, ready: Callable, load: Callable, done: dict, jobs: int, guard,
                     board, label: Callable) -> None:
    """Train `tasks` in `jobs` workers; `done` gets task → Run for each that ended (all, unless stopped).

    `prepare(task)` gives a Run (nothing to train) or a `train(listeners)` callable for a worker;
    `ready(task, done)` says whether it may start given the runs done so far; `load(task, folder)` makes
    the Run of a finished folder, after the next runs have started in the freed workers. A stop (`guard`,
    Ctrl-C) stops every worker's run after its current step; a run that fails stops the others and
    raises here, as it would with one job."""
    context = multiprocessing.get_context("fork")
    messages = context.Queue()
    pending, running, folders, finished, stopped = list(tasks), {}, {}, [], set()
    failure = None
    guard.arm()  # Ctrl-C asks for a stop, which reaches every worker, instead of raising mid-bookkeeping
    try:
        while (pending and not guard.requested and failure is None) or running:
            for task in [t for t in pending if ready(t, done)][:max(0, jobs - len(running))]:
                if guard.requested or failure is not None:
                    break
                pending.remove(task)
                prepared = prepare(task)
                if not callable(prepared):
                    done[task] = prepared
                    continue
                process = context.Process(target=_work, args=(prepared, tasks.index(task), messages),
                                          daemon=True)
                process.start()
                running[task] = process
            while finished:
                task, folder = finished.pop(0)
                done[task] = load(task, folder)
            failure = _collect(messages, tasks, running, folders, finished) or failure
            if guard.requested or failure is not None:
                _stop(running.values(), stopped)
            if board is not None:
                board.follow({label(t): _history_rows(folders[t]) for t in running if t in folders},
                             len(done), len(tasks))
    except KeyboardInterrupt:
        guard.request_stop()
        _stop(running.values(), stopped)
        while running:
            _collect(messages, tasks, running, folders, finished)
    finally:
        guard.release()
    for task, folder in finished:
        done[task] = load(task, folder)
    if failure is not None:
        raise RuntimeError(failure)


def _collect(messages, tasks, running, folders, finished: list) -> str | None:
    """Read the workers' messages for up to POLL_S; a finished run's (task, folder) goes to `finished`.
    A failure's text, else None."""
    failure = None
    try:
        task_id, kind, value = messages.get(timeout=POLL_S)
    except queues.Empty:
        for task, process in list(running.items()):
            if not process.is_alive() and messages.empty():  # killed before it could say anything
                running.pop(task).join()
                failure = f"the worker training {task} died (exit code {process.exitcode})"
        return failure
    task = tasks[task_id]
    if kind == "folder":
        folders[task] = value
        return None
    running.pop(task).join()
    if kind == "error":
        return value
    finished.append((task, value))
    return None


def _stop(processes, stopped: set) -> None:
    """SIGINT, once: each worker's run stops after its current step and records itself as interrupted."""
    for process in processes:
        if process.is_alive() and process.pid not in stopped:
            stopped.add(process.pid)
            os.kill(process.pid, signal.SIGINT)
