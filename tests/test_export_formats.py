"""scripts/export.py to TorchScript and ONNX: parity with the stylizer, dynamic sizes, metadata, errors."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

from fastns.modelfile import save_model
from fastns.stylize import Stylizer

from .conftest import ROOT
from .conftest import run_script as run_any_script
from .test_stylize import tiny_net

SCRIPT = ROOT / "scripts" / "export.py"


def run_script(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    return run_any_script(SCRIPT, args, monkeypatch, capsys)


@pytest.fixture
def model_file(tmp_path) -> Path:
    return save_model(tmp_path / "tiny.safetensors", tiny_net(), style={"name": "tiny"})


@pytest.fixture(params=["nearest", "bilinear", "transpose", "demod", "input_noise"])
def any_model_file(tmp_path, request) -> Path:
    """A model file of each upsampling kind, of the demodulated body and with input noise: each
    exports to the same function."""
    if request.param in ("demod", "input_noise"):
        net = tiny_net(
            **{"demod": {"body_norm": "demod"}, "input_noise": {"input_noise": 0.2}}[request.param]
        )
    else:
        net = tiny_net(upsample=request.param)
    return save_model(tmp_path / "tiny.safetensors", net, style={"name": "tiny"})


def images() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.rand(1, 3, 61, 47, generator=gen), torch.rand(2, 3, 40, 72, generator=gen)]


@pytest.mark.integration
def test_torchscript_matches_the_stylizer_at_any_size(monkeypatch, capsys, tmp_path, any_model_file):
    model_file = any_model_file
    out = tmp_path / "tiny.pt"
    code, stdout, err = run_script(
        monkeypatch, capsys, [f"model={model_file}", "format=torchscript", f"output={out}"]
    )
    assert code == 0, err
    assert "TorchScript check" in stdout
    extra = {"fastns.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        module = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["fastns.json"])
    assert json.loads(meta["style"])["name"] == "tiny" and meta["border"] == "32"
    stylizer = Stylizer.load(model_file, device="cpu", precision="fp32")
    for x in images():
        with torch.no_grad():
            assert (module(x) - stylizer(x)).abs().max() <= 1e-3


@pytest.mark.integration
def test_onnx_matches_the_stylizer_at_any_size(monkeypatch, capsys, tmp_path, any_model_file):
    model_file = any_model_file
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "tiny.onnx"
    # format=null: taken from the extension
    code, stdout, err = run_script(monkeypatch, capsys, [f"model={model_file}", f"output={out}"])
    assert code == 0, err
    assert "onnxruntime check" in stdout
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["format"] == "fastns.transformer" and json.loads(meta["style"])["name"] == "tiny"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    stylizer = Stylizer.load(model_file, device="cpu", precision="fp32")
    for x in images():
        (y,) = session.run(None, {"images": x.numpy()})
        assert y.shape == x.shape and (torch.from_numpy(y) - stylizer(x)).abs().max() <= 1e-3


@pytest.mark.integration
def test_export_from_a_training_checkpoint(monkeypatch, capsys, tmp_path):
    pytest.importorskip("onnx")
    net = tiny_net(seed=3)
    ckpt = tmp_path / "last.ckpt"
    # What scripts/train.py's checkpoints hold for export (the Lightning fields are not read).
    torch.save(
        {
            "fastns": {"model": net.config, "style": {"name": "ckpt"}},
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
        },
        ckpt,
    )
    code, _, err = run_script(monkeypatch, capsys, [f"model={ckpt}", "format=onnx"])
    assert code == 0, err
    assert (tmp_path / "last.onnx").is_file()
    code, _, err = run_script(monkeypatch, capsys, [f"model={ckpt}", "format=torchscript"])
    assert code == 0, err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(tmp_path / "last.pt"))
    x = images()[0]
    with torch.no_grad():
        assert (module(x) - Stylizer(net, device="cpu", precision="fp32")(x)).abs().max() <= 1e-3


@pytest.mark.integration
def test_export_errors_are_one_line_and_write_nothing(monkeypatch, capsys, tmp_path, model_file, photo):
    def fails(args: list[str], message: str) -> None:
        code, _, err = run_script(monkeypatch, capsys, args)
        assert code == 2 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err

    fails([f"model={photo}", "format=onnx", f"output={tmp_path / 'x.onnx'}"], "not a fastns model file")
    fails([f"model={model_file}", "format=coreml"], "format='coreml' is not supported")
    fails([f"model={model_file}", "format=safetensors"], "turns a training checkpoint")
    fails([f"model={model_file}", "format=torchscript", f"output={model_file}"], "refusing to overwrite")
    fails([f"model={tmp_path / 'nope.safetensors'}", "format=onnx"], "no such model file")
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    fails([f"model={model_file}", "format=onnx"], "pip install 'fastns[export]'")
    monkeypatch.delitem(sys.modules, "onnxscript")
    # An export that does not match PyTorch is refused, and nothing is left behind.
    monkeypatch.setattr("fastns.export.TOLERANCE", -1.0)
    fails([f"model={model_file}", "format=torchscript"], "differs from PyTorch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "tiny.safetensors"]
