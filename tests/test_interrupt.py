"""Interrupting training (Ctrl-C, the notebook's stop button) keeps the run, and Ctrl-C keeps working afterwards."""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import pytest
import torch

LONG = "model: mlp(hidden=[32])\ndata: synthetic(n=3000, shape=[20], classes=3)\nepochs: 2000\n"


def when_file_appears(path, action, timeout=120.0):
    """Call `action` once `path` exists (training has finished an epoch); returns the waiting thread."""
    def wait():
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        action()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def test_sigint_during_train_returns_an_interrupted_run(train, runs_dir):
    handler_before = signal.getsignal(signal.SIGINT)
    sender = when_file_appears(runs_dir / "stopped" / "history.csv", lambda: os.kill(os.getpid(), signal.SIGINT))
    started = time.monotonic()
    try:
        run = train(LONG, name="stopped")
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped nbopt.train instead of stopping the run cleanly")
    sender.join(timeout=5)
    assert time.monotonic() - started < 60, "the run did not stop on SIGINT"

    assert run.status == "interrupted" and run.interrupted
    assert 1 <= len(run.history) < 2000
    assert run.history[["train_loss", "val_loss", "val_acc"]].notna().all().all()
    assert re.match(rf"Interrupted after {len(run.history)} epoch\(s\): kept best weights from epoch "
                    rf"{run.metrics['best_epoch']} and the history\.", run.note)
    assert run.note in repr(run)
    # the best weights so far are returned and saved
    saved = torch.load(run.checkpoint, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in run.model.state_dict().items())
    assert json.loads((run.folder / "run.json").read_text())["status"] == "interrupted"
    # Ctrl-C belongs to Python again
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_ctrl_c_works_normally_after_a_run(train):
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever ran before
    train("model: mlp(hidden=[8])\ndata: iris\nepochs: 1\n")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # sent to the main thread itself: a process-wide signal may land on any thread (torch's included)
    main = threading.main_thread().ident
    threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        time.sleep(10)


# -- in a real Jupyter kernel ----------------------------------------------------------------------------

def test_kernel_interrupt_keeps_the_run_and_the_kernel(kernel):
    interrupt_after_first_epoch, sent = kernel.interrupt_when(kernel.runs / "kint" / "history.csv")
    reply, outputs = kernel.execute("%%nbopt train --name kint --out krun\n" + LONG, timeout=180,
                                    on_busy=interrupt_after_first_epoch)
    assert sent, "training never wrote its first epoch"
    assert reply["status"] == "ok", kernel.errors(outputs)  # the cell finishes, it is not an error
    assert not kernel.errors(outputs)
    shown = kernel.text(outputs)
    assert "Interrupted after" in shown and "kept best weights" in shown

    reply, outputs = kernel.execute(
        "import nbopt\nprint(krun.status, len(krun.history), krun.history['val_loss'].notna().all(), "
        "nbopt.last is krun)")
    assert reply["status"] == "ok", kernel.errors(outputs)
    status, rows, complete, same = kernel.text(outputs).split()
    assert status == "interrupted" and int(rows) >= 1 and complete == "True" and same == "True"

    # the kernel is alive and a following cell works
    assert kernel.km.is_alive()
    reply, outputs = kernel.execute("print(6 * 7)")
    assert reply["status"] == "ok" and kernel.text(outputs).strip() == "42"


def test_kernel_ctrl_c_still_works_after_an_interrupted_run(kernel):
    # make sure a run has been interrupted in this kernel first (independent of test order)
    interrupt_after_first_epoch, _ = kernel.interrupt_when(kernel.runs / "kint2" / "history.csv")
    reply, _ = kernel.execute("%%nbopt train --name kint2 --out krun2\n" + LONG, timeout=180,
                              on_busy=interrupt_after_first_epoch)
    assert reply["status"] == "ok"

    started = time.monotonic()

    def interrupt_after_a_second():
        if time.monotonic() - started > 1.5:
            kernel.km.interrupt_kernel()
            return True
        return False

    reply, outputs = kernel.execute("import time\ntime.sleep(30)", timeout=60, on_busy=interrupt_after_a_second)
    assert time.monotonic() - started < 25, "the interrupt did not stop time.sleep"
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    reply, outputs = kernel.execute("print('still here')")
    assert reply["status"] == "ok" and kernel.text(outputs).strip() == "still here"
