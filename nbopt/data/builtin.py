"""Built-in datasets. The small ones ship with scikit-learn and work offline; the image sets
(mnist, fashion_mnist, cifar10) need torchvision and a download the first time."""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from nbopt.errors import RecipeError
from nbopt.registry import Registry

DATASETS = Registry("data", "built-in dataset")


@dataclass
class ArrayData:
    """Whole dataset in memory; ``test`` is an official test split when the source has one."""
    x: torch.Tensor
    y: torch.Tensor
    description: str
    test: tuple[torch.Tensor, torch.Tensor] | None = None


@functools.cache
def _sklearn_arrays(loader) -> tuple[np.ndarray, np.ndarray]:
    """A scikit-learn set's arrays, read once a process: reading digits' compressed CSV was over half of
    checking a recipe on it, and a comparison or sweep checks one recipe per run."""
    bunch = loader()
    for array in (bunch.data, bunch.target):
        array.flags.writeable = False
    return bunch.data, bunch.target


def _sklearn(loader, description: str, image_shape: tuple | None = None) -> ArrayData:
    data, target = _sklearn_arrays(loader)
    x = torch.tensor(data, dtype=torch.float32)  # a fresh tensor a call, so no run shares another's
    if image_shape is not None:
        x = x.reshape(-1, *image_shape)
    return ArrayData(x, torch.tensor(target, dtype=torch.long), description)


@DATASETS.register("digits", "8×8 handwritten digits, 1,797 images, 10 classes (scikit-learn, offline)")
def digits():
    from sklearn.datasets import load_digits
    return _sklearn(load_digits, "digits: 1,797 8×8 grey images, 10 classes", (1, 8, 8))


@DATASETS.register("wine", "wine cultivars from 13 chemical measurements, 178 samples, 3 classes (offline)")
def wine():
    from sklearn.datasets import load_wine
    return _sklearn(load_wine, "wine: 178 samples, 13 features, 3 classes")


@DATASETS.register("breast_cancer", "tumour benign/malignant from 30 features, 569 samples, 2 classes (offline)")
def breast_cancer():
    from sklearn.datasets import load_breast_cancer
    return _sklearn(load_breast_cancer, "breast_cancer: 569 samples, 30 features, 2 classes")


@DATASETS.register("iris", "iris species from 4 measurements, 150 samples, 3 classes (offline)")
def iris():
    from sklearn.datasets import load_iris
    return _sklearn(load_iris, "iris: 150 samples, 4 features, 3 classes")


@DATASETS.register("synthetic", "generated data: class prototypes plus noise (classes=0 gives regression)",
                   ("n",))
def synthetic(n: int = 2000, shape: list = (20,), classes: int = 2, noise: float = 1.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    shape = tuple(int(s) for s in shape)
    features = math.prod(shape)
    if classes and classes > 0:
        prototypes = torch.randn(classes, features, generator=gen)
        y = torch.randint(0, classes, (n,), generator=gen)
        x = prototypes[y] + noise * torch.randn(n, features, generator=gen)
        return ArrayData(x.reshape(n, *shape), y, f"synthetic: {n:,} samples of shape {list(shape)}, {classes} classes")
    weights = torch.randn(features, generator=gen) / math.sqrt(features)
    x = torch.randn(n, features, generator=gen)
    y = torch.tanh(x @ weights) + 0.1 * noise * torch.randn(n, generator=gen)
    return ArrayData(x.reshape(n, *shape), y, f"synthetic regression: {n:,} samples of shape {list(shape)}")


def _torchvision(name: str, cls_name: str, root: str | None):
    try:
        import torchvision.datasets as tvd
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        raise RecipeError(f"the {name} dataset needs torchvision, which could not be imported ({exc}); "
                          "install a torchvision that matches your torch, or use digits, wine or synthetic",
                          key="data") from None
    root = root or os.path.join(os.path.expanduser("~"), ".cache", "nbopt", "datasets")
    splits = []
    for train in (True, False):
        try:
            ds = getattr(tvd, cls_name)(root, train=train, download=True)
        except Exception as exc:
            raise RecipeError(f"could not download {name} into {root} ({exc}); check the network connection "
                              "or place the files there by hand", key="data") from None
        x = torch.as_tensor(np.asarray(ds.data), dtype=torch.float32) / 255.0
        x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x.unsqueeze(1)
        splits.append((x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)))
    (x, y), test = splits
    return ArrayData(x, y, f"{name}: {len(x):,} training images of shape {list(x.shape[1:])}, 10 classes", test)


@DATASETS.register("mnist", "handwritten digits 28×28, 60,000 + 10,000 test (torchvision, downloads)")
def mnist(root: str | None = None):
    return _torchvision("mnist", "MNIST", root)


@DATASETS.register("fashion_mnist", "clothing 28×28, 60,000 + 10,000 test (torchvision, downloads)")
def fashion_mnist(root: str | None = None):
    return _torchvision("fashion_mnist", "FashionMNIST", root)


@DATASETS.register("cifar10", "colour 32×32 objects, 50,000 + 10,000 test (torchvision, downloads)")
def cifar10(root: str | None = None):
    return _torchvision("cifar10", "CIFAR10", root)


from nbopt.data import files  # noqa: E402,F401  (registers csv and parquet, which build on this registry)
from nbopt.data import images  # noqa: E402,F401  (registers images, which builds on this registry)
