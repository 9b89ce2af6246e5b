"""In-memory data takes the memory of the data, not a multiple of it: splits are row indices over the
caller's arrays, inputs keep their dtype until a batch is made, whole-split passes go in chunks, and
a fit on a GPU moves the splits there once (the decision is tested here on the CPU)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nbopt import RecipeError
from nbopt.data.loaders import CHUNK_ELEMENTS, TensorBatches
from nbopt.data.normalization import statistics
from nbopt.data.placement import DEVICE_SHARE, free_memory, placement
from nbopt.recipe import parse_recipe

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py"
CPU, GPU = torch.device("cpu"), torch.device("cuda", 0)


def images(count: int, dtype=np.float32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (count, 3, 8, 8)).astype(dtype)
    return x, rng.integers(0, 4, count)


def plan_of(check, x, y, extra: str = ""):
    return check(f"model: mlp(hidden=[8])\ndata: arrays\n{extra}", {"arrays": (x, y)})


# -- splits are row indices over the caller's arrays -----------------------------------------------

def test_the_splits_of_a_tensor_share_its_storage_and_cover_its_rows_once(check):
    x, y = (torch.as_tensor(part) for part in images(500))
    data = plan_of(check, x, y, "test_split: 0.1\n").data
    splits = [data.train, data.val, data.test]
    assert all(split.source_x is x for split in splits)
    rows = torch.cat([split.rows for split in splits])
    assert sorted(rows.tolist()) == list(range(500))
    assert [split.size for split in splits] == [data.sizes[name] for name in ("train", "val", "test")]
    assert torch.equal(data.train.x, x[data.train.rows]) and torch.equal(data.val.y, y[data.val.rows])


def test_uint8_inputs_stay_uint8_and_batches_come_out_float_with_their_values(check):
    x, y = images(300, np.uint8)
    data = plan_of(check, x, y).data
    assert data.train.x.dtype == torch.uint8 and np.shares_memory(data.train.source_x.numpy(), x)
    for split in (data.train, data.val):
        batch_x, batch_y = next(iter(split))
        assert batch_x.dtype == torch.float32
    inputs = torch.cat([bx for bx, _ in data.val])  # in order: the split's rows as they are, 0..255
    assert torch.equal(inputs, torch.as_tensor(x)[data.val.rows].float())


def test_float64_inputs_are_not_copied_and_batch_as_float32(check):
    x, y = images(300, np.float64)
    data = plan_of(check, x, y).data
    assert np.shares_memory(data.train.source_x.numpy(), x)
    batch_x, _ = next(iter(data.val))
    assert batch_x.dtype == torch.float32
    assert torch.equal(batch_x, torch.as_tensor(x, dtype=torch.float32)[data.val.rows[:len(batch_x)]])


def test_a_dataframe_is_shared_read_only_and_a_mixed_one_becomes_float32_at_once(check):
    import pandas as pd
    x, y = images(300, np.float64)
    frame = pd.DataFrame(x.reshape(300, -1))  # pandas hands out read-only arrays of its columns
    data = plan_of(check, frame, y).data
    assert np.shares_memory(data.train.source_x.numpy(), frame.to_numpy())
    frame[0] = frame[0].astype(int)  # two dtypes: numpy makes a new float64 array, which nobody else holds
    assert plan_of(check, frame, y).data.train.x.dtype == torch.float32


def test_a_float64_value_beyond_float32s_range_is_refused_as_infinite(check):
    x, y = images(300, np.float64)
    x[7, 0, 1, 2] = 1e300
    with pytest.raises(RecipeError, match=re.escape("X has 1 infinite value among 57,600, the first at sample 7, "
                                                    "position (0, 1, 2)")):
        plan_of(check, x, y)


def test_a_nan_past_the_first_chunk_is_found_with_its_row(check):
    rows = 2 * CHUNK_ELEMENTS // 16 + 5  # the NaN sits in the third chunk
    x, y = np.zeros((rows, 16), np.float32), np.arange(rows) % 2
    x[rows - 3, 4] = np.nan
    x[rows - 1, 0] = np.inf
    with pytest.raises(RecipeError, match=re.escape(f"X has 1 NaN value and 1 infinite value among {x.size:,}, "
                                                    f"the first at row {rows - 3}, column 4")):
        plan_of(check, x, y)


def _extra_memory(source: str, nbytes: float, operation: str) -> float:
    """Extra peak memory of `operation` beyond the data, as a share of it, measured in a fresh process."""
    done = subprocess.run([sys.executable, str(BENCHMARK), "--measure", source, str(nbytes), operation],
                          capture_output=True, text=True, check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return found["extra"] / found["data"]


@pytest.mark.parametrize("source", ["numpy float32", "numpy uint8"])
def test_checking_200_mb_of_arrays_takes_far_less_than_a_copy(source):
    assert _extra_memory(source, 200e6, "check") < 0.3


def test_training_on_200_mb_of_uint8_pixels_takes_far_less_than_a_copy():
    """The passes over the validation split after training (final scores, per-class F1) grew the heap by up to
    1.5× the data in some processes and not in others: three fresh processes, each well under a copy."""
    shares = [_extra_memory("numpy uint8", 200e6, "train") for _ in range(3)]
    assert max(shares) < 0.5, shares


@pytest.mark.parametrize("shape, batch_size, expected", [
    ((64,), 64, 256),            # small rows: four training batches
    ((3, 32, 32), 256, 341),     # 12 KB images: 4 MB of them
    ((3, 224, 224), 64, 64),     # 0.6 MB images: never fewer rows than a training batch
])
def test_validation_batches_hold_four_training_batches_up_to_4_mb(check, shape, batch_size, expected):
    x = np.zeros((400, *shape), dtype=np.uint8)
    y = np.arange(400) % 2
    plan = check(f"model: mlp\ndata: xy\nbatch_size: {batch_size}\nnormalize: none\n", {"xy": (x, y)})
    assert plan.data.val.batch_size == expected
    assert plan.data.train.batch_size == batch_size


# -- normalisation statistics in chunks -------------------------------------------------------------

def _whole_array_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The statistics as they were computed before chunking: torch's mean and std of the whole split."""
    dims = [0, 2, 3] if x.ndim == 4 else [0]
    mean, std = x.mean(dim=dims), x.std(dim=dims)
    return mean, torch.where(std > 1e-8, std, torch.ones_like(std))


@pytest.mark.parametrize("shape", [(3, 32, 32), (40,), (2, 5, 7)])
def test_chunked_statistics_equal_the_whole_array_ones(shape):
    generator = torch.Generator().manual_seed(0)
    x = 100 + 3 * torch.randn(3000, *shape, generator=generator)  # several chunks, a mean far from 0
    x[:, 0] = 7.0  # a constant channel/feature keeps std 1
    rows = torch.randperm(3000, generator=generator)[:2400]
    mean, std = statistics(x, parse_recipe("model: mlp\ndata: digits\n"), rows)
    expected_mean, expected_std = _whole_array_statistics(x[rows])
    assert torch.allclose(mean.flatten(), expected_mean.flatten(), rtol=1e-5, atol=1e-5)
    assert torch.allclose(std.flatten(), expected_std.flatten(), rtol=1e-5, atol=1e-5)


def test_statistics_of_one_sample_leave_it_unscaled_as_before():
    x = torch.arange(6.0).reshape(1, 6)
    mean, std = statistics(x, parse_recipe("model: mlp\ndata: digits\n"))
    assert torch.equal(mean, x) and torch.equal(std, torch.ones(1, 6))


# -- the same runs as before ------------------------------------------------------------------------

# Histories recorded before splits became row indices (same recipes, same seeds).
BEFORE = {
    "digits": ("data: digits\nepochs: 3\nbatch_size: 64\nseed: 0\noptimizer: sgd(lr=0.1, momentum=0.9)\n"
               "model: mlp(hidden=[32])\n",
               {"train_loss": [1.2662387516187585, 0.265503800433615, 0.16063225787618887],
                "val_loss": [0.41488587856292725, 0.38571155071258545, 0.21723921597003937],
                "val_acc": [0.875, 0.9055555462837219, 0.9472222328186035]}),
    "digits, test split, oversampled": (
        "data: digits\nepochs: 2\nbatch_size: 32\nseed: 3\ntest_split: 0.1\nbalance: oversample\n"
        "model: mlp(hidden=[32])\n",
        {"train_loss": [2.048404502868652, 1.4875545501708984], "val_loss": [1.7580749988555908, 1.2165451049804688],
         "val_acc": [0.6388888955116272, 0.8083333373069763]}),
    "digits as uint8 pixels": (
        "data: pixels\nepochs: 2\nbatch_size: 64\nseed: 1\nmodel: cnn(width=4)\n",
        {"train_loss": [2.306045034657354, 2.264790742293648], "val_loss": [2.2825543880462646, 2.2437632083892822],
         "val_acc": [0.0972222238779068, 0.1666666716337204]}),
}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_same_seed_histories_are_the_ones_from_before(name, train):
    from sklearn.datasets import load_digits
    digits = load_digits()
    pixels = ((digits.data * 15).astype(np.uint8).reshape(-1, 1, 8, 8), digits.target)
    recipe, before = BEFORE[name]
    run = train(recipe, {"pixels": pixels})
    for column, values in before.items():
        assert run.history[column].tolist() == pytest.approx(values, rel=1e-4), column


# -- moved to the GPU once, when it fits ------------------------------------------------------------

def test_a_split_moves_to_a_cuda_fit_when_it_takes_at_most_a_quarter_of_the_free_memory():
    free = 4000 * DEVICE_SHARE
    assert placement(4000, CPU, GPU, free) == GPU
    assert placement(4001, CPU, GPU, free) is None  # too large: batches copy step by step, as on any machine
    assert placement(10, CPU, CPU, None) is None  # a CPU fit
    assert placement(10, GPU, GPU, free) is None  # already on the GPU: batched there as it is
    assert placement(10, CPU, torch.device("mps"), None) is None  # only CUDA reports its free memory
    assert free_memory(CPU) is None


def test_placed_batches_are_made_on_the_device_and_unplaced_ones_as_before():
    x = torch.arange(60, dtype=torch.uint8).reshape(20, 3)
    batches = TensorBatches(x, torch.arange(20), 8, False, rows=torch.arange(5, 20))
    before = [(bx.clone(), by.clone()) for bx, by in batches]
    assert batches.nbytes() == 15 * (3 + 8)
    batches.place(torch.device("meta"))
    placed = list(batches)
    assert [(bx.device.type, bx.dtype, tuple(bx.shape), by.device.type) for bx, by in placed] == \
           [("meta", torch.float32, (8, 3), "meta"), ("meta", torch.float32, (7, 3), "meta")]
    assert [index.device.type for index in batches.positions()] == ["meta", "meta"]  # one move a pass, not a step
    batches.unplace()
    assert [index.device.type for index in batches.positions()] == ["cpu", "cpu"]
    after = list(batches)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(before, after))
    assert torch.equal(before[0][0], x[5:13].float())


def test_a_cpu_fit_leaves_the_validation_split_in_host_memory(train):
    run = train("model: mlp(hidden=[8])\ndata: arrays\nepochs: 1\n", {"arrays": images(300)})
    assert run.status == "finished" and run._validation.on_device is None
    assert all(bx.device.type == "cpu" for bx, _ in run._validation)
