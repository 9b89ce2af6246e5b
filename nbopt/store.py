"""Run folders on disk: every run's recipe, history, best weights and status, written atomically.

A folder per run under ``./nbopt-runs`` (or ``$NBOPT_RUNS_DIR``). Each file is written to a
temporary name and renamed into place, so a kernel that dies mid-write leaves the previous
complete file, never a truncated one.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import itertools
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

from nbopt.errors import RecipeError
from nbopt.liveness import LIVE, stamp

_STATUS_LOCK = threading.Lock()  # a run's heartbeat thread and its main thread both update run.json
WRITE_INTERVAL_S = 0.5  # files written while a run trains are at most this far behind it (RunFolder.write_later)


def runs_root() -> Path:
    folder = os.environ.get("NBOPT_RUNS_DIR", "nbopt-runs")
    if not folder.strip():  # Path("") is the working folder: runs would be strewn among the user's files
        raise RecipeError("NBOPT_RUNS_DIR is set but empty; set it to a folder, or unset it to use ./nbopt-runs")
    return Path(folder)


@contextlib.contextmanager
def runs_folder_errors(path: Path):
    """An OSError while creating or first writing a run's folder becomes one RecipeError that names the
    folder and what to do, raised before any training: a read-only place, a file in the way, a full disk."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise RecipeError(f"cannot write the runs folder {path}: the disk is full; free some space, or set "
                              "NBOPT_RUNS_DIR to a folder on another disk") from None
        file = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{file} is a file, not a folder" if file is not None else exc.strerror or str(exc)
        raise RecipeError(f"cannot write the runs folder {path}: {reason}; set NBOPT_RUNS_DIR to a folder you "
                          "can write") from None


def finite_or_none(value):
    """`value` with every NaN and infinity replaced by None, in nested dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def json_text(value) -> str:
    """Strict JSON (no NaN or Infinity, which other tools refuse): a diverged run's missing scores are null."""
    return json.dumps(finite_or_none(value), indent=2, default=_plain, allow_nan=False)


def _plain(value):
    """numpy and torch scalars as Python numbers (non-finite ones as null); anything else as text."""
    if hasattr(value, "item"):
        return finite_or_none(value.item())
    return str(value)


def _umask() -> int:
    """The umask: what a plainly created file (0666) or folder (0777) loses. Temporary ones start private."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes, synced: bool = True) -> None:
    """Write a whole file or leave the old one: a temporary file renamed over it.

    `synced=False` skips the fsync, for what a run rewrites every epoch (history, status, best weights
    so far): a process that dies still leaves whole files, since the rename is atomic and the written
    pages outlive the process; only an OS crash could cost the last of them. A run's final files are synced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if synced:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, synced: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), synced)


def save_weights(state: dict, path: Path, synced: bool = True) -> None:
    """A state_dict that ``torch.load(path, weights_only=True)`` reads back."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue(), synced)


def _claim(parent: Path, base: str) -> Path:
    """A new folder `base` (else `base-2`, `base-3`, ...) in `parent`, claimed by one mkdir."""
    with runs_folder_errors(parent):
        parent.mkdir(parents=True, exist_ok=True)
        for n in itertools.count(1):
            path = parent / (base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return path


def name_under_root(path: Path) -> str:
    """A folder's path below the runs folder (`adam`, `optimizers/adam`); its own name when elsewhere."""
    try:
        return path.resolve().relative_to(runs_root().resolve()).as_posix()
    except ValueError:
        return path.name


class RunFolder:
    """The files of one run."""

    def __init__(self, path: Path):
        self.path = path
        self.write_error: OSError | None = None  # the first write that failed while the run trained
        self.on_write_error = None  # called with it once: the run stops (set by the training session)
        self._owner = os.getpid()  # the process whose thread writes `write_later`'s files
        self._later: dict[str, object] = {}  # file name -> its newest pending write
        self._later_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._write_now = threading.Event()  # settle(): what is pending goes to disk without waiting its turn

    def __getstate__(self) -> dict:
        """A copy in another process (a spawned DDP worker) writes at once, as a forked one does."""
        return {**self.__dict__, "_later": {}, "_later_lock": None, "_writer": None, "_write_now": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _later_lock=threading.Lock(), _write_now=threading.Event())

    @contextlib.contextmanager
    def mid_run(self):
        """Writes while a run trains: an OSError (a full disk, a vanished folder) is remembered and stops
        the run, which then ends `failed` with its model in memory, instead of a traceback from inside
        Lightning. The files written before stay whole (every write is atomic)."""
        try:
            yield
        except OSError as exc:
            if self.write_error is None:
                self.write_error = exc
                if self.on_write_error is not None:
                    self.on_write_error(exc)

    def write_later(self, name: str, write) -> None:
        """Write file `name` with `write()` on a thread of its own, so that training goes on meanwhile (a large
        model's best.pt takes as long as many steps), and at most every WRITE_INTERVAL_S: the first write at
        once, then what gathered meanwhile, a newer write of a file replacing one still waiting. Short epochs
        thus cost one history and one best.pt a half-second, not one each (a fifth of a small model's epoch).
        Writes keep their order. A forked process (a DDP worker) writes at once: it has no such thread.
        Errors count as `mid_run`'s do; `settle()` writes what is pending and waits for it."""
        if os.getpid() != self._owner:
            with self.mid_run():
                write()
            return
        with self._later_lock:
            self._later[name] = write
            if self._writer is None:
                self._write_now.clear()
                self._writer = threading.Thread(target=self._write_pending, name=f"nbopt-write-{self.path.name}",
                                                daemon=True)
                self._writer.start()

    def _write_pending(self) -> None:
        while True:
            with self._later_lock:
                if not self._later:
                    self._writer = None  # the next write_later starts a new thread, and writes at once
                    return
                writes = list(self._later.values())
                self._later.clear()
            for write in writes:
                with self.mid_run():
                    write()
            self._write_now.wait(WRITE_INTERVAL_S)

    def settle(self) -> None:
        """Write every `write_later` so far now and wait until it is on disk (or has failed), before files
        that must follow them."""
        while (writer := self._writer) is not None and os.getpid() == self._owner:
            self._write_now.set()
            writer.join()

    @staticmethod
    def slug(name: str) -> str:
        """The folder name for a run name: letters, digits and `_.-` only."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "run"

    @classmethod
    def create(cls, name: str | None, group: "RunGroup | None" = None) -> "RunFolder":
        """A new folder `name`, else `name-2`, `name-3`, ... (inside `group`, a compare's or a sweep's folder,
        when given). Each is claimed by one mkdir that fails when the folder exists, so two kernels starting
        runs of the same name at the same moment get two folders."""
        base = cls.slug(name) if name else time.strftime("run-%Y%m%d-%H%M%S")
        return cls(_claim(group.path if group is not None else runs_root(), base))

    @property
    def name(self) -> str:
        """How `runs`, `load` and `--resume` name it: `adam`, or `optimizers/adam` inside a group."""
        return name_under_root(self.path)

    @property
    def weights(self) -> Path:
        return self.path / "best.pt"

    def write_recipe(self, text: str) -> None:
        atomic_write_text(self.path / "recipe.yaml", text)

    def write_history(self, rows: list[dict], synced: bool = True) -> None:
        if not rows:
            return
        columns = list(dict.fromkeys(k for row in rows for k in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path / "history.csv", out.getvalue(), synced)

    def write_status(self, synced: bool = True, **status) -> None:
        with _STATUS_LOCK:
            current = self.read_status()
            current.update(status)
            atomic_write_text(self.path / "run.json", json_text(current), synced)

    def read_status(self) -> dict:
        try:
            return json.loads((self.path / "run.json").read_text())
        except (OSError, ValueError):
            return {}


GROUP_FILE = "group.json"


class RunGroup:
    """A compare's or a sweep's folder. Its runs are run folders inside it; group.json says what it is
    (kind, metric, when it started) and whether it is still going."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, kind: str, name: str, **fields) -> "RunGroup":
        """A new group folder `name` (else `name-2`, ...): a comparison's."""
        group = cls(_claim(runs_root(), RunFolder.slug(name)))
        group.update(kind=kind, started=time.strftime("%Y-%m-%d %H:%M:%S"), created=time.time(), **fields)
        return group

    @classmethod
    def shared(cls, kind: str, key: str, **fields) -> "RunGroup":
        """The one folder of `key` (a sweep's study) that every worker fills, made by the first to need it.
        It appears whole, group.json inside (made aside, then renamed into place), so a worker never takes
        a half-made folder for someone else's."""
        root, base = runs_root(), RunFolder.slug(key)
        with runs_folder_errors(root):
            root.mkdir(parents=True, exist_ok=True)
            for n in itertools.count(1):
                group = cls(root / (base if n == 1 else f"{base}-{n}"))
                if not group.path.exists():
                    group._place(kind=kind, key=key, started=time.strftime("%Y-%m-%d %H:%M:%S"), created=time.time(),
                                 **fields)
                info = group.read()
                if info.get("kind") == kind and info.get("key") == key:
                    return group

    def _place(self, **info) -> None:
        staging = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"))
        try:
            os.chmod(staging, DIR_MODE)  # as a plain mkdir would make it
            atomic_write_text(staging / GROUP_FILE, json_text(info))
            os.rename(staging, self.path)
        except OSError:  # another worker placed it first
            shutil.rmtree(staging, ignore_errors=True)

    @property
    def name(self) -> str:
        return name_under_root(self.path)

    def read(self) -> dict:
        try:
            return json.loads((self.path / GROUP_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def update(self, **fields) -> None:
        with _STATUS_LOCK:
            atomic_write_text(self.path / GROUP_FILE, json_text({**self.read(), **fields}))

    @contextlib.contextmanager
    def running(self, interrupted):
        """While this process trains the group's runs: `running` (`died` once the process is gone), then
        `finished`, `interrupted` (when `interrupted()` says so, or on Ctrl-C) or `failed`."""
        self.update(status=LIVE, **stamp())
        try:
            yield self
        except KeyboardInterrupt:
            self.update(status="interrupted")
            raise
        except BaseException:
            self.update(status="failed")
            raise
        self.update(status="interrupted" if interrupted() else "finished")
