"""``show_augment``: what the recipe's augmentations do to real training samples, before training."""
from __future__ import annotations

import torch
from matplotlib.figure import Figure

from nbopt.display.plots import register_figure_formatter
from nbopt.errors import RecipeError
from nbopt.techniques.augment import build_augmenter


def show_augment(recipe, namespace: dict | None = None, samples: int = 6, versions: int = 4, seed: int = 0) -> Figure:
    """A grid: each row one sample, first as stored, then `versions` augmented draws.

    The samples are the first of the validation split: it is not shuffled, so the grid is the same
    every time, and augmentation treats every split's samples alike.
    """
    from nbopt.plan import check
    from nbopt.recipe import parse_recipe

    if isinstance(recipe, str):
        from nbopt.yamltext import load_yaml
        raw, lines = load_yaml(recipe)
        recipe = parse_recipe({"model": "mlp", **raw}, lines)
    elif isinstance(recipe, dict):
        recipe = parse_recipe({"model": "mlp", **recipe})
    plan = check(recipe, namespace)
    data = plan.data
    if len(data.input_shape) != 3:
        raise RecipeError(f"show-augment draws images, but this data's samples have shape {list(data.input_shape)}",
                          key="data", line=plan.recipe.line("data"))
    if not plan.recipe.augment:
        raise RecipeError("the recipe has no `augment:` list to show", key="augment")
    x, y = next(iter(data.val))
    x, y = torch.as_tensor(x)[:samples].float(), torch.as_tensor(y)[:samples]
    augmenter = build_augmenter(plan.recipe.augment, data.input_shape, data.task, data.num_classes)
    torch.manual_seed(seed)
    draws = [augmenter(x.clone(), y.clone())[0] for _ in range(versions)]
    register_figure_formatter()
    fig = Figure(figsize=(1.3 * (versions + 1), 1.3 * len(x)), layout="constrained")
    axes = fig.subplots(len(x), versions + 1, squeeze=False)
    for row in range(len(x)):
        for col, images in enumerate([x] + draws):
            ax = axes[row][col]
            image = images[row]
            ax.imshow(image[0] if image.shape[0] == 1 else _rgb(image), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("original" if col == 0 else f"draw {col}", fontsize=8)
    fig.suptitle("augment: " + ", ".join(str(a) for a in plan.recipe.augment), fontsize=9)
    return fig


def _rgb(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) → (H, W, C) scaled to [0, 1] so that normalised colour images display."""
    image = image[:3].permute(1, 2, 0)
    return (image - image.min()) / (image.max() - image.min() + 1e-8)
