"""`quantize: dynamic` — post-training int8 dynamic quantization of Linear layers (CPU).

Weights are stored as int8 and activations quantized on the fly; nothing is retrained, so the
model is validated again afterwards to show what the smaller model costs in accuracy.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def quantize_dynamic(model: nn.Module) -> nn.Module:
    """An int8 copy of a float model (on CPU); the float model is left as it is."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        from torch.ao.quantization import quantize_dynamic as _quantize
        float_copy = copy.deepcopy(model).cpu().eval()
        return _quantize(float_copy, {nn.Linear}, dtype=torch.qint8)
