"""`lr_find: true` — Lightning's LR range test (Smith 2017) before training.

The LR grows exponentially over a short run while the loss is recorded; the suggestion is the LR
where the loss falls fastest. The test runs on a throwaway Trainer — of the package the module
comes from — so that the real run's callbacks (history, best weights, live output) never see it,
and Lightning restores the initial weights afterwards.
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

from nbopt.errors import RecipeError
from nbopt.lightning_package import package_of


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]
    suggestion: float


def find_lr(module, train, val, root_dir, min_lr: float = 1e-6, max_lr: float = 1.0,
            steps: int = 100, progress: bool = True) -> LRFindResult:
    lightning = package_of(module)
    trainer = lightning.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                                default_root_dir=str(root_dir), max_epochs=10**6)
    quiet = contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())
    with quiet:  # Lightning's range test always draws its own progress bar
        finder = lightning.tuner.Tuner(trainer).lr_find(module, train_dataloaders=train, val_dataloaders=val,
                                                        min_lr=min_lr, max_lr=max_lr, num_training=steps,
                                                        update_attr=False)
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion is None or not math.isfinite(suggestion):
        raise RecipeError("the LR range test found no LR where the loss falls; set the optimizer's lr by hand "
                          "and remove lr_find", key="lr_find")
    return LRFindResult([float(x) for x in finder.results["lr"]], [float(x) for x in finder.results["loss"]],
                        float(suggestion))
