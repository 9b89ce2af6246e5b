"""What a model costs: parameters, non-zero parameters, bytes on disk, MACs and CPU latency.

Measured, not estimated: latency is the median of timed forward passes on the CPU (in PyTorch, and
in ONNX Runtime when it is installed: where a shipped model would run), size is the length of the
saved state_dict, sparsity is counted from the weights.
"""
from __future__ import annotations

import copy
import io
import statistics
import time

import torch
from torch import nn


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all, non-zero) parameters; quantized layers count their packed int8 weights."""
    total = nonzero = 0
    tensors = [p.detach() for p in model.parameters()]
    for module in model.modules():  # dynamic-quantized Linear keeps its weight outside .parameters()
        weight_fn = getattr(module, "weight", None)
        if callable(weight_fn) and hasattr(module, "_packed_params"):
            tensors.append(weight_fn().dequantize())
            bias = module.bias()
            if bias is not None:
                tensors.append(bias.detach())
    for t in tensors:
        total += t.numel()
        nonzero += int((t != 0).sum())
    return total, nonzero


def size_on_disk(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def count_macs(model: nn.Module, example: torch.Tensor) -> int | None:
    """Multiply-accumulates of one forward pass (Torch-Pruning's counter); None where it cannot count."""
    import torch_pruning as tp
    try:
        macs, _ = tp.utils.count_ops_and_params(copy.deepcopy(model).cpu().eval(), example.cpu())
    except Exception:  # quantized or exotic layers the counter does not know: report none rather than guess
        return None
    return int(macs)


@torch.no_grad()
def cpu_latency_ms(model: nn.Module, example: torch.Tensor, budget_s: float = 0.3) -> float:
    """Median milliseconds per forward pass on the CPU, over as many passes as fit the time budget."""
    model = copy.deepcopy(model).cpu().eval()
    example = example.cpu()
    return _median_ms(lambda: model(example), budget_s)


def _median_ms(call, budget_s: float) -> float:
    call()
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 200):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def onnx_runtime_latency_ms(model: nn.Module, examples: list[torch.Tensor], budget_s: float = 0.3) -> list | None:
    """Median milliseconds per batch in ONNX Runtime (as many threads as torch uses), one per example; None
    without onnxruntime, or for a model torch.onnx cannot export (int8 layers)."""
    try:
        import onnxruntime
        from nbopt.deployment import quiet_exporters
        with quiet_exporters():
            program = torch.onnx.export(copy.deepcopy(model).cpu().eval(), (examples[0].cpu(),), dynamo=True,
                                        input_names=["input"], dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
    except Exception:  # not installed, or layers the exporter does not know: the report leaves the row empty
        return None
    return [_median_ms(lambda x=x.cpu().numpy(): session.run(None, {"input": x}), budget_s) for x in examples]


def profile(model: nn.Module, sample: torch.Tensor, score: dict) -> dict:
    """One row of the compression report; `sample` is one input of the data's shape, `score` the val metric."""
    total, nonzero = count_parameters(model)
    one, batch = sample.unsqueeze(0), sample.unsqueeze(0).repeat(64, *[1] * sample.ndim)
    onnx = onnx_runtime_latency_ms(model, [one, batch]) or [None, None]
    return {"parameters": total, "nonzero_parameters": nonzero, "size_kb": size_on_disk(model) / 1024,
            "macs": count_macs(model, one), "latency_ms_batch1": cpu_latency_ms(model, one),
            "latency_ms_batch64": cpu_latency_ms(model, batch), "onnx_latency_ms_batch1": onnx[0],
            "onnx_latency_ms_batch64": onnx[1], **score}
