"""`normalize:` — per-channel (images) or per-feature mean and std of the training split, applied to
every batch on the device.

The statistics walk through the split's rows a chunk at a time (nbopt.data.loaders.row_chunks):
each chunk, made float32 as the batches will be, gives its mean and variance in one pass, and the
chunks are combined in float64 (Chan et al.'s pairwise update). Memory stays a few MB at any data
size, where a whole-array mean and std would gather the split and then hold a temporary as large as it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nbopt.data.loaders import row_chunks
from nbopt.errors import RecipeError
from nbopt.recipe import Recipe


@dataclass
class Normalization:
    """Per-channel/feature statistics of the training split, applied batch by batch on the device.

    Applying them per batch rather than to the stored data lets augmentations see raw inputs, so
    that padding and rotation fill with true black, as they would on the original images.
    """
    mean: torch.Tensor
    std: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean.device != x.device:
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return torch.sub(x, self.mean).div_(self.std)  # one new tensor, not two: a batch less of memory

    def to_dict(self) -> dict:
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}


def statistics(x: torch.Tensor, recipe: Recipe, rows: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the rows `rows` of x (all when None) — the training split only — shaped to
    broadcast over a batch: per channel for images (N, C, H, W), per feature otherwise. Given values
    (`normalize: {mean, std}`) are checked against the channels instead."""
    image = x.ndim == 4
    if recipe.normalize == "auto":
        mean, std = _mean_and_std(x, rows, image)
        std = torch.where(std > 1e-8, std, torch.ones_like(std))  # constant features stay as they are
    else:
        mean, std = torch.tensor(recipe.normalize.mean), torch.tensor(recipe.normalize.std)
        expected = x.shape[1] if x.ndim in (2, 4) else None
        if len(mean) != len(std) or (expected is not None and len(mean) not in (1, expected)):
            raise RecipeError(f"normalize needs {expected} means and stds (one per channel/feature), "
                              f"got {len(mean)} and {len(std)}", key="normalize", line=recipe.line("normalize"))
        if len(mean) == 1:
            return mean, std
    shape = [1, -1, 1, 1] if image else [1, *x.shape[1:]]
    return mean.reshape(shape), std.reshape(shape)


def _mean_and_std(x: torch.Tensor, rows: torch.Tensor | None, image: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 mean and sample std (n - 1, as torch.std), over samples — and pixels, for images."""
    dims, shape = ([0, 2, 3], x.shape[1:2]) if image else ([0], x.shape[1:])
    count = 0  # values seen so far per statistic; then their mean and sum of squared deviations
    mean, spread = torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
    for _, chunk in row_chunks(x, rows):
        if chunk.numel() == 0:  # a dimension of size 0: no values to count
            continue
        chunk_var, chunk_mean = torch.var_mean(chunk.float(), dims, correction=0)  # one pass, no temporary
        n = len(chunk) * (chunk.shape[2] * chunk.shape[3] if image else 1)
        delta, total = chunk_mean.double() - mean, count + n
        mean += delta * (n / total)
        spread += chunk_var.double() * n + delta.square() * (count * n / total)
        count = total
    return mean.float(), (spread / (count - 1)).sqrt().float()
