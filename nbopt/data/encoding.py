"""Raw inputs → the tensors a run's model takes, the same way for its training data and for
``run.predict``. Each kind of data has its encoder (arrays here; data frames and image files beside
their loaders), kept on the Run, so a prediction never needs the training data again."""
from __future__ import annotations

import numpy as np
import torch


class TensorInputs:
    """Arrays and tensors, as float32 in their own shape."""

    def encode(self, x) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.float()
        return torch.as_tensor(np.array(x, dtype=np.float32, copy=True))  # a copy: pandas hands out read-only arrays
