"""The averaged network (``ema=``, fastns.averaging): its width, what training writes, and resume."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from fastns.averaging import MAX_SIGMA_REL, check_sigma_rel, ema_weight, power_gamma, power_sigma_rel
from fastns.errors import ConfigError
from fastns.train import build, train

from .conftest import compose
from .test_train import photos, tiny  # noqa: F401  (fixture)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.1, 0.2, MAX_SIGMA_REL])
def test_gamma_gives_the_asked_width(sigma_rel):
    gamma = power_gamma(sigma_rel)
    assert gamma >= -1e-9
    assert power_sigma_rel(gamma) == pytest.approx(sigma_rel, rel=1e-9)


@pytest.mark.parametrize("steps", [200, 2000, 40000])
def test_the_average_covers_the_same_share_of_any_run(steps):
    """Averaging τ (and τ²) over a run: the profile's mean and width are fixed fractions of its length."""
    gamma = power_gamma(0.1)
    mean = second = 0.0
    for t in range(1, steps + 1):
        w = ema_weight(t, gamma)
        mean += w * (t - mean)
        second += w * (t * t - second)
    assert ema_weight(1, gamma) == 1.0  # the first step replaces whatever was there
    assert mean / steps == pytest.approx((gamma + 1) / (gamma + 2), rel=0.01)
    assert math.sqrt(second - mean**2) / steps == pytest.approx(0.1, rel=0.05)


@pytest.mark.parametrize("value", [0, -0.1, 0.5, "wide"])
def test_a_width_out_of_range_is_a_one_line_config_error(value, tmp_path, photos, style_file):  # noqa: F811
    with pytest.raises(ConfigError, match=f"ema={value} must be a width between 0 and 0.289"):
        check_sigma_rel(value)
    cfg = compose("train", [*tiny(photos, style_file, tmp_path / "run"), f"ema={value}"])
    with pytest.raises(ConfigError, match=f"ema={value}"):
        build(cfg, tmp_path / "run")


def _net(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}


def test_training_writes_the_average_and_trains_on_as_without_it(tmp_path, photos, style_file):  # noqa: F811
    # Validation every step: the average is swapped in and out often, and must never leak into training.
    common = [*tiny(photos, style_file, tmp_path / "x", steps=4)[:-1], "trainer.val_check_interval=1"]
    train(compose("train", [*common, f"run_dir={tmp_path / 'plain'}", "ema=null"]))
    train(compose("train", [*common, f"run_dir={tmp_path / 'ema'}", "ema=0.2"]))

    plain = torch.load(tmp_path / "plain" / "checkpoints" / "last.ckpt", weights_only=True)
    assert "ema" not in plain
    plain_file = load_file(tmp_path / "plain" / "model.safetensors")
    for k, v in _net(plain["state_dict"]).items():
        assert torch.equal(plain_file[k], v), k  # without ema=: the last step's weights

    ckpt = torch.load(tmp_path / "ema" / "checkpoints" / "last.ckpt", weights_only=True)
    training, average = ckpt["ema"]["training_state_dict"], _net(ckpt["state_dict"])
    model_file = load_file(tmp_path / "ema" / "model.safetensors")
    for k, v in training.items():
        assert torch.allclose(v, _net(plain["state_dict"])[k], atol=1e-6), k  # the same training
        assert torch.equal(model_file[k], average[k]), k  # the file and the checkpoint: the average
    assert any(not torch.equal(training[k], average[k]) for k in training)
    assert load_file(tmp_path / "ema" / "model.safetensors").keys() == plain_file.keys()


def test_a_resumed_run_continues_its_training_weights_and_its_average(tmp_path, photos, style_file):  # noqa: F811
    run_dir = tmp_path / "run"
    args = [*tiny(photos, style_file, run_dir, steps=4), "ema=0.2"]
    train(compose("train", args))
    last = run_dir / "checkpoints" / "last.ckpt"
    before = torch.load(last, weights_only=True)

    # Resumed with nothing left to do: the checkpoint written again holds the same two networks,
    # so the run resumed from its training weights, not from the average in its state_dict.
    train(compose("train", [*args, "ckpt_path=last"]))
    again = torch.load(last, weights_only=True)
    for k, v in before["ema"]["training_state_dict"].items():
        assert torch.equal(again["ema"]["training_state_dict"][k], v), k
        assert torch.equal(again["state_dict"]["net." + k], before["state_dict"]["net." + k]), k

    # One more step enters the average the checkpoint saved: not restarted from the weights.
    train(compose("train", [*args, "trainer.max_steps=5", "ckpt_path=last"]))
    after = torch.load(last, weights_only=True)
    assert after["global_step"] == 5
    weight = ema_weight(5, power_gamma(0.2))
    old, new = _net(before["state_dict"]), after["ema"]["training_state_dict"]
    model_file = load_file(run_dir / "model.safetensors")
    for k, v in _net(after["state_dict"]).items():
        assert torch.allclose(v, old[k].lerp(new[k], weight), atol=1e-7), k
        assert torch.equal(model_file[k], v), k
