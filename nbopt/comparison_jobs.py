"""``compare --jobs N``: a comparison's runs trained in N worker processes at once.

N workers are forked when the comparison starts, and each trains one run after another on one thread
(nbopt._perf.one_thread_after_fork): a fork per worker rather than per run spares every run the fork
and the copy-on-write page faults after it (benchmarks/compare_jobs.py: 1.17× → 1.46× the speed of
one job on 2 cores, for runs of a fifth of a second). A worker prepares each run
it is given (checks the variant's recipe for that seed, builds its model) and trains it with the same
``execute`` as one job would, into its own run folder. This process hands the runs out in the order
one job trains them (a distilling variant once its teacher's run of that seed is done), draws their
curves from their folders' history files while they train, and loads each finished run from its
folder. Forked workers inherit the notebook's objects, as ``sweep --jobs`` workers do.
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
EXIT_WAIT_S = 10.0  # how long an idle worker may take to leave once told to
PARENT_CHECK_S = 1.0  # how often an idle worker checks that the comparison's process is still there


class _Announce(Listener):
    """Tells the parent where the worker's run folder is, as soon as the run has one."""

    def __init__(self, messages, task_id: int):
        self.messages, self.task_id = messages, task_id

    def on_start(self, folder) -> None:
        self.messages.put((self.task_id, "folder", str(folder.path.resolve())))


def _serve(prepare: Callable, tasks: list, inbox, messages, parent: int) -> None:
    """A worker: prepare and train each task it is sent, with the folders of the runs done so far, until None.

    Between runs it ignores SIGINT: a stop concerns a run in training, whose own guard hears it (the guard
    puts this setting back when its run ends), and Ctrl-C in a terminal reaches every process of the group.
    When the comparison's process is gone (a killed kernel), the run in training finishes and is recorded,
    and the worker leaves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    one_thread_after_fork()
    while (item := _next_task(inbox, parent)) is not None:
        task_id, ended = item
        try:
            prepared = prepare(tasks[task_id], ended)
            run = prepared([_Announce(messages, task_id)]) if callable(prepared) else prepared
            messages.put((task_id, "done", str(Path(run.folder).resolve())))
        except BaseException as exc:  # the parent raises it: one job would have
            messages.put((task_id, "error", f"{type(exc).__name__}: {exc}"))


def _next_task(inbox, parent: int):
    """What the parent sends next; None when it says so or is gone."""
    while not inbox.poll(PARENT_CHECK_S):
        if os.getppid() != parent:
            return None
    try:
        return inbox.recv()
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
    """The worker processes and what each is doing: `idle` ones wait for a task, `running` maps task → worker."""

    def __init__(self, count: int, prepare: Callable, tasks: list, messages):
        context = multiprocessing.get_context("fork")
        pipes = [context.Pipe(duplex=False) for _ in range(count)]  # (worker's end, this process's end)
        self.inboxes = [sending for _, sending in pipes]
        self.processes = [context.Process(target=_serve, args=(prepare, tasks, receiving, messages, os.getpid()),
                                          daemon=True) for receiving, _ in pipes]
        for process in self.processes:
            process.start()
        self.idle, self.running, self.stopped = list(range(count)), {}, set()

    def start(self, task, task_id: int, ended: dict) -> None:
        worker = self.idle.pop(0)
        self.inboxes[worker].send((task_id, dict(ended)))
        self.running[task] = worker

    def ended(self, task) -> None:
        self.idle.append(self.running.pop(task))

    def dead(self) -> list:
        """The tasks whose worker is gone without a word (killed)."""
        return [task for task, worker in self.running.items() if not self.processes[worker].is_alive()]

    def stop(self) -> None:
        """SIGINT, once a run: each running run stops after its current step and records itself as interrupted."""
        for task, worker in self.running.items():
            process = self.processes[worker]
            if process.is_alive() and task not in self.stopped:
                self.stopped.add(task)
                os.kill(process.pid, signal.SIGINT)

    def close(self) -> None:
        for inbox, process in zip(self.inboxes, self.processes):
            if process.is_alive():
                inbox.send(None)
        for process in self.processes:
            process.join(EXIT_WAIT_S)
            if process.is_alive():
                process.kill()
                process.join()


def train_in_workers(tasks: list, prepare: Callable, ready: Callable, load: Callable, done: dict, jobs: int, guard,
                     board, label: Callable) -> None:
    """Train `tasks` in `jobs` workers; `done` gets task → Run for each that ended (all, unless stopped).

    `prepare(task, ended)` runs in a worker, with `ended` the folders of the runs done so far (task →
    folder), and gives a Run (nothing to train) or a `train(listeners)` callable; `ready(task, ended)`
    says whether a task may start given those; `load(task, folder)` makes the Run of a finished folder
    here, after the next runs have started in the freed workers. A stop (`guard`, Ctrl-C) stops every
    worker's run after its current step; a run that fails stops the others and raises here, as it
    would with one job."""
    messages = multiprocessing.get_context("fork").Queue()
    pending, folders, finished, ended = list(tasks), {}, [], {}
    failure = None
    guard.arm()  # Ctrl-C asks for a stop, which reaches every worker, instead of raising mid-bookkeeping
    workers = _Workers(min(jobs, len(tasks)), prepare, tasks, messages)
    try:
        while (pending and not guard.requested and failure is None) or workers.running:
            for task in [t for t in pending if ready(t, ended)][:len(workers.idle)]:
                if guard.requested or failure is not None:
                    break
                pending.remove(task)
                workers.start(task, tasks.index(task), ended)
            while finished:
                task, folder = finished.pop(0)
                done[task] = load(task, folder)
            failure = _collect(messages, tasks, workers, folders, finished, ended) or failure
            if guard.requested or failure is not None:
                workers.stop()
            if board is not None:
                board.follow({label(t): _history_rows(folders[t]) for t in workers.running if t in folders},
                             len(done), len(tasks))
    except KeyboardInterrupt:
        guard.request_stop()
        workers.stop()
        while workers.running:
            _collect(messages, tasks, workers, folders, finished, ended)
    finally:
        guard.release()
        workers.close()
    for task, folder in finished:
        done[task] = load(task, folder)
    if failure is not None:
        raise RuntimeError(failure)


def _collect(messages, tasks, workers: _Workers, folders, finished: list, ended: dict) -> str | None:
    """Read the workers' messages for up to POLL_S; a finished run's (task, folder) goes to `finished` and
    `ended`. A failure's text, else None."""
    try:
        task_id, kind, value = messages.get(timeout=POLL_S)
    except queues.Empty:
        failure = None
        for task in workers.dead():
            if messages.empty():  # killed before it could say anything
                worker = workers.running.pop(task)
                failure = f"the worker training {task} died (exit code {workers.processes[worker].exitcode})"
        return failure
    task = tasks[task_id]
    if kind == "folder":
        folders[task] = value
        return None
    workers.ended(task)
    if kind == "error":
        return value
    finished.append((task, value))
    ended[task] = value
    return None
