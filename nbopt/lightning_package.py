"""Which Lightning package trains a run: ``pytorch_lightning`` or ``lightning.pytorch``.

The two packages ship the same code under two names, so each has its own classes, and a Trainer
knows only its own: ``Trainer.fit`` refuses a LightningModule of the other package, and it finds
checkpoint and early-stopping callbacks — which it calls after every other callback's epoch end —
with `isinstance` against its own ``Checkpoint`` and ``EarlyStopping``. A run is therefore trained
by one package throughout: a user's LightningModule by the package it subclasses (Lightning's own
docs write ``import lightning as L``), nbopt's own module by ``pytorch_lightning``, or by
``lightning.pytorch`` where only ``lightning`` is installed. nbopt's own modules and callbacks are
written once (``OnLightning``) and made on the run's package when a run needs them, so only the
packages in use are imported.
"""
from __future__ import annotations

import functools
import sys
from types import ModuleType

PACKAGES = ("pytorch_lightning", "lightning.pytorch")


def default_package() -> ModuleType:
    """The package that trains nbopt's built-in models: pytorch_lightning, else lightning.pytorch."""
    try:
        import pytorch_lightning as package
    except ImportError:
        import lightning.pytorch as package
    return package


def package_of(obj, kind: str = "LightningModule") -> ModuleType | None:
    """The package whose `kind` (``LightningModule``, ``LightningDataModule``) `obj` is, or None.

    Only packages already imported are asked: an object of a package's class means it was imported."""
    for name in PACKAGES:
        package = sys.modules.get(name)
        if package is not None and isinstance(obj, getattr(package, kind)):
            return package
    return None


def is_datamodule(obj) -> bool:
    """A LightningDataModule of either package: nbopt only reads its loaders, which fit any Trainer."""
    return package_of(obj, "LightningDataModule") is not None


def overrides(module, method: str) -> bool:
    """True when a LightningModule defines `method` itself instead of inheriting its package's default."""
    package = package_of(module)
    return package.utilities.model_helpers.is_overridden(method, module, package.LightningModule)


class OnLightning:
    """A class written once for both packages: ``Cls.on(package)`` is Cls made on that package's
    `lightning_base` (a dotted name in the package), made once per package and then kept."""

    lightning_base = "Callback"

    @classmethod
    @functools.cache
    def on(cls, package: ModuleType) -> type:
        base = package
        for name in cls.lightning_base.split("."):
            base = getattr(base, name)
        # The written class's name: Lightning keys a callback's state in a checkpoint by it.
        return type(cls.__name__, (cls, base), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
