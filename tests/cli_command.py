"""How the tests start `nbopt` from a shell, as a user would."""
from __future__ import annotations

import sys
from pathlib import Path


def nbopt_command() -> list[str]:
    """The installed console script when there is one, else the module."""
    script = Path(sys.executable).parent / "nbopt"
    return [str(script)] if script.exists() else [sys.executable, "-m", "nbopt.cli"]
