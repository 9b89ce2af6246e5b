"""`scheduler:` — learning-rate schedules, alone or as a sequence like ``[warmup(epochs=2), cosine]``.

Each builder returns a torch scheduler and how often it steps ("epoch" or "step"), which is what
Lightning's ``configure_optimizers`` needs.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch.optim import lr_scheduler

from nbopt import metrics
from nbopt.components import Component
from nbopt.errors import RecipeError
from nbopt.registry import Registry

SCHEDULERS = Registry("scheduler", "scheduler")
_SKIP = ("optimizer", "ctx")


@dataclass(frozen=True)
class ScheduleContext:
    epochs: int  # epochs this schedule covers
    total_steps: int  # optimizer steps in the whole run


@dataclass(frozen=True)
class Schedule:
    scheduler: object
    interval: str  # "epoch" or "step"
    monitor: str | None = None


@SCHEDULERS.register("step", "multiply the LR by gamma every step_size epochs", ("step_size", "gamma"), _SKIP)
def step(optimizer, ctx, step_size: int = 10, gamma: float = 0.1):
    return Schedule(lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma), "epoch")


@SCHEDULERS.register("multistep", "multiply the LR by gamma at each listed epoch", ("milestones", "gamma"), _SKIP)
def multistep(optimizer, ctx, milestones: list = (), gamma: float = 0.1):
    return Schedule(lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma), "epoch")


@SCHEDULERS.register("exponential", "multiply the LR by gamma every epoch", ("gamma",), _SKIP)
def exponential(optimizer, ctx, gamma: float = 0.95):
    return Schedule(lr_scheduler.ExponentialLR(optimizer, gamma=gamma), "epoch")


@SCHEDULERS.register("cosine", "cosine decay from the LR to eta_min over T_max epochs (default: the run)",
                     ("T_max",), _SKIP)
def cosine(optimizer, ctx, T_max: int | None = None, eta_min: float = 0.0):
    return Schedule(lr_scheduler.CosineAnnealingLR(optimizer, T_max=T_max or ctx.epochs, eta_min=eta_min), "epoch")


@SCHEDULERS.register("onecycle", "one-cycle policy: warm up to max_lr, then anneal, stepped every batch",
                     ("max_lr",), _SKIP)
def onecycle(optimizer, ctx, max_lr: float | None = None, pct_start: float = 0.3, div_factor: float = 25.0,
             final_div_factor: float = 1e4, anneal_strategy: str = "cos"):
    max_lr = max_lr if max_lr is not None else optimizer.param_groups[0]["lr"]
    sched = lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(ctx.total_steps, 1),
                                    pct_start=pct_start, div_factor=div_factor,
                                    final_div_factor=final_div_factor, anneal_strategy=anneal_strategy)
    return Schedule(sched, "step")


@SCHEDULERS.register("plateau", "multiply the LR by factor when `monitor` stops improving for `patience` epochs",
                     ("patience",), _SKIP)
def plateau(optimizer, ctx, patience: int = 3, factor: float = 0.1, monitor: str = "val_loss",
            mode: str | None = None, min_lr: float = 0.0):
    sched = lr_scheduler.ReduceLROnPlateau(optimizer, mode=metrics.mode(monitor, mode), factor=factor,
                                           patience=patience, min_lr=min_lr)
    return Schedule(sched, "epoch", monitor)


@SCHEDULERS.register("warmup", "raise the LR linearly from start_factor×LR to the LR over `epochs` epochs",
                     ("epochs",), _SKIP)
def warmup(optimizer, ctx, epochs: int = 1, start_factor: float = 0.1):
    return Schedule(lr_scheduler.LinearLR(optimizer, start_factor=start_factor, total_iters=epochs), "epoch")


_NOT_IN_SEQUENCE = {"onecycle", "plateau"}


def check_schedule(components: list[Component], epochs: int, line: int | None = None) -> None:
    """Validate names, arguments and sequence rules without an optimizer (before training)."""
    for i, component in enumerate(components):
        entry, kwargs = SCHEDULERS.resolve(component, "scheduler", line)
        epochs_given = kwargs.get("epochs", 1)
        if entry.name == "warmup" and (type(epochs_given) is not int or epochs_given < 1):
            raise RecipeError(f"warmup takes a whole number of epochs, at least 1, got {epochs_given!r}: write "
                              "warmup(epochs=2)", key="scheduler", line=line)
        if len(components) > 1:
            if entry.name in _NOT_IN_SEQUENCE:
                raise RecipeError(f"{entry.name} cannot be part of a scheduler sequence; use it alone",
                                  key="scheduler", line=line)
            if i < len(components) - 1 and entry.name != "warmup":
                raise RecipeError(f"in a sequence every schedule but the last must be warmup(epochs=N), "
                                  f"got {component}", key="scheduler", line=line)
    warmup_epochs = sum(SCHEDULERS.resolve(c)[1].get("epochs", 1) for c in components[:-1])
    if len(components) > 1 and warmup_epochs >= epochs:
        raise RecipeError(f"warmup takes {warmup_epochs} epochs but the run has only {epochs}; "
                          "shorten the warmup or raise epochs", key="scheduler", line=line)


def monitors(components: list[Component]) -> list[str]:
    """The history columns a schedule watches (plateau's `monitor`), for the plan to check they are reported."""
    watched = []
    for component in components:
        entry, kwargs = SCHEDULERS.resolve(component)
        if "monitor" in entry.params:
            watched.append(str(kwargs.get("monitor", entry.params["monitor"])))
    return watched


def build_schedule(components: list[Component], optimizer, epochs: int, total_steps: int) -> Schedule:
    """One Schedule for the whole run; a sequence becomes torch's SequentialLR."""
    if len(components) == 1:
        entry, kwargs = SCHEDULERS.resolve(components[0])
        return entry.build(optimizer, ScheduleContext(epochs, total_steps), **kwargs)
    parts, milestones, start = [], [], 0
    for component in components:
        entry, kwargs = SCHEDULERS.resolve(component)
        remaining = epochs - start
        parts.append(entry.build(optimizer, ScheduleContext(remaining, total_steps), **kwargs).scheduler)
        if entry.name == "warmup":
            start += kwargs.get("epochs", 1)
            milestones.append(start)
    return Schedule(lr_scheduler.SequentialLR(optimizer, parts, milestones=milestones[: len(parts) - 1]), "epoch")
