"""The LightningModule that a recipe builds around a plain ``nn.Module``.

Per-step work is kept to the forward pass, the loss and one tensor add: losses are summed on the
device and read once per epoch, and nothing is logged per step, so the loop costs little more than
a hand-written one.
"""
from __future__ import annotations

import types

import torch
from torch import nn

from nbopt.components import Component
from nbopt.lightning_package import OnLightning, default_package, overrides
from nbopt.metrics import task_metric
from nbopt.step_chunks import StepChunk
from nbopt.techniques.augment import build_augmenter
from nbopt.techniques.distill import distillation_loss, frozen
from nbopt.techniques.losses import build_loss
from nbopt.techniques.optimizers import OPTIMIZERS, build_optimizer
from nbopt.techniques.schedulers import build_schedule
from nbopt.techniques.scores import Scores


def configure_from_recipe(module, recipe, epochs: int, lr: float | None = None, schedule: bool = True):
    """The recipe's optimizer and schedule for a LightningModule's trainable parameters, in Lightning's format.

    `lr` (from an LR range test, or for fine-tuning) replaces the optimizer's own learning rate;
    fine-tuning after pruning runs without the schedule (`schedule=False`).
    """
    component = recipe.optimizer
    if lr is not None:
        component = Component(component.name, (), {**OPTIMIZERS.resolve(component)[1], "lr": lr})
    scaled = str(recipe.precision).startswith("16") and recipe.grad_clip is not None
    optimizer = build_optimizer(component, [p for p in module.parameters() if p.requires_grad], fused_ok=not scaled)
    if not recipe.scheduler or not schedule:
        return optimizer
    schedule = build_schedule(recipe.scheduler, optimizer, epochs, int(module.trainer.estimated_stepping_batches))
    config = {"scheduler": schedule.scheduler, "interval": schedule.interval}
    if schedule.monitor:
        config["monitor"] = schedule.monitor
    return {"optimizer": optimizer, "lr_scheduler": config}


_PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "_train_loss_sum", "_train_batches", "_val_loss_sum",
                               "_val_samples"})


class RecipeModule(OnLightning):
    """Trains `net` with the recipe's loss, optimizer and schedule; reports val loss, the task's metric and
    the recipe's `metrics:`. A LightningModule of the package that trains built-in models
    (``RecipeModule.on(default_package())``)."""

    lightning_base = "LightningModule"

    def __init__(self, net: nn.Module, loss_fn: nn.Module, recipe, task: str, num_classes: int | None,
                 normalization=None, augmenter: nn.Module | None = None, num_outputs: int | None = None):
        super().__init__()
        self.net = net
        self.augmenter = augmenter  # training batches only
        self.lr_override: float | None = None
        self.use_schedule = True
        self._teacher: list[nn.Module] = []  # a list keeps the frozen teacher out of parameters and state_dict
        self.temperature, self.alpha = 1.0, 0.0
        self.loss_fn = loss_fn
        self.recipe = recipe
        self.task = task
        self.metric_key = f"val_{task_metric(task)}"
        self.val_scores = Scores(recipe.metrics, task, num_classes, num_outputs)
        self.metric_keys = [f"val_{name}" for name in self.val_scores.names]  # the task's metric first
        self.normalization = normalization  # applied to every batch on the device, after augmentation
        self.channels_last = False  # image batches in NHWC layout, for a conv net that trains faster that way
        self._train_loss_sum: torch.Tensor | None = None
        self._train_batches = 0
        self._val_loss_sum: torch.Tensor | None = None
        self._val_samples = 0

    def set_teacher(self, teacher: nn.Module, temperature: float, alpha: float) -> None:
        self._teacher = [frozen(teacher)]
        self.temperature, self.alpha = temperature, alpha

    def on_fit_start(self):
        if self._teacher:
            self._teacher[0].to(self.device).eval()

    def forward(self, x):
        return self.net(x)

    def __setattr__(self, name, value):
        # Lightning sets `_current_fx_name` dozens of times a step, and every step adds to the epoch's
        # loss; nn.Module's checks for parameters and submodules made that a tenth of a small model's step.
        if name in _PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalization is not None:
            x = self.normalization.apply(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def training_step(self, batch, batch_idx):
        if isinstance(batch, StepChunk):  # several steps by hand (nbopt.step_chunks)
            for step, (x, y) in batch:
                self._train_on(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True),
                               step, batch.steps_in_epoch)
            return None
        return self._train_on(batch[0], batch[1], batch_idx, self.trainer.num_training_batches)

    def _train_on(self, x: torch.Tensor, y: torch.Tensor, step: int, steps_in_epoch: int) -> torch.Tensor:
        """One batch's loss, added to the epoch's; and its optimizer step when the module steps by hand."""
        if self.augmenter is not None:
            x, y = self.augmenter(x, y)
        x = self._inputs(x)
        outputs = self.net(x)
        loss = self.loss_fn(outputs, y)
        if self._teacher:
            with torch.no_grad():
                teacher_outputs = self._teacher[0](x)
            loss = distillation_loss(outputs, teacher_outputs, loss, self.temperature, self.alpha)
        detached = loss.detach()
        self._train_loss_sum = detached if self._train_loss_sum is None else self._train_loss_sum + detached
        self._train_batches += 1
        if not self.automatic_optimization:
            self._step_by_hand(loss, step, steps_in_epoch)
        return loss

    def _step_by_hand(self, loss: torch.Tensor, step: int, steps_in_epoch: int) -> None:
        """What Lightning's automatic optimisation does for this module, without its closure and hook
        layers: the loss over `accumulate`, backward, and every `accumulate` batches (and at the epoch's
        last) the recipe's clipping, one optimizer step and zeroed gradients. Same arithmetic, same order.

        Backward is the tensor's own: ``manual_backward`` would add the before/after-backward hooks of
        every callback (nothing here implements them) and, for precision 32 or bf16, nothing else,
        at a tenth of a small model's step."""
        accumulate = self.recipe.accumulate
        (loss / accumulate if accumulate > 1 else loss).backward()
        if (step + 1) % accumulate and step + 1 < steps_in_epoch:
            return
        optimizer = self.optimizers()
        if self.recipe.grad_clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.recipe.grad_clip, gradient_clip_algorithm="norm")
        # LightningOptimizer.step() would add a closure and the on_before_optimizer_step hooks (nothing here
        # implements them; precision 32/bf16 has nothing to unscale): about 5% of a small model's step.
        # Its step counting stays, so `trainer.global_step` counts optimizer steps as before.
        optimizer._on_before_step()
        optimizer.optimizer.step()
        optimizer._on_after_step()
        optimizer.zero_grad()

    def validation_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        outputs = self.net(self._inputs(x))
        loss = self.loss_fn(outputs, y).detach() * len(y)
        self._val_loss_sum = loss if self._val_loss_sum is None else self._val_loss_sum + loss
        self._val_samples += len(y)
        self.val_scores.update(outputs, y)

    def on_validation_epoch_end(self):
        if not self._val_samples:
            return
        scores = {f"val_{name}": value for name, value in self.val_scores.scalars().items()}
        values = {"val_loss": self._val_loss_sum / self._val_samples, **scores}
        if self.trainer.world_size > 1:
            self.log_dict(values, sync_dist=True)
        else:  # what log_dict leaves for callbacks and schedules, without its bookkeeping: 5% of a small epoch
            self.trainer.callback_metrics.update(values)
        self.val_scores.reset()
        self._val_loss_sum, self._val_samples = None, 0

    def pop_train_loss(self) -> float | None:
        """Mean training loss of the epoch so far, and start a new one."""
        if not self._train_batches:
            return None
        value = float(self._train_loss_sum) / self._train_batches
        self._train_loss_sum, self._train_batches = None, 0
        return value

    def configure_optimizers(self):
        return configure_from_recipe(self, self.recipe, self.recipe.epochs, self.lr_override, self.use_schedule)


@torch.no_grad()
def evaluate(module: RecipeModule, loader, net: nn.Module | None = None) -> dict[str, float]:
    """Loss, the task's metric and the recipe's `metrics:` on a loader, outside any Trainer: of the
    module's own net, or of `net` (a quantized copy, say) fed the same normalised inputs."""
    net = net if net is not None else module.net
    device = next(iter(net.parameters()), torch.empty(0)).device if net is not module.net else module.device
    was_training = net.training
    net.eval()
    scores = module.val_scores.unsynced().to(device)
    total, count = 0.0, 0
    for batch in loader:
        x, y = batch[0].to(device), batch[1].to(device)
        outputs = net(module._inputs(x))
        total += float(module.loss_fn(outputs, y)) * len(y)
        count += len(y)
        scores.update(outputs, y)
    net.train(was_training)
    return {"loss": total / max(count, 1), **{name: float(value) for name, value in scores.scalars().items()}}


def build_lightning_module(plan) -> tuple[nn.Module, nn.Module]:
    """(the LightningModule that trains, the model whose weights are the run's): our RecipeModule around a
    plain model, or a user's LightningModule as it is, with the recipe's optimizer and batches."""
    recipe, data = plan.recipe, plan.data
    augmenter = build_augmenter(recipe.augment, data.input_shape, data.task, data.num_classes)
    if not plan.model.is_lightning:
        loss_fn = build_loss(plan.loss, data.task, data.num_classes, class_weights=plan.class_weights)
        on_package = RecipeModule.on(default_package())
        module = on_package(plan.model.net, loss_fn, recipe, data.task, data.num_classes, data.normalization,
                            augmenter, data.num_outputs)
        if plan.teacher is not None:
            module.set_teacher(plan.teacher, recipe.distill.temperature, recipe.distill.alpha)
        return module, plan.model.net
    module = plan.model.net
    module.lr_override, module.use_schedule = None, True
    wants_recipe_optimizer = any(k in recipe.raw for k in ("optimizer", "scheduler", "lr_find"))
    if wants_recipe_optimizer or not overrides(module, "configure_optimizers"):
        module.configure_optimizers = types.MethodType(
            lambda self: configure_from_recipe(self, recipe, recipe.epochs, self.lr_override, self.use_schedule),
            module)
    if augmenter is not None or data.normalization is not None:
        _prepare_batches(module, augmenter, data.normalization)
    return module, module


def _prepare_batches(module, augmenter, normalization) -> None:
    """A user's own steps stay as they are; their batches arrive augmented (training only) and normalised."""
    original = module.on_after_batch_transfer

    def on_after_batch_transfer(batch, dataloader_idx):
        batch = original(batch, dataloader_idx)
        x, y = batch[0], batch[1]
        if augmenter is not None and module.trainer is not None and module.trainer.training:
            x, y = augmenter(x, y)
        if normalization is not None:
            x = normalization.apply(x)
        return (x, y, *batch[2:])

    module.on_after_batch_transfer = on_after_batch_transfer
