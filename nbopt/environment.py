"""Where nbopt is running: inside a notebook kernel or not, and the notebook's variables.

The doors (magics, panel, the Python API) ask once and pass the answer down, so checking a recipe
never depends on the display layer.
"""
from __future__ import annotations


def _shell():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def in_notebook() -> bool:
    """True inside a Jupyter kernel (a terminal IPython has no kernel and no rich display)."""
    shell = _shell()
    return shell is not None and getattr(shell, "kernel", None) is not None


def notebook_namespace() -> dict:
    """The notebook's variables when running inside IPython, else nothing."""
    shell = _shell()
    return shell.user_ns if shell is not None else {}
