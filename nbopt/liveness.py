"""Whether a run's process is still alive: a stamp in run.json, a heartbeat, and a verdict when read.

A process killed by SIGKILL, the OOM killer or a dead kernel cannot write "died" into its own
folder, so the folder says who is writing it (pid, its start time, host) and when it last did
(``heartbeat``). Readers decide: on this host a run whose process is gone has died; on any host a
run whose heartbeat is older than ``STALE_AFTER_S`` has died. The verdict is never written back.
"""
from __future__ import annotations

import socket
import threading
import time

import psutil

HEARTBEAT_S = 30.0  # how often a run's folder is stamped while an epoch is long
STALE_AFTER_S = 600.0  # no heartbeat for this long: the run died, whichever host it ran on
LIVE = "running"
DIED = "died"


def stamp() -> dict:
    """Who writes this run folder, and that it is alive now."""
    process = psutil.Process()
    return {"pid": process.pid, "pid_started": process.create_time(), "host": socket.gethostname(),
            "heartbeat": time.time()}


def current_status(status: dict) -> str:
    """The status to show for a run.json: ``died`` for a running run whose process is gone."""
    recorded = status.get("status", "")
    if recorded != LIVE:
        return recorded
    return LIVE if is_alive(status) else DIED


def is_alive(status: dict) -> bool:
    """A run's process lives when its heartbeat is fresh and, on this host, the process is still there.

    The process's start time tells a reused pid from the run's own process. A run.json from before
    heartbeats were written (no ``heartbeat``) is taken at its word.
    """
    heartbeat = status.get("heartbeat")
    if heartbeat is None:
        return True
    if time.time() - float(heartbeat) > STALE_AFTER_S:
        return False
    if status.get("host") != socket.gethostname() or status.get("pid") is None:
        return True
    try:
        process = psutil.Process(int(status["pid"]))
        started = process.create_time()
        zombie = process.status() == psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False
    return not zombie and abs(started - float(status.get("pid_started", started))) < 1.0


class Heartbeat:
    """Stamps the run folder every `interval` seconds from a daemon thread, so an epoch of an hour still
    reads as alive; ``stop()`` before the run writes its final status, which the thread never overwrites."""

    def __init__(self, folder, interval: float = HEARTBEAT_S):
        self.folder, self.interval = folder, interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"nbopt-heartbeat-{folder.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _beat(self) -> None:
        while not self._stopped.wait(self.interval):
            with self.folder.mid_run():
                self.folder.write_status(heartbeat=time.time(), synced=False)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
