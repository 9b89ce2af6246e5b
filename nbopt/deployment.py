"""Deploying a run (``run.export(PATH)``): its model as a file that other runtimes load, checked after writing.

``.onnx`` goes through ``torch.onnx`` (ONNX Runtime, TensorRT, browsers, phones), ``.pt2`` through
``torch.export`` (a Python-free program that PyTorch loads back). The run's normalisation is folded
in as the first operation, so the file takes the inputs ``run.predict`` takes, after their encoding
(``run.inputs.encode`` for tables and image files); the batch dimension stays free. An int8 run
becomes an ONNX model quantised by ONNX Runtime's own quantizer, never a silent float model.

After writing, the file is loaded back and fed validation inputs: its outputs must match
``run.predict`` within the stated tolerance, or the file is removed and the export fails.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nbopt.errors import RecipeError
from nbopt.store import FILE_MODE

FLOAT_TOLERANCE = 1e-4  # largest |file − run.predict| allowed, relative to the outputs' scale
INT8_AGREEMENT = 0.95  # an int8 file quantises activations its own way: the predicted classes must agree this often
CHECK_SAMPLES = 256


class Deployable(nn.Module):
    """The network with the run's normalisation in front: what a deployed model is fed is raw."""

    def __init__(self, net: nn.Module, mean: torch.Tensor | None, std: torch.Tensor | None):
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean if mean is not None else torch.zeros(1))
        self.register_buffer("std", std if std is not None else torch.ones(1))

    def forward(self, x):
        return self.net((x.float() - self.mean) / self.std)


@dataclass
class Exported:
    """What was written and how well it matches the run: `str()` is the one line nbopt prints."""
    path: Path
    format: str
    size_bytes: int
    samples: int
    difference: float  # largest |file − run.predict| (float files), or the share of differing classes (int8)
    tolerance: float

    def __str__(self) -> str:
        size = f"{self.size_bytes / 1024:,.0f} KB" if self.size_bytes < 2**20 else f"{self.size_bytes / 2**20:,.1f} MB"
        if self.format == "onnx-int8":
            how = (f"its predicted classes agree with run.predict on {1 - self.difference:.1%} of them "
                   f"(at least {self.tolerance:.0%} required)")
        else:
            how = f"its outputs match run.predict within {self.tolerance:g} (largest difference {self.difference:.1e})"
        return f"Wrote {self.path} ({self.format}, {size}); checked on {self.samples} validation inputs: {how}."

    __repr__ = __str__


def export_model(run, path: str | Path) -> Exported:
    """Write `run`'s model to `path` (.onnx or .pt2), load it back, and check it against `run.predict`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".onnx", ".pt2"):
        raise RecipeError(f"cannot export to {path.name}: the file name must end in .onnx (ONNX Runtime and other "
                          "runtimes) or .pt2 (torch.export)")
    if run.model is None:
        raise RecipeError(f"run '{run.name}' has no model to export here; load it with nbopt.load('{run.name}')")
    inputs = _validation_inputs(run)
    int8 = _is_int8(run.model)
    if int8 and run.float_model is None:
        raise RecipeError(f"run '{run.name}' keeps only its int8 model here; export it in the session that trained it")
    if int8 and suffix == ".pt2":
        raise RecipeError(f"run '{run.name}' is int8 (quantize: dynamic), which torch.export cannot save; export "
                          "it as .onnx, which ONNX Runtime quantises the same way")
    if suffix == ".onnx":
        _require("onnxruntime", "onnxscript")
    expected = run.predict(inputs).float()
    float_net = run.float_model if int8 else run.model
    deployable = Deployable(float_net, *_normalization(run, inputs)).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    scratch = Path(scratch)
    try:
        if suffix == ".pt2":
            _write_pt2(deployable, inputs, scratch)
        else:
            _write_onnx(deployable, inputs, scratch, int8)
        result = _check(scratch, suffix, int8, inputs, expected, path)
        os.replace(scratch, path)
        return result
    finally:
        scratch.unlink(missing_ok=True)
        for extra in path.parent.glob(f"{scratch.name}*"):  # an exporter's side files
            extra.unlink(missing_ok=True)


def _validation_inputs(run) -> torch.Tensor:
    if run._validation is None:
        raise RecipeError(f"run '{run.name}' has no validation data here to check the exported file with; load "
                          f"it with nbopt.load('{run.name}') first")
    batches, count = [], 0
    for x, _ in run._validation:
        batches.append(torch.as_tensor(x))
        count += len(x)
        if count >= CHECK_SAMPLES:
            break
    if count < 2:
        raise RecipeError(f"run '{run.name}' has fewer than 2 validation inputs; an export is checked on a batch")
    return torch.cat(batches)[:CHECK_SAMPLES].float()


def _normalization(run, inputs: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    from nbopt.run import normalization_tensors
    if run.normalization is None:
        return None, None
    return normalization_tensors(run.normalization, inputs)


def _is_int8(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


def _require(*modules: str) -> None:
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            raise RecipeError(f"exporting to ONNX needs the {module} package: pip install nbopt[onnx]") from None


@contextlib.contextmanager
def quiet_exporters():
    """The exporters print their progress and warn about optional packages (torchvision) they skip;
    ONNX Runtime's quantizer suggests a pre-processing step through the root logger."""
    loggers = [logging.getLogger("torch.onnx"), logging.getLogger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _batch_dimension() -> dict:
    return {"x": {0: torch.export.Dim("batch", min=1)}}


def _write_pt2(model: nn.Module, inputs: torch.Tensor, path: Path) -> None:
    with quiet_exporters():
        program = torch.export.export(model, (inputs[:2],), dynamic_shapes=_batch_dimension())
        torch.export.save(program, path)


def _write_onnx(model: nn.Module, inputs: torch.Tensor, path: Path, int8: bool) -> None:
    with quiet_exporters():
        torch.onnx.export(model, (inputs[:2],), path, input_names=["input"], output_names=["output"],
                          dynamic_shapes=_batch_dimension(), dynamo=True, external_data=False)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        float_file = path.with_name(path.name + ".float.onnx")
        os.replace(path, float_file)
        try:
            with quiet_exporters():
                quantize_dynamic(str(float_file), str(path), weight_type=QuantType.QInt8)
        finally:
            float_file.unlink(missing_ok=True)


def _check(path: Path, suffix: str, int8: bool, inputs: torch.Tensor, expected: torch.Tensor,
           final: Path) -> Exported:
    if suffix == ".pt2":
        with torch.no_grad(), quiet_exporters():
            outputs = torch.export.load(path).module()(inputs)
    else:
        import onnxruntime
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs = torch.from_numpy(session.run(None, {"input": inputs.numpy()})[0])
    size = path.stat().st_size
    if int8:
        differing = float((outputs.argmax(1) != expected.argmax(1)).float().mean())
        if 1 - differing < INT8_AGREEMENT:
            raise RecipeError(f"the int8 ONNX model predicts other classes than run.predict on {differing:.1%} of "
                              f"the validation inputs (more than {1 - INT8_AGREEMENT:.0%}); nothing was written")
        return Exported(final, "onnx-int8", size, len(inputs), differing, INT8_AGREEMENT)
    difference = float((outputs - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    if difference > FLOAT_TOLERANCE * scale:
        raise RecipeError(f"the exported model's outputs differ from run.predict by up to {difference:.2e} (more "
                          f"than {FLOAT_TOLERANCE:g} × {scale:.3g}); nothing was written")
    return Exported(final, suffix[1:], size, len(inputs), difference, FLOAT_TOLERANCE)
