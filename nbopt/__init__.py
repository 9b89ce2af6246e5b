"""nbopt: optimise a deep learning model from a notebook, one recipe line per technique.

    %load_ext nbopt
    %%nbopt train
    model: mlp
    data: digits

The plain API works without IPython: ``nbopt.train(recipe)``, ``nbopt.check(recipe)``.
Heavy modules (torch, Lightning) are imported on first use, not at ``import nbopt``.
"""
from __future__ import annotations

from nbopt.errors import RecipeError

__all__ = ["train", "check", "RecipeError", "Run", "last", "load_ipython_extension", "unload_ipython_extension"]
__version__ = "0.1.0"

last = None  # the most recent Run made through the magics or train()


def train(recipe, namespace=None, **options):
    """Train once from a recipe (YAML text or dict) and return the Run. See ``nbopt.train.train``."""
    global last
    from nbopt.train import train as _train
    last = _train(recipe, namespace, **options)
    return last


def check(recipe, namespace=None):
    """Validate a recipe and resolve model and data without training; returns the Plan."""
    from nbopt.plan import check as _check
    return _check(recipe, namespace)


def __getattr__(name):
    if name == "Run":
        from nbopt.run import Run
        return Run
    raise AttributeError(f"module 'nbopt' has no attribute {name!r}")


def load_ipython_extension(ipython):
    from nbopt.magics import NboptMagics
    from nbopt.display.plots import register_figure_formatter
    ipython.register_magics(NboptMagics)
    register_figure_formatter()


def unload_ipython_extension(ipython):
    """Magics stay registered until the kernel restarts (IPython has no unregister)."""
