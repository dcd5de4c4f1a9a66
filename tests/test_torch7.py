"""jcjohnson/fast-neural-style Torch7 networks (.t7), imported: the Torch7 reader and the original's output.

The reference networks are built in plain torch from fast-neural-style's Lua graph
(``tests/lua_reference.py``) and written as ``.t7`` files by a Torch7 writer, so the reader sees
the real binary layout.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastns.errors import ConfigError, ModelFileError
from fastns.image import load_image
from fastns.importers import load_jcjohnson, load_network
from fastns.modelfile import load_model, save_model
from fastns.stylize import Stylizer
from fastns.torch7 import TorchObject, read_t7
from fastns.transformer import TransformerNet

from . import lua_reference as lua
from .conftest import ROOT, make_photo, run_script

#: The two released families, as train.lua saves them: instance_norm (half width, float tensors
#: sharing one storage after getParameters) and eccv16 (batch norm, here double tensors); and an
#: eccv16 file of an nn older than 2016 (running_std) with another eps, saved as a bare network.
FAMILIES = {
    "instance_norm": dict(arch=lua.INSTANCE_NORM_ARCH, instance=True, dtype=torch.float32, shared=True),
    "eccv16": dict(arch=lua.ECCV16_ARCH, instance=False, dtype=torch.float64, shared=False),
    "eccv16_old_nn": dict(
        arch=lua.ECCV16_ARCH,
        instance=False,
        dtype=torch.float32,
        shared=True,
        bn={"legacy": True, "eps": 1e-3},
    ),
}
OPT = {"preprocessing": "vgg", "padding_type": "reflect-start", "tanh_constant": 150, "style_image": "x.jpg"}


def original(family: str, seed: int = 0) -> lua.Sequential:
    """A reference network of ``family`` with random weights (batch-norm statistics calibrated)."""
    spec = FAMILIES[family]
    torch.manual_seed(seed)
    model = lua.build_model(spec["arch"], spec["instance"], **spec.get("bn", {}))
    if not spec["instance"]:
        lua.calibrate(model, torch.rand(2, 3, 64, 64))
    return lua.round_to(model, spec["dtype"])


def write_t7(path, family: str, model: lua.Sequential | None = None, bare: bool = False, opt=OPT):
    spec = FAMILIES[family]
    model = original(family) if model is None else model
    net = lua.to_lua(model, spec["dtype"], spec["shared"])
    lua.T7Writer().write(path, net if bare else lua.checkpoint(net, dict(opt)))
    return model


def test_reader_reads_lua_values_shared_references_and_tensor_views(tmp_path):
    storage = lua.Storage(torch.arange(12, dtype=torch.float32))
    shared = {"name": "shared"}
    cyclic: dict = {"n": 1}
    cyclic["self"] = cyclic
    value = {
        "nil_free": [1.5, "two", True, False],
        "a": shared,
        "b": shared,
        "cyclic": cyclic,
        "double": torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64),
        "long": torch.tensor([7, -8]),
        "empty": torch.zeros(0),
        "view": lua.View(storage, (2, 3), offset=4),  # elements 4..9
        "view_again": lua.View(storage, (3,), offset=9),
        "module": lua.LuaObject("nn.Identity", {"train": False}),
        7: "integer key",
    }
    path = lua.T7Writer().write(tmp_path / "values.t7", value)
    got = read_t7(path)
    assert got["nil_free"] == {1.0: 1.5, 2.0: "two", 3.0: True, 4.0: False}
    assert got["a"] is got["b"] and got["a"] == {"name": "shared"}  # one table, referenced twice
    assert got["cyclic"]["self"] is got["cyclic"]
    assert got["double"].dtype == torch.float64 and got["double"].tolist() == [[1, 2], [3, 4]]
    assert got["long"].tolist() == [7, -8] and got["empty"].numel() == 0
    assert got["view"].tolist() == [[4, 5, 6], [7, 8, 9]] and got["view_again"].tolist() == [9, 10, 11]
    assert isinstance(got["module"], TorchObject) and got["module"].typename == "nn.Identity"
    assert got[7.0] == "integer key"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_imported_network_gives_the_original_output(tmp_path, family):
    path = tmp_path / f"{family}.t7"
    model = write_t7(path, family, bare=family == "eccv16_old_nn")
    net, info = load_jcjohnson(path)
    spec = FAMILIES[family]
    assert net.config["width"] == (0.5 if spec["instance"] else 1.0)
    assert net.config["norm"] == ("instance" if spec["instance"] else "batch")
    assert info.style["name"] == family and info.training["imported_from"] == "jcjohnson/fast-neural-style"
    for h, w in [(67, 53), (64, 64)]:  # odd sizes: the original's output is larger (ceil to 4), cropped
        x = torch.rand(1, 3, h, w)
        expected = lua.stylize(model, x)
        assert expected.shape[-2:] == (4 * -(-h // 4), 4 * -(-w // 4))
        expected = expected[..., :h, :w].float()
        with torch.no_grad():
            got = net(x)
        assert got.shape == x.shape
        assert expected.std() > 0.05 and ((expected > 0) & (expected < 1)).float().mean() > 0.9
        assert (got - expected).abs().max() < 1 / 255


def test_imported_network_survives_a_model_file_and_the_inference_copy(tmp_path):
    write_t7(tmp_path / "mosaic.t7", "instance_norm")
    net, info = load_network(tmp_path / "mosaic.t7")
    save_model(tmp_path / "mosaic.safetensors", net, style=info.style, training=info.training)
    again, again_info = load_model(tmp_path / "mosaic.safetensors")
    assert again.config == net.config and again_info.training["file"] == "mosaic.t7"
    x = torch.rand(2, 3, 30, 45)  # under the 40-px start padding: reflected twice
    with torch.no_grad():
        assert torch.equal(again(x), net(x))
    stylizer = Stylizer(net, device="cpu", precision="fp32")
    assert (stylizer.stylize(x) - net(x)).abs().max() < 1e-5  # border not added: the net pads itself
    with pytest.raises(ConfigError, match="tile= is not available"):
        stylizer.stylize(x, tile=256)


def test_reflect_start_options_do_not_change_fastns_networks():
    assert TransformerNet().config == {
        "width": 1.0,
        "num_residual": 5,
        "norm": "instance",
        "upsample": "nearest",
    }
    net = TransformerNet(width=0.25, num_residual=2, padding="reflect-start", pixels="caffe", output="tanh")
    assert TransformerNet(**net.config).config == net.config
    assert net(torch.rand(1, 3, 8, 9)).shape == (1, 3, 8, 9)
    with pytest.raises(ConfigError, match="model.padding"):
        TransformerNet(padding="zero")


def one_line_error(path, match: str) -> str:
    with pytest.raises(ModelFileError) as e:
        load_network(path)
    message = str(e.value)
    assert str(path) in message and "\n" not in message and match in message, message
    return message


def test_code_unknown_layers_and_damaged_files_are_refused(tmp_path):
    model = original("instance_norm")
    net = lua.to_lua(model, torch.float32)
    evil = tmp_path / "evil.t7"
    lua.T7Writer().write(evil, lua.checkpoint(net, {**OPT, "hook": lua.LuaFunction()}))
    one_line_error(evil, "Lua function")

    pooled = lua.to_lua(model, torch.float32)
    pooled.fields["modules"].insert(3, lua.LuaObject("nn.SpatialMaxPooling", {"kW": 2, "kH": 2}))
    lua.T7Writer().write(tmp_path / "pooled.t7", lua.checkpoint(pooled, OPT))
    one_line_error(tmp_path / "pooled.t7", "nn.SpatialMaxPooling")

    good = tmp_path / "good.t7"
    lua.T7Writer().write(good, lua.checkpoint(net, OPT))
    data = good.read_bytes()
    (tmp_path / "truncated.t7").write_bytes(data[: len(data) // 2])
    one_line_error(tmp_path / "truncated.t7", "truncated")
    (tmp_path / "text.t7").write_text("return { model = nn.Sequential() }\n")
    one_line_error(tmp_path / "text.t7", "not a readable Torch7 file")

    # Networks of another layout or preprocessing: named, not guessed.
    lua.T7Writer().write(tmp_path / "resnet.t7", lua.checkpoint(net, {**OPT, "preprocessing": "resnet"}))
    one_line_error(tmp_path / "resnet.t7", "-preprocessing resnet")
    unshaved = lua.to_lua(model, torch.float32)
    block = unshaved.fields["modules"][10].fields["modules"][0]  # the first residual block's ConcatTable
    block.fields["modules"][1] = lua.LuaObject("nn.Identity", {})
    lua.T7Writer().write(tmp_path / "reflect.t7", lua.checkpoint(unshaved, OPT))
    one_line_error(tmp_path / "reflect.t7", "cropped by 0 px, not 2")
    lua.T7Writer().write(tmp_path / "table.t7", {"not": "a network"})
    one_line_error(tmp_path / "table.t7", "not a jcjohnson/fast-neural-style network")


@pytest.mark.integration
def test_stylize_and_export_a_t7_file_from_the_command_line(tmp_path, monkeypatch, capsys):
    model = write_t7(tmp_path / "la_muse.t7", "instance_norm")
    photo = make_photo(tmp_path / "photo.png", size=(53, 67), seed=3)
    out = tmp_path / "out.png"
    args = [f"model={tmp_path / 'la_muse.t7'}", f"input={photo}", f"output={out}", "precision=fp32"]
    code, _, err = run_script(ROOT / "scripts" / "stylize.py", args, monkeypatch, capsys)
    assert code == 0, err
    expected = lua.stylize(model, load_image(photo))[0, :, :67, :53].permute(1, 2, 0).numpy() * 255
    got = np.asarray(Image.open(out).convert("RGB"), dtype=np.float64)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1.0  # 8-bit rounding included

    converted = tmp_path / "la_muse.safetensors"
    args = [f"model={tmp_path / 'la_muse.t7'}", f"output={converted}"]
    code, _, err = run_script(ROOT / "scripts" / "export.py", args, monkeypatch, capsys)
    assert code == 0, err
    x = torch.rand(1, 3, 50, 61)
    with torch.no_grad():
        assert torch.equal(load_model(converted)[0](x), load_network(tmp_path / "la_muse.t7")[0](x))

    evil = tmp_path / "evil.t7"
    lua.T7Writer().write(evil, lua.checkpoint(lua.to_lua(model, torch.float32), {"f": lua.LuaFunction()}))
    code, _, err = run_script(
        ROOT / "scripts" / "stylize.py", [f"model={evil}", f"input={photo}"], monkeypatch, capsys
    )
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1 and "Lua function" in err, (
        err
    )
