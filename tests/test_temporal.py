"""Temporal stability: optical flow and warping, the warping error (flicker), and ``temporal=flow``."""

from __future__ import annotations

import sys

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastns.errors import ConfigError
from fastns.flow import DenseFlow, warp
from fastns.metrics import warping_error, warping_errors
from fastns.stylize import Stylizer, run_webcam, stylize_video
from fastns.stylize.temporal import FlowBlend, make_temporal

from .conftest import SHARED, make_photo, requires_shared
from .test_stylize import fake_cv2, make_video, probe, run_script

pytest.importorskip("cv2")

SHIFT = (3, 2)  # the synthetic pan: the view moves 3 px right and 2 px down per frame


def still(h: int = 160, w: int = 200, seed: int = 0) -> torch.Tensor:
    """A smooth, textured 'photo' (1, 3, H, W) in [0, 1] that optical flow can follow."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(1, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bicubic")
    fine = F.interpolate(torch.rand(1, 3, h // 3, w // 3, generator=g), size=(h, w), mode="bilinear")
    return (0.7 * coarse + 0.3 * fine).clamp(0, 1)


def pan(frames: int = 6, size=(72, 96), seed: int = 0) -> torch.Tensor:
    """A camera pan over a still image: (T, 3, H, W), frame t is frame t−1 moved by an exact integer shift."""
    h, w = size
    image = still(h + SHIFT[1] * frames + 8, w + SHIFT[0] * frames + 8, seed)
    return torch.cat(
        [
            image[..., 4 + SHIFT[1] * t : 4 + SHIFT[1] * t + h, 4 + SHIFT[0] * t : 4 + SHIFT[0] * t + w]
            for t in range(frames)
        ]
    )


def to_bytes(frames: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in [0, 1] -> (T, H, W, 3) uint8, as video decoders give frames."""
    return (frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def noisy_stylizer(stylizer: Stylizer, amount: float = 0.08, seed: int = 0) -> Stylizer:
    """A network stand-in that flickers: the frame plus independent noise per frame and per call."""
    g = torch.Generator().manual_seed(seed)
    stylizer._forward = lambda x: (x.float() + amount * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return stylizer


@pytest.fixture
def stylizer(tmp_path) -> Stylizer:
    from fastns.modelfile import save_model

    from .test_stylize import tiny_net

    return Stylizer.load(
        save_model(tmp_path / "tiny.safetensors", tiny_net(), style={"name": "tiny"}),
        device="cpu",
        precision="fp32",
    )


@pytest.fixture
def model_file(tmp_path):
    from fastns.modelfile import save_model

    from .test_stylize import tiny_net

    return save_model(tmp_path / "tiny.safetensors", tiny_net(), style={"name": "tiny"})


# -- flow and warping ------------------------------------------------------------------------------


def test_warp_by_an_integer_flow_moves_whole_pixels():
    image = still(24, 32)
    flow = torch.zeros(1, 2, 24, 32)
    flow[:, 0], flow[:, 1] = 3, 2  # every pixel comes from 3 px right, 2 px down
    moved = warp(image, flow)
    torch.testing.assert_close(moved[..., :-2, :-3], image[..., 2:, 3:], atol=1e-6, rtol=0)
    torch.testing.assert_close(warp(image, torch.zeros_like(flow)), image, atol=1e-6, rtol=0)


def test_dis_flow_finds_the_pan_and_trusts_the_pixels_that_stay_in_view():
    frames = pan(2)
    flow = DenseFlow("medium").between(frames[1:], frames[:1])
    assert flow.flow.shape == (1, 2, 72, 96) and flow.reliable.shape == (1, 1, 72, 96)
    inner = flow.flow[0, :, 8:-8, 8:-8]
    assert (inner[0] - SHIFT[0]).abs().median() < 0.1 and (inner[1] - SHIFT[1]).abs().median() < 0.1
    assert flow.reliable[0, 0, 8:-8, 8:-8].float().mean() > 0.95
    # What enters the frame (the right and bottom edges) has no past: not reliable.
    assert not flow.reliable[0, 0, :, -2:].any() and not flow.reliable[0, 0, -1:, :].any()
    # Computed on frames downscaled 2x, the flow is still in full-size pixels.
    half = DenseFlow("medium", max_size=48).between(frames[1:], frames[:1])
    assert half.flow.shape == (1, 2, 72, 96)
    assert (half.flow[0, 0, 8:-8, 8:-8] - SHIFT[0]).abs().median() < 0.3


def test_flow_settings_are_checked():
    with pytest.raises(ConfigError, match="preset"):
        DenseFlow("slowest")
    with pytest.raises(ConfigError, match="max_size"):
        DenseFlow(max_size=4)


# -- the warping error -----------------------------------------------------------------------------


def test_a_static_clip_has_no_warping_error():
    clip = still(48, 64).expand(4, -1, -1, -1)
    errors = warping_errors(clip)
    assert len(errors) == 3 and max(errors) < 1e-10
    assert warping_error(clip, clip.clone()) < 1e-10
    # Frames smaller than DIS takes (8 px, the stylizer's minimum) are padded for it.
    assert max(warping_errors(still(8, 12).expand(3, -1, -1, -1))) < 1e-10


def test_warping_error_is_small_for_a_pan_and_large_for_per_frame_noise():
    frames = pan(6)
    identity = warping_error(frames)  # the input itself: the floor
    shifted = warping_error(frames, frames * 0.5 + 0.25)  # a per-pixel op: moves with the input
    g = torch.Generator().manual_seed(1)
    noise = warping_error(frames, (frames + 0.05 * torch.randn(frames.shape, generator=g)).clamp(0, 1))
    assert identity < 1e-4 and shifted < 1e-4
    assert noise > 2e-3 and noise > 50 * max(identity, shifted)  # 2 x 0.05² on the reliable pixels
    # Frames as an iterable (streamed) measure the same as a (T, 3, H, W) tensor.
    assert warping_errors(iter(frames), iter(frames * 0.5 + 0.25)) == pytest.approx(
        warping_errors(frames, frames * 0.5 + 0.25)
    )


def test_warping_error_refuses_frames_of_different_sizes():
    frames = pan(3)
    with pytest.raises(ValueError):
        warping_errors(frames, frames[..., :-2])


# -- temporal=flow --------------------------------------------------------------------------------


def test_flow_blending_at_least_halves_the_flicker(stylizer):
    frames = pan(8)
    x = to_bytes(frames)
    noisy_stylizer(stylizer, seed=0)
    per_frame = torch.from_numpy(stylizer.stylize_frames(x)).permute(0, 3, 1, 2) / 255
    noisy_stylizer(stylizer, seed=0)  # the same noise, blended
    blend = FlowBlend(blend=0.5)
    blended = torch.from_numpy(stylizer.stylize_frames(x, temporal=blend)).permute(0, 3, 1, 2) / 255
    inputs = torch.from_numpy(x).permute(0, 3, 1, 2) / 255
    before, after = warping_error(inputs, per_frame), warping_error(inputs, blended)
    assert after <= 0.5 * before, (before, after)
    assert blend.restarts == 1  # the first frame only
    # The first frame is the network's own; batches in order give the same as one frame at a time.
    torch.testing.assert_close(blended[0], per_frame[0])
    noisy_stylizer(stylizer, seed=0)
    one_blend = FlowBlend(blend=0.5)
    one_by_one = np.concatenate(
        [stylizer.stylize_frames(x[i : i + 1], temporal=one_blend) for i in range(len(x))]
    )
    assert np.array_equal(one_by_one, to_bytes(blended))


def test_a_scene_cut_restarts_the_blend(stylizer):
    shot_a, shot_b = pan(4, seed=0), pan(4, seed=7)
    x = to_bytes(torch.cat([shot_a, shot_b]))
    noisy_stylizer(stylizer, seed=3)
    per_frame = stylizer.stylize_frames(x)
    noisy_stylizer(stylizer, seed=3)
    blend = FlowBlend(blend=0.5)
    blended = stylizer.stylize_frames(x, temporal=blend)
    assert blend.restarts == 2  # the first frame and the cut
    assert np.array_equal(blended[4], per_frame[4])  # the first frame of shot b: no ghost of shot a
    assert not np.array_equal(blended[5], per_frame[5])  # blending again within shot b
    assert not np.array_equal(blended[3], per_frame[3])
    # A change of frame size restarts too, and reset() forgets the previous frame.
    noisy_stylizer(stylizer, seed=4)
    small = stylizer.stylize_frames(x[:1, :48, :64], temporal=blend)
    assert blend.restarts == 3 and small.shape == (1, 48, 64, 3)
    blend.reset()
    stylizer.stylize_frames(x[1:2, :48, :64], temporal=blend)
    assert blend.restarts == 4


def test_temporal_none_is_todays_output(stylizer):
    x = to_bytes(pan(3))
    today = stylizer.stylize_frames(x)
    assert np.array_equal(stylizer.stylize_frames(x, temporal=None), today)
    assert np.array_equal(stylizer.stylize_frames(x, temporal=make_temporal("none")), today)
    assert np.array_equal(
        stylizer.stylize_frames(x, yuv420p=True, temporal=None), stylizer.stylize_frames(x, yuv420p=True)
    )
    assert make_temporal(None) is None and isinstance(make_temporal("flow"), FlowBlend)


def test_temporal_settings_are_checked():
    with pytest.raises(ConfigError, match="temporal=sometimes"):
        make_temporal("sometimes")
    with pytest.raises(ConfigError, match="blend"):
        FlowBlend(blend=1.0)
    with pytest.raises(ConfigError, match="cut"):
        FlowBlend(cut=2)


@requires_shared
def test_real_footage_blends_and_a_cut_between_clips_restarts():
    """Consecutive frames of the shared clips are not cuts; a jump from one clip to another is."""
    clips = [SHARED / "data" / "video" / name for name in ("cup.mp4", "tree.avi")]
    if not all(c.is_file() for c in clips):
        pytest.skip("shared video clips not present")
    shots = []
    for clip in clips:
        with av.open(str(clip)) as c:
            frames = [
                f.to_ndarray(format="rgb24", width=160, height=120)
                for _, f in zip(range(4), c.decode(video=0), strict=False)
            ]
        shots.append(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255)
    blend = FlowBlend()
    out = blend(torch.cat(shots), torch.cat(shots))
    assert blend.restarts == 2 and out.shape == (8, 3, 120, 160)


# -- video files and the webcam -------------------------------------------------------------------


def record_encoder_input(monkeypatch) -> list[np.ndarray]:
    """What the video pipeline hands to the encoder, frame by frame (x264 itself is not bit-reproducible
    from run to run: with frame threads its first frames vary, with or without fastns's changes)."""
    frames: list[np.ndarray] = []
    original = Stylizer.stylize_frames

    def record(self, batch, **kwargs):
        out = original(self, batch, **kwargs)
        frames.extend(out)
        return out

    monkeypatch.setattr(Stylizer, "stylize_frames", record)
    return frames


@pytest.mark.integration
def test_cli_video_temporal_flow(monkeypatch, capsys, tmp_path, model_file):
    clip = make_video(tmp_path / "clip.mp4", frames=10, size=(96, 72), images=to_bytes(pan(10)))
    runs = {}
    for name, extra in [
        ("flow", ["temporal=flow", "flow.blend=0.6"]),
        ("none", ["temporal=none"]),
        ("default", []),
    ]:
        frames = record_encoder_input(monkeypatch)
        output = tmp_path / f"{name}.mp4"
        code, out, err = run_script(
            monkeypatch, capsys, [f"model={model_file}", f"input={clip}", f"output={output}", *extra]
        )
        assert code == 0, err
        assert ("temporal=flow: 1 frame(s) restarted" in out) == (name == "flow")
        runs[name] = np.stack(frames)
    result, source = probe(tmp_path / "flow.mp4"), probe(clip)
    # Timing and audio kept as without it.
    assert result["rate"] == source["rate"] and len(result["frames"]) == 10
    assert result["audio"] == ["aac"] and result["size"] == (96, 72)
    # temporal=none is the default, bit for bit; flow keeps the first frame and changes the others.
    assert runs["none"].shape == (10, 72 * 3 // 2, 96) and np.array_equal(runs["none"], runs["default"])
    assert np.array_equal(runs["flow"][0], runs["none"][0])
    assert np.abs(runs["flow"][6].astype(int) - runs["none"][6]).mean() > 0.5
    # Still images have no frames to follow.
    photo = make_photo(tmp_path / "x.png")
    code, _, err = run_script(monkeypatch, capsys, [f"model={model_file}", f"input={photo}", "temporal=flow"])
    assert code == 2 and "temporal=flow is for video" in err


@pytest.mark.integration
def test_temporal_none_video_is_todays_output(monkeypatch, tmp_path, stylizer):
    """Each batch the pipeline encodes with temporal=none equals today's call (no temporal argument)."""
    clip = make_video(tmp_path / "clip.mp4", frames=6, audio=None)
    original = Stylizer.stylize_frames
    checked = []

    def compare(self, frames, **kwargs):
        out = original(self, frames, **kwargs)
        today = original(self, frames, **{k: v for k, v in kwargs.items() if k != "temporal"})
        checked.append(np.array_equal(out, today))
        return out

    monkeypatch.setattr(Stylizer, "stylize_frames", compare)
    stylize_video(stylizer, clip, tmp_path / "none.mp4", batch_size=2, temporal=make_temporal("none"))
    assert checked == [True, True, True]


@pytest.mark.integration
def test_damaged_packets_in_the_middle_with_temporal_flow(monkeypatch, capsys, tmp_path, model_file):
    """As without flow: a warning, the frames before and after the damage written, exit 0."""
    clip = make_video(tmp_path / "clip.mp4", frames=60, size=(160, 120), audio=None)
    data = bytearray(clip.read_bytes())
    start = len(data) // 3
    for k in range(start, start + len(data) // 6):
        data[k] = (data[k] * 7 + 13) % 256
    clip.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"
    code, _, err = run_script(
        monkeypatch, capsys, [f"model={model_file}", f"input={clip}", f"output={out}", "temporal=flow"]
    )
    assert code == 0, err
    assert "damaged video packet" in err and err.startswith("warning: ")
    assert 0 < len(probe(out)["frames"]) < 60


@pytest.mark.integration
def test_webcam_with_temporal_flow(stylizer, monkeypatch):
    blend = FlowBlend()  # built with the real OpenCV, before the fake camera replaces it
    cv2 = fake_cv2(frames=1000)
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    assert run_webcam(stylizer, 0, max_size=32, max_frames=4, temporal=blend) == 4
    assert cv2.shown.count((24, 32, 3)) == 4 and blend.restarts == 1
