"""Several of nbopt's callbacks as one Lightning callback, because Lightning's per-step cost grows with
the number of callbacks.

Lightning calls every hook of every callback at every step — each inside a profiler context, whether
the callback implements the hook or not. With six callbacks that was a sixth of a small model's step.
A Bundle is one callback that passes each hook on to the parts that implement it, in their order.
The Bundle's checkpoint state holds each part's under the part's own key; a checkpoint written
before callbacks were bundled (each part's state at the top) loads too.
"""
from __future__ import annotations

import copy

from nbopt.lightning_package import OnLightning

_OWN = ("on_save_checkpoint", "on_load_checkpoint")  # the Bundle's own: it stores its parts' states


def _package_callback(cls: type) -> type:
    """The Lightning package's Callback class that `cls` was made on."""
    return next(base for base in cls.__mro__ if base.__name__ == "Callback"
                and base.__module__.split(".")[0] in ("pytorch_lightning", "lightning"))


def _hooks(callback_class: type) -> list[str]:
    return [name for name in vars(callback_class) if name.startswith(("on_", "setup", "teardown"))]


def _forward(calls: list):
    def hook(*args, **kwargs) -> None:
        for call in calls:
            call(*args, **kwargs)
    return hook


class Bundle(OnLightning):
    """One callback standing for `parts` (callbacks made on the same package)."""

    def __init__(self, parts):
        self.parts = list(parts)
        base = _package_callback(type(self))
        for name in _hooks(base):
            calls = [getattr(part, name) for part in self.parts if getattr(type(part), name) is not getattr(base, name)]
            if calls and name not in _OWN:
                setattr(self, name, _forward(calls))  # found by Lightning's getattr before the no-op method
        self._save = [part.on_save_checkpoint for part in self.parts
                      if type(part).on_save_checkpoint is not base.on_save_checkpoint]
        self._load = [part.on_load_checkpoint for part in self.parts
                      if type(part).on_load_checkpoint is not base.on_load_checkpoint]

    def state_dict(self) -> dict:
        """Each part's state under its own key, as Lightning would keep it for the part on its own."""
        return {part.state_key: state for part in self.parts if (state := part.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        for part in self.parts:
            if part.state_key in state:
                part.load_state_dict(state[part.state_key])

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        _forward(self._save)(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        """A checkpoint from before bundling keeps each part's state at the top: load those from there."""
        states = checkpoint.get("callbacks", {})
        if self.state_key not in states:
            self.load_state_dict({key: copy.deepcopy(value) for key, value in states.items()})
        _forward(self._load)(trainer, pl_module, checkpoint)


def part_state(callback_states: dict, key: str) -> dict:
    """A part's state in a checkpoint's `callbacks`, bundled or (written before bundling) on its own."""
    return callback_states.get(Bundle.__qualname__, {}).get(key) or callback_states.get(key) or {}
