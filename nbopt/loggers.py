"""`logger:` — a run's recipe, history and results in TensorBoard, MLflow, CSV files or W&B.

A run has several Fit stages (training, then fine-tuning after pruning), each a fresh Trainer; one
Listener owns Lightning's logger objects for the whole run instead, so every tracker sees one run
whose epochs are numbered across the stages, like the history. Compare and sweep say which
experiment a run belongs to and tag it (`Tracking`). The loggers never meet a Trainer, so those of
the package that trains built-in models serve a run trained by either Lightning package.
"""
from __future__ import annotations

import importlib.util
import logging
import numbers
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from nbopt.callbacks.recorder import Listener, unheard
from nbopt.components import Component
from nbopt.errors import RecipeError, closest, shown
from nbopt.lightning_package import default_package
from nbopt.registry import Registry
from nbopt.store import runs_root

LOGGERS = Registry("logger", "logger")
DEFAULT_EXPERIMENT = "nbopt"
# logger → (modules, any one of which it runs on; how to install the first)
_PACKAGES = {"tensorboard": (("tensorboard", "tensorboardX"), "pip install nbopt[tensorboard]"),
             "mlflow": (("mlflow",), "pip install nbopt[mlflow]"),
             "wandb": (("wandb",), "pip install wandb")}
_RUN_STATUS = {"interrupted": "KILLED", "failed": "failed", "diverged": "failed"}  # the rest: "success"


@dataclass(frozen=True)
class Tracking:
    """Where a run belongs among others: compare and sweep name its experiment and tag it."""
    experiment: str | None = None
    tags: dict = field(default_factory=dict)


def _beside_runs(folder: str) -> Path:
    """Trackers' folders sit beside nbopt-runs/, so that one folder holds a project's records."""
    return runs_root().parent / folder


@LOGGERS.register("tensorboard", "TensorBoard event files in tb-logs/EXPERIMENT/RUN (`%tensorboard --logdir "
                  "tb-logs`)", skip=("run", "tracking"))
def _tensorboard(run: str, tracking: Tracking, save_dir: str = "tb-logs"):
    return default_package().loggers.TensorBoardLogger(str(_beside_runs(save_dir)), version=run,
                                                       name=tracking.experiment or DEFAULT_EXPERIMENT,
                                                       default_hp_metric=False)


@LOGGERS.register("mlflow", "an MLflow run; without a tracking_uri (or MLFLOW_TRACKING_URI), a local store "
                  "in mlruns/", skip=("run", "tracking"))
def _mlflow(run: str, tracking: Tracking, tracking_uri: str | None = None, experiment: str | None = None):
    lightning = default_package()
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or _beside_runs("mlruns").resolve().as_uri()
    if uri.startswith("file:") or "://" not in uri:  # MLflow 3 refuses a local folder store unless asked to
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    logger = lightning.loggers.MLFlowLogger(experiment_name=experiment or tracking.experiment or DEFAULT_EXPERIMENT,
                                            run_name=run, tracking_uri=uri,
                                            tags={k: str(v) for k, v in tracking.tags.items()} or None)
    notices = logging.getLogger(f"{lightning.__name__}.loggers.mlflow")
    level = notices.level
    notices.setLevel(logging.ERROR)
    try:
        # Starts the run now, without Lightning's notice that a new experiment was made.
        logger.experiment  # noqa: B018
    finally:
        notices.setLevel(level)
    return logger


@LOGGERS.register("csv", "Lightning's metrics.csv and hparams.yaml in csv-logs/EXPERIMENT/RUN",
                  skip=("run", "tracking"))
def _csv(run: str, tracking: Tracking, save_dir: str = "csv-logs"):
    return default_package().loggers.CSVLogger(str(_beside_runs(save_dir)), version=run,
                                               name=tracking.experiment or DEFAULT_EXPERIMENT)


@LOGGERS.register("wandb", "a Weights & Biases run; offline (sync it later) when wandb.ai cannot be reached",
                  skip=("run", "tracking"))
def _wandb(run: str, tracking: Tracking, project: str | None = None, offline: bool | None = None):
    offline = not _reachable("api.wandb.ai") if offline is None else offline
    return default_package().loggers.WandbLogger(name=run, project=project or tracking.experiment or DEFAULT_EXPERIMENT,
                                                 offline=offline, save_dir=str(_beside_runs(".")),
                                                 tags=[f"{k}={v}" for k, v in tracking.tags.items()] or None)


def _reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=2).close()
        return True
    except OSError:
        return False


def check_loggers(components: list[Component], line: int | None) -> None:
    """Known names, valid arguments and an installed package, before anything trains."""
    for component in components:
        if component.name not in LOGGERS:
            guess = closest(component.name, LOGGERS.names())
            hint = f" (did you mean '{guess}'?)" if guess else ""
            raise RecipeError(f"unknown logger {shown(component.name)}{hint}; choose from: "
                              f"{', '.join(LOGGERS.names())}", key="logger", line=line)
        LOGGERS.resolve(component, "logger", line)
        modules, install = _PACKAGES.get(component.name, ((), ""))
        if modules and not any(importlib.util.find_spec(module) for module in modules):
            raise RecipeError(f"{component.name} needs the {modules[0]} package: {install}", key="logger", line=line)


def hyperparameters(recipe) -> dict:
    """The recipe as flat `key.setting: value` pairs, with the defaults in effect (unset keys left out)."""
    flat = {}

    def walk(prefix: str, model: BaseModel) -> None:
        for key, info in type(model).model_fields.items():
            value, name = getattr(model, key), prefix + (info.alias or key)
            if isinstance(value, BaseModel):
                walk(name + ".", value)
            elif isinstance(value, list):
                flat[name] = "[" + ", ".join(str(item) for item in value) + "]"
            elif isinstance(value, (str, int, float, bool, Component)):
                flat[name] = value if not isinstance(value, Component) else str(value)
            elif value is not None:  # a notebook object (model, data, teacher): its name
                flat[name] = getattr(value, "__name__", type(value).__name__)

    walk("", recipe)
    return flat


def _numbers(values: dict, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of nested results, as `a/b` names (text and missing values left out)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value:  # not NaN
            flat[f"{prefix}{key}"] = float(value)
    return flat


class Tracker(Listener):
    """Sends one run to the recipe's loggers: the recipe when it starts, each epoch's history row (its
    epoch the step), and at the end the returned model's scores and the compression report as final/…"""

    def __init__(self, recipe, tracking: Tracking | None = None):
        self.recipe, self.tracking = recipe, tracking or Tracking()
        self.loggers: list = []
        self.logged: set[int] = set()

    def on_start(self, folder) -> None:
        for component in self.recipe.logger:
            entry, kwargs = LOGGERS.resolve(component, "logger", self.recipe.line("logger"))
            self.loggers.append(entry.build(folder.name, self.tracking, **kwargs))
        params = hyperparameters(self.recipe)
        for logger in self.loggers:
            logger.log_hyperparams(params)

    def on_epoch(self, recorder, trainer, row) -> None:
        for earlier in unheard(self.logged, recorder, row):
            values = _numbers({k: v for k, v in earlier.items() if k != "epoch"})
            for logger in self.loggers:
                logger.log_metrics(values, step=int(earlier["epoch"]))

    def finish(self, results: dict | None, status: str) -> None:
        """The run's results (None when it failed) at its last epoch, and how it ended."""
        final = _numbers(results or {}, "final/")
        for logger in self.loggers:
            if final:
                logger.log_metrics(final, step=max(self.logged, default=0))
            logger.finalize(_RUN_STATUS.get(status, "success"))
