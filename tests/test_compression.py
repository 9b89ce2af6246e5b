"""Compression for real: pruning (unstructured and channels), distillation, dynamic quantization and the
before/after report — checked by their effects on the weights, the history and the returned model."""
from __future__ import annotations

import copy
import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

import nbopt
from nbopt import RecipeError
from nbopt.display.summary import compression_rows
from nbopt.techniques.distill import distillation_loss

LAYERS = (nn.Linear, nn.Conv2d)
REPORT_KEYS = {"model", "parameters", "nonzero_parameters", "size_kb", "macs", "latency_ms_batch1",
               "latency_ms_batch64", "onnx_latency_ms_batch1", "onnx_latency_ms_batch64", "val_acc"}

# digits: 1,437 training images of 8×8 → 12 steps per epoch at batch 128; weights 2,048 + 512 + 160
MLP = "model: mlp(hidden=[32, 16])\ndata: digits\nbatch_size: 128\noptimizer: adam(lr=0.01)\n"
# the built-in CNN on 1×28×28 images: 20,490 parameters at width 16
CNN = "model: cnn(width=16)\ndata: synthetic(n=320, shape=[1, 28, 28], classes=10)\nbatch_size: 64\n"
CNN_PARAMETERS = 20_490


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for m in model.modules() if isinstance(m, LAYERS)]


def zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_into(folder, recipe: str, namespace: dict | None = None, **options):
    """Train outside a test's own runs folder (for runs that several tests share)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NBOPT_RUNS_DIR", str(folder))
        return nbopt.train(recipe, {} if namespace is None else namespace, live=False, **options)


# -- shared runs: trained once for the module ------------------------------------------------------

ONCE = MLP + "epochs: 3\nprune: {method: %s, amount: 0.8, global: false, finetune: %d}\n"


@pytest.fixture(scope="module")
def layerwise(tmp_path_factory):
    """l1_unstructured to 80% per layer after 3 epochs, then 2 epochs of fine-tuning."""
    return train_into(tmp_path_factory.mktemp("runs"), ONCE % ("l1_unstructured", 2), name="layerwise")


@pytest.fixture(scope="module")
def l1_no_finetune(tmp_path_factory):
    return train_into(tmp_path_factory.mktemp("runs"), ONCE % ("l1_unstructured", 0), name="l1-ft0")


@pytest.fixture(scope="module")
def random_no_finetune(tmp_path_factory):
    return train_into(tmp_path_factory.mktemp("runs"), ONCE % ("random_unstructured", 0), name="random-ft0")


@pytest.fixture(scope="module")
def global_run(tmp_path_factory):
    return train_into(tmp_path_factory.mktemp("runs"), MLP + "epochs: 3\n"
                      "prune: {method: l1_unstructured, amount: 0.8, global: true, finetune: 1}\n", name="global")


GRADUAL_EPOCHS, GRADUAL_FINETUNE, GRADUAL_AMOUNT = 4, 2, 0.9


@pytest.fixture(scope="module")
def gradual(tmp_path_factory):
    return train_into(tmp_path_factory.mktemp("runs"), MLP + f"epochs: {GRADUAL_EPOCHS}\nprune: {{method: l1_unstructured, "
                      f"amount: {GRADUAL_AMOUNT}, global: true, schedule: gradual, finetune: {GRADUAL_FINETUNE}}}\n",
                      name="gradual")


@pytest.fixture(scope="module")
def channels(tmp_path_factory):
    return train_into(tmp_path_factory.mktemp("runs"), CNN + "epochs: 2\n"
                      "prune: {method: channels, amount: 0.5, finetune: 1}\n", name="channels")


@pytest.fixture(scope="module")
def channels_two_steps(tmp_path_factory):
    return train_into(tmp_path_factory.mktemp("runs"), CNN + "epochs: 2\n"
                      "prune: {method: channels, amount: 0.5, steps: 2, finetune: 1}\n", name="channels2")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    return train_into(tmp_path_factory.mktemp("runs"), "model: mlp(hidden=[128, 64])\ndata: digits\nepochs: 6\n"
                      "optimizer: adam(lr=0.003)\nquantize: dynamic\n", name="quantized")


# -- unstructured pruning: how many zeros, where ---------------------------------------------------

def test_per_layer_pruning_zeros_the_amount_of_every_layer(layerwise):
    layers = weights(layerwise.model)
    assert [w.numel() for w in layers] == [2048, 512, 160]
    for w in layers:
        assert zeros(w) == round(0.8 * w.numel())
    biases = [m.bias for m in layerwise.model.modules() if isinstance(m, nn.Linear)]
    assert all(zeros(b) == 0 for b in biases), "biases are not pruned"
    total = sum(w.numel() for w in layers)
    assert layerwise.metrics["sparsity"] == pytest.approx(sum(zeros(w) for w in layers) / total)


def test_global_pruning_zeros_the_amount_of_all_weights_together(global_run):
    layers = weights(global_run.model)
    total = sum(w.numel() for w in layers)
    assert sum(zeros(w) for w in layers) == round(0.8 * total)
    per_layer = [zeros(w) / w.numel() for w in layers]
    # one threshold for all layers: the layers end up with different sparsities
    assert max(per_layer) - min(per_layer) > 0.05, per_layer
    assert global_run.metrics["sparsity"] == pytest.approx(round(0.8 * total) / total)


@pytest.mark.parametrize("which", ["layerwise", "global_run", "gradual", "random_no_finetune"])
def test_masks_are_made_permanent(which, request):
    model = request.getfixturevalue(which).model
    for module in model.modules():
        assert not hasattr(module, "weight_orig") and not hasattr(module, "weight_mask"), module
        assert not module._forward_pre_hooks, f"a pruning hook is left on {module}"
        assert not torch.nn.utils.prune.is_pruned(module)
    keys = set(model.state_dict())
    assert not any(k.endswith(("_orig", "_mask")) for k in keys), keys
    for layer in (m for m in model.modules() if isinstance(m, LAYERS)):
        assert isinstance(layer.weight, nn.Parameter) and zeros(layer.weight) > 0


def test_checkpoint_loads_into_the_model_and_keeps_the_zeros(layerwise):
    state = torch.load(layerwise.checkpoint, weights_only=True)
    fresh = copy.deepcopy(layerwise.model)
    with torch.no_grad():
        for p in fresh.parameters():
            p.fill_(1.0)
    fresh.load_state_dict(state, strict=True)
    for loaded, returned in zip(weights(fresh), weights(layerwise.model)):
        assert zeros(loaded) == round(0.8 * loaded.numel())
        assert torch.equal(loaded, returned)


def test_zeros_stay_where_pruning_put_them_while_fine_tuning(layerwise, l1_no_finetune):
    # same recipe and seed up to the pruning step; one run fine-tunes 2 epochs afterwards
    for tuned, pruned in zip(weights(layerwise.model), weights(l1_no_finetune.model)):
        assert torch.equal(tuned == 0, pruned == 0), "fine-tuning moved the pruned weights"
        assert not torch.equal(tuned, pruned), "fine-tuning did not train the surviving weights"
    assert layerwise.metrics["epochs_run"] == 5 and l1_no_finetune.metrics["epochs_run"] == 3


def test_l1_prunes_the_smallest_weights_and_random_does_not(l1_no_finetune, random_no_finetune):
    """Both runs train the same dense model (same seed), then prune 80% of each layer without fine-tuning."""
    h1, h2 = l1_no_finetune.history, random_no_finetune.history
    assert h1["train_loss"].tolist() == pytest.approx(h2["train_loss"].tolist(), rel=1e-5)
    for w_l1, w_random in zip(weights(l1_no_finetune.model), weights(random_no_finetune.model)):
        assert zeros(w_random) == zeros(w_l1) == round(0.8 * w_l1.numel())
        both = (w_l1 != 0) & (w_random != 0)
        assert torch.equal(w_l1[both], w_random[both]), "the kept weights are the dense model's"
        # weights that random pruning kept but L1 removed are no larger than any weight L1 kept
        dropped_by_l1 = (w_l1 == 0) & (w_random != 0)
        assert dropped_by_l1.any(), "random pruning chose the same weights as L1"
        assert w_random[dropped_by_l1].abs().max() <= w_l1[w_l1 != 0].abs().min()
        # random pruning keeps weights of all sizes: its smallest kept weight is far below L1's
        assert w_random[w_random != 0].abs().min() < w_l1[w_l1 != 0].abs().min() / 2


def test_history_shows_sparsity_after_pruning_once(layerwise):
    h = layerwise.history
    assert h["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert h["sparsity"].iloc[:3].tolist() == [0.0, 0.0, 0.0]
    assert h["sparsity"].iloc[3:].tolist() == pytest.approx([layerwise.metrics["sparsity"]] * 2)
    assert layerwise.metrics["sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_gradual_sparsity_follows_the_cubic_schedule(gradual):
    n, s_f = GRADUAL_EPOCHS, GRADUAL_AMOUNT
    total = sum(w.numel() for w in weights(gradual.model))
    schedule = [s_f * (1 - (1 - t / n) ** 3) for t in range(0, n + 1)]  # s_0 = 0 … s_n = s_f
    # Pruning to s_t happens at the end of training epoch t, after that epoch's validation: the row of
    # epoch t describes the model validated in it, which was pruned to s_(t-1). Fine-tuning rows show s_f.
    expected = [round(schedule[t - 1] * total) / total for t in range(1, n + 1)] + [round(s_f * total) / total] * 2
    h = gradual.history
    assert len(h) == n + GRADUAL_FINETUNE
    assert h["sparsity"].tolist() == pytest.approx(expected, abs=1e-9)
    assert h["sparsity"].is_monotonic_increasing
    assert gradual.metrics["sparsity"] == pytest.approx(round(s_f * total) / total)
    assert sum(zeros(w) for w in weights(gradual.model)) == round(s_f * total)


def test_gradual_schedule_values():
    from nbopt.techniques.prune import cubic_schedule
    assert cubic_schedule(0.8, 4) == pytest.approx([0.8 * (1 - 0.75 ** 3), 0.8 * (1 - 0.5 ** 3),
                                                     0.8 * (1 - 0.25 ** 3), 0.8])


def test_pruned_models_still_learn(layerwise, global_run, gradual):
    for run in (layerwise, global_run, gradual):
        assert run.metrics["val_acc"] > 0.7, run.name  # 10 classes: chance is 0.1


# -- structured pruning: channels really removed ---------------------------------------------------

def test_channel_pruning_makes_the_model_smaller(channels):
    model = channels.model
    assert parameters(model) == channels.metrics["parameters"]
    assert 8_500 <= parameters(model) <= 9_700, parameters(model)  # about 9.1k of 20,490
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16]
    assert convs[0].in_channels == 1
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert linear.out_features == 10
    assert channels.history["parameters"].tolist() == [CNN_PARAMETERS] * 2 + [parameters(model)]
    assert channels.metrics["compression"]["before"]["parameters"] == CNN_PARAMETERS


def test_channel_pruned_model_takes_the_same_inputs_and_gives_the_same_outputs(channels):
    x = torch.randn(5, 1, 28, 28)
    channels.model.eval()
    with torch.no_grad():
        assert channels.model(x).shape == (5, 10)
    assert channels.predict(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_channel_pruned_checkpoint_loads_into_the_model(channels):
    state = torch.load(channels.checkpoint, weights_only=True)
    fresh = copy.deepcopy(channels.model)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(state, strict=True)
    for a, b in zip(fresh.state_dict().values(), channels.model.state_dict().values()):
        assert torch.equal(a, b)


def test_channel_pruning_in_two_steps(channels, channels_two_steps):
    counts = channels_two_steps.history["parameters"].tolist()
    # 2 training epochs, then [remove channels → fine-tune 1 epoch] twice
    assert len(counts) == 4
    assert counts[:2] == [CNN_PARAMETERS] * 2
    assert CNN_PARAMETERS > counts[2] > counts[3]
    assert counts[3] == parameters(channels_two_steps.model) == parameters(channels.model)


@pytest.mark.parametrize("importance", ["l1", "taylor"])
def test_channel_pruning_of_an_mlp_keeps_inputs_and_classes(importance, train):
    run = train("model: mlp(hidden=[64, 32])\ndata: digits\nepochs: 2\nbatch_size: 128\noptimizer: adam(lr=0.01)\n"
                f"prune: {{method: channels, amount: 0.5, importance: {importance}, finetune: 1}}\n")
    linears = [m for m in run.model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16), (16, 10)]
    assert run.metrics["val_acc"] > 0.7


class ModeProbe(nn.Module):
    """Records whether the model is in training mode on every training forward pass (recognised by the
    batch sizes of digits at batch_size 128, with gradients on — not the pruner's trace or the probes)."""
    modes: list = []

    def forward(self, x):
        if torch.is_grad_enabled() and x.shape[0] in (128, 1437 % 128):  # training batches of digits
            ModeProbe.modes.append(self.training)
        return x


def test_fine_tuning_after_channel_pruning_trains_in_training_mode(train):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.2), ModeProbe(), nn.Flatten(),
                        nn.Linear(8 * 8 * 8, 10))
    ModeProbe.modes.clear()
    run = train("model: net\ndata: digits\nepochs: 1\nbatch_size: 128\n"
                "prune: {method: channels, amount: 0.5, finetune: 1}\n", {"net": net})
    assert [m for m in run.model.modules() if isinstance(m, nn.Conv2d)][0].out_channels == 4
    steps = len(ModeProbe.modes) // 2
    assert len(ModeProbe.modes) == 2 * steps == 24  # 12 training steps, then 12 fine-tuning steps
    assert ModeProbe.modes[:steps] == [True] * steps
    # Dropout and BatchNorm must behave as in training while fine-tuning, too
    assert ModeProbe.modes[steps:] == [True] * steps, "fine-tuning ran with the model in eval mode"


# -- distillation ------------------------------------------------------------------------------------

def _by_hand(student, teacher, task_loss, T, alpha):
    """α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1−α)·task, KL summed over classes, mean over the batch."""
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p = [math.exp(v / T) for v in t_row]
        p = [v / sum(p) for v in p]
        q = [math.exp(v / T) for v in s_row]
        q = [v / sum(q) for v in q]
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    kl = total / len(student)
    return alpha * T * T * kl + (1 - alpha) * float(task_loss)


@pytest.mark.parametrize("T, alpha", [(1.0, 0.5), (4.0, 0.7), (2.5, 1.0), (4.0, 0.0)])
def test_distillation_loss_matches_the_formula(T, alpha):
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(6, 5, generator=generator, dtype=torch.float64) * 3
    teacher = torch.randn(6, 5, generator=generator, dtype=torch.float64) * 3
    task = torch.tensor(1.234, dtype=torch.float64)
    loss = distillation_loss(student, teacher, task, T, alpha)
    assert float(loss) == pytest.approx(_by_hand(student, teacher, task, T, alpha), rel=1e-9)


def test_distillation_loss_edge_cases():
    student = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.3, -0.2]])
    task = torch.tensor(0.77)
    assert float(distillation_loss(student, torch.randn(2, 3), task, 4.0, 0.0)) == pytest.approx(0.77)
    assert float(distillation_loss(student, student.clone(), task, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-6)
    # the soft term pulls the student towards the teacher: its gradient vanishes at the teacher's logits
    s = student.clone().requires_grad_(True)
    distillation_loss(s, student, torch.tensor(0.0), 3.0, 1.0).backward()
    assert s.grad.abs().max() < 1e-6


class ConstantTeacher(nn.Module):
    """A teacher that is sure every digit is a 3; records its state on every forward pass."""
    calls: list = []

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(64, 10)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.copy_(torch.tensor([0.0] * 3 + [8.0] + [0.0] * 6))

    def forward(self, x):
        ConstantTeacher.calls.append((x.shape[0], self.training, any(p.requires_grad for p in self.parameters()),
                                      torch.is_grad_enabled()))
        return self.linear(self.flatten(x))


STUDENT = "model: mlp(hidden=[32])\ndata: digits\nbatch_size: 100\nepochs: 3\noptimizer: adam(lr=0.01)\n"


def test_the_teacher_is_frozen_drives_the_student_and_stays_unchanged_in_the_notebook(train):
    teacher = ConstantTeacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ConstantTeacher.calls.clear()
    run = train(STUDENT + "distill: {teacher: teacher, temperature: 1, alpha: 1.0}\n", {"teacher": teacher})
    calls = ConstantTeacher.calls
    # after the recipe check and the teacher's profile, training: 3 epochs of 14 batches of 100 and one of 37
    training_calls = calls[-45:]
    assert [c[0] for c in training_calls] == ([100] * 14 + [37]) * 3
    # (eval mode, no parameter requires grad, no graph recorded) on every training step
    assert all(c[1:] == (False, False, False) for c in training_calls), "the teacher is not frozen"
    # learning from the teacher alone (alpha 1), the student calls every digit a 3
    from sklearn.datasets import load_digits
    predictions = run.predict(load_digits().data.reshape(-1, 1, 8, 8)).argmax(dim=1)
    assert (predictions == 3).float().mean() > 0.9
    assert run.metrics["val_acc"] < 0.2
    # the notebook's teacher: same weights, still trainable, still in training mode
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert all(p.requires_grad for p in teacher.parameters()) and teacher.training
    assert run.metrics["compression"]["before"]["model"] == "teacher"


def test_alpha_zero_trains_exactly_like_no_distillation(train):
    teacher = ConstantTeacher()
    plain = train(STUDENT)
    distilled = train(STUDENT + "distill: {teacher: teacher, temperature: 4, alpha: 0.0}\n", {"teacher": teacher})
    some = train(STUDENT + "distill: {teacher: teacher, temperature: 4, alpha: 0.5}\n", {"teacher": teacher})
    columns = ["train_loss", "val_loss", "val_acc"]
    assert distilled.history[columns].values.ravel().tolist() == pytest.approx(
        plain.history[columns].values.ravel().tolist(), rel=1e-6)
    assert some.history["train_loss"].tolist() != pytest.approx(plain.history["train_loss"].tolist())


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    run = train_into(folder, "model: mlp(hidden=[64])\ndata: digits\nepochs: 3\noptimizer: adam(lr=0.01)\n",
                     name="cmp-teacher")
    return run, folder


def _same_function(a: nn.Module, b: nn.Module) -> bool:
    x = torch.randn(7, 1, 8, 8)
    a.eval(), b.eval()
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-6)


def test_teacher_as_a_run_as_a_variable_and_by_run_name(teacher_run, monkeypatch):
    run, folder = teacher_run
    student = "model: mlp(hidden=[8])\ndata: digits\n"
    by_object = nbopt.check({"model": "mlp(hidden=[8])", "data": "digits", "distill": {"teacher": run}}, {})
    by_variable = nbopt.check(student + "distill: {teacher: big}\n", {"big": run})
    by_model = nbopt.check(student + "distill: {teacher: big}\n", {"big": run.model})
    by_name = nbopt.check(student + "distill: {teacher: cmp-teacher}\n", {})
    for plan in (by_object, by_variable, by_model, by_name):
        assert _same_function(plan.teacher, run.model)
        assert plan.teacher is not run.model
    # a run of another session: rebuilt from its folder (recipe + best weights)
    from nbopt import run as records
    monkeypatch.delitem(records._SESSION_RUNS, "cmp-teacher")
    monkeypatch.setenv("NBOPT_RUNS_DIR", str(folder))
    by_folder = nbopt.check(student + "distill: {teacher: cmp-teacher}\n", {})
    assert _same_function(by_folder.teacher, run.model)
    with pytest.raises(RecipeError) as error:
        nbopt.check(student + "distill: {teacher: no-such-run}\n", {})
    assert error.value.key == "distill.teacher"
    assert error.value.message == "no notebook variable, run of this session or run folder is named 'no-such-run'"


def test_distilling_from_a_run_by_name_reports_the_teacher(teacher_run, train):
    run, _ = teacher_run
    student = train("model: mlp(hidden=[8])\ndata: digits\nepochs: 3\noptimizer: adam(lr=0.01)\n"
                    "distill: {teacher: cmp-teacher, temperature: 4, alpha: 0.7}\n")
    before = student.metrics["compression"]["before"]
    assert before["model"] == "teacher"
    assert before["parameters"] == parameters(run.model) == 64 * 64 + 64 + 64 * 10 + 10
    assert before["val_acc"] == pytest.approx(run.metrics["val_acc"], abs=1e-6)
    assert student.metrics["compression"]["after"]["parameters"] == parameters(student.model) == 64 * 8 + 8 + 90
    assert student.metrics["val_acc"] > 0.7


def test_teacher_with_other_outputs_is_refused(check):
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(RecipeError) as error:
        check("model: mlp\ndata: digits\ndistill: {teacher: t}\n", {"t": teacher})
    assert error.value.key == "distill.teacher"
    assert error.value.message == "the teacher outputs shape [3] per sample but the data has 10 classes"
    assert str(error.value).startswith("distill.teacher (line 3): ")


def test_teacher_that_cannot_take_the_inputs_is_refused(check):
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(30, 10))
    with pytest.raises(RecipeError) as error:
        check("model: mlp\ndata: digits\ndistill: {teacher: t}\n", {"t": teacher})
    assert error.value.key == "distill.teacher"
    assert error.value.message.startswith("the teacher cannot take this data's inputs: ")


def test_distillation_for_regression_is_refused(check, runs_dir):
    teacher = nn.Sequential(nn.Linear(20, 1))
    with pytest.raises(RecipeError) as error:
        check("model: mlp\ndata: synthetic(n=100, classes=0)\ndistill: {teacher: t}\n", {"t": teacher})
    assert error.value.key == "distill"
    assert error.value.message == "distillation matches class probabilities, so it needs a classification task"
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


COMPARE_DISTIL = ("model: mlp(hidden=[16])\ndata: digits\nepochs: 3\nbatch_size: 128\noptimizer: adam(lr=0.01)\n"
                  "variants:\n{}")


def test_compare_distils_from_an_earlier_variant():
    comparison = nbopt.compare(COMPARE_DISTIL.format(
        "  big: {model: 'mlp(hidden=[128])'}\n  small: {}\n"
        "  distilled: {distill: {teacher: big, temperature: 4, alpha: 0.7}}\n"), {}, live=False)
    big, small, distilled = (comparison.runs[k] for k in ("big", "small", "distilled"))
    assert set(comparison.table.index) == {"big", "small", "distilled"}
    before = distilled.metrics["compression"]["before"]
    # the teacher is the trained big variant, not its untrained starting point
    assert before["model"] == "teacher" and before["parameters"] == parameters(big.model)
    assert before["val_acc"] == pytest.approx(big.metrics["val_acc"], abs=1e-6)
    assert parameters(distilled.model) == parameters(small.model) < parameters(big.model)
    assert distilled.history["train_loss"].tolist() != pytest.approx(small.history["train_loss"].tolist())


def test_compare_refuses_a_teacher_variant_after_its_student(runs_dir):
    with pytest.raises(RecipeError) as error:
        nbopt.compare(COMPARE_DISTIL.format(
            "  small: {}\n  distilled: {distill: {teacher: big}}\n  big: {model: 'mlp(hidden=[128])'}\n"),
            {}, live=False)
    assert error.value.message == "variant 'distilled' distils from variant 'big', which must come before it"
    assert not runs_dir.exists() or not any(runs_dir.iterdir()), "something trained before the error"


# -- quantization --------------------------------------------------------------------------------------

def test_quantized_model_has_int8_linear_layers(quantized):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    model = quantized.model
    kinds = [type(m) for m in model.modules() if isinstance(m, (nn.Linear, DynamicLinear))]
    assert kinds == [DynamicLinear] * 3
    assert all(m.weight().dtype == torch.qint8 for m in model.modules() if isinstance(m, DynamicLinear))
    assert quantized.predict(torch.rand(4, 1, 8, 8) * 16).shape == (4, 10)
    assert (quantized.folder / "model-int8.pt").exists()


def test_quantized_accuracy_stays_close_to_the_float_model(quantized):
    m = quantized.metrics
    assert {"float_val_acc", "val_acc", "float_val_loss", "val_loss"} <= set(m)
    assert m["float_val_acc"] > 0.9
    assert abs(m["val_acc"] - m["float_val_acc"]) <= 0.05  # stated tolerance: 5 points of accuracy on digits


def test_quantized_report_shows_the_smaller_model(quantized):
    before, after = quantized.metrics["compression"]["before"], quantized.metrics["compression"]["after"]
    assert before["model"] == "float32"
    assert after["size_kb"] < 0.5 * before["size_kb"]
    assert after["parameters"] == before["parameters"] == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert after["macs"] == before["macs"]  # int8 layers do the same multiply-accumulates
    assert before["val_acc"] == pytest.approx(quantized.metrics["float_val_acc"], abs=1e-6)
    assert after["val_acc"] == pytest.approx(quantized.metrics["val_acc"], abs=1e-6)


def test_the_float_checkpoint_of_a_quantized_run_loads_into_the_float_architecture(quantized):
    float_net = nbopt.check(quantized.recipe, {}).model.net
    float_net.load_state_dict(torch.load(quantized.checkpoint, weights_only=True), strict=True)


class LitNet(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        outputs = self(batch[0])
        self.log("val_loss", F.cross_entropy(outputs, batch[1]))
        self.log("val_acc", (outputs.argmax(dim=1) == batch[1]).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters())


def test_pruning_a_lightning_module(train):
    run = train("model: LitNet\ndata: digits\nepochs: 2\nprune: {method: l1_unstructured, amount: 0.5, finetune: 1}\n",
                {"LitNet": LitNet})
    assert isinstance(run.model, LitNet)
    assert [zeros(w) for w in weights(run.model)] == [320]
    assert not any(k.endswith(("_orig", "_mask")) for k in run.model.state_dict())
    assert run.history["sparsity"].tolist() == [0.0, 0.0, 0.5]
    run.model.load_state_dict(torch.load(run.checkpoint, weights_only=True), strict=True)


def test_quantizing_a_lightning_module_is_refused(check):
    with pytest.raises(RecipeError) as error:
        check("model: LitNet\ndata: digits\nquantize: dynamic\n", {"LitNet": LitNet})
    assert error.value.key == "quantize"
    assert error.value.message == ("quantize works on plain nn.Module models; quantize your LightningModule's "
                                   "network yourself after training")


# -- the before/after report -------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["layerwise", "channels", "quantized", "gradual"])
def test_report_keys(which, request):
    report = request.getfixturevalue(which).metrics["compression"]
    assert set(report) == {"before", "after"}
    assert set(report["after"]) == REPORT_KEYS
    assert set(report["before"]) >= REPORT_KEYS - {"val_acc"}
    for side in report.values():
        assert side["size_kb"] > 0 and side["latency_ms_batch1"] > 0 and side["latency_ms_batch64"] > 0


def test_report_of_unstructured_pruning_counts_the_zeros(layerwise):
    before, after = layerwise.metrics["compression"]["before"], layerwise.metrics["compression"]["after"]
    model = layerwise.model
    assert before["model"] == "dense"
    assert before["parameters"] == after["parameters"] == parameters(model) == 64 * 32 + 32 + 32 * 16 + 16 + 170
    assert before["nonzero_parameters"] == before["parameters"]
    assert after["nonzero_parameters"] == sum(int((p != 0).sum()) for p in model.parameters())
    assert after["nonzero_parameters"] == parameters(model) - sum(round(0.8 * w.numel()) for w in weights(model))
    assert after["macs"] == before["macs"]  # zeros are multiplied all the same
    # the dense model reported is the best epoch of training before pruning
    best = layerwise.history.iloc[:3]["val_loss"].idxmin()
    assert before["val_acc"] == pytest.approx(layerwise.history["val_acc"][best], abs=1e-6)
    assert after["val_acc"] == pytest.approx(layerwise.metrics["val_acc"])


def test_report_of_channel_pruning_matches_the_model(channels):
    before, after = channels.metrics["compression"]["before"], channels.metrics["compression"]["after"]
    assert before["parameters"] == CNN_PARAMETERS and after["parameters"] == parameters(channels.model)
    assert after["parameters"] / before["parameters"] == pytest.approx(parameters(channels.model) / CNN_PARAMETERS)
    assert after["macs"] < 0.5 * before["macs"]
    assert after["size_kb"] < 0.6 * before["size_kb"]
    rows = {row[0]: row[1:] for row in compression_rows(channels)}
    assert rows["parameters"] == (f"{CNN_PARAMETERS:,}", f"{parameters(channels.model):,}",
                                  f"{parameters(channels.model) / CNN_PARAMETERS:.2f}×")


def test_summary_html_holds_the_before_after_table(channels, layerwise):
    page = channels._repr_html_()
    for label in ("after/before", "parameters", "non-zero parameters", "size (KB)", "MACs",
                  "CPU latency, batch 1 (ms)", "CPU latency, batch 64 (ms)", "val_acc", "dense"):
        assert f"<td style='text-align:left'>{label}</td>" in page or f"<th>{label}</th>" in page, label
    assert f"{parameters(channels.model) / CNN_PARAMETERS:.2f}×" in page
    assert "sparsity" in layerwise._repr_html_() and "80.0% of Linear/Conv weights are zero" in repr(layerwise)
    assert "after/before" in repr(layerwise)


def test_no_report_without_compression(train):
    run = train("model: mlp(hidden=[8])\ndata: iris\nepochs: 1\n")
    assert "compression" not in run.metrics and "sparsity" not in run.metrics
    assert "after/before" not in run._repr_html_()


# -- combinations ------------------------------------------------------------------------------------

def test_prune_with_early_stopping(train):
    run = train(MLP.replace("lr=0.01", "lr=0.05") + "epochs: 40\nearly_stopping: {patience: 2}\n"
                "prune: {method: l1_unstructured, amount: 0.5, finetune: 4}\n")
    assert run.metrics["epochs_run"] < 44, "early stopping never stopped"
    assert run.status == "stopped early"
    for w in weights(run.model):
        assert zeros(w) == round(0.5 * w.numel())
    finetune_rows = run.history[run.history["sparsity"] > 0]
    assert 1 <= len(finetune_rows) <= 4 and finetune_rows.index.min() == len(run.history) - len(finetune_rows)


def test_channel_pruning_with_augmentation(train):
    run = train(CNN + "epochs: 1\naugment: [hflip, noise(0.1)]\nprune: {method: channels, amount: 0.5, finetune: 1}\n")
    assert parameters(run.model) < CNN_PARAMETERS / 2
    assert run.history["parameters"].tolist()[-1] == parameters(run.model)


def test_gradual_pruning_with_augmentation(train):
    run = train("model: cnn(width=8)\ndata: synthetic(n=200, shape=[1, 12, 12], classes=4)\nepochs: 2\n"
                "augment: [hflip, translate(0.1)]\nprune: {amount: 0.6, schedule: gradual, global: true, finetune: 1}\n")
    total = sum(w.numel() for w in weights(run.model))
    assert sum(zeros(w) for w in weights(run.model)) == round(0.6 * total)


def test_prune_with_a_scheduler_fine_tunes_at_the_prune_lr(train):
    run = train(MLP + "epochs: 4\nscheduler: step(step_size=1, gamma=0.5)\n"
                "prune: {method: l1_unstructured, amount: 0.5, finetune: 2, lr: 0.002}\n")
    assert run.history["lr"].tolist() == pytest.approx([0.01, 0.005, 0.0025, 0.00125, 0.002, 0.002])


def test_gradual_prune_with_a_scheduler_fine_tunes_at_the_optimizers_lr(train):
    run = train(MLP + "epochs: 4\nscheduler: cosine\n"
                "prune: {method: l1_unstructured, amount: 0.5, schedule: gradual, finetune: 2}\n")
    cosine = [0.01 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert run.history["lr"].tolist() == pytest.approx(cosine + [0.01, 0.01])
    assert run.history["sparsity"].iloc[-1] == pytest.approx(0.5, abs=1e-3)


def test_compare_pruning_amounts():
    comparison = nbopt.compare(MLP + "epochs: 3\nvariants:\n  dense: {}\n"
                               "  p50: {prune: {method: l1_unstructured, amount: 0.5, finetune: 1}}\n"
                               "  p80: {prune: {method: l1_unstructured, amount: 0.8, finetune: 1}}\n", {}, live=False)
    runs = comparison.runs
    assert "sparsity" not in runs["dense"].metrics
    assert runs["p50"].metrics["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert runs["p80"].metrics["sparsity"] == pytest.approx(0.8, abs=1e-3)
    for name, amount in (("p50", 0.5), ("p80", 0.8)):
        assert [zeros(w) for w in weights(runs[name].model)] == [round(amount * w.numel())
                                                                 for w in weights(runs[name].model)]
    # the same dense training precedes the pruning in every variant
    dense_rows = runs["dense"].history["train_loss"].tolist()
    assert runs["p50"].history["train_loss"].iloc[:3].tolist() == pytest.approx(dense_rows)
    assert runs["p80"].history["train_loss"].iloc[:3].tolist() == pytest.approx(dense_rows)
    assert set(comparison.table.index) == {"dense", "p50", "p80"}


def test_a_teacher_run_with_other_normalisation_sees_the_inputs_it_was_trained_on():
    teacher = nbopt.train("model: mlp(hidden=[64])\ndata: digits\nepochs: 2\nnormalize: none\n", {}, live=False)
    plan = nbopt.check("model: mlp(hidden=[8])\ndata: digits\nepochs: 1\ndistill: {teacher: t}\n", {"t": teacher})
    x, _ = next(iter(plan.data.val))
    x = torch.as_tensor(x).float()
    with torch.no_grad():
        seen = plan.teacher(plan.data.normalization.apply(x))  # what the student's batches look like
        trained_on = teacher.model.eval()(x)
    torch.testing.assert_close(seen, trained_on, atol=1e-4, rtol=1e-4)

