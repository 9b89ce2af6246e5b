"""`augment:` — random transforms of whole training batches, on the batch's device.

Image transforms come from kornia, which augments a (B, C, H, W) batch in one call instead of
sample by sample. mixup is written here because kornia draws its mixing weight from a uniform
range, not from Beta(α, α) as in Zhang et al. 2018. Mixing augmentations (mixup, cutmix) also mix
the targets, turning class labels into class probabilities.
"""
from __future__ import annotations

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

from nbopt.components import Component
from nbopt.errors import RecipeError
from nbopt.registry import Registry

AUGMENTATIONS = Registry("augment", "augmentation")
IMAGE_ONLY: set[str] = set()
MIXING: set[str] = set()
_SKIP = ("image_size",)

def _image(name, summary, positional=None):
    IMAGE_ONLY.add(name)
    return AUGMENTATIONS.register(name, summary, positional, _SKIP)

@_image("hflip", "flip left-right with probability p")
def hflip(image_size, p: float = 0.5):
    return K.RandomHorizontalFlip(p=p)

@_image("vflip", "flip upside-down with probability p")
def vflip(image_size, p: float = 0.5):
    return K.RandomVerticalFlip(p=p)

@_image("rotate", "rotate by a random angle in [-degrees, degrees]", ("degrees",))
def rotate(image_size, degrees: float = 15.0, p: float = 1.0):
    return K.RandomRotation(degrees=float(degrees), p=p)

@_image("translate", "shift by up to a fraction of the width/height", ("fraction",))
def translate(image_size, fraction: float = 0.1, p: float = 1.0):
    return K.RandomAffine(degrees=0.0, translate=(float(fraction), float(fraction)), p=p)

@_image("scale", "zoom by a random factor in [low, high]", ("low", "high"))
def scale(image_size, low: float = 0.9, high: float = 1.1, p: float = 1.0):
    return K.RandomAffine(degrees=0.0, scale=(float(low), float(high)), p=p)

@_image("crop", "pad by `pad` pixels, then crop back to the original size at a random place", ("pad",))
def crop(image_size, pad: int = 4, p: float = 1.0):
    return K.RandomCrop(tuple(image_size), padding=int(pad), p=p)

@_image("cutout", "blank out a random size×size square (DeVries & Taylor 2017)", ("size",))
def cutout(image_size, size: int = 8, p: float = 1.0):
    area = min(float(size) ** 2 / (image_size[0] * image_size[1]), 1.0)
    return K.RandomErasing(scale=(area, area), ratio=(1.0, 1.0), value=0.0, p=p)

class GaussianNoise(nn.Module):
    """Add N(0, std²) noise; works for tabular data as well as images."""

    def __init__(self, std: float):
        super().__init__()
        self.std = float(std)

    def forward(self, x):
        return x + self.std * torch.randn_like(x)

@AUGMENTATIONS.register("noise", "add Gaussian noise of this standard deviation (any data)", ("std",), _SKIP)
def noise(image_size, std: float = 0.1):
    return GaussianNoise(std)

class MixUp(nn.Module):
    """Blend each sample with another: λ·x_i + (1−λ)·x_j, λ ~ Beta(α, α); targets are blended too."""

    def __init__(self, alpha: float, num_classes: int | None):
        super().__init__()
        self.beta = torch.distributions.Beta(float(alpha), float(alpha))
        self.num_classes = num_classes

    def forward(self, x, y):
        lam = float(self.beta.sample())
        perm = torch.randperm(len(x), device=x.device)
        mixed = lam * x + (1 - lam) * x[perm]
        return mixed, lam * _soft(y, self.num_classes, x.dtype) + (1 - lam) * _soft(y[perm], self.num_classes, x.dtype)

class CutMix(nn.Module):
    """Paste a random box of another sample (Yun et al. 2019); targets weighted by the box's area."""

    def __init__(self, alpha: float, num_classes: int | None):
        super().__init__()
        self.mix = K.RandomCutMixV2(beta=float(alpha), use_correct_lambda=True, data_keys=["input", "class"])
        self.num_classes = num_classes

    def forward(self, x, y):
        mixed, labels = self.mix(x, y)
        original, pasted, lam = labels[0, :, 0].long(), labels[0, :, 1].long(), labels[0, :, 2:3].to(x.dtype)
        return mixed, lam * _soft(original, self.num_classes, x.dtype) + (1 - lam) * _soft(pasted, self.num_classes,
                                                                                          x.dtype)

def _soft(y, num_classes, dtype):
    if num_classes is None:  # regression targets mix as they are
        return y.to(dtype) if y.ndim > 1 else y.to(dtype).unsqueeze(1)
    return y.to(dtype) if y.ndim > 1 else F.one_hot(y, num_classes).to(dtype)

@AUGMENTATIONS.register("mixup", "blend pairs of samples and their targets, λ ~ Beta(alpha, alpha)", ("alpha",), _SKIP)
def mixup(image_size, alpha: float = 0.2):
    return ("mixup", alpha)

@_image("cutmix", "paste a box from another image; targets weighted by area, λ ~ Beta(alpha, alpha)", ("alpha",))
def cutmix(image_size, alpha: float = 1.0):
    return ("cutmix", alpha)

MIXING.update({"mixup", "cutmix"})

class Augmenter(nn.Module):
    """The whole `augment:` list as one module: ``(x, y) -> (x', y')`` for a training batch."""

    def __init__(self, transforms: list[nn.Module], mix: nn.Module | None, task: str):
        super().__init__()
        self.transforms = nn.Sequential(*transforms)
        self.mix = mix
        self.task = task

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        if len(self.transforms):
            x = self.transforms(x)
        if self.mix is not None:
            x, y = self.mix(x, y)
            if self.task == "regression" and y.shape[1] == 1:
                y = y[:, 0]
        return x, y

def check_augment(components: list[Component], input_shape: tuple, task: str, line: int | None) -> None:
    """Names, arguments and data fit, before any training."""
    names = []
    for component in components:
        entry, _ = AUGMENTATIONS.resolve(component, "augment", line)
        if entry.name in IMAGE_ONLY and len(input_shape) != 3:
            raise RecipeError(f"{entry.name} is an image augmentation but the samples have shape "
                              f"{list(input_shape)}; for tabular data use noise or mixup", key="augment", line=line)
        names.append(entry.name)
    if sum(name in MIXING for name in names) > 1:
        raise RecipeError("use one of mixup and cutmix, not both", key="augment", line=line)

def build_augmenter(components: list[Component], input_shape: tuple, task: str, num_classes: int | None
                    ) -> Augmenter | None:
    if not components:
        return None
    image_size = tuple(input_shape[1:]) if len(input_shape) == 3 else None
    transforms, mix = [], None
    for component in components:
        entry, kwargs = AUGMENTATIONS.resolve(component)
        built = entry.build(image_size, **kwargs)
        if isinstance(built, tuple):
            kind, alpha = built
            mix = (MixUp if kind == "mixup" else CutMix)(alpha, num_classes if task == "classification" else None)
        else:
            transforms.append(built)
    return Augmenter(transforms, mix, task)

def describe(components: list[Component]) -> str:
    return ", ".join(c.to_text() for c in components) if components else "none"

