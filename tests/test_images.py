"""`data: images(path=DIR, ...)` on real folders of PNG/JPEG/BMP/WebP files written with Pillow.

The images are scikit-learn's 8×8 digits, upscaled to 16×16 and saved in both layouts: one folder
per class, and train/ val/ test/ folders of class folders. The classes are digit names (zero, one,
two, three), so that their sorted order differs from the digits' order.
"""
from __future__ import annotations

import json
import math
import os
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from nbopt import RecipeError
from nbopt.data.image_files import StreamedBatches
from nbopt.data.images import cache_in_memory
from nbopt.data.loaders import TensorBatches

NAMES = ["zero", "one", "two", "three"]  # digit d is in folder NAMES[d]
SORTED = ["one", "three", "two", "zero"]
PER_CLASS = 30
MODEL = "model: mlp(hidden=[32])\n"


def digit_images(per_class: int = PER_CLASS, classes: int = len(NAMES)) -> list[tuple[int, Image.Image]]:
    """(digit, 16×16 grey image) pairs, `per_class` of each of the first `classes` digits."""
    digits = load_digits()
    found, counts = [], [0] * classes
    for image, digit in zip(digits.images, digits.target):
        if digit < classes and counts[digit] < per_class:
            counts[digit] += 1
            pixels = Image.fromarray((image * (255 / 16)).astype(np.uint8))
            found.append((int(digit), pixels.resize((16, 16), Image.Resampling.BILINEAR)))
    return found


def write_folder(root: Path, images, suffix: str = "png", mode: str = "L") -> dict[str, list[Path]]:
    """One sub-folder per class; returns the files of each class in the order they were written."""
    written: dict[str, list[Path]] = {}
    for i, (digit, image) in enumerate(images):
        path = root / NAMES[digit] / f"{i:03d}.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.convert(mode).save(path)
        written.setdefault(NAMES[digit], []).append(path)
    return written


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """`flat`: one folder per class (PNG). `split`: train/ (PNG), val/ (JPEG), test/ (BMP and WebP), in colour."""
    base = tmp_path_factory.mktemp("images")
    images = digit_images()
    write_folder(base / "flat", images)
    for split, part, suffix in [("train", images[0::3], "png"), ("val", images[1::3], "jpg"),
                                ("test", images[2::6], "bmp"), ("test", images[5::6], "webp")]:
        write_folder(base / "split" / split, part, suffix, "RGB")
    return base


def recipe(data: str, extra: str = "") -> str:
    return MODEL + f"data: {data}\n" + extra


def data_of(check, data: str, extra: str = ""):
    return check(recipe(data, extra)).data


def message(check, data: str, extra: str = "") -> str:
    with pytest.raises(RecipeError) as info:
        check(recipe(data, extra))
    return str(info.value)


# -- layouts, classes and splits ---------------------------------------------------------------------

def test_class_folders_become_sorted_classes_and_a_stratified_split(folders, check):
    data = data_of(check, f"images(path='{folders / 'flat'}')", "val_split: 0.25\ntest_split: 0.1\n")
    assert data.classes == SORTED and data.num_classes == 4 and data.input_shape == (1, 16, 16)
    total = PER_CLASS * 4
    assert data.sizes == {"train": 78, "val": 30, "test": 12} and sum(data.sizes.values()) == total  # 25 %, 10 %
    assert sorted(data.class_counts) == [19, 19, 20, 20]  # stratified: every class keeps its share
    assert isinstance(data.train, TensorBatches) and data.train.x.dtype == torch.uint8
    # every cached image is its file's pixels, labelled with its folder's position in the sorted classes
    x, y = next(iter(data.val))
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    by_pixels = {}
    for name in NAMES:
        for path in sorted((folders / "flat" / name).iterdir()):
            by_pixels[np.asarray(Image.open(path)).tobytes()] = SORTED.index(name)
    for image, label in zip(x, y):
        assert by_pixels[(image[0] * 255).round().to(torch.uint8).numpy().tobytes()] == int(label)


def test_train_val_test_folders_are_used_as_given(folders, check):
    data = data_of(check, f"images(path='{folders / 'split'}')", "val_split: 0.5\n")  # val_split: no effect
    assert data.classes == SORTED and data.input_shape == (3, 16, 16)
    assert data.sizes == {"train": 40, "val": 40, "test": 40}
    assert any("the folder's own train/, val/, test/" in note for note in data.notes)
    labels = torch.cat([y for _, y in data.test])  # BMP and WebP files, all read
    assert torch.bincount(labels).tolist() == [len(os.listdir(folders / "split" / "test" / n)) for n in SORTED]


def test_a_train_and_test_folder_gets_val_carved_from_train(folders, tmp_path, check):
    root = tmp_path / "no-val"
    write_folder(root / "train", digit_images(20, 2))
    write_folder(root / "test", digit_images(5, 2))
    data = data_of(check, f"images(path='{root}')")
    assert data.sizes == {"train": 32, "val": 8, "test": 10} and data.classes == ["one", "zero"]
    assert any("val carved from train/" in note for note in data.notes)


def test_channels_follow_the_files_unless_given(tmp_path, check):
    images = digit_images(4, 2)
    write_folder(tmp_path / "grey", images)
    write_folder(tmp_path / "mixed", images)
    images[0][1].convert("RGB").save(tmp_path / "mixed" / "zero" / "colour.png")
    assert data_of(check, f"images(path='{tmp_path / 'grey'}')").input_shape == (1, 16, 16)
    assert data_of(check, f"images(path='{tmp_path / 'mixed'}')").input_shape == (3, 16, 16)
    grey = data_of(check, f"images(path='{tmp_path / 'mixed'}', channels=1)")
    colour = data_of(check, f"images(path='{tmp_path / 'grey'}', channels=3)")
    assert grey.input_shape == (1, 16, 16) and colour.input_shape == (3, 16, 16)
    x = colour.train.x
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # grey files copied to every channel


def test_size_resizes_and_mixed_sizes_without_size_name_two_files(tmp_path, check):
    root = tmp_path / "sizes"
    write_folder(root, digit_images(4, 2))
    Image.new("L", (12, 20)).save(root / "one" / "tall.png")  # 20 high, 12 wide
    first = sorted(os.listdir(root / "one"))[0]
    text = message(check, f"images(path='{root}')")
    assert text == (f"data (line 2): images: the images have different sizes (sizes/one/{first} is 16×16, "
                    "sizes/one/tall.png is 20×12, height×width); give size=[H, W] to resize them all")
    data = data_of(check, f"images(path='{root}', size=[8, 10])")
    assert data.input_shape == (1, 8, 10) and sum(data.sizes.values()) == 9
    assert data_of(check, f"images(path='{root}', size=12)").input_shape == (1, 12, 12)


# -- mistakes ---------------------------------------------------------------------------------------

def test_folder_mistakes_are_one_line_errors(tmp_path, check):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes" / "cat").mkdir(parents=True)
    (tmp_path / "notes" / "cat" / "readme.txt").write_text("no images here")
    write_folder(tmp_path / "loose", digit_images(2, 2))
    for file in (tmp_path / "loose").rglob("*.png"):
        file.rename(tmp_path / "loose" / file.name)
    write_folder(tmp_path / "single", digit_images(3, 1))
    write_folder(tmp_path / "hollow", digit_images(3, 2))
    (tmp_path / "hollow" / "two").mkdir()
    (tmp_path / "a-file.png").write_bytes(b"")
    prefix = "data (line 2): images: "
    assert message(check, "images(path='missing')") == (
        prefix + f"no folder 'missing' (looked in {tmp_path / 'missing'}); give the folder that holds one "
        "sub-folder per class")
    assert message(check, "images(path='a-file.png')") == (
        prefix + "'a-file.png' is a file; give the folder that holds one sub-folder per class")
    assert message(check, "images(path='empty')") == (
        prefix + "no PNG, JPEG, BMP or WebP files in 'empty'; it needs one sub-folder of images per class")
    assert message(check, "images(path='notes')").startswith(prefix + "no PNG, JPEG, BMP or WebP files in 'notes'")
    assert message(check, "images(path='loose')") == (
        prefix + "'loose' holds 4 images but no class folders; put each class's images in a sub-folder named after "
        "the class (loose/cat/…, loose/dog/…)")
    assert message(check, "images(path='single')") == (
        prefix + "'single' has one class folder (zero); a classifier needs at least two")
    assert message(check, "images(path='hollow')") == (
        prefix + "the class folder 'hollow/two' holds no PNG, JPEG, BMP or WebP files; add images or remove the folder")
    assert message(check, "images") == "data (line 2): images needs the folder: images(path=\"DIR\", size=[H, W])"


def test_split_folders_with_different_classes_are_refused(tmp_path, check):
    write_folder(tmp_path / "pets" / "train", digit_images(3, 3))
    write_folder(tmp_path / "pets" / "val", digit_images(3, 2))
    (tmp_path / "pets" / "val" / "one").rename(tmp_path / "pets" / "val" / "oen")
    assert message(check, "images(path='pets')") == (
        "data (line 2): images: train/ and val/ have different class folders (only in train/: one, two; only in "
        "val/: oen) — is 'oen' meant to be 'one'?; every split needs the same class folders")


def test_unreadable_files_are_named_or_skipped_and_counted(tmp_path, check):
    root = tmp_path / "bad"
    written = write_folder(root, digit_images(6, 2))
    (root / "one" / "garbage.png").write_bytes(b"this is not a png")
    whole = written["one"][0].read_bytes()
    (root / "zero" / "truncated.png").write_bytes(whole[:len(whole) // 2])  # its header reads, its pixels do not
    assert message(check, f"images(path='{root}')") == (
        "data (line 2): images: cannot read bad/one/garbage.png (not an image Pillow can read); remove or replace it, "
        "or pass skip_bad=true to skip unreadable files")
    assert message(check, f"images(path='{root}', size=[16, 16], channels=1)").startswith(
        "data (line 2): images: cannot read bad/one/garbage.png (not an image Pillow can read) (and 1 more)")
    (root / "one" / "garbage.png").unlink()
    assert re.fullmatch(r"data \(line 2\): images: cannot read bad/zero/truncated\.png \(.+\); remove or replace it, "
                        r"or pass skip_bad=true to skip unreadable files", message(check, f"images(path='{root}')"))
    (root / "one" / "garbage.png").write_bytes(b"this is not a png")
    data = data_of(check, f"images(path='{root}', skip_bad=true)")
    assert sum(data.sizes.values()) == 12 and "skipped 2 unreadable file(s) (skip_bad)" in data.notes


def test_argument_mistakes_say_what_is_accepted(folders, check):
    flat = folders / "flat"
    assert message(check, f"images(path='{flat}', cache=memroy)") == (
        "data (line 2): images: cache is auto, memory or none; got 'memroy' — did you mean 'memory'?")
    assert message(check, f"images(path='{flat}', channels=2)") == (
        "data (line 2): images: channels is 1 (grey) or 3 (colour); got 2")
    assert message(check, f"images(path='{flat}', size=[32])") == (
        "data (line 2): images: size is [height, width] in pixels, e.g. size=[32, 32]; got [32]")
    assert message(check, f"images(path='{flat}', workers=-1)") == (
        "data (line 2): images: workers is how many DataLoader processes decode, 0 or more; got -1")
    assert message(check, f"images(path='{flat}')", "task: regression\n") == (
        "task (line 3): an image folder's classes are its sub-folders: use task: classification or leave task out")


# -- cache and streaming ------------------------------------------------------------------------------

def test_cache_auto_keeps_the_pixels_when_they_fit_a_quarter_of_the_free_memory():
    assert cache_in_memory("auto", nbytes=25, free=100) is True
    assert cache_in_memory("auto", nbytes=26, free=100) is False
    assert cache_in_memory("memory", nbytes=10**12, free=100) is True
    assert cache_in_memory("none", nbytes=1, free=10**12) is False


def test_cache_none_streams_the_same_batches_from_disk(folders, check):
    flat = f"images(path='{folders / 'flat'}'"
    cached, streamed = data_of(check, flat + ")"), data_of(check, flat + ", cache=none)")
    assert isinstance(streamed.train, StreamedBatches) and "streamed from disk (decoded in the training process)" in \
        streamed.description
    assert "cached in memory (0.0 MB as uint8)" in cached.description
    assert cached.sizes == streamed.sizes and len(cached.train) == len(streamed.train)
    for ours, theirs in zip(cached.train, streamed.train):
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert torch.equal(cached.normalization.mean, streamed.normalization.mean)
    assert torch.equal(cached.normalization.std, streamed.normalization.std)


def test_normalize_auto_is_the_mean_and_std_of_the_training_split(folders, check):
    data = data_of(check, f"images(path='{folders / 'split'}')")
    x = data.train.x.float() / 255
    mean, std = x.mean(dim=[0, 2, 3]), x.std(dim=[0, 2, 3])
    assert torch.allclose(data.normalization.mean.flatten(), mean, atol=1e-6)
    assert torch.allclose(data.normalization.std.flatten(), std, atol=1e-6)
    given = data_of(check, f"images(path='{folders / 'split'}')", "normalize: {mean: [0.5], std: [0.25]}\n")
    assert given.normalization.to_dict() == {"mean": [0.5], "std": [0.25]}


def test_a_streamed_and_a_cached_run_of_one_seed_reach_the_same_metrics(folders, train):
    data = f"images(path='{folders / 'split'}', cache=%s, workers=%d)"
    runs = [train(recipe(data % (cache, workers), "epochs: 3\nseed: 3\n"))
            for cache, workers in [("memory", 0), ("none", 2)]]
    columns = ["train_loss", "val_loss", "val_acc"]
    assert runs[0].history[columns].equals(runs[1].history[columns])
    for key in ("val_loss", "val_acc", "test_loss", "test_acc"):
        assert runs[0].metrics[key] == runs[1].metrics[key]
    assert runs[0].metrics["val_acc"] > 0.8


# -- predict --------------------------------------------------------------------------------------------

def test_predict_takes_paths_pil_images_and_arrays_and_names_the_classes(folders, train):
    run = train(recipe(f"images(path='{folders / 'flat'}')", "epochs: 8\n"))
    assert run.classes == SORTED
    files = [folders / "flat" / name / sorted(os.listdir(folders / "flat" / name))[0] for name in NAMES]
    names = run.predict([str(f) for f in files], labels=True)
    assert sum(a == b for a, b in zip(names, NAMES)) >= 3
    outputs = run.predict(files)
    assert outputs.shape == (4, 4)
    assert torch.equal(run.predict([Image.open(f) for f in files]), outputs)
    pixels = np.stack([np.asarray(Image.open(f))[None] for f in files])  # uint8 (N, 1, H, W), as arrays come
    assert torch.equal(run.predict(pixels), outputs)
    assert run.predict(str(files[0]), labels=True) == names[:1]
    assert run.predict(files, labels=False).argmax(1).tolist() == [SORTED.index(n) for n in names]
    with pytest.raises(RecipeError, match=re.escape("the run takes images of shape [1, 16, 16] (or file paths or "
                                                    "PIL images); got an array of shape [1, 3, 16, 16]")):
        run.predict(np.zeros((3, 16, 16), np.uint8))


# -- in a real Jupyter kernel ------------------------------------------------------------------------

def test_kernel_trains_on_an_image_folder_and_predicts_file_names(folders, kernel):
    split = folders / "split"
    cell = f"%%nbopt train --name images-kernel --out irun\n{MODEL}data: images(path='{split}', size=[12, 12])\n" \
           "epochs: 5\n"
    reply, outputs = kernel.execute(cell, timeout=180)
    assert reply["status"] == "ok", kernel.errors(outputs)
    files = sorted(str(p) for p in (split / "test").rglob("*.*"))
    reply, outputs = kernel.execute(textwrap.dedent(f"""
        import json
        files = {files!r}
        print(json.dumps({{"classes": irun.classes, "labels": irun.predict(files, labels=True),
                          "shape": list(irun.predict(files).shape), "metrics": irun.metrics}}))
    """), timeout=60)
    assert reply["status"] == "ok", kernel.errors(outputs)
    result = json.loads(kernel.text(outputs).strip().splitlines()[-1])
    assert result["classes"] == SORTED and result["shape"] == [40, 4]
    truth = [Path(f).parent.name for f in files]
    correct = sum(a == b for a, b in zip(result["labels"], truth))
    assert correct / len(files) > 0.75
    assert math.isclose(correct / len(files), result["metrics"]["test_acc"], abs_tol=1e-6)
