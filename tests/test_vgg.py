"""The VGG feature extractor: names, shapes, truncation, frozen weights, weight sources."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn
from torchvision.models import VGG16_Weights

from fastns.errors import ConfigError, FastnsError
from fastns.image import load_image
from fastns.vgg import VGGFeatures, layer_names

from .conftest import SHARED, SHARED_VGG16, requires_shared, requires_shared_vgg


def test_layer_names_follow_the_papers():
    v16, v19 = layer_names("vgg16"), layer_names("vgg19")
    assert v16[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert sum(n.startswith("conv") for n in v16) == 13 and sum(n.startswith("conv") for n in v19) == 16
    assert "relu5_3" in v16 and "relu5_4" not in v16 and "relu5_4" in v19
    assert v16.index("relu4_3") == 22 and v19.index("relu4_2") == 22  # torchvision's feature indices


def test_returns_requested_layers_with_right_shapes():
    vgg = VGGFeatures(["relu1_2", "relu2_2", "relu3_3", "relu4_3"], arch="vgg16", weights="random")
    out = vgg(torch.rand(2, 3, 64, 48))
    assert list(out) == ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
    assert out["relu1_2"].shape == (2, 64, 64, 48)
    assert out["relu2_2"].shape == (2, 128, 32, 24)
    assert out["relu3_3"].shape == (2, 256, 16, 12)
    assert out["relu4_3"].shape == (2, 512, 8, 6)
    assert all((t >= 0).all() for t in out.values())


def test_runs_only_as_deep_as_needed():
    vgg = VGGFeatures(["relu2_2"], arch="vgg19", weights="random")
    assert len(vgg.features) == layer_names("vgg19").index("relu2_2") + 1
    # A subset of layers at call time stops even earlier: relu1_1 needs one conv only.
    calls = []
    for m in vgg.features:
        m.register_forward_hook(lambda *a, m=m: calls.append(m))
    vgg(torch.rand(1, 3, 16, 16), layers=["relu1_1"])
    assert len(calls) == 2


def test_weights_are_frozen_and_stay_in_eval():
    vgg = VGGFeatures(["relu2_1"], arch="vgg16", weights="random")
    vgg.train()
    assert not vgg.training and not any(m.training for m in vgg.modules())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    vgg(x)["relu2_1"].square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())


def test_conv_outputs_are_not_clobbered_by_inplace_relu():
    vgg = VGGFeatures(["conv1_1", "relu1_1"], arch="vgg16", weights="random")
    out = vgg(torch.rand(1, 3, 16, 16))
    assert (out["conv1_1"] < 0).any()
    assert torch.equal(out["relu1_1"], out["conv1_1"].clamp(min=0))


def test_does_its_own_imagenet_normalisation():
    vgg = VGGFeatures(["conv1_1"], arch="vgg16", weights="random")
    conv = vgg.features[0]
    x = torch.rand(1, 3, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(vgg(x)["conv1_1"], conv((x - mean) / std), atol=1e-5)


def test_avg_pooling_option():
    vgg = VGGFeatures(["relu2_1"], arch="vgg16", weights="random", pooling="avg")
    assert isinstance(vgg.features[4], nn.AvgPool2d)


def test_random_weights_are_seeded():
    a = VGGFeatures(["relu1_1"], arch="vgg16", weights="random", seed=1)
    b = VGGFeatures(["relu1_1"], arch="vgg16", weights="random", seed=1)
    c = VGGFeatures(["relu1_1"], arch="vgg16", weights="random", seed=2)
    assert torch.equal(a.features[0].weight, b.features[0].weight)
    assert not torch.equal(a.features[0].weight, c.features[0].weight)


@pytest.mark.parametrize("prefix", ["features.", ""])
def test_loads_local_state_dict_in_torchvision_layout(tmp_path, prefix):
    src = VGGFeatures(["relu5_3"], arch="vgg16", weights="random", seed=3)
    sd = {prefix + k: v for k, v in src.features.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # a full-model file: the classifier is ignored
    path = tmp_path / "vgg16.pth"
    torch.save(sd, path)
    vgg = VGGFeatures(["relu2_2"], arch="vgg16", weights=str(path))
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(vgg(x)["relu2_2"], src(x, layers=["relu2_2"])["relu2_2"])


def test_wrong_architecture_file_names_the_right_one(tmp_path):
    src = VGGFeatures(["relu5_3"], arch="vgg16", weights="random")
    path = tmp_path / "vgg16.pth"
    torch.save({"features." + k: v for k, v in src.features.state_dict().items()}, path)
    with pytest.raises(FastnsError, match=r"not a torchvision vgg19 state dict.*set loss.vgg.arch=vgg16"):
        VGGFeatures(["relu5_1"], arch="vgg19", weights=str(path))


@pytest.mark.parametrize("content", [b"", b"garbage bytes, not a checkpoint"])
def test_unreadable_weights_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(FastnsError, match=r"loss.vgg.weights=.*broken.pth: not a readable"):
        VGGFeatures(["relu1_1"], arch="vgg16", weights=str(path))
    with pytest.raises(FastnsError, match="no such file"):
        VGGFeatures(["relu1_1"], arch="vgg16", weights=str(tmp_path / "nope.pth"))


def test_imagenet_download_failure_says_how_to_pass_a_file(monkeypatch):
    def offline(self, *a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(FastnsError) as e:
        VGGFeatures(["relu1_1"], arch="vgg16", weights="imagenet")
    msg = str(e.value)
    assert "could not download" in msg and "loss.vgg.weights=" in msg and "\n" not in msg


def test_bad_layer_and_arch_names():
    with pytest.raises(ConfigError, match="unknown vgg16 layer 'relu5_4'"):
        VGGFeatures(["relu5_4"], arch="vgg16", weights="random")
    with pytest.raises(ConfigError, match="loss.vgg.arch='resnet50'"):
        VGGFeatures(["relu1_1"], arch="resnet50", weights="random")


@requires_shared
@requires_shared_vgg
def test_shared_offline_vgg16_reproduces_documented_activation_scale():
    """../shared/README.md: relu1_2 mean |a| ~ 20 and relu4_3 ~ 1.1 on a natural photo."""
    vgg = VGGFeatures(["relu1_2", "relu4_3"], arch="vgg16", weights=str(SHARED_VGG16))
    with torch.no_grad():
        out = vgg(load_image(SHARED / "data" / "content" / "tubingen.jpg", size=256))
    assert 17 < out["relu1_2"].abs().mean() < 24
    assert 0.95 < out["relu4_3"].abs().mean() < 1.3
