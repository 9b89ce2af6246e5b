"""Keep Lightning's start-up chatter and advice meant for scripts out of notebook cells."""
from __future__ import annotations

import contextlib
import logging
import warnings

_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")
_MESSAGES = (
    ".*does not have many workers.*",
    ".*The number of training batches.*is smaller than the logging interval.*",
    ".*GPU available but not used.*",
    ".*`training_step` returned `None`.*",
    r".*isinstance\(treespec, LeafSpec\).*",
    ".*Total length of `.*` across ranks is zero.*",
    ".*is an invalid value for `.*` and has been ignored.*",
    ".*LightningModule.*has parameters that were not used.*",
    ".*The `srun` command is available on your system.*",
)


@contextlib.contextmanager
def quiet_lightning():
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for message in _MESSAGES:
            warnings.filterwarnings("ignore", message=message)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
