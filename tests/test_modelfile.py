"""model.safetensors: round trip, metadata, and clear errors for foreign or future files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from fastns.errors import ModelFileError
from fastns.modelfile import FORMAT_VERSION, load_model, read_info, save_model
from fastns.transformer import TransformerNet


def _net():
    torch.manual_seed(0)
    return TransformerNet(width=0.25, num_residual=2, norm="batch").eval()


def test_round_trip_gives_identical_outputs(tmp_path):
    net = _net()
    path = save_model(
        tmp_path / "m" / "model.safetensors",
        net,
        style={"name": "candy"},
        loss={"style_weight": 1e10},
        training={"steps": 7},
    )
    loaded, info = load_model(path)
    x = torch.rand(2, 3, 20, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert info.model == net.config and info.style == {"name": "candy"} and info.training == {"steps": 7}
    assert info.loss["style_weight"] == 1e10 and info.format_version == FORMAT_VERSION
    assert not loaded.training
    assert read_info(path).style["name"] == "candy"
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # no temporary left


def test_a_network_trained_with_input_noise_brings_its_grain_back(tmp_path):
    torch.manual_seed(0)
    net = TransformerNet(width=0.25, num_residual=1, input_noise=0.05).eval()
    path = save_model(tmp_path / "model.safetensors", net, style={"name": "candy"})
    loaded, info = load_model(path)
    assert info.model["input_noise"] == 0.05 and loaded.input_noise == 0.05
    x = torch.full((1, 3, 40, 44), 0.9)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))  # the grain is made again from its seed, not stored


def test_loading_needs_no_unpickling(tmp_path, monkeypatch):
    path = save_model(tmp_path / "model.safetensors", _net())
    import pickle

    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load used"))
    load_model(path)


@pytest.mark.parametrize(
    "kind", ["missing", "garbage", "truncated", "foreign_safetensors", "future", "wrong_weights"]
)
def test_bad_model_files_are_one_line_errors(tmp_path, kind):
    path = tmp_path / "model.safetensors"
    expect = {
        "missing": "no such model file",
        "garbage": "not a fastns model file",
        "truncated": "not a fastns model file",
        "foreign_safetensors": "not a fastns model",
        "future": "upgrade fastns",
        "wrong_weights": "do not match",
    }[kind]
    if kind == "garbage":
        path.write_bytes(b"\x00\x01not safetensors at all")
    elif kind == "truncated":
        save_model(path, _net())
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "foreign_safetensors":
        save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    elif kind == "future":
        net = _net()
        meta = {
            "format": "fastns.transformer",
            "format_version": str(FORMAT_VERSION + 1),
            "fastns_version": "9.0",
            "model": json.dumps(net.config),
        }
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata=meta)
    elif kind == "wrong_weights":
        save_model(path, _net())
        other = tmp_path / "other.safetensors"
        save_model(other, TransformerNet(width=0.5))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        with safe_open(str(other), "pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    assert expect in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
