"""The runs folder under failure: a place that cannot be written stops a run before training with one
line naming the folder, a write that fails mid-run leaves the previous file whole, and kernels that
start runs of the same name at the same moment each get a folder of their own."""
from __future__ import annotations

import errno
import multiprocessing
import os
import threading
import time

import pandas as pd
import pytest

from nbopt import RecipeError
from nbopt.store import RunFolder, atomic_write_text

RECIPE = "model: mlp(hidden=[4])\ndata: iris\nepochs: 3\n"
ADVICE = "; set NBOPT_RUNS_DIR to a folder you can write"


def _claim(barrier, names, name="same") -> None:
    barrier.wait()
    folder = RunFolder.create(name)
    folder.write_status(name=folder.name, pid=os.getpid())
    names.put(folder.name)


def test_runs_of_one_name_started_at_the_same_moment_get_different_folders(runs_dir):
    context = multiprocessing.get_context("fork")  # the children only make folders: no need to import torch again
    processes = 4
    for round_ in range(10):
        barrier, names = context.Barrier(processes), context.Queue()
        workers = [context.Process(target=_claim, args=(barrier, names)) for _ in range(processes)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert [worker.exitcode for worker in workers] == [0] * processes, f"a claim failed in round {round_}"
        claimed = sorted(names.get(timeout=5) for _ in range(processes))
        offset = round_ * processes
        assert claimed == sorted(["same" if n == 1 else f"same-{n}" for n in range(offset + 1, offset + 5)])
    assert len(list(runs_dir.iterdir())) == 40
    assert all(RunFolder(path).read_status()["name"] == path.name for path in runs_dir.iterdir()), "40 intact folders"


def test_unnamed_runs_started_in_the_same_second_get_different_folders(runs_dir):
    context = multiprocessing.get_context("fork")
    barrier, names = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_claim, args=(barrier, names, None)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    claimed = {names.get(timeout=5) for _ in range(4)}
    assert len(claimed) == 4 and all(name.startswith("run-") for name in claimed)


def test_a_file_in_the_way_of_a_new_folder_is_skipped(runs_dir):
    runs_dir.mkdir()
    (runs_dir / "same").write_text("not a run")
    assert RunFolder.create("same").name == "same-2"


def test_runs_folder_that_is_a_file_fails_before_training(train, tmp_path, monkeypatch):
    file = tmp_path / "runs.txt"
    file.write_text("")
    monkeypatch.setenv("NBOPT_RUNS_DIR", str(file))
    with pytest.raises(RecipeError) as info:
        train(RECIPE)
    assert str(info.value) == f"cannot write the runs folder {file}: {file} is a file, not a folder{ADVICE}"


def test_runs_folder_under_a_file_fails_even_for_root(train, tmp_path, monkeypatch):
    file = tmp_path / "notes"
    file.write_text("")
    monkeypatch.setenv("NBOPT_RUNS_DIR", str(file / "runs"))
    with pytest.raises(RecipeError) as info:
        train(RECIPE)
    assert str(info.value) == f"cannot write the runs folder {file / 'runs'}: {file} is a file, not a folder{ADVICE}"


def test_read_only_runs_folder_fails_before_training(train, runs_dir):
    runs_dir.mkdir()
    runs_dir.chmod(0o500)
    try:
        if os.access(runs_dir, os.W_OK):
            pytest.skip("this user writes read-only folders anyway (root)")
        with pytest.raises(RecipeError) as info:
            train(RECIPE)
    finally:
        runs_dir.chmod(0o700)
    assert str(info.value) == f"cannot write the runs folder {runs_dir}: Permission denied{ADVICE}"
    assert list(runs_dir.iterdir()) == []


def test_an_empty_runs_folder_setting_is_refused(train, monkeypatch):
    monkeypatch.setenv("NBOPT_RUNS_DIR", "")
    with pytest.raises(RecipeError, match=r"^NBOPT_RUNS_DIR is set but empty; set it to a folder, or unset it to "
                                          r"use \./nbopt-runs$"):
        train(RECIPE)


def test_a_full_disk_fails_before_training_and_leaves_no_temporary_files(train, runs_dir, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # where a full disk shows itself when a file is written
    with pytest.raises(RecipeError) as info:
        train(RECIPE)
    assert str(info.value) == (f"cannot write the runs folder {runs_dir}: the disk is full; free some space, or set "
                               "NBOPT_RUNS_DIR to a folder on another disk")
    assert [path.name for path in runs_dir.rglob("*") if path.is_file()] == []


def _failing_replace(monkeypatch, target: str, after: int = 0):
    """os.replace that fails for files named `target` once `after` of them have been written."""
    real, written = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(dst) == target:
            if len(written) >= after:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            written.append(dst)
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def test_a_failed_write_keeps_the_previous_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "history.csv"
    atomic_write_text(path, "epoch\n1\n")
    _failing_replace(monkeypatch, "history.csv")
    with pytest.raises(OSError):
        atomic_write_text(path, "epoch\n1\n2\n")
    assert path.read_text() == "epoch\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]


def test_history_that_cannot_be_written_mid_run_keeps_the_epochs_written_before(train, runs_dir, monkeypatch):
    _failing_replace(monkeypatch, "history.csv", after=1)
    run = train(RECIPE.replace("epochs: 3", "epochs: 100000") + "name: flaky\n")
    # the second write comes half a second after the first (store.WRITE_INTERVAL_S), and its failure stops the
    # run after the step it fails in: minutes before its 100,000 epochs
    assert run.status == "failed" and 1 < len(run.history) < 100000
    assert f"the run's folder could not be written ({os.strerror(errno.EIO)})" in run.note
    folder = runs_dir / "flaky"
    written = list(pd.read_csv(folder / "history.csv")["epoch"])  # the first write: the epochs done by then
    assert written == list(range(1, len(written) + 1)) and len(written) < len(run.history)
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MB file system (tmpfs) for the runs folder; skipped where mounting is not allowed."""
    import subprocess
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_disk_that_fills_up_mid_run_returns_the_run_in_memory_as_failed(train, small_disk, monkeypatch):
    """About 130,000 weights: best.pt (500 KB) fits once on the 1 MB disk, last.ckpt (weights, Adam's two
    moments and the best weights: 2.5 MB) never does. The run stops after epoch 1, keeps what was written,
    and returns its model."""
    monkeypatch.setenv("NBOPT_RUNS_DIR", str(small_disk / "runs"))
    run = train("model: mlp(hidden=[256, 256, 128])\ndata: digits\nepochs: 5\ncheckpoint_every: 1\nname: full\n")
    assert run.status == "failed" and len(run.history) == 1
    assert run.note.startswith("Stopped after 1 epoch(s): the run's folder could not be written (No space left on "
                               "device); the returned Run holds the best weights from epoch 1")
    from sklearn.datasets import load_digits
    assert run.metrics["val_acc"] > 0.5 and tuple(run.predict(load_digits().data[:4]).shape) == (4, 10)
    folder = small_disk / "runs" / "full"
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []
    assert list(pd.read_csv(folder / "history.csv")["epoch"]) == [1]
    assert (folder / "recipe.yaml").read_text().startswith("model: mlp")


def test_run_files_follow_the_umask_like_any_other_file(train, runs_dir):
    run = train(RECIPE)
    umask = os.umask(0)
    os.umask(umask)
    assert umask != 0o077, "the check needs a umask other than the private one"
    modes = {path.name: path.stat().st_mode & 0o777 for path in run.folder.iterdir() if path.is_file()}
    assert modes and set(modes.values()) == {0o666 & ~umask}, modes


def test_writes_left_to_the_writer_thread_keep_their_order_and_only_the_newest_of_a_file(tmp_path):
    folder, written, writing, gate = RunFolder(tmp_path), [], threading.Event(), threading.Event()
    folder.write_later("best.pt", lambda: (writing.set(), gate.wait(10), written.append("best 1")))
    assert writing.wait(10)
    folder.write_later("other", lambda: written.append("other"))
    folder.write_later("best.pt", lambda: written.append("best 2"))  # before best 1 is done
    folder.write_later("best.pt", lambda: written.append("best 3"))  # replaces best 2, still waiting
    assert written == []
    gate.set()
    folder.settle()
    assert written == ["best 1", "other", "best 3"]


def test_quick_writes_go_to_disk_at_most_every_half_second_and_settle_writes_the_newest_at_once(tmp_path):
    folder, written = RunFolder(tmp_path), []
    started = time.monotonic()
    for epoch in range(1, 61):  # 0.6 s of 10 ms epochs
        folder.write_later("history.csv", lambda epoch=epoch: written.append((epoch, time.monotonic())))
        time.sleep(0.01)
    settled = time.monotonic()
    folder.settle()
    epochs, times = [epoch for epoch, _ in written], [at for _, at in written]
    assert epochs == sorted(epochs) and epochs[-1] == 60, epochs
    assert len(epochs) <= (settled - started) / 0.5 + 2, epochs  # one at once, one a half-second, settle's
    assert all(later - earlier >= 0.49 for earlier, later in zip(times, times[1:-1]))  # the writes before settle's
    assert times[-1] - settled < 0.4  # settle does not wait for the half-second to pass


def test_a_run_of_short_epochs_writes_its_history_a_few_times_not_once_an_epoch(train, runs_dir, monkeypatch):
    real, writes = os.replace, []
    monkeypatch.setattr(os, "replace", lambda src, dst, *a, **k: (writes.append(os.path.basename(dst)),
                                                                  real(src, dst, *a, **k))[1])
    run = train(RECIPE.replace("epochs: 3", "epochs: 200"))
    seconds, written = float(run.history["seconds"].sum()), writes.count("history.csv")
    assert len(run.history) == 200 and written <= seconds / 0.5 + 3, (written, seconds)  # the last one at the end
    assert list(pd.read_csv(run.folder / "history.csv")["epoch"]) == list(range(1, 201))


def test_a_write_that_fails_on_the_writer_thread_stops_the_run_as_one_in_training_would(tmp_path):
    folder, heard = RunFolder(tmp_path), []
    folder.on_write_error = heard.append

    def full():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    folder.write_later("best.pt", full)
    folder.settle()
    assert isinstance(folder.write_error, OSError) and heard == [folder.write_error]


def test_a_run_folder_sent_to_another_process_writes_there_at_once(tmp_path):
    import pickle
    folder = RunFolder(tmp_path)
    copy = pickle.loads(pickle.dumps(folder))  # as a spawned DDP worker gets it
    copy._owner = -1  # another process's folder
    copy.write_later("history.csv", lambda: atomic_write_text(tmp_path / "history.csv", "epoch\n1\n"))
    assert (tmp_path / "history.csv").read_text() == "epoch\n1\n" and copy._writer is None
