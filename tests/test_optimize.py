"""Gatys optimisation and texture synthesis on tiny images (random VGG: behaviour, not quality)."""

from __future__ import annotations

import math

import pytest
import torch

from fastns.color import preserve_color, rgb_to_yuv
from fastns.image import load_image
from fastns.losses import PerceptualLoss
from fastns.optimize import optimize_image, white_noise


@pytest.fixture
def loss(tiny_loss_cfg, style_file):
    loss = PerceptualLoss.from_config(tiny_loss_cfg)
    loss.set_style(load_image(style_file))
    return loss


def test_texture_synthesis_lowers_style_loss_tenfold(loss):
    noise = white_noise((32, 32), seed=0)
    result = optimize_image(loss, noise, iterations=40, progress=False)
    first, last = result.losses[0]["style"], result.losses[-1]["style"]
    assert "content" not in [k.split("/")[0] for k in result.losses[0] if "/" in k]
    assert last < first / 10, (first, last)
    assert result.image.shape == (1, 3, 32, 32) and 0 <= result.image.min() and result.image.max() <= 1


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_style_transfer_lowers_total_loss(loss, photo, optimizer):
    content = load_image(photo)
    loss.set_content(content)
    result = optimize_image(loss, content, iterations=15, optimizer=optimizer, progress=False)
    totals = [t["total"] for t in result.losses]
    assert len(totals) == 16  # the initial image and one per iteration
    assert totals[-1] < 0.5 * totals[0]
    assert all(math.isfinite(t) for t in totals)
    assert not torch.equal(result.image, content)


def test_optimisation_is_deterministic_given_a_seed(loss):
    runs = [
        optimize_image(loss, white_noise((24, 24), seed=3), iterations=5, progress=False).image
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(white_noise((8, 8), seed=3), white_noise((8, 8), seed=4))


def test_callback_sees_every_iteration(loss):
    seen = []
    optimize_image(
        loss, white_noise((16, 16)), iterations=4, progress=False, callback=lambda i, img, t: seen.append(i)
    )
    assert seen == [1, 2, 3, 4]


def test_line_search_survives_a_loss_dominated_by_style(tiny_loss_cfg, style_file, photo):
    """A huge style weight makes unit L-BFGS steps overflow; the line search must cope."""
    loss = PerceptualLoss.from_config({**tiny_loss_cfg, "style_weight": 1e12})
    loss.set_style(load_image(style_file))
    content = load_image(photo)
    loss.set_content(content)
    result = optimize_image(loss, content, iterations=10, progress=False)
    assert torch.isfinite(result.image).all()
    assert result.losses[-1]["total"] < result.losses[0]["total"]


def test_non_finite_loss_stops_and_keeps_the_last_good_image(loss, monkeypatch):
    calls = {"n": 0}
    real_forward = type(loss).forward

    def flaky(self, image, content=None):
        calls["n"] += 1
        terms = real_forward(self, image, content)
        if calls["n"] > 3:
            terms = {k: v * float("nan") for k, v in terms.items()}
        return terms

    monkeypatch.setattr(type(loss), "forward", flaky)
    result = optimize_image(loss, white_noise((16, 16)), iterations=10, optimizer="adam", progress=False)
    assert torch.isfinite(result.image).all()
    assert len(result.losses) < 11 and all(math.isfinite(t["total"]) for t in result.losses)


def test_preserve_color_keeps_content_chroma():
    content, stylised = torch.rand(1, 3, 16, 16) * 0.2 + 0.4, torch.rand(1, 3, 16, 16) * 0.2 + 0.4
    out = preserve_color(content, stylised)
    yuv_out, yuv_c, yuv_s = rgb_to_yuv(out), rgb_to_yuv(content), rgb_to_yuv(stylised)
    assert torch.allclose(yuv_out[:, 1:], yuv_c[:, 1:], atol=1e-4)  # chroma from the content
    assert torch.allclose(yuv_out[:, :1], yuv_s[:, :1], atol=1e-4)  # luminance from the stylised image


def test_bf16_vgg_reaches_the_loss_of_fp32(loss, photo):
    """bfloat16 VGG features (autocast) steer L-BFGS as well: the final loss, measured in fp32, is close."""
    content = load_image(photo)
    loss.set_content(content)
    finals = {}
    for dtype in (torch.float32, torch.bfloat16):
        result = optimize_image(loss, content, iterations=30, progress=False, compute_dtype=dtype)
        assert result.image.dtype == torch.float32  # pixels stay fp32
        with torch.no_grad():
            finals[dtype] = float(loss(result.image)["total"])
    first = float(loss(content)["total"])
    assert finals[torch.bfloat16] < 0.5 * first
    assert finals[torch.bfloat16] == pytest.approx(finals[torch.float32], rel=0.05)


def test_precision_auto_is_bf16_only_where_native(monkeypatch):
    import fastns.optimize as optimize_mod
    from fastns.errors import ConfigError

    cpu = torch.device("cpu")
    monkeypatch.setattr(optimize_mod, "native_bf16", lambda device: True)
    assert optimize_mod._compute_dtype("auto", cpu) == torch.bfloat16
    assert optimize_mod._compute_dtype("fp32", cpu) == torch.float32
    monkeypatch.setattr(optimize_mod, "native_bf16", lambda device: False)
    assert optimize_mod._compute_dtype("auto", cpu) == torch.float32
    assert optimize_mod._compute_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match="precision='fp16' must be one of"):
        optimize_mod._compute_dtype("fp16", cpu)
