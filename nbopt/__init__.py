"""nbopt: optimise a deep learning model from a notebook, one recipe line per technique.

    %load_ext nbopt
    %%nbopt train
    model: mlp
    data: digits

The plain API works without IPython — ``train``, ``check``, ``compare``, ``sweep``, ``runs``,
``delete_runs``, ``export``, ``load`` — and the magics, the command line and the panel are thin doors onto it.
Heavy modules (torch, Lightning) are imported on first use, not at ``import nbopt``.
"""
from __future__ import annotations

from nbopt.errors import RecipeError

__all__ = ["train", "check", "compare", "sweep", "runs", "delete_runs", "export", "load", "load_run", "show_augment", "RecipeError",
           "Run", "last", "load_ipython_extension", "unload_ipython_extension"]
__version__ = "0.1.0"

last = None  # the most recent Run made through the magics or train()


def _one_line_errors() -> None:
    from IPython import get_ipython

    from nbopt.errors import show_recipe_errors_as_one_line
    shell = get_ipython()
    if shell is not None:
        show_recipe_errors_as_one_line(shell)


def train(recipe, namespace=None, **options):
    """Train once from a recipe (YAML text or dict) and return the Run. See ``nbopt.training.train``."""
    global last
    from nbopt.training import train as _train
    _one_line_errors()
    last = _train(recipe, namespace, **options)
    return last


def check(recipe, namespace=None, *, interactive=None):
    """Validate a recipe and resolve model and data without training; returns the Plan."""
    from nbopt.plan import check as _check
    _one_line_errors()
    return _check(recipe, namespace, interactive=interactive)


def compare(recipe, namespace=None, **options):
    """Train the recipe's `variants:` side by side; returns a Comparison. See ``nbopt.comparison.compare``."""
    from nbopt.comparison import compare as _compare
    _one_line_errors()
    return _compare(recipe, namespace, **options)


def sweep(recipe, namespace=None, **options):
    """Search the recipe's `search:` space with Optuna; returns a Sweep. See ``nbopt.sweeps.sweep``."""
    from nbopt.sweeps import sweep as _sweep
    _one_line_errors()
    return _sweep(recipe, namespace, **options)


def runs(all=False):
    """The recorded runs, newest first: a DataFrame indexed by name, one row per train, compare or sweep
    (`all=True` adds each compare's and sweep's runs under it), its status and its best score with the metric."""
    import pandas as pd

    from nbopt.catalog import COLUMNS, list_runs
    table = pd.DataFrame(list_runs(unfold=all), columns=COLUMNS).astype({"runs": "Int64", "epochs": "Int64"})
    return table.set_index("name")


def delete_runs(*names, keep_last=None):
    """Delete runs, compares and sweeps by name (as `runs` lists them), and/or all but the newest `keep_last`;
    returns the names deleted. Nothing is deleted when a name is unknown or still running."""
    from nbopt.catalog import delete_runs as _delete
    _one_line_errors()
    return _delete(*names, keep_last=keep_last)


def export(name, to=None, model=None):
    """Write run `name`'s recipe to a YAML file (default: NAME.yaml) that `nbopt run` accepts and return its path;
    with `model=PATH`, write its trained model instead (.onnx or .pt2, checked against the run: ``Run.export``)
    and return what was written (its ``str`` is one line)."""
    from nbopt.catalog import export_recipe
    _one_line_errors()
    if model is None:
        return export_recipe(name, to)
    from nbopt.run import load_run as _load
    exported = _load(name).export(model)
    if to is not None:
        export_recipe(name, to)
    return exported


def load(name, namespace=None):
    """The Run of a recorded run (a name under the runs folder, or a folder's path), rebuilt from its folder."""
    from nbopt.run import load_run as _load
    _one_line_errors()
    return _load(name, namespace)


load_run = load


def show_augment(recipe, namespace=None, **options):
    """A grid of augmented training samples for the recipe's `augment:` list (a matplotlib Figure)."""
    from nbopt.display.augment_grid import show_augment as _show
    _one_line_errors()
    return _show(recipe, namespace, **options)


def __getattr__(name):
    if name == "Run":
        from nbopt.run import Run
        return Run
    raise AttributeError(f"module 'nbopt' has no attribute {name!r}")


def load_ipython_extension(ipython):
    from nbopt.magics import NboptMagics
    from nbopt.display.plots import register_figure_formatter
    from nbopt.errors import show_recipe_errors_as_one_line
    ipython.register_magics(NboptMagics)
    show_recipe_errors_as_one_line(ipython)
    register_figure_formatter()


def unload_ipython_extension(ipython):
    """Magics stay registered until the kernel restarts (IPython has no unregister)."""
