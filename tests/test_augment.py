"""`augment:` and `normalize:` — what the model really sees in training and in validation.

The runs train for real (Lightning, kornia); a small recording model keeps every input it is given,
so the tests check the effect of a technique on the batches, not only that training finishes.
"""
from __future__ import annotations

import re

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

import nbopt
from nbopt import RecipeError
from nbopt.components import parse_component
from nbopt.techniques.augment import build_augmenter


def train(recipe, namespace=None, **options):
    return nbopt.train(recipe, {} if namespace is None else namespace, live=False, **options)


def check(recipe, namespace=None):
    return nbopt.check(recipe, {} if namespace is None else namespace)


class Recording(nn.Module):
    """Wraps a model and keeps a copy of every input batch, separately for train and eval mode."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.seen = {"train": [], "eval": []}

    def forward(self, x):
        self.seen["train" if self.training else "eval"].append(x.detach().clone())
        return self.inner(x)


def images(n=60, shape=(1, 6, 6), classes=3, seed=0):
    """Random, asymmetric images with labels: every sample is unique and differs from its mirror image."""
    gen = torch.Generator().manual_seed(seed)
    x = 2.0 + torch.rand(n, *shape, generator=gen)
    y = torch.arange(n) % classes
    return x, y


def last_epochs(batches: list[torch.Tensor], epochs: int, size: int) -> torch.Tensor:
    """The inputs of the last `epochs` passes over a split of `size` samples, shaped (epochs, size, ...)."""
    seen = torch.cat(batches)
    assert len(seen) >= epochs * size
    return seen[-epochs * size:].reshape(epochs, size, *seen.shape[1:])


def match(rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """For each row, the index of an exactly equal candidate, or -1."""
    equal = (rows.flatten(1)[:, None, :] == candidates.flatten(1)[None, :, :]).all(dim=2)
    return torch.where(equal.any(dim=1), equal.float().argmax(dim=1), torch.full((len(rows),), -1))


# -- training batches are augmented, validation batches never -----------------------------------------

def test_hflip_flips_some_training_inputs_and_leaves_validation_inputs_as_stored():
    x, y = images()
    namespace = {"net": Recording(nn.Sequential(nn.Flatten(), nn.Linear(36, 3))), "data": (x, y)}
    recipe = "model: net\ndata: data\nval_split: 0.25\nbatch_size: 16\nepochs: 3\naugment: [hflip]\n"
    plan = check(recipe, namespace)
    norm = plan.data.normalization
    stored_train, stored_val = norm.apply(plan.data.train.x), norm.apply(plan.data.val.x)
    n_train, n_val = len(stored_train), len(stored_val)

    run = train(recipe, namespace)
    seen = run.model.seen

    # validation: every epoch sees exactly the stored validation samples, normalised, in order
    for epoch in last_epochs(seen["eval"], 3, n_val):
        assert torch.equal(epoch, stored_val)

    # training: each input is a stored training sample, either as stored or mirrored left-right
    trained = last_epochs(seen["train"], 3, n_train)
    flipped_total = 0
    for epoch in trained:
        as_stored = match(epoch, stored_train)
        mirrored = match(epoch, stored_train.flip(-1))
        assert ((as_stored >= 0) | (mirrored >= 0)).all(), "a training input is neither a sample nor its mirror"
        index = torch.where(as_stored >= 0, as_stored, mirrored)
        assert sorted(index.tolist()) == list(range(n_train)), "augmentation must not change which samples train"
        flipped_total += int((as_stored < 0).sum())
    share = flipped_total / trained.shape[0] / n_train
    assert 0.25 < share < 0.75, f"hflip (p=0.5) flipped {share:.0%} of the training inputs"
    assert run.normalization == norm.to_dict()


def test_noise_changes_every_training_input_by_its_std_and_no_validation_input():
    gen = torch.Generator().manual_seed(1)
    x = 10 * torch.randn(80, 8, generator=gen)  # samples far apart: the nearest stored row is the source
    y = torch.arange(80) % 2
    namespace = {"net": Recording(nn.Linear(8, 2)), "data": (x, y)}
    recipe = "model: net\ndata: data\nnormalize: none\nbatch_size: 16\nepochs: 2\naugment: [noise(0.5)]\n"
    plan = check(recipe, namespace)
    assert plan.data.normalization is None
    stored_train, stored_val = plan.data.train.x, plan.data.val.x

    run = train(recipe, namespace)
    seen = run.model.seen
    assert run.normalization is None

    for epoch in last_epochs(seen["eval"], 2, len(stored_val)):
        assert torch.equal(epoch, stored_val)
    trained = torch.cat(seen["train"])
    assert (match(trained, stored_train) < 0).all(), "some training input came through without noise"
    nearest = torch.cdist(trained, stored_train).argmin(dim=1)
    residual = trained - stored_train[nearest]
    assert residual.std().item() == pytest.approx(0.5, rel=0.15)
    assert abs(residual.mean().item()) < 0.1


def test_own_lightning_module_gets_augmented_training_batches_only():
    import pytorch_lightning as pl

    class Own(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
            self.seen = {"train": [], "eval": []}

        def training_step(self, batch, batch_idx):
            x, y = batch
            self.seen["train"].append(x.detach().clone())
            return nn.functional.cross_entropy(self.net(x), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.seen["eval"].append(x.detach().clone())
            self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    x, y = images()
    namespace = {"net": Own(), "data": (x, y)}
    recipe = "model: net\ndata: data\nval_split: 0.25\nbatch_size: 16\nepochs: 1\naugment: [vflip(p=1.0)]\n"
    plan = check(recipe, namespace)
    norm = plan.data.normalization
    stored_train, stored_val = norm.apply(plan.data.train.x), norm.apply(plan.data.val.x)
    run = train(recipe, namespace)
    assert torch.equal(last_epochs(run.model.seen["eval"], 1, len(stored_val))[0], stored_val)
    trained = torch.cat(run.model.seen["train"])
    assert (match(trained, stored_train) < 0).all()
    assert sorted(match(trained, stored_train.flip(-2)).tolist()) == list(range(len(stored_train)))


# -- mixing augmentations -------------------------------------------------------------------------------

def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def constant_images(device, classes=10, size=8):
    """Sample i is an image filled with the value i and labelled i: a mixed image's mean tells its mix."""
    values = torch.arange(classes, dtype=torch.float32, device=device)
    x = values.reshape(classes, 1, 1, 1).expand(classes, 1, size, size).contiguous()
    return x, torch.arange(classes, device=device)


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixup_soft_targets_sum_to_one_and_weigh_like_the_inputs(device, seed):
    torch.manual_seed(seed)
    x, y = constant_images(device)
    augmenter = build_augmenter([parse_component("mixup(0.4)")], (1, 8, 8), "classification", 10)
    mixed, soft = augmenter(x, y)
    assert mixed.shape == x.shape and mixed.device == x.device and soft.device == x.device
    assert soft.shape == (10, 10) and soft.dtype == torch.float32
    assert torch.allclose(soft.sum(dim=1), torch.ones(10, device=device))
    assert (soft >= 0).all() and ((soft > 1e-6).sum(dim=1) <= 2).all()
    # x'_i = λ x_i + (1-λ) x_j and y'_i = λ e_i + (1-λ) e_j with the same λ and j
    assert torch.allclose(mixed.mean(dim=(1, 2, 3)), soft @ torch.arange(10.0, device=device), atol=1e-5)
    assert torch.allclose(mixed.amin(dim=(1, 2, 3)), mixed.amax(dim=(1, 2, 3)))  # blended, not pasted
    # one λ for the whole batch: each sample keeps weight λ (or 1 when paired with itself)
    own = soft.diagonal()
    lam = own.min()
    assert torch.allclose(own[own < 1 - 1e-6], lam.expand(int((own < 1 - 1e-6).sum())), atol=1e-6)
    assert not torch.equal(mixed, x)


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cutmix_target_weight_is_the_pasted_area(device, seed):
    torch.manual_seed(seed)
    x, y = constant_images(device)
    augmenter = build_augmenter([parse_component("cutmix")], (1, 8, 8), "classification", 10)
    mixed, soft = augmenter(x, y)
    assert mixed.shape == x.shape and mixed.device == x.device and soft.device == x.device
    assert torch.allclose(soft.sum(dim=1), torch.ones(10, device=device))
    pasted_somewhere = False
    for i in range(10):
        values = mixed[i].unique()
        assert set(values.round().long().tolist()) <= {i, *range(10)} and len(values) <= 2
        for value in values.tolist():
            area = (mixed[i] == value).float().mean().item()
            assert soft[i, int(round(value))].item() == pytest.approx(area, abs=1e-5), \
                f"sample {i}: class {value} covers {area:.3f} of the image"
        pasted_somewhere |= len(values) == 2
    assert pasted_somewhere


def test_mixup_of_regression_targets_keeps_their_shape():
    torch.manual_seed(0)
    x = torch.arange(10.0).reshape(10, 1).expand(10, 4).contiguous()
    y = torch.arange(10.0)
    augmenter = build_augmenter([parse_component("mixup(1.0)")], (4,), "regression", None)
    mixed, target = augmenter(x, y)
    assert target.shape == y.shape
    assert torch.allclose(mixed[:, 0], target, atol=1e-5)  # inputs and targets mixed with the same weights
    assert not torch.equal(target, y)


def test_mixup_trains_a_classifier_end_to_end():
    run = train("model: mlp(hidden=[16])\ndata: synthetic(n=200, shape=[1, 4, 4], classes=3)\nepochs: 2\n"
                "augment: [hflip, mixup(0.2)]\noptimizer: adam(lr=0.01)\n")
    assert run.history["train_loss"].notna().all() and run.history["val_acc"].between(0, 1).all()


# -- each augmentation on an image batch ------------------------------------------------------------------

AUGMENTATIONS = ["hflip", "vflip", "rotate(20)", "translate(0.2)", "scale(0.6, 0.7)", "crop(pad=4)", "cutout(8)",
                 "noise(0.05)", "mixup(0.5)", "cutmix(1.0)"]
WITH_P_ZERO = ["hflip(p=0)", "vflip(p=0)", "rotate(20, p=0)", "translate(0.2, p=0)", "scale(0.6, 0.7, p=0)",
               "crop(pad=4, p=0)", "cutout(8, p=0)", "noise(0)"]


def _batch():
    gen = torch.Generator().manual_seed(3)
    return 0.1 + torch.rand(16, 3, 16, 16, generator=gen), torch.arange(16) % 4


@pytest.mark.parametrize("text", AUGMENTATIONS)
def test_each_augmentation_changes_an_image_batch_and_keeps_its_shape(text):
    torch.manual_seed(0)
    x, y = _batch()
    augmenter = build_augmenter([parse_component(text)], (3, 16, 16), "classification", 4)
    out, target = augmenter(x.clone(), y.clone())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.allclose(out, x), f"{text} left the batch unchanged"
    assert len(target) == len(y)


@pytest.mark.parametrize("text", WITH_P_ZERO)
def test_augmentation_with_probability_zero_changes_nothing(text):
    torch.manual_seed(0)
    x, y = _batch()
    augmenter = build_augmenter([parse_component(text)], (3, 16, 16), "classification", 4)
    out, target = augmenter(x.clone(), y.clone())
    assert torch.equal(out, x) and torch.equal(target, y)


def test_flips_mirror_exactly():
    x, y = _batch()
    for text, dim in (("hflip(p=1.0)", -1), ("vflip(p=1.0)", -2)):
        out, _ = build_augmenter([parse_component(text)], (3, 16, 16), "classification", 4)(x.clone(), y)
        assert torch.equal(out, x.flip(dim))


def test_crop_shifts_each_image_by_at_most_pad_pixels_and_fills_with_zeros():
    torch.manual_seed(0)
    x, y = _batch()
    out, _ = build_augmenter([parse_component("crop(pad=3)")], (3, 16, 16), "classification", 4)(x.clone(), y)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    shifts = set()
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(7) for dx in range(7)
                if torch.equal(padded[i, :, dy:dy + 16, dx:dx + 16], out[i])]
        assert hits, f"image {i} is not a shifted copy of the original"
        shifts.add(hits[0])
    assert len(shifts) > 1


def test_cutout_blanks_one_size_by_size_square_and_nothing_else():
    torch.manual_seed(0)
    x, y = _batch()
    out, _ = build_augmenter([parse_component("cutout(4)")], (3, 16, 16), "classification", 4)(x.clone(), y)
    for i in range(len(x)):
        blank = out[i] == 0
        assert torch.equal(blank, blank[:1].expand_as(blank)), "every channel is blanked in the same place"
        rows, cols = blank[0].nonzero(as_tuple=True)
        assert len(rows) == 16 and rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3
        assert torch.equal(out[i][~blank], x[i][~blank])


def test_no_augment_list_builds_nothing():
    assert build_augmenter([], (1, 8, 8), "classification", 10) is None


# -- mistakes, before training ----------------------------------------------------------------------------

def test_image_augmentation_on_tabular_data_is_refused_before_training(runs_dir):
    with pytest.raises(RecipeError, match=re.escape(
            "augment (line 3): hflip is an image augmentation but the samples have shape [13]; "
            "for tabular data use noise or mixup")):
        train("model: mlp\ndata: wine\naugment: [noise(0.1), hflip]\n")
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


@pytest.mark.parametrize("name", ["vflip", "rotate(10)", "translate(0.1)", "crop(pad=2)", "cutout(4)", "cutmix"])
def test_every_image_augmentation_is_refused_on_tabular_data(name):
    with pytest.raises(RecipeError, match=re.escape("is an image augmentation but the samples have shape [13]")):
        check(f"model: mlp\ndata: wine\naugment: [{name}]\n")


def test_noise_and_mixup_are_accepted_on_tabular_data():
    plan = check("model: mlp\ndata: wine\naugment: [noise(0.1), mixup(0.2)]\n")
    assert any("noise(0.1), mixup(0.2)" in item for item in plan.techniques())


def test_two_mixing_augmentations_are_refused():
    with pytest.raises(RecipeError, match=re.escape("augment (line 3): use one of mixup and cutmix, not both")):
        check("model: mlp\ndata: digits\naugment: [mixup, hflip, cutmix]\n")


def test_unknown_augmentation_suggests():
    with pytest.raises(RecipeError, match=re.escape("unknown augmentation 'hflp' — did you mean 'hflip'?")):
        check("model: mlp\ndata: digits\naugment: [hflp]\n")


# -- show_augment ---------------------------------------------------------------------------------------------

def test_show_augment_grid_has_samples_times_versions_plus_one_axes():
    fig = nbopt.show_augment("data: digits\naugment: [vflip(p=1.0)]\n", {}, samples=3, versions=2)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * (2 + 1)
    plan = check("model: mlp\ndata: digits\n")
    stored = torch.cat([plan.data.train.x, plan.data.val.x])[:, 0]
    shown = [torch.as_tensor(ax.images[0].get_array().data) for ax in fig.axes]
    for row in range(3):
        original, draws = shown[3 * row], shown[3 * row + 1:3 * row + 3]
        assert match(original[None], stored)[0] >= 0, "the first column must show a sample as stored"
        for draw in draws:
            assert torch.equal(draw, original.flip(0)), "vflip(p=1) must show the sample upside down"
    assert fig.axes[0].get_title() == "original"


def test_show_augment_default_grid_size():
    fig = nbopt.show_augment("data: digits\naugment: [rotate(30), cutout(3)]\n", {})
    assert len(fig.axes) == 6 * 5


def test_show_augment_on_tabular_data_says_it_draws_images():
    with pytest.raises(RecipeError, match=re.escape("show-augment draws images, but this data's samples have "
                                                    "shape [13]")):
        nbopt.show_augment("data: wine\naugment: [noise(0.1)]\n", {})


def test_show_augment_without_augment_list():
    with pytest.raises(RecipeError, match=re.escape("the recipe has no `augment:` list to show")):
        nbopt.show_augment("data: digits\n", {})


# -- normalize ------------------------------------------------------------------------------------------------

def test_normalize_auto_uses_training_split_statistics_for_images():
    plan = check("model: mlp\ndata: digits\n")
    norm, train_x, val_x = plan.data.normalization, plan.data.train.x, plan.data.val.x
    assert norm.mean.shape == (1, 1, 1, 1)
    assert norm.mean.item() == pytest.approx(train_x.mean().item(), rel=1e-5)
    assert norm.std.item() == pytest.approx(train_x.std().item(), rel=1e-5)
    assert norm.mean.item() != pytest.approx(val_x.mean().item(), rel=1e-4)
    everything = torch.cat([train_x, val_x])
    assert norm.mean.item() != pytest.approx(everything.mean().item(), rel=1e-4)
    assert norm.std.item() != pytest.approx(everything.std().item(), rel=1e-4)


def test_normalize_auto_uses_the_training_split_of_given_splits():
    gen = torch.Generator().manual_seed(0)
    train_set = torch.utils.data.TensorDataset(5 + 2 * torch.randn(64, 3, 4, 4, generator=gen),
                                               torch.arange(64) % 2)
    val_set = torch.utils.data.TensorDataset(-3 + 0.5 * torch.randn(32, 3, 4, 4, generator=gen),
                                             torch.arange(32) % 2)
    plan = check("model: mlp\ndata: splits\n", {"splits": (train_set, val_set)})
    norm = plan.data.normalization
    assert norm.mean.shape == (1, 3, 1, 1)
    assert torch.allclose(norm.mean.flatten(), train_set.tensors[0].mean(dim=(0, 2, 3)), rtol=1e-5)
    assert torch.allclose(norm.std.flatten(), train_set.tensors[0].std(dim=(0, 2, 3)), rtol=1e-5)
    assert (norm.mean > 4).all()  # the validation data (mean -3) did not enter


def test_normalize_auto_per_feature_for_tables():
    plan = check("model: mlp\ndata: wine\n")
    norm, train_x = plan.data.normalization, plan.data.train.x
    assert norm.mean.shape == (1, 13)
    assert torch.allclose(norm.mean[0], train_x.mean(dim=0), rtol=1e-5)
    assert torch.allclose(norm.std[0], train_x.std(dim=0), rtol=1e-5)
    assert not torch.allclose(norm.mean[0], plan.data.val.x.mean(dim=0), rtol=1e-3)
    normalised = norm.apply(train_x)
    assert torch.allclose(normalised.mean(dim=0), torch.zeros(13), atol=1e-4)
    assert torch.allclose(normalised.std(dim=0), torch.ones(13), atol=1e-4)


def test_normalize_given_is_used_as_given_and_recorded():
    x, y = images()
    namespace = {"net": Recording(nn.Sequential(nn.Flatten(), nn.Linear(36, 3))), "data": (x, y)}
    recipe = ("model: net\ndata: data\nval_split: 0.25\nbatch_size: 16\nepochs: 1\n"
              "normalize: {mean: [0.5], std: [0.25]}\n")
    plan = check(recipe, namespace)
    assert plan.data.normalization.mean.flatten().tolist() == [0.5]
    assert plan.data.normalization.std.flatten().tolist() == [0.25]
    run = train(recipe, namespace)
    assert run.normalization == {"mean": [0.5], "std": [0.25]}
    seen = last_epochs(run.model.seen["eval"], 1, len(plan.data.val.x))[0]
    assert torch.allclose(seen, (plan.data.val.x - 0.5) / 0.25)


def test_normalize_given_per_channel():
    plan = check("model: mlp\ndata: synthetic(n=60, shape=[3, 4, 4], classes=2)\n"
                 "normalize: {mean: [1, 2, 3], std: [1, 2, 4]}\n")
    x = plan.data.val.x
    out = plan.data.normalization.apply(x)
    for c, (m, s) in enumerate([(1, 1), (2, 2), (3, 4)]):
        assert torch.allclose(out[:, c], (x[:, c] - m) / s)


def test_normalize_none_means_raw_inputs():
    plan = check("model: mlp\ndata: digits\nnormalize: none\n")
    assert plan.data.normalization is None
    assert not any("normalize" in item for item in plan.techniques())
