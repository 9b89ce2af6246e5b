"""What the panel's controls offer, read from the registries and tables the recipe is checked against.

A name the code accepts appears in the panel without anyone listing it twice. Where a registry
cannot say what is worth offering (a schedule's useful arguments, an augmentation's size for
small images) a short list below says it, and why.
"""
from __future__ import annotations

import typing

from nbopt.commands import BY_NAME
from nbopt.components import Component, parse_component
from nbopt.data.builtin import DATASETS
from nbopt.helptext import settings_model
from nbopt.models.builtin import MODELS
from nbopt.recipe import Prune, Recipe
from nbopt.sweeps import SAMPLERS
from nbopt.techniques.activations import ACTIVATIONS
from nbopt.techniques.augment import AUGMENTATIONS, IMAGE_ONLY
from nbopt.techniques.optimizers import OPTIMIZERS, learning_rate
from nbopt.yamltext import load_yaml

BUILTIN_MODELS = list(MODELS.entries)  # in the registry's order: the first is the panel's default
# Data sets read from files (images, csv, parquet) need a path, which a dropdown cannot give: write them in a recipe.
BUILTIN_DATA = [name for name, entry in DATASETS.entries.items() if "path" not in entry.params]
# Which built-in data sets hold images: the registry builds a data set only by loading (or downloading) it.
IMAGE_DATA = {"digits", "mnist", "fashion_mnist", "cifar10"}
OPTIMIZER_NAMES = OPTIMIZERS.names()
ACTIVATION_NAMES = ["keep", *ACTIVATIONS.entries]
PRUNE_METHODS = ["none", *typing.get_args(Prune.model_fields["method"].annotation)]
SAMPLER_NAMES = list(SAMPLERS)
DEFAULT_SAMPLER = BY_NAME["sweep"].option("--sampler").default
DEFAULT_LR = learning_rate(Recipe.model_fields["optimizer"].default)

# A schedule is worth offering with arguments that fit a run of about ten epochs, which no registry
# knows; these examples cover every kind of schedule (step, decay, annealing, one-cycle, plateau, warmup).
SCHEDULES = ["none", "step(step_size=10, gamma=0.5)", "exponential(gamma=0.95)", "cosine", "onecycle",
             "plateau(patience=3)", "[warmup(epochs=2), cosine]"]

# The registry's defaults suit 32×32 images; the panel opens on 8×8 digits, where cutout(8) would blank
# the whole image and crop(4) could shift half of it out.
_SMALL_IMAGE_ARGUMENTS = {"crop": {"pad": 2}, "cutout": {"size": 4}}


def _tidy(value):
    """15.0 → 15, so that a checkbox reads rotate(15)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def augmentation_label(name: str) -> str:
    """An augmentation in call form with its size arguments (not its probability) at the panel's defaults."""
    entry = AUGMENTATIONS.entries[name]
    values = {**entry.params, **_SMALL_IMAGE_ARGUMENTS.get(name, {})}
    return Component(name, tuple(_tidy(values[arg]) for arg in entry.positional if arg != "p")).to_text()


AUGMENT_LABELS = [augmentation_label(name) for name in AUGMENTATIONS.entries]
IMAGE_AUGMENT_LABELS = {label for label in AUGMENT_LABELS if parse_component(label).name in IMAGE_ONLY}


def recipe_default(key: str, setting: str | None = None):
    """What a recipe key (or one setting of a mapping key) is when left out: where a control starts."""
    info = Recipe.model_fields[key]
    return info.default if setting is None else settings_model(info.annotation).model_fields[setting].default


def as_text(value) -> str:
    """A recipe value as a dropdown shows it (lists in flow style, components in call form)."""
    if isinstance(value, list):
        return "[" + ", ".join(as_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return parse_component(value).to_text()
    return str(value)


def from_text(text: str):
    """Dropdown text back to a recipe value: `[warmup(epochs=2), cosine]` is a list again."""
    return load_yaml(f"value: {text}")[0]["value"] if text.startswith("[") else text


def with_option(current: list, value) -> list:
    """A dropdown's options with `value` added when a recipe brings one the list lacks."""
    return current if value in current else current + [value]
