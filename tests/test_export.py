"""Exported models: the file takes raw inputs (the normalisation is inside), keeps a free batch dimension,
and gives what `run.predict` gives — read back with ONNX Runtime and torch.export themselves."""
from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import onnxruntime
import pytest
import torch
from cli_command import nbopt_command
from sklearn.datasets import load_digits

import nbopt
from test_parallel import ROOT

DIGITS = load_digits().images[:64, None].astype("float32")  # raw 1×8×8 pixels 0..16: the file normalises them
IMAGES = "data: synthetic(n=300, shape=[1, 12, 12], classes=3)\nepochs: 2\n"
MODELS = {
    "mlp": ("model: mlp\ndata: digits\nepochs: 2\n", 64),
    "cnn": ("model: cnn(width=8)\n" + IMAGES, 3),
    "batchnorm cnn": ("model: cnn(width=8)\nbatchnorm: true\n" + IMAGES, 3),
    "channel-pruned cnn": ("model: cnn(width=8)\nprune: {method: channels, amount: 0.5, finetune: 1}\n" + IMAGES, 3),
}


def raw_inputs(recipe: str) -> np.ndarray:
    if "digits" in recipe:
        return DIGITS
    return (np.random.default_rng(1).normal(size=(33, 1, 12, 12)) * 3 + 5).astype("float32")


def encoded(run, x: np.ndarray) -> np.ndarray:
    """What the file takes: the raw inputs after the run's encoding (digits' flat rows become 1×8×8 images)."""
    return run.inputs.encode(x).numpy() if run.inputs is not None else x


def onnx_outputs(path, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch", "the batch dimension is free"
    return session.run(None, {"input": x})[0]


@pytest.mark.parametrize("case", list(MODELS))
def test_an_onnx_file_gives_what_predict_gives_on_raw_inputs(train, tmp_path, case):
    recipe, _ = MODELS[case]
    run = train(recipe)
    written = run.export(tmp_path / "model.onnx")
    assert re.fullmatch(rf"Wrote {re.escape(str(tmp_path / 'model.onnx'))} \(onnx, [\d,]+ KB\); checked on \d+ validation "
                        r"inputs: its outputs match run\.predict within 0\.0001 \(largest difference [\d.e+-]+\)\.",
                        str(written))
    x = encoded(run, raw_inputs(recipe))
    expected = run.predict(raw_inputs(recipe)).numpy()
    np.testing.assert_allclose(onnx_outputs(tmp_path / "model.onnx", x), expected, atol=1e-4 * max(1, abs(expected).max()))
    np.testing.assert_allclose(onnx_outputs(tmp_path / "model.onnx", x[:1]), expected[:1], atol=1e-3)
    if case == "channel-pruned cnn":  # the file holds the smaller model
        assert written.size_bytes < train(MODELS["cnn"][0]).export(tmp_path / "dense.onnx").size_bytes


@pytest.mark.parametrize("case", ["mlp", "batchnorm cnn"])
def test_a_pt2_file_loads_back_with_torch_export(train, tmp_path, case):
    recipe, _ = MODELS[case]
    run = train(recipe)
    run.export(tmp_path / "model.pt2")
    program = torch.export.load(tmp_path / "model.pt2").module()
    x = raw_inputs(recipe)
    torch.testing.assert_close(program(torch.from_numpy(encoded(run, x))), run.predict(x), atol=1e-4, rtol=0)


def test_an_int8_run_exports_an_onnx_model_quantised_by_onnx_runtime(train, tmp_path):
    run = train("model: mlp(hidden=[128, 64])\ndata: digits\nepochs: 3\nquantize: dynamic\n")
    written = run.export(tmp_path / "int8.onnx")
    assert written.format == "onnx-int8" and "predicted classes agree with run.predict on" in str(written)
    float_size = train("model: mlp(hidden=[128, 64])\ndata: digits\nepochs: 3\n").export(tmp_path / "f.onnx").size_bytes
    assert written.size_bytes < float_size / 2, "int8 weights, not a silent float model"
    agree = (onnx_outputs(tmp_path / "int8.onnx", encoded(run, DIGITS)).argmax(1) == run.predict(DIGITS).numpy().argmax(1)).mean()
    assert agree >= 0.95
    with pytest.raises(nbopt.RecipeError, match=r"is int8 \(quantize: dynamic\), which torch.export cannot save; "
                                                r"export it as \.onnx"):
        run.export(tmp_path / "int8.pt2")
    assert not (tmp_path / "int8.pt2").exists()


def test_a_file_name_nbopt_cannot_write_is_one_line(train, tmp_path):
    run = train("model: mlp\ndata: iris\nepochs: 1\n")
    with pytest.raises(nbopt.RecipeError, match=r"^cannot export to model\.pkl: the file name must end in \.onnx "):
        run.export(tmp_path / "model.pkl")
    assert list(tmp_path.glob("*model*")) == []


def test_export_from_the_shell_loads_the_run_and_prints_one_line(train, tmp_path, runs_dir):
    run = train("model: mlp\ndata: digits\nepochs: 1\n", name="shipped")
    env = dict(os.environ, NBOPT_RUNS_DIR=str(runs_dir), PYTHONPATH=str(ROOT) + os.pathsep +
               os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(nbopt_command() + ["export", "shipped", "--model", "shipped.onnx"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Wrote shipped.onnx (onnx, ") and done.stdout.count("\n") == 1
    assert done.stderr == "", "no exporter chatter"
    np.testing.assert_allclose(onnx_outputs(tmp_path / "shipped.onnx", encoded(run, DIGITS)), run.predict(DIGITS).numpy(), atol=1e-4)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "shipped.onnx").stat().st_mode & 0o777 == 0o666 & ~umask


def test_the_export_magic_writes_the_model(kernel):
    reply, outputs = kernel.execute("%%nbopt train --name magic-export\nmodel: mlp\ndata: digits\nepochs: 1\n",
                                    timeout=300)
    assert reply["status"] == "ok", kernel.errors(outputs)
    reply, outputs = kernel.execute("%nbopt export magic-export --model magic.pt2", timeout=300)
    assert reply["status"] == "ok", kernel.errors(outputs)
    assert kernel.text(outputs).startswith("Wrote magic.pt2 (pt2, ")
    assert (kernel.cwd / "magic.pt2").exists()


def test_the_compression_report_times_both_models_in_onnx_runtime_too(train):
    run = train("model: cnn(width=8)\n" + IMAGES + "prune: {method: channels, amount: 0.5, finetune: 1}\n")
    before, after = run.metrics["compression"]["before"], run.metrics["compression"]["after"]
    for row in (before, after):
        assert 0 < row["onnx_latency_ms_batch1"] < row["onnx_latency_ms_batch64"]
    assert "ONNX Runtime latency, batch 64 (ms)" in repr(run)
    int8 = train("model: mlp\ndata: digits\nepochs: 1\nquantize: dynamic\n").metrics["compression"]
    assert int8["before"]["onnx_latency_ms_batch1"] > 0 and int8["after"]["onnx_latency_ms_batch1"] is None, \
        "int8 layers do not export through torch.onnx: the row says – rather than guess"
