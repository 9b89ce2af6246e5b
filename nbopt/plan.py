"""``check``: everything a run needs, resolved and verified, without training.

A ``Plan`` is the validated recipe plus the real model and data. Building it runs one batch through
the model, so shape mistakes surface here as a one-line RecipeError instead of a traceback from
inside Lightning, and ``--dry-run`` shows what will happen.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from nbopt.components import Component
from nbopt.compression import plan_stages
from nbopt.data.builtin import DATASETS
from nbopt.data.resolve import DataBundle, resolve_data
from nbopt.data.validate import quoted
from nbopt.environment import in_notebook, notebook_namespace
from nbopt.errors import RecipeError, shown
from nbopt.lightning_package import overrides
from nbopt.metrics import task_metric
from nbopt.models.builtin import MODELS
from nbopt.models.resolve import ResolvedModel, build_model
from nbopt.namespace import lookup
from nbopt.parallel import preflight
from nbopt.recipe import Recipe, parse_recipe
from nbopt.stages import describe
from nbopt.techniques.augment import MIXING, check_augment
from nbopt.techniques.balance import class_weights, describe_balance, describe_counts
from nbopt.techniques.distill import OnItsOwnInputs
from nbopt.techniques.losses import check_loss, default_loss
from nbopt.techniques.schedulers import monitors
from nbopt.techniques.scores import check_task, not_reported_hint, score_keys
from nbopt.techniques.surgery import apply_surgery


@dataclass
class Plan:
    recipe: Recipe
    data: DataBundle
    model: ResolvedModel
    loss: Component
    surgery: list[str]
    teacher: nn.Module | None = None
    interactive: bool = False  # checked for a notebook kernel, which starts processes differently

    @property
    def metric_key(self) -> str:
        return f"val_{task_metric(self.data.task)}"

    @property
    def reported(self) -> list[str]:
        """The validation columns of this run's history: val_loss, the task's metric, then `metrics:`."""
        return ["val_loss", self.metric_key, *(f"val_{key}" for key in score_keys(self.recipe.metrics))]

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.net.parameters())

    @property
    def steps_per_process(self) -> int:
        """Optimizer steps per epoch in each process (DDP splits every epoch among the devices)."""
        devices = (self.recipe.devices if isinstance(self.recipe.devices, int) else 1) * self.recipe.nodes
        if devices == 1 or not self.data.in_memory:
            return self.data.steps_per_epoch
        per_process = -(-self.data.sizes["train"] // devices)
        return -(-per_process // self.recipe.batch_size)

    @property
    def class_weights(self) -> torch.Tensor | None:
        """The loss's per-class weights under `balance: weights` (None: every sample counts the same)."""
        return class_weights(self.data.class_counts) if self.recipe.balance == "weights" else None

    @cached_property
    def sample_input(self) -> torch.Tensor:
        """One validation input, normalised as the model sees it, for MACs, latency and layout trials.

        Kept after the first use: a run asks for it several times, and a batch of streamed images is a
        decode of files each time."""
        x = torch.as_tensor(next(iter(self.data.val))[0][:1]).float()
        if self.data.normalization is not None:
            x = self.data.normalization.apply(x)
        return x[0]

    def techniques(self) -> list[str]:
        r = self.recipe
        items = [f"loss {self.loss}", f"optimizer {r.optimizer}"]
        if r.balance:
            items.append(describe_balance(r.balance, self.data.class_counts, self.data.classes))
        if r.scheduler:
            items.append("scheduler " + " → ".join(str(s) for s in r.scheduler))
        items += self.surgery
        if r.augment:
            items.append("augment training batches: " + ", ".join(str(a) for a in r.augment))
        if r.distill:
            items.append(f"distillation from a {sum(p.numel() for p in self.teacher.parameters()):,}-parameter "
                         f"teacher (T={r.distill.temperature}, alpha={r.distill.alpha})")
        if r.prune:
            p = r.prune
            how = (f"remove {p.amount:.0%} of channels in {p.steps} step(s), importance {p.importance}"
                   if p.method == "channels" else f"{p.method} to {p.amount:.0%} sparsity "
                   f"({'gradually over the epochs' if p.schedule == 'gradual' else 'after training'}"
                   f"{', global' if p.global_ else ', per layer'})")
            items.append(f"prune: {how}, fine-tune {p.finetune} epoch(s)")
        if r.quantize:
            items.append("int8 dynamic quantization of Linear layers after training")
        if r.lr_find:
            items.append("LR range test first; trains with the suggested LR")
        if self.data.normalization:
            items.append("normalize: mean/std of the training split" if r.normalize == "auto" else "normalize: given")
        if r.early_stopping:
            e = r.early_stopping
            items.append(f"early stopping on {e.monitor} (patience {e.patience}), best weights restored")
        else:
            items.append("best weights (lowest val_loss) restored at the end")
        if r.grad_clip:
            items.append(f"gradient clipping at {r.grad_clip}")
        if r.accumulate > 1:
            items.append(f"gradient accumulation over {r.accumulate} batches")
        if r.devices != 1 or r.nodes != 1 or r.strategy != "auto":
            world = r.devices * r.nodes if isinstance(r.devices, int) else r.devices
            where = f" ({r.nodes} nodes × {r.devices} devices)" if r.nodes > 1 else ""
            items.append(f"{world} processes{where}, strategy {r.strategy}: each process takes 1/{world} of every "
                         f"epoch; effective batch size {r.batch_size} × {world}")
        if r.precision not in ("32-true", "32"):
            items.append(f"precision {r.precision}")
        return items

    def rows(self) -> list[tuple[str, str]]:
        d = self.data
        sizes = ", ".join(f"{k} {v:,}" for k, v in d.sizes.items())
        classes = f"{d.num_classes} classes" if d.task == "classification" else f"{d.num_outputs} target(s)"
        return [
            ("model", f"{self.model.label} · {self.parameters:,} parameters"),
            ("data", d.description),
            ("task", f"{d.task}, {classes}, metric {self.metric_key}"
                     + (f" (also {', '.join(self.reported[2:])})" if self.recipe.metrics else "")),
            ("sample shape", str(list(d.input_shape))),
            ("splits", sizes + f" (seed {self.recipe.seed})"),
            *([("train classes", describe_counts(d.class_counts, d.classes))] if d.class_counts else []),
            ("training", f"{self.recipe.epochs} epochs × {self.steps_per_process} steps, batch size "
                         f"{self.recipe.batch_size if d.in_memory else 'from your DataLoader'}"),
            ("techniques", "; ".join(self.techniques())),
        ] + self._stage_rows() + [("note", n) for n in d.notes]

    def _stage_rows(self) -> list[tuple[str, str]]:
        """The order of a compression run's stages; a plain run is one fit and needs no row."""
        stages = plan_stages(self.recipe, self.teacher is not None)
        return [("stages", describe(stages))] if len(stages) > 1 else []

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in self.rows())
        net = html.escape(str(self.model.net))
        return (f"<div><b>nbopt plan</b> (nothing trained)<table>{rows}</table>"
                f"<details><summary>model layers</summary><pre>{net}</pre></details></div>")

    def __repr__(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        return "nbopt plan (nothing trained)\n" + "\n".join(f"  {k.ljust(width)}  {v}" for k, v in self.rows())


def check(recipe: str | dict | Recipe, namespace: dict | None = None, *, interactive: bool | None = None) -> Plan:
    """Validate a recipe and resolve its model and data, without training.

    `namespace` is where names like ``model: net`` are looked up (default: the notebook's variables);
    `interactive` says whether the run will start from a notebook kernel (default: whether this is one).
    """
    recipe = parse_recipe(recipe)
    interactive = in_notebook() if interactive is None else interactive
    preflight(recipe, interactive)
    namespace = notebook_namespace() if namespace is None else namespace
    data_ref = lookup(recipe.data, "data", DATASETS, namespace, recipe.line("data"))
    model_ref = lookup(recipe.model, "model", MODELS, namespace, recipe.line("model"))
    data = resolve_data(data_ref, recipe)
    model = build_model(model_ref, data.input_shape, data.num_outputs, recipe.seed, recipe.line("model"))
    loss = recipe.loss or Component(default_loss(data.task))
    check_loss(loss, data.task, data.num_classes, "loss", recipe.line("loss"))
    check_augment(recipe.augment, data.input_shape, data.task, recipe.line("augment"))
    if model.is_lightning and recipe.distill:
        raise RecipeError("distillation replaces the training loss, which your own LightningModule defines; "
                          "use a plain nn.Module as the student", key="distill", line=recipe.line("distill"))
    if model.is_lightning and any(a.name in MIXING for a in recipe.augment):
        raise RecipeError("mixup/cutmix change the targets into class probabilities, which your own "
                          "LightningModule's training_step does not expect; use image transforms only",
                          key="augment", line=recipe.line("augment"))
    surgery = apply_surgery(model.net, recipe)
    _check_trainable(model, recipe)
    teacher = resolve_teacher(recipe, namespace, data) if recipe.distill else None
    if recipe.quantize and model.is_lightning:
        raise RecipeError("quantize works on plain nn.Module models; quantize your LightningModule's network "
                          "yourself after training", key="quantize", line=recipe.line("quantize"))
    plan = Plan(recipe, data, model, loss, surgery, teacher, interactive)
    _check_metrics(plan)
    _check_monitor(plan)
    _check_balance(plan)
    if model.is_lightning:
        _check_own_steps(plan)
    else:
        _check_forward(plan)
    return plan


def _check_trainable(model: ResolvedModel, recipe: Recipe) -> None:
    """An optimizer needs weights to move; without any, torch would refuse deep inside Lightning."""
    parameters = list(model.net.parameters())
    if any(p.requires_grad for p in parameters):
        return
    found = (f"its {sum(p.numel() for p in parameters):,} parameters are all frozen (requires_grad=False)"
             if parameters else f"{type(model.net).__name__} has no parameters")
    raise RecipeError(f"'{model.label}' has nothing to train: {found}; give it a layer with weights (nn.Linear, "
                      "nn.Conv2d) or unfreeze them", key="model", line=recipe.line("model"))


def _check_own_steps(plan: Plan) -> None:
    """A user's LightningModule must validate: the history, best weights and final scores come from it."""
    for step in ("training_step", "validation_step"):
        if not overrides(plan.model.net, step):
            raise RecipeError(f"your LightningModule {type(plan.model.net).__name__} has no {step}; nbopt "
                              f"validates every epoch to keep the best weights, so define {step} and log "
                              "val_loss in validation_step (self.log('val_loss', loss))",
                              key="model", line=plan.recipe.line("model"))


def resolve_teacher(recipe: Recipe, namespace: dict, data: DataBundle) -> nn.Module:
    """The teacher as a frozen copy: a notebook model or Run, a Run made earlier in this session, or a
    run folder rebuilt from its recipe and best weights."""
    import copy

    from nbopt.run import Run, session_run
    line = recipe.line("distill.teacher") or recipe.line("distill")
    if data.task != "classification":
        raise RecipeError("distillation matches class probabilities, so it needs a classification task",
                          key="distill", line=line)
    ref = recipe.distill.teacher
    if isinstance(ref, str):
        ref = namespace[ref] if ref in namespace else session_run(ref) or _rebuild_teacher(ref, namespace, line)
    if isinstance(ref, Run):
        student = data.normalization.to_dict() if data.normalization is not None else None
        ref = ref.model if ref.normalization == student else OnItsOwnInputs(ref.model, student, ref.normalization)
    if not isinstance(ref, nn.Module):
        raise RecipeError(f"the teacher must be a model, a Run or a run name, got {type(ref).__name__}",
                          key="distill.teacher", line=line)
    teacher = copy.deepcopy(ref).cpu().eval()
    x, _ = next(iter(data.val))
    x = torch.as_tensor(x)[:4].float()
    x = data.normalization.apply(x) if data.normalization is not None else x
    try:
        with torch.no_grad():
            out = teacher(x)
    except Exception as exc:  # the teacher not fitting the data is the user's mistake to fix
        raise RecipeError(f"the teacher cannot take this data's inputs: {str(exc).splitlines()[0]}",
                          key="distill.teacher", line=line) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != data.num_outputs:
        raise RecipeError(f"the teacher outputs shape {list(getattr(out, 'shape', [])[1:])} per sample but the data "
                          f"has {data.num_outputs} classes", key="distill.teacher", line=line)
    return teacher


def _rebuild_teacher(name: str, namespace: dict, line: int | None):
    """The Run of a teacher's run folder: its recipe rebuilds the architecture, best.pt fills in the weights."""
    from nbopt.run import load_run
    try:
        run = load_run(name, namespace)
    except RecipeError:
        raise RecipeError(f"no notebook variable, run of this session or run folder is named '{name}'",
                          key="distill.teacher", line=line) from None
    if run.model is None:
        raise RecipeError(f"run '{name}' cannot be rebuilt from its recipe (its model changed shape, e.g. by "
                          "channel pruning); pass its Run object as the teacher", key="distill.teacher",
                          line=line)
    return run


def _check_metrics(plan: Plan) -> None:
    """`metrics:` are computed by nbopt's own module, on predictions of the data's task."""
    recipe = plan.recipe
    if recipe.metrics and plan.model.is_lightning:
        raise RecipeError("`metrics:` are computed by nbopt's own module; your LightningModule logs its own "
                          "(self.log('val_f1', ...)), and those can be monitored", key="metrics",
                          line=recipe.line("metrics"))
    check_task(recipe.metrics, plan.data.task, plan.data.num_classes, recipe.line("metrics"))


def _check_monitor(plan: Plan) -> None:
    """Early stopping and a plateau schedule can only watch what the run reports (a user's LightningModule
    may log more)."""
    recipe = plan.recipe
    if plan.model.is_lightning:
        return
    watched = [(monitor, "scheduler", recipe.line("scheduler")) for monitor in monitors(recipe.scheduler)]
    if recipe.early_stopping:
        watched.append((recipe.early_stopping.monitor, "early_stopping.monitor",
                        recipe.line("early_stopping.monitor") or recipe.line("early_stopping")))
    for monitor, key, line in watched:
        if monitor not in plan.reported:
            raise RecipeError(f"cannot monitor {shown(monitor)}; this run reports {', '.join(plan.reported)}"
                              + not_reported_hint(monitor, plan.reported), key=key, line=line)


def _check_balance(plan: Plan) -> None:
    """Balancing needs classes, their training counts, and (for weights) a loss that nbopt computes."""
    recipe, data, line = plan.recipe, plan.data, plan.recipe.line("balance")
    if recipe.balance is None:
        return
    if data.task != "classification":
        raise RecipeError("balance evens out classes but the task is regression; remove `balance:`",
                          key="balance", line=line)
    if data.class_counts is None:
        raise RecipeError("balance counts the classes of in-memory data, but your DataLoaders bring their own "
                          "batches; give your training DataLoader a WeightedRandomSampler, or pass (X, y) arrays "
                          "or a DataFrame", key="balance", line=line)
    if recipe.balance == "weights" and plan.model.is_lightning:
        raise RecipeError("your LightningModule computes its own loss, which nbopt cannot weigh; use "
                          "balance: oversample, or give your loss class weights", key="balance", line=line)
    absent = [i for i, count in enumerate(data.class_counts) if count == 0]
    if recipe.balance == "weights" and absent:
        name = data.classes[absent[0]] if data.classes is not None else absent[0]
        raise RecipeError(f"class {quoted(name)} has no samples in the training split, so `weights` has nothing to "
                          "weigh it by (and a validation batch of it alone would score NaN); give it more samples, or "
                          "use balance: oversample", key="balance", line=line)


def _check_forward(plan: Plan) -> None:
    """One batch through the model: the cheapest way to catch a model that does not fit the data."""
    x, _ = next(iter(plan.data.val))
    x = torch.as_tensor(x)[:8].float()
    if plan.data.normalization is not None:
        x = plan.data.normalization.apply(x)
    net: nn.Module = plan.model.net
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(x)
    except Exception as exc:  # any failure here is the model not fitting this data
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeError(f"the model cannot take this data's inputs of shape {list(x.shape)}: {first}",
                          key="model", line=plan.recipe.line("model")) from None
    finally:
        net.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise RecipeError(f"the model returns {type(out).__name__}; it must return a tensor of outputs",
                          key="model", line=plan.recipe.line("model"))
    want = plan.data.num_outputs
    got = out.shape[1] if out.ndim > 1 else 1
    if plan.data.task == "classification" and (out.ndim != 2 or got != want):
        raise RecipeError(f"the model outputs shape {list(out.shape[1:])} per sample but the data has {want} "
                          f"classes; make its last layer output {want} values", key="model",
                          line=plan.recipe.line("model"))
    if plan.data.task == "regression" and out[0].numel() != want:
        raise RecipeError(f"the model outputs {out[0].numel()} values per sample but there are {want} target(s)",
                          key="model", line=plan.recipe.line("model"))

