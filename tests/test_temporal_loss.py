"""The temporal loss for training (issue: temporally stable video): synthetic motion, the warp, the
term itself, its config, and a training run that uses it."""

from __future__ import annotations

import math

import pytest
import torch

from fastns.errors import ConfigError
from fastns.flow import inside_frame, warp
from fastns.losses import PerceptualLoss, temporal_loss
from fastns.modelfile import load_model
from fastns.motion import MotionSettings, moved_frame, random_motion
from fastns.train import train

from .conftest import compose
from .test_train import events, photos, tiny  # noqa: F401  (photos: a fixture)

STILL = MotionSettings(shift=0, rotation=0, zoom=0, local=0, noise=0)


def _images(b=2, h=24, w=32, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_no_motion_leaves_images_unchanged_and_every_pixel_valid():
    x = _images()
    moved, flow, valid = moved_frame(x, STILL)
    assert torch.allclose(moved, x, atol=1e-5) and bool((valid == 1).all())
    assert float(flow.abs().max()) < 1e-4


def test_a_whole_pixel_shift_moves_the_image_and_marks_the_uncovered_edge_invalid():
    x = _images()
    flow = torch.zeros(2, 2, 24, 32)
    flow[:, 0] = 3  # sample 3 px to the right: the content moves 3 px left
    moved, valid = warp(x, flow), inside_frame(flow)
    assert torch.allclose(moved[..., :, :-3], x[..., :, 3:], atol=1e-5)
    assert bool(valid[..., :, :-3].all()) and not bool(valid[..., :, -3:].any())


def test_random_motion_stays_within_its_settings():
    s = MotionSettings(shift=4, rotation=0, zoom=0, local=0, noise=0)
    flow = random_motion(64, 24, 32, s, generator=torch.Generator().manual_seed(0))
    assert float(flow.abs().max()) <= 4 + 1e-4 and float(flow.abs().max()) > 2  # it does move
    # a pure translation moves every pixel alike
    assert float((flow - flow[..., :1, :1]).abs().max()) < 1e-4
    # rotation about the centre: the centre stays, the corners move by up to r * angle
    r = MotionSettings(shift=0, rotation=2, zoom=0, local=0, noise=0)
    flow = random_motion(64, 25, 33, r, generator=torch.Generator().manual_seed(0))
    assert float(flow[..., 12, 16].abs().max()) < 1e-4
    corner = float(flow[..., 0, 0].norm(dim=1).max())
    assert 0.1 < corner <= (16**2 + 12**2) ** 0.5 * math.radians(2) + 1e-3


def test_temporal_loss_is_zero_for_a_network_that_commutes_with_motion_and_positive_for_one_that_does_not():
    x = _images()
    s = MotionSettings(shift=3, rotation=1, zoom=0.02, local=1, noise=0)
    moved, flow, valid = moved_frame(x, s, torch.Generator().manual_seed(1))

    def commuting(im):  # a per-pixel colour map: net(warp(x)) == warp(net(x))
        return im.flip(1) * 0.5 + 0.2

    assert float(temporal_loss(commuting(moved), warp(commuting(x), flow), valid)) < 1e-10
    hatch = torch.zeros(1, 1, 24, 32)
    hatch[..., ::4, :] = 0.3  # a texture locked to the pixel grid does not move with the photo

    def locked(im):
        return (im * 0.7 + hatch).clamp(0, 1)

    assert float(temporal_loss(locked(moved), warp(locked(x), flow), valid)) > 1e-3
    # invalid pixels do not count, and the mean does not depend on how many there are
    zero = torch.zeros_like(valid)
    assert float(temporal_loss(locked(moved), x, zero)) == 0.0


def test_temporal_settings_are_checked_and_do_not_change_the_perceptual_terms():
    cfg = {
        "content_layers": ["relu2_2"],
        "style_layers": ["relu1_2"],
        "vgg": {"weights": "random", "arch": "vgg16"},
    }
    with pytest.raises(ConfigError, match="unknown key loss.temporal.speed"):
        PerceptualLoss.from_config({**cfg, "temporal": {"speed": 1}})
    with pytest.raises(ConfigError, match="loss.temporal.shift=-1"):
        PerceptualLoss.from_config({**cfg, "temporal": {"shift": -1}})
    with pytest.raises(ConfigError, match="loss.temporal_weight"):
        PerceptualLoss.from_config({**cfg, "temporal_weight": float("nan")})
    torch.manual_seed(0)
    plain = PerceptualLoss.from_config(cfg)
    torch.manual_seed(0)
    stable = PerceptualLoss.from_config({**cfg, "temporal_weight": 5.0, "temporal": {"shift": 2}})
    style, x = _images(1, 32, 32, 3), _images(1, 32, 32, 4)
    plain.set_style(style)
    stable.set_style(style)
    a, b = plain(x, x.flip(-1)), stable(x, x.flip(-1))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)  # Gatys and evaluation: unaffected
    assert stable.config()["temporal_weight"] == 5.0 and stable.config()["temporal"]["shift"] == 2.0
    assert PerceptualLoss.from_config(stable.config() | {"vgg": cfg["vgg"]}).motion == stable.motion


@pytest.mark.integration
def test_training_with_a_temporal_weight_logs_the_term_and_stores_it(tmp_path, photos, style_file):  # noqa: F811
    run_dir = tmp_path / "run"
    cfg = compose(
        "train", [*tiny(photos, style_file, run_dir), "loss.temporal_weight=10", "loss.temporal.shift=2"]
    )
    train(cfg)
    ea = events(run_dir)
    scalars = set(ea.Tags()["scalars"])
    assert {"train/loss/temporal", "val/loss/temporal"} <= scalars
    assert all(e.value > 0 for e in ea.Scalars("val/loss/temporal"))
    _, info = load_model(run_dir / "model.safetensors")
    assert info.loss["temporal_weight"] == 10.0 and info.loss["temporal"]["shift"] == 2.0
