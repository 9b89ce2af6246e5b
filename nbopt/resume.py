"""``resume=NAME``: go on with a stopped, interrupted, failed or died run, in its own folder and history.

What may resume is decided here, before anything trains, each refusal one line: a run that is
still alive, one that finished (unless `epochs` was raised), stopped early or diverged, and a recipe
that differs from the run's in anything but `epochs` (the changed keys are named). Training then
restarts the run's stage that the last checkpoint was written in, from that checkpoint
(``nbopt.callbacks.checkpoint``), and runs the stages after it as usual. A run that removed channels
first repeats its removals on the fresh model, which gives it the checkpoint's shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.utils.prune as torch_prune

from nbopt.callbacks.checkpoint import LAST, read_run_state
from nbopt.errors import RecipeError
from nbopt.liveness import LIVE, current_status
from nbopt.recipe import Recipe, parse_recipe
from nbopt.stages import Fit
from nbopt.catalog import find_run
from nbopt.store import RunFolder
from nbopt.techniques.prune import keep_weight_first, prunable

MAY_CHANGE = ("epochs", "name")  # raising epochs trains further; the name is the folder's anyway


@dataclass
class Resume:
    """Where a resumed run goes on: its folder, its last checkpoint (None: it died before writing one,
    so it starts again in its folder) and the run's own state from that checkpoint."""
    folder: RunFolder
    checkpoint: Path | None
    state: dict = field(default_factory=dict)

    def describe(self) -> str:
        """What the resumed run starts from, for its first status line."""
        if self.checkpoint is None:
            return "resumed: no checkpoint was written before it stopped, so it trains again from the start"
        return f"resumed from its last checkpoint, after epoch {self.state.get('epochs_done', '?')}"

    @property
    def stage(self) -> int:
        """The index of the stage the checkpoint was written in; the stages before it are done."""
        return self.state.get("stage", 0)


def prepare(name: str, recipe: Recipe, stages: list, checked: bool = True) -> Resume:
    """Check that run `name` may go on with `recipe`, and say from where; a RecipeError otherwise.

    An extra DDP process of `nbopt run --resume` (`checked=False`) finds the run already running
    under rank 0, which did the checking: it only needs the checkpoint.
    """
    folder = find_run(name)
    status = folder.read_status()
    if checked:
        _check_status(folder.name, status, recipe, stages)
        _check_recipe(folder, recipe)
    checkpoint = folder.path / LAST
    if not checkpoint.exists():
        return Resume(folder, None)
    return Resume(folder, checkpoint, read_run_state(folder.path) or {})


def _check_status(name: str, status: dict, recipe: Recipe, stages: list) -> None:
    state, trained = current_status(status), int(status.get("epochs_run") or 0)
    one_fit = sum(isinstance(stage, Fit) for stage in stages) == 1  # epochs count the same in the recipe and run
    if state == LIVE:
        raise RecipeError(f"run '{name}' is still running (process {status.get('pid')} on {status.get('host')}); "
                          "resume it once it has stopped")
    if state == "diverged":
        raise RecipeError(f"run '{name}' diverged (its losses became NaN or infinite); going on from there would "
                          "diverge again: train it anew with a lower learning rate or `grad_clip`")
    if state == "stopped early":
        raise RecipeError(f"run '{name}' stopped early (its early stopping ended it); there is nothing to resume")
    if state == "finished" and (recipe.epochs <= trained or not one_fit):
        raise RecipeError(f"run '{name}' finished its {trained} epochs; there is nothing to resume "
                          "(raise `epochs` to train a run without compression further)")
    if one_fit and recipe.epochs < trained:
        raise RecipeError(f"run '{name}' has trained {trained} epochs already; `epochs: {recipe.epochs}` "
                          "would end before where it stopped", key="epochs", line=recipe.line("epochs"))
    if recipe.prune is not None and recipe.prune.method == "channels" and recipe.prune.global_:
        raise RecipeError(f"run '{name}' removes channels globally (how many from each layer depended on its "
                          "weights at the time), so its shape cannot be rebuilt; train it again instead", key="prune")


def changed_keys(folder: RunFolder, recipe: Recipe) -> list[str]:
    """The keys whose meaning differs between the run's recipe and `recipe`, `epochs` and the name aside;
    notebook objects compare by their stand-in."""
    from nbopt.run import recipe_text
    before = parse_recipe((folder.path / "recipe.yaml").read_text()).model_dump()
    now = parse_recipe(recipe_text(recipe)).model_dump()
    return [key for key in Recipe.model_fields if key not in MAY_CHANGE and before.get(key) != now.get(key)]


def _check_recipe(folder: RunFolder, recipe: Recipe) -> None:
    changed = changed_keys(folder, recipe)
    if changed:
        listed = ", ".join(f"`{key}`" for key in changed)
        raise RecipeError(f"cannot resume run '{folder.name}' with a different recipe: {listed} changed "
                          "(only `epochs` may change when resuming)", key=changed[0], line=recipe.line(changed[0]))


def restore_pruning_masks(module: torch.nn.Module, checkpoint: Path) -> None:
    """Give pruned layers their mask buffers again, so the checkpoint's `weight_orig`/`weight_mask` load."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    layers = {id(layer) for layer, _ in prunable(module)}
    for name, layer in module.named_modules():
        if id(layer) in layers and f"{name}.weight_mask" in saved and not torch_prune.is_pruned(layer):
            torch_prune.identity(layer, "weight")
            keep_weight_first(layer)
