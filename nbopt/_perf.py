"""Process-level settings that make small-model training on CPU markedly faster."""
from __future__ import annotations

import contextlib
import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 256 * 1024 * 1024  # while training: step buffers below this stay in the heap
_PASS_MMAP_THRESHOLD = 1024 * 1024  # in a pass over a whole split: batches above this get pages of their own
_tuned = False


def tune_allocator() -> None:
    """Stop glibc from handing large buffers back to the OS after every step.

    Convolutions allocate and free multi-megabyte buffers each step; with glibc's default
    thresholds each cycle costs thousands of page faults. Raising the trim and mmap thresholds
    keeps the memory in the process (measured: 1.35–1.5× faster CNN steps on CPU).
    """
    global _tuned
    if _tuned or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return
    _tuned = True


@contextlib.contextmanager
def batches_with_own_pages():
    """For one pass over a whole split after training (final scores, interpretation): large batches are
    mapped for themselves and unmapped when freed, as glibc does by default.

    With the training setting, each batch comes from the heap, and the small tensors a pass keeps
    between batches (outputs, metric states) land in the freed space, so the next batch no longer fits
    there: the heap grew by up to twice the validation split (benchmarks/memory.py). A pass makes a few
    dozen batches, so their page faults cost nothing a user would notice."""
    if not _tuned:
        yield
        return
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(_M_MMAP_THRESHOLD, _PASS_MMAP_THRESHOLD)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def use_channels_last(model, sample, mixed_precision: bool) -> bool:
    """Switch a conv net to channels-last layout when that is faster and the model copes.

    oneDNN's convolution and pooling kernels on CPU (and cuDNN's under mixed precision) work in
    NHWC: measured 1.2-1.4× faster steps for nbopt's cnn and resnet on CPU. A model that calls
    ``.view()`` on a conv output cannot take NHWC tensors, so a forward pass decides.
    """
    import torch
    from torch import nn

    if sample.dim() != 3 or not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return False
    if torch.cuda.is_available() and not mixed_precision:
        return False
    was_training = model.training
    try:
        model.to(memory_format=torch.channels_last).eval()
        with torch.no_grad():
            model(sample.unsqueeze(0).expand(2, *sample.shape).contiguous(memory_format=torch.channels_last))
        return True
    except Exception:  # any failure means the model wants its usual layout; it trains in that one
        model.to(memory_format=torch.contiguous_format)
        return False
    finally:
        model.train(was_training)


SMALL_STEP_MACS = 20_000_000  # below this many multiply-accumulates per step, extra threads cost more than they give


def threads_for(model, sample, batch_size: int) -> int | None:
    """One thread for models too small to split across cores; None leaves torch's setting alone.

    For a step of a few million multiply-accumulates, waking and syncing a second OpenMP thread
    costs more than it saves (measured: the digits MLP trains 1.3× faster on one thread of two),
    while a convolutional net with tens of millions per step wants every core.
    """
    import torch

    from nbopt.techniques.measure import count_macs
    if torch.get_num_threads() == 1:
        return None
    macs = count_macs(model, sample.unsqueeze(0))
    if macs is None or macs * batch_size >= SMALL_STEP_MACS:
        return None
    return 1


@contextlib.contextmanager
def one_thread_while_workers_train():
    """This process's torch work on one intra-op thread while its forked workers hold every core.

    An OpenMP team whose threads find no free core spins and waits its turn: loading a finished run
    (checking its recipe, about 3 ms) took 120-150 ms in a comparison's process while two workers
    trained, and held the next run back as long."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def one_thread_after_fork() -> None:
    """A forked worker (compare and sweep `--jobs`) trains on one intra-op thread.

    torch's OpenMP (GNU libgomp on Linux) cannot start a team of threads in a process forked from one
    that has used a team: the child's first multi-threaded step waits forever. One thread each is
    also what N workers on N cores want; on a machine with more cores, more jobs use them.
    """
    import torch
    torch.set_num_threads(1)
