"""The recipe: YAML text (or a dict) → a validated, typed ``Recipe``.

Everything that can be checked without touching data or a model is checked here, so that a typo
costs a second, not an epoch. Model and data names are resolved later, against the notebook.
"""
from __future__ import annotations

import reprlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from nbopt.components import Component, ComponentSyntaxError, parse_component
from nbopt.errors import RecipeError, closest, shown
from nbopt.loggers import check_loggers
from nbopt.techniques.activations import ACTIVATIONS
from nbopt.techniques.augment import AUGMENTATIONS
from nbopt.techniques.losses import LOSSES
from nbopt.techniques.optimizers import check_optimizer
from nbopt.techniques.schedulers import check_schedule
from nbopt.techniques.scores import check_metrics
from nbopt.yamltext import load_yaml

PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed")
# Lightning's precisions that keep the weights in another type: nbopt scores, predicts and saves in float32
_OTHER_WEIGHTS = {"64-true": "float64", "64": "float64", "16-true": "float16", "bf16-true": "bfloat16",
                  "transformer-engine": "bfloat16"}

_OTHER_MAGIC_KEYS = {"variants": "%%nbopt compare", "search": "%%nbopt sweep"}
_COMPONENT_KEYS = ("optimizer", "loss", "activation")
_OPTIMIZER_ARGUMENTS = {"lr", "learning_rate", "momentum", "weight_decay", "betas", "nesterov"}


class EarlyStopping(BaseModel):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs."""
    model_config = ConfigDict(extra="forbid")
    monitor: str = Field("val_loss", description="the history column watched (`%nbopt help metrics`)",
                         examples=["val_acc"])
    patience: int = Field(5, ge=1, description="epochs without improvement before training stops", examples=[3])
    min_delta: float = Field(0.0, ge=0, description="the smallest change that counts as an improvement",
                             examples=[0.001])
    mode: Literal["min", "max"] | None = Field(None, description="whether lower or higher is better; read from "
                                                "the metric table when left out", examples=["max"])


class Normalize(BaseModel):
    """Explicit per-channel (images) or per-feature (tables) mean and standard deviation."""
    model_config = ConfigDict(extra="forbid")
    mean: list[float] = Field(description="one mean per channel (images) or feature (tables)", examples=[[0.5]])
    std: list[float] = Field(description="one standard deviation per channel or feature", examples=[[0.25]])


class Prune(BaseModel):
    """Pruning after (`once`) or during (`gradual`) training, then `finetune` epochs at the final sparsity."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    method: Literal["l1_unstructured", "random_unstructured", "channels"] = Field(
        "l1_unstructured", description="l1_unstructured zeroes the smallest weights, random_unstructured random "
        "ones; channels removes whole channels/neurons, so the model really gets smaller and faster",
        examples=["channels"])
    amount: float = Field(0.5, gt=0, lt=1, description="the share of weights (or channels) removed", examples=[0.8])
    global_: bool = Field(False, alias="global", description="rank weights across all layers together instead "
                          "of layer by layer", examples=[True])
    schedule: Literal["once", "gradual"] = Field("once", description="once: after training; gradual: sparsity "
                                                 "rises during training (unstructured methods)", examples=["gradual"])
    finetune: int = Field(2, ge=0, description="epochs of training at the final sparsity", examples=[3])
    importance: Literal["l1", "l2", "taylor"] = Field("l1", description="how channels are ranked (channels only)",
                                                      examples=["taylor"])
    steps: int = Field(1, ge=1, description="remove channels in this many rounds, fine-tuning after each "
                       "(channels only)", examples=[3])
    lr: float | None = Field(None, gt=0, description="learning rate of the fine-tuning, without the LR schedule "
                             "(default: the run's)", examples=[1e-3])


class Distill(BaseModel):
    """Train as the student of a frozen teacher: a·T²·KL(teacher ‖ student at temperature T) + (1−a)·task loss."""
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    teacher: Any = Field(description="a notebook model, a Run, or the name of a recorded run", examples=["big_net"])
    temperature: float = Field(4.0, gt=0, description="softens both models' class probabilities; higher shares "
                               "more of the teacher's ranking of wrong classes", examples=[2.0])
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the teacher's soft targets; 1 − alpha goes to "
                         "the labels", examples=[0.5])


class Recipe(BaseModel):
    """A validated recipe. ``raw`` keeps what the user wrote, for export and for variants.

    The fields are in the order a user meets them, and their descriptions and examples are the
    recipe's help: ``%nbopt help`` is generated from them.
    """
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    model: Any = Field(description="what to train: a notebook nn.Module or LightningModule (copied, never "
                       "changed), a class or zero-argument function returning one, an import path "
                       "`pkg.module:name`, or a built-in", examples=["mlp(hidden=[128, 64])", "net"])
    data: Any = Field(description="what to train on: a LightningDataModule, (train, val) Datasets or "
                      "DataLoaders, (X, y) arrays or tensors, a DataFrame or a csv/parquet file (with `target:`), "
                      "a folder of images (one folder per class, or train/ val/ test/ folders of them), or a "
                      "built-in", examples=["digits", "csv(path='train.csv')", "images(path='pets', size=[64, 64])"])
    name: str | None = Field(None, description="the run's name and its folder under nbopt-runs/ (default: the "
                             "date and time)", examples=["baseline"])
    target: str | None = Field(None, description="the column to predict when `data` is a table (a DataFrame, "
                               "csv or parquet)", examples=["price"])
    task: Literal["classification", "regression"] | None = Field(
        None, description="what the model predicts; detected from the targets when left out",
        examples=["regression"])
    val_split: float = Field(0.2, gt=0, lt=1, description="the share held out for validation when the data has "
                             "no validation set", examples=[0.25])
    test_split: float = Field(0.0, ge=0, lt=1, description="the share held out for a final test score, never "
                              "seen by sweeps or early stopping", examples=[0.1])
    batch_size: int = Field(64, ge=1, description="samples per training step", examples=[128])
    epochs: int = Field(10, ge=1, description="passes over the training data", examples=[20])
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the split, the initial weights and the batch "
                      "order", examples=[1])
    normalize: Literal["auto", "none"] | Normalize = Field(
        "auto", description="auto: mean/std per channel (images) or feature (tables) of the training split; "
        "none; or your own {mean: [...], std: [...]}", examples=["none", "{mean: [0.5], std: [0.25]}"])
    loss: Component | None = Field(None, description="the training loss (default: cross_entropy for "
                                   "classification, mse for regression)",
                                   examples=["cross_entropy(label_smoothing=0.1)", "huber"])
    balance: Literal["weights", "oversample"] | None = Field(
        None, description="imbalanced classes: weights weighs the loss by inverse class frequency of the "
        "training split; oversample draws training samples so every class comes equally often",
        examples=["weights", "oversample"])
    optimizer: Component = Field(Component("adam"), description="any torch.optim optimizer by its lower-case "
                                 "name, with its arguments",
                                 examples=["sgd(lr=0.1, momentum=0.9, nesterov=true)", "adamw(lr=3e-3)"])
    scheduler: list[Component] = Field(default_factory=list, description="an LR schedule, or a list of them "
                                       "run in sequence", examples=["cosine", "[warmup(epochs=2), cosine]"])
    metrics: list[Component] = Field(default_factory=list, description="extra validation metrics, computed every "
                                     "epoch (and on test at the end) and kept as val_NAME; any of them can be "
                                     "monitored, ranked and swept (`%nbopt help metrics`)",
                                     examples=["[f1, auroc, top_k(k=5)]", "[f1(average=weighted), mcc]", "[r2, mape]"])
    early_stopping: EarlyStopping | None = Field(
        None, description="stop when `monitor` stops improving; the best weights are restored (`true`: the "
        "default settings)", examples=["{monitor: val_loss, patience: 5}", "true"])
    augment: list[Component] = Field(default_factory=list, description="random transforms of training batches "
                                     "only (image transforms need image data)",
                                     examples=["[hflip, rotate(15), crop(pad=2), mixup(0.2)]"])
    batchnorm: bool = Field(False, description="insert BatchNorm after every Linear/Conv but the output layer, "
                            "before its activation", examples=[True])
    dropout: float = Field(0.0, ge=0, lt=1, description="insert Dropout with this rate after every hidden "
                           "activation", examples=[0.2])
    activation: Component | None = Field(None, description="replace every activation module of the model",
                                         examples=["gelu", "leaky_relu(0.1)"])
    lr_find: bool = Field(False, description="run an LR range test first, plot it, and train with the "
                          "suggested LR", examples=[True])
    prune: Prune | None = Field(None, description="prune after or during training, then fine-tune",
                                examples=["{method: l1_unstructured, amount: 0.8, schedule: gradual, finetune: 3}",
                                          "{method: channels, amount: 0.5}"])
    distill: Distill | None = Field(None, description="train as the student of a frozen teacher (a notebook "
                                    "model, a Run, or a run's name)",
                                    examples=["{teacher: big_net, temperature: 4, alpha: 0.7}", "big_net"])
    quantize: Literal["dynamic"] | None = Field(None, description="post-training int8 dynamic quantization of "
                                                "Linear layers (CPU), validated again", examples=["dynamic"])
    devices: int | Literal["auto"] = Field(1, description="how many devices train together: processes on a CPU, "
                                           "GPUs on a GPU machine", examples=[2, "auto"])
    nodes: int = Field(1, description="how many machines train together, each with `devices` of its own; "
                       "started from a shell by SLURM's srun or torchrun", examples=[4])
    strategy: str = Field("auto", description="how the devices share the work: ddp (data parallel), fsdp "
                          "(sharded, from a shell on GPUs)", examples=["ddp"])
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value",
                                    examples=[1.0])
    accumulate: int = Field(1, ge=1, description="accumulate gradients over this many batches per optimizer "
                            "step", examples=[4])
    precision: str = Field("32-true", description="numeric precision, as Lightning names it: 32-true, or "
                           "16-mixed / bf16-mixed (float32 weights, faster on a GPU)",
                           examples=["bf16-mixed"])
    checkpoint_every: int | Literal["auto"] = Field(
        "auto", description="epochs between full checkpoints (last.ckpt in the run's folder) that `--resume NAME` "
        "goes on from; auto: every epoch, but at most one every 10 s (and after the last), so that short epochs "
        "do not pay for writing one", examples=[1, 5])
    logger: list[Component] = Field(default_factory=list, description="experiment trackers that get the recipe, "
                                    "every epoch's history row and the final metrics: tensorboard, mlflow, csv or "
                                    "wandb, or a list of them (local folders beside nbopt-runs/ by default)",
                                    examples=["tensorboard", "[mlflow, tensorboard]",
                                              "{name: mlflow, tracking_uri: 'http://localhost:5000', "
                                              "experiment: digits}"])

    _raw: dict = PrivateAttr(default_factory=dict)
    _lines: dict = PrivateAttr(default_factory=dict)

    @property
    def raw(self) -> dict:
        return dict(self._raw)

    def line(self, key: str) -> int | None:
        return self._lines.get(key)

    def __eq__(self, other) -> bool:
        """Recipes are equal when they mean the same, however each was written (`adam(lr=0.1)` or a mapping)."""
        return isinstance(other, Recipe) and self.model_dump() == other.model_dump()

    __hash__ = None


KNOWN_KEYS = tuple(Recipe.model_fields)


def parse_recipe(source: str | dict | Recipe, lines: dict[str, int] | None = None) -> Recipe:
    """Validate a whole recipe, raising one RecipeError for the first mistake found.

    `lines` maps keys to line numbers for a dict that came from text (compare's variants do).
    """
    if isinstance(source, Recipe):
        return source
    if isinstance(source, str):
        raw, lines = load_yaml(source)
    elif isinstance(source, dict):
        raw, lines = dict(source), dict(lines or {})
    else:
        raise RecipeError(f"a recipe is YAML text or a dict, got {type(source).__name__}")
    _check_keys(raw, lines)
    values = dict(raw)
    for key in _COMPONENT_KEYS:
        if values.get(key) is not None:
            values[key] = _component(values[key], key, lines)
    values["scheduler"] = _component_list(values.get("scheduler"), "scheduler", lines)
    values["augment"] = _component_list(values.get("augment"), "augment", lines)
    values["metrics"] = _component_list(values.get("metrics"), "metrics", lines)
    values["logger"] = _component_list(None if values.get("logger") is False else values.get("logger"), "logger",
                                       lines)
    if values.get("early_stopping") is True:
        values["early_stopping"] = {}
    elif values.get("early_stopping") is False:
        values["early_stopping"] = None
    if isinstance(values.get("distill"), str):
        values["distill"] = {"teacher": values["distill"]}
    for key in ("quantize", "balance"):
        if values.get(key) in (False, "none"):
            values[key] = None
    if values.get("precision") is not None:
        values["precision"] = str(values["precision"])
    try:
        recipe = Recipe(**values)
    except ValidationError as exc:
        raise _as_recipe_error(exc, lines) from None
    recipe._raw, recipe._lines = raw, lines
    _check_components(recipe)
    return recipe


def _check_keys(raw: dict, lines: dict) -> None:
    for key in raw:
        if key in KNOWN_KEYS:
            continue
        line = lines.get(str(key))
        if key in _OTHER_MAGIC_KEYS:
            raise RecipeError(f"`{key}:` belongs in a {_OTHER_MAGIC_KEYS[key]} cell, not here", key=key, line=line)
        if key in _OPTIMIZER_ARGUMENTS:
            argument = "lr" if key == "learning_rate" else key
            raise RecipeError(f"`{key}` is an optimizer argument; write it there, e.g. "
                              f"`optimizer: adam({argument}={reprlib.repr(raw[key])})`", key=key, line=line)
        guess = closest(str(key), list(KNOWN_KEYS))
        hint = f" — did you mean '{guess}'?" if guess else f"; valid keys: {', '.join(KNOWN_KEYS)}"
        raise RecipeError(f"unknown recipe key {shown(key)}{hint}", key=str(key), line=line)
    for required in ("model", "data"):
        if raw.get(required) is None:
            example = "mlp" if required == "model" else "digits"
            raise RecipeError(f"the recipe needs `{required}:` (e.g. `{required}: {example}`)", key=required)


def _component(value: Any, key: str, lines: dict) -> Component:
    try:
        return parse_component(value)
    except ComponentSyntaxError as exc:
        raise RecipeError(str(exc), key=key, line=lines.get(key)) from None


def _component_list(value: Any, key: str, lines: dict) -> list[Component]:
    if value is None or value == "none":
        return []
    items = value if isinstance(value, list) else [value]
    return [_component(item, key, lines) for item in items]


def _as_recipe_error(exc: ValidationError, lines: dict) -> RecipeError:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"] if not str(part).startswith(("literal[", "function-")))
    top = str(error["loc"][0]) if error["loc"] else "recipe"
    message = error["msg"]
    if message.startswith("Input should be"):
        message = "must be" + message[len("Input should be"):]
    elif error["type"] == "extra_forbidden":
        field = str(error["loc"][-1])
        model = {"early_stopping": EarlyStopping, "normalize": Normalize, "prune": Prune, "distill": Distill}.get(top)
        allowed = ", ".join(model.model_fields) if model else ""
        message = f"unknown setting {shown(field)}" + (f"; allowed: {allowed}" if allowed else "")
    else:
        message = message[0].lower() + message[1:]
    if error["type"] != "extra_forbidden" and "input" in error and not isinstance(error["input"], dict):
        message += f", got {reprlib.repr(error['input'])}"
    return RecipeError(message, key=key or top, line=lines.get(key) or lines.get(top))


def _check_components(recipe: Recipe) -> None:
    check_optimizer(recipe.optimizer, "optimizer", recipe.line("optimizer"))
    if recipe.loss is not None:
        LOSSES.resolve(recipe.loss, "loss", recipe.line("loss"))
    if recipe.activation is not None:
        ACTIVATIONS.resolve(recipe.activation, "activation", recipe.line("activation"))
    for component in recipe.augment:
        AUGMENTATIONS.resolve(component, "augment", recipe.line("augment"))
    check_metrics(recipe.metrics, recipe.line("metrics"))
    check_loggers(recipe.logger, recipe.line("logger"))
    if recipe.scheduler:
        check_schedule(recipe.scheduler, recipe.epochs, recipe.line("scheduler"))
    if recipe.precision in _OTHER_WEIGHTS:
        raise RecipeError(f"precision '{recipe.precision}' keeps the weights in {_OTHER_WEIGHTS[recipe.precision]}, "
                          "but nbopt scores, predicts and saves runs in float32; use 32-true, or 16-mixed / "
                          "bf16-mixed for speed (float32 weights, faster on a GPU)", key="precision",
                          line=recipe.line("precision"))
    if recipe.precision not in PRECISIONS:
        guess = closest(recipe.precision, PRECISIONS)
        raise RecipeError(f"unknown precision '{recipe.precision}'" + (f" — did you mean '{guess}'?" if guess else
                          f"; choose from {', '.join(PRECISIONS)}"), key="precision", line=recipe.line("precision"))
    if recipe.prune is not None:
        _check_prune(recipe)
    if isinstance(recipe.devices, int) and recipe.devices < 1:
        raise RecipeError(f"devices must be at least 1, got {recipe.devices}", key="devices",
                          line=recipe.line("devices"))
    if recipe.nodes < 1:
        raise RecipeError(f"nodes must be at least 1, got {recipe.nodes}", key="nodes", line=recipe.line("nodes"))
    if isinstance(recipe.checkpoint_every, int) and recipe.checkpoint_every < 1:
        raise RecipeError(f"checkpoint_every must be at least 1 (or auto), got {recipe.checkpoint_every}",
                          key="checkpoint_every", line=recipe.line("checkpoint_every"))
    if recipe.test_split + recipe.val_split >= 0.9:
        raise RecipeError(f"val_split + test_split = {recipe.val_split + recipe.test_split:.2f} leaves too little "
                          "to train on; keep their sum below 0.9", key="val_split", line=recipe.line("val_split"))


def _check_prune(recipe: Recipe) -> None:
    prune, line = recipe.prune, recipe.line("prune")
    if prune.method == "channels" and prune.schedule == "gradual":
        raise RecipeError("channel pruning runs in `steps` with fine-tuning between them; use "
                          "{method: channels, steps: 3, finetune: 2} instead of schedule: gradual", key="prune.schedule",
                          line=recipe.line("prune.schedule") or line)
    if prune.method != "channels" and prune.steps > 1:
        raise RecipeError("`steps` is for channel pruning; unstructured pruning spreads over epochs with "
                          "schedule: gradual", key="prune.steps", line=recipe.line("prune.steps") or line)
    if prune.method != "channels" and prune.importance != "l1":
        raise RecipeError("`importance` is for channel pruning; unstructured pruning ranks by the method "
                          "(l1_unstructured or random_unstructured)", key="prune.importance",
                          line=recipe.line("prune.importance") or line)
