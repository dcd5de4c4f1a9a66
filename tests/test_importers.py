"""pytorch/examples fast_neural_style networks, imported: the same images as their own forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastns.errors import ModelFileError
from fastns.importers import load_network, load_pytorch_examples
from fastns.modelfile import load_model
from fastns.stylize import Stylizer

from .conftest import ROOT, run_script


class _Conv(nn.Module):
    """pytorch/examples' ConvLayer: reflection padding, then a convolution with a bias."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv2d = nn.Conv2d(c_in, c_out, kernel, stride)
        self.pad = kernel // 2

    def forward(self, x, upsample: bool = False):
        if upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv2d(F.pad(x, [self.pad] * 4, mode="reflect"))


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.in1 = _Conv(c, c, 3), nn.InstanceNorm2d(c, affine=True)
        self.conv2, self.in2 = _Conv(c, c, 3), nn.InstanceNorm2d(c, affine=True)

    def forward(self, x):
        return x + self.in2(self.conv2(F.relu(self.in1(self.conv1(x)))))


class ExamplesNet(nn.Module):
    """A reference of pytorch/examples' TransformerNet, written from its layer names and ranges:
    0-255 images in, 0-255 out (clamped by the caller)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3 = (int(c * width) for c in (32, 64, 128))
        self.conv1, self.in1 = _Conv(3, c1, 9), nn.InstanceNorm2d(c1, affine=True)
        self.conv2, self.in2 = _Conv(c1, c2, 3, 2), nn.InstanceNorm2d(c2, affine=True)
        self.conv3, self.in3 = _Conv(c2, c3, 3, 2), nn.InstanceNorm2d(c3, affine=True)
        for i in range(1, 6):
            setattr(self, f"res{i}", _Residual(c3))
        self.deconv1, self.in4 = _Conv(c3, c2, 3), nn.InstanceNorm2d(c2, affine=True)
        self.deconv2, self.in5 = _Conv(c2, c1, 3), nn.InstanceNorm2d(c1, affine=True)
        self.deconv3 = _Conv(c1, 3, 9)

    def forward(self, x):
        y = F.relu(self.in1(self.conv1(x)))
        y = F.relu(self.in2(self.conv2(y)))
        y = F.relu(self.in3(self.conv3(y)))
        for i in range(1, 6):
            y = getattr(self, f"res{i}")(y)
        y = F.relu(self.in4(self.deconv1(y, upsample=True)))
        y = F.relu(self.in5(self.deconv2(y, upsample=True)))
        return self.deconv3(y)


def examples_checkpoint(path, width: float = 1.0, legacy: bool = False, seed: int = 0):
    """A checkpoint as pytorch/examples writes it (random weights, output roughly in 0-255)."""
    torch.manual_seed(seed)
    net = ExamplesNet(width).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.InstanceNorm2d):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
        net.deconv3.conv2d.weight.mul_(40)  # spread the output over the 0-255 range
        net.deconv3.conv2d.bias.fill_(128)
    state = net.state_dict()
    if legacy:  # files from old PyTorch versions carry unused instance-norm statistics
        for name, m in net.named_modules():
            if isinstance(m, nn.InstanceNorm2d):
                state[f"{name}.running_mean"] = torch.zeros(m.num_features)
                state[f"{name}.running_var"] = torch.ones(m.num_features)
    torch.save(state, path)
    return net


@pytest.mark.parametrize("width, legacy", [(1.0, False), (0.5, True)])
def test_imported_network_gives_the_examples_output(tmp_path, width, legacy):
    path = tmp_path / "candy.pth"
    reference = examples_checkpoint(path, width, legacy)
    net, info = load_pytorch_examples(path)
    assert net.config["output"] == "clamp" and info.style["name"] == "candy"
    for shape in [(1, 3, 64, 48), (2, 3, 36, 44)]:  # sides that are multiples of 4, odd multiples too
        x = torch.rand(shape)
        with torch.no_grad():
            expected = reference(x * 255).clamp(0, 255) / 255
            got = net(x)
        assert 0 < expected.mean() < 1 and (got - expected).abs().max() < 1 / 255


@pytest.mark.integration
def test_import_converts_into_a_model_file_and_stylises_from_the_command_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "mosaic.pth"
    examples_checkpoint(path, width=0.5)
    out = tmp_path / "mosaic.safetensors"
    code, _, err = run_script(
        ROOT / "scripts" / "export.py", [f"model={path}", f"output={out}"], monkeypatch, capsys
    )
    assert code == 0, err
    converted, info = load_model(out)
    x = torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        assert torch.equal(converted(x), load_network(path)[0](x))
    assert Stylizer.load(path, precision="fp32").name == "mosaic"


def test_foreign_and_malicious_files_are_refused(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, other)
    with pytest.raises(ModelFileError, match="not a pytorch/examples fast_neural_style network"):
        load_pytorch_examples(other)
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (type(marker).touch, (marker,))

    evil = tmp_path / "evil.pth"
    torch.save({"conv1.conv2d.weight": Payload()}, evil)
    with pytest.raises(ModelFileError, match="not a readable PyTorch checkpoint"):
        load_pytorch_examples(evil)
    assert not marker.exists()
