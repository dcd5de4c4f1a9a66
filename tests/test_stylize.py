"""The stylizer: library API, tiling, controls, and scripts/stylize.py on images, folders, video, webcam."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import types
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fastns.color import rgb_to_yuv, rgb_to_yuv420p
from fastns.errors import ConfigError, ModelFileError
from fastns.image import load_image
from fastns.modelfile import save_model
from fastns.stylize import Stylizer, inference, run_webcam, stylize_video
from fastns.stylize.video import frame_slot
from fastns.transformer import StyleAffine, TransformerNet

from .conftest import ROOT, make_photo
from .conftest import run_script as run_any_script

SCRIPT = ROOT / "scripts" / "stylize.py"


def tiny_net(seed: int = 0, **kwargs) -> TransformerNet:
    """A small random network whose norms are not the identity (so statistics matter)."""
    torch.manual_seed(seed)
    net = TransformerNet(width=0.25, num_residual=1, **kwargs)
    for m in net.modules():
        if isinstance(m, torch.nn.InstanceNorm2d | torch.nn.BatchNorm2d | StyleAffine):
            torch.nn.init.normal_(m.weight, 1.0, 0.3)
            torch.nn.init.normal_(m.bias, 0.0, 0.3)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture
def model_file(tmp_path) -> Path:
    return save_model(tmp_path / "tiny.safetensors", tiny_net(), style={"name": "tiny"})


@pytest.fixture
def stylizer(model_file) -> Stylizer:
    return Stylizer.load(model_file, device="cpu")


def run_script(monkeypatch, capsys, args: list[str], script: Path = SCRIPT) -> tuple[int, str, str]:
    """Run a script in-process as a user would; returns its exit status, stdout and stderr."""
    quiet = ["progress=false"] if script == SCRIPT else []  # no progress bars in stderr
    return run_any_script(script, [*args, *quiet], monkeypatch, capsys)


def reference(net: TransformerNet, x: torch.Tensor, border: int = 32) -> torch.Tensor:
    """What a user would write by hand: reflection border, the plain network, crop."""
    with torch.no_grad():
        y = net(F.pad(x, (border,) * 4, mode="reflect")) if border else net(x)
    return y[..., border : y.shape[-2] - border, border : y.shape[-1] - border] if border else y


# -- library API ----------------------------------------------------------------------------------


def test_pil_in_pil_out_and_tensor_in_tensor_out(stylizer, tmp_path):
    rgba = Image.new("RGBA", (45, 37), (200, 30, 30, 128))
    out = stylizer(rgba)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (45, 37)

    single = torch.rand(3, 29, 41)
    out = stylizer(single)
    assert out.shape == single.shape and out.device == single.device
    batch = torch.rand(2, 3, 30, 22)
    out = stylizer(batch)
    assert out.shape == batch.shape and torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    assert not torch.equal(out[0], out[1])  # each image stylised on its own
    assert "tiny" in repr(stylizer)
    with pytest.raises(TypeError):
        stylizer(np.zeros((8, 8, 3)))


@pytest.mark.parametrize(
    "kind",
    [
        {},
        {"upsample": "bilinear"},
        {"norm": "batch", "upsample": "transpose"},
        {"stem_norm": False},
        {"body_norm": "demod"},
    ],
    ids=["instance", "bilinear", "batch", "stem_norm", "demod"],
)
def test_optimised_path_equals_the_plain_network(kind):
    net = tiny_net(**kind)
    x = torch.rand(2, 3, 43, 58)
    fast = Stylizer(net, device="cpu", precision="fp32")  # folded norms, in-place ops, channels-last
    assert (fast(x) - reference(net, x)).abs().max() < 1e-5
    bare = Stylizer(net, device="cpu", precision="fp32", border=0, channels_last=False)
    assert (bare(x) - reference(net, x, border=0)).abs().max() < 1e-5
    # The border changes only what the network sees beyond the edges: the two differ near them.
    assert (fast(x) - bare(x)).abs().max() > 1e-4


@pytest.mark.parametrize(
    "kind",
    [
        {},
        {"upsample": "bilinear"},
        {"norm": "batch", "upsample": "transpose"},
        {"stem_norm": False},
        {"body_norm": "demod"},
        {"input_noise": 0.2},
    ],
    ids=["instance", "bilinear", "batch", "stem_norm", "demod", "input_noise"],
)
def test_tiled_output_matches_untiled(tmp_path, kind):
    """The issue's check: a mid-size photo, tiled vs untiled, mean abs difference under 2/255."""
    net = tiny_net(**kind)
    stylizer = Stylizer(net, device="cpu", precision="fp32")
    photo = load_image(make_photo(tmp_path / "mid.png", size=(320, 240), seed=3))
    whole = stylizer(photo)
    tiled = stylizer(photo, tile=128)  # 3 x 3 tiles: InstanceNorm statistics must be the image's
    diff = (tiled - whole).abs()
    assert diff.mean() < 2 / 255
    assert diff.max() < 0.5 / 255  # exact up to float rounding: no seams anywhere
    two = torch.cat([photo, photo.flip(-1)])
    assert (stylizer(two, tile=256) - stylizer(two)).abs().max() < 0.5 / 255
    # In bf16 (the CPU default with AMX) tiles differ only by bf16 rounding, not by seams.
    half = Stylizer(net, device="cpu", precision="bf16")
    assert (half(photo, tile=128) - half(photo)).abs().mean() < 2 / 255


def test_auto_precision_is_bf16_only_on_cpus_with_native_bf16(monkeypatch):
    monkeypatch.setattr(inference, "native_bf16", lambda device: device.type == "cpu")
    net = tiny_net()
    fast = Stylizer(net, device="cpu")
    assert fast.dtype == torch.bfloat16
    x = torch.rand(1, 3, 40, 52)
    exact = Stylizer(net, device="cpu", precision="fp32")
    assert exact.dtype == torch.float32
    out = fast(x)
    assert out.dtype == torch.float32  # the boundary stays float32 in [0, 1]
    assert (out - exact(x)).abs().max() < 8 / 255  # bf16 keeps 8 bits: a few levels at most
    monkeypatch.setattr(inference, "native_bf16", lambda device: False)
    assert Stylizer(net, device="cpu").dtype == torch.float32  # emulated bf16 would be slower


def test_strength_blends_with_the_content(stylizer):
    x = torch.rand(1, 3, 32, 40)
    assert torch.equal(stylizer(x, strength=0), x)
    full, half = stylizer(x), stylizer(x, strength=0.5)
    assert torch.allclose(half, (x + full) / 2, atol=1e-6)
    assert not torch.allclose(full, x, atol=0.05)


def test_preserve_color_keeps_the_content_chroma(stylizer):
    x = torch.rand(1, 3, 32, 40) * 0.6 + 0.2  # away from 0 and 1, where clamping would change chroma
    full, kept = stylizer(x), stylizer(x, preserve_color=True)
    yuv_x, yuv_full, yuv_kept = rgb_to_yuv(x), rgb_to_yuv(full), rgb_to_yuv(kept)
    inside = ((kept > 0.005) & (kept < 0.995)).all(1, keepdim=True)  # pixels not clamped
    assert (yuv_kept[:, 1:] - yuv_x[:, 1:]).abs().masked_select(inside).max() < 1e-4
    assert (yuv_kept[:, :1] - yuv_full[:, :1]).abs().masked_select(inside).max() < 1e-4
    assert (yuv_full[:, 1:] - yuv_x[:, 1:]).abs().mean() > 0.02  # the plain output did change colours
    # Both controls together: the blend is with the colour-preserved image.
    both = stylizer(x, strength=0.5, preserve_color=True)
    assert torch.allclose(both, (x + kept) / 2, atol=1e-6)


def test_max_size_only_downscales(stylizer):
    x = torch.rand(1, 3, 60, 90)
    assert stylizer(x, max_size=45).shape[-2:] == (30, 45)
    assert stylizer(x, max_size=400).shape[-2:] == (60, 90)
    assert stylizer(Image.new("RGB", (90, 60)), max_size=45).size == (45, 30)


def test_bad_controls_and_model_files_are_user_errors(stylizer, tmp_path, photo):
    x = torch.rand(1, 3, 16, 16)
    for kwargs in ({"strength": 1.5}, {"strength": -0.1}, {"tile": 10}, {"max_size": 0}):
        with pytest.raises(ConfigError):
            stylizer(x, **kwargs)
    with pytest.raises(ConfigError, match="precision"):
        Stylizer(tiny_net(), device="cpu", precision="fp16")
    with pytest.raises(ModelFileError, match="photo.png: not a fastns model file"):
        Stylizer.load(photo)
    with pytest.raises(ModelFileError, match="training checkpoint"):
        Stylizer.load(tmp_path / "last.ckpt")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="not a fastns model"):
        Stylizer.load(tmp_path / "other.safetensors")


@pytest.mark.integration
def test_library_api_stays_light(model_file, photo):
    """``import fastns`` does not load the stylizer, and using it needs no Hydra or Lightning."""
    code = (
        "import sys, fastns\n"
        "assert 'fastns.stylize' not in sys.modules\n"
        "from fastns import Stylizer\n"
        "from PIL import Image\n"
        f"out = Stylizer.load({str(model_file)!r}, device='cpu')(Image.open({str(photo)!r}))\n"
        "assert out.size == (48, 36)\n"
        "heavy = [m for m in ('hydra', 'omegaconf', 'pytorch_lightning', 'lightning', 'av', 'cv2') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# -- scripts/stylize.py: images and folders --------------------------------------------------------


@pytest.mark.integration
def test_cli_image_default_output_format_and_exif(monkeypatch, capsys, tmp_path, model_file):
    src = tmp_path / "portrait.jpg"
    make_photo(src, size=(60, 40))
    im = Image.open(src)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": a phone photo held upright
    im.save(src, exif=exif)

    code, out, err = run_script(monkeypatch, capsys, [f"model={model_file}", f"input={src}"])
    assert code == 0, err
    result = Image.open(tmp_path / "portrait_stylised.jpg")
    assert result.format == "JPEG" and result.size == (40, 60)  # EXIF orientation applied

    code, out, err = run_script(
        monkeypatch,
        capsys,
        [f"model={model_file}", f"input={src}", f"output={tmp_path / 'o.png'}", "max_size=30"],
    )
    assert code == 0, err
    assert Image.open(tmp_path / "o.png").format == "PNG" and Image.open(tmp_path / "o.png").size == (20, 30)


@pytest.mark.integration
def test_cli_refuses_to_overwrite_inputs_and_bad_models(monkeypatch, capsys, tmp_path, model_file, photo):
    before = photo.read_bytes()
    code, _, err = run_script(
        monkeypatch, capsys, [f"model={model_file}", f"input={photo}", f"output={photo}"]
    )
    assert code == 2 and "refusing to overwrite" in err and photo.read_bytes() == before
    code, _, err = run_script(monkeypatch, capsys, [f"model={photo}", f"input={photo}", "output=x.png"])
    assert (
        code == 2
        and err.startswith("error: ")
        and "not a fastns model file" in err
        and len(err.splitlines()) == 1
    )
    code, _, err = run_script(monkeypatch, capsys, [f"model={model_file}", f"input={tmp_path / 'nope.jpg'}"])
    assert code == 2 and "nope.jpg: no such file" in err
    code, _, err = run_script(monkeypatch, capsys, [f"model={model_file}", f"input={photo}", "strength=2"])
    assert code == 2 and "strength=2" in err
    code, _, err = run_script(
        monkeypatch, capsys, [f"model={model_file}", f"input={tmp_path}", f"output={tmp_path}"]
    )
    assert code == 2 and "is the input folder" in err


@pytest.mark.integration
def test_cli_input_noise_paints_a_flat_photo_and_a_bad_value_is_one_line(
    monkeypatch, capsys, tmp_path, model_file
):
    sky = tmp_path / "sky.png"
    Image.new("RGB", (200, 160), (240, 242, 245)).save(sky)  # a white sky, flat past the network's reach
    outs = {}
    for noise in ("null", "0.2"):
        out = tmp_path / f"sky_{noise}.png"
        code, _, err = run_script(
            monkeypatch,
            capsys,
            [f"model={model_file}", f"input={sky}", f"output={out}", f"input_noise={noise}"],
        )
        assert code == 0, err
        outs[noise] = np.asarray(Image.open(out), dtype=np.float32)[40:-40, 40:-40]
    assert outs["0.2"].std() > 5 * outs["null"].std()  # strokes where the model's own gives one colour
    code, _, err = run_script(monkeypatch, capsys, [f"model={model_file}", f"input={sky}", "input_noise=2"])
    assert code == 2 and "input_noise=2" in err and len(err.strip().splitlines()) == 1


@pytest.mark.integration
def test_cli_folder_recursive_skips_bad_files_and_ignores_its_own_output(
    monkeypatch, capsys, tmp_path, model_file
):
    album = tmp_path / "holiday"
    make_photo(album / "a.jpg", size=(40, 32), seed=1)
    make_photo(album / "b.png", size=(40, 32), seed=2)  # same size as a.jpg: one batch of 2
    make_photo(album / "day2" / "c.webp", size=(36, 30), seed=3)
    (album / "day2" / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not a JPEG")
    (album / "notes.txt").write_text("not an image, not even tried")
    output = album / "styled"  # inside the input folder

    batches = []
    original = Stylizer.stylize

    def spy(self, images, **kwargs):
        batches.append(images.shape[0])
        return original(self, images, **kwargs)

    monkeypatch.setattr(Stylizer, "stylize", spy)
    args = [f"model={model_file}", f"input={album}", f"output={output}", "batch_size=2"]
    code, out, err = run_script(monkeypatch, capsys, args)
    assert code == 2
    # The skipped file's warning, then the one error line (stderr; the progress and results go to stdout).
    assert err.splitlines()[0].startswith("warning: skipped") and "broken.jpg" in err.splitlines()[0]
    assert err.splitlines()[1].startswith("error: 1 of 4 file(s) skipped") and len(err.splitlines()) == 2
    written = sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file())
    assert written == ["a.jpg", "b.png", "day2/c.webp"]  # layout and formats kept; nothing half-written
    assert Image.open(output / "day2" / "c.webp").format == "WEBP"
    assert sorted(batches) == [1, 2]

    # Again: the outputs inside the input folder are not taken as new inputs.
    batches.clear()
    code, out, err = run_script(monkeypatch, capsys, args)
    assert code == 2 and "1 of 4" in err
    assert not (output / "styled").exists()

    # A glob, converted to one format, with the default output folder beside the pattern's folder.
    code, out, err = run_script(
        monkeypatch, capsys, [f"model={model_file}", f"input={album}/*.png", "format=jpg"]
    )
    assert code == 0, err
    default = tmp_path / "holiday_stylised"
    assert [p.name for p in default.iterdir()] == ["b.jpg"] and Image.open(default / "b.jpg").format == "JPEG"


# -- video -----------------------------------------------------------------------------------------


def make_video(
    path: Path, frames: int = 8, size=(64, 48), fps: int = 12, audio: str | None = "aac", images=None
) -> Path:
    """A short clip: moving colour bars (or ``images``, (H, W, 3) uint8 frames), and a 440 Hz tone."""
    w, h = size
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        sound = container.add_stream(audio, rate=44100) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = (30 * i) % 256
            img[:, : (i * 7) % w, 1] = 200
            img[..., 2] = np.linspace(0, 255, w, dtype=np.uint8)
            img = img if images is None else images[i]
            for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            n = 44100 * frames // fps
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100)).astype(np.float32)[None]
            step = sound.codec_context.frame_size or 1024
            for s in range(0, n, step):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(tone[:, s : s + step]), format="flt", layout="mono"
                )
                frame.sample_rate = 44100
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
    return path


def probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {
            "rate": v.average_rate,
            "size": (v.codec_context.width, v.codec_context.height),
            "audio": [a.codec_context.name for a in c.streams.audio],
        }
        info["frames"] = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return info


@pytest.mark.integration
def test_cli_video_keeps_frame_rate_timing_and_audio(monkeypatch, capsys, tmp_path, model_file):
    clip = make_video(tmp_path / "clip.mp4")
    code, out, err = run_script(monkeypatch, capsys, [f"model={model_file}", f"input={clip}"])
    assert code == 0, err
    result, source = probe(tmp_path / "clip_stylised.mp4"), probe(clip)
    assert result["rate"] == source["rate"] == Fraction(12)
    assert len(result["frames"]) == len(source["frames"]) == 8
    assert result["size"] == (64, 48) and result["audio"] == ["aac"]
    assert np.abs(result["frames"][3].astype(float) - source["frames"][3]).mean() > 10  # stylised

    # The controls work on video as on images: strength=0 gives back the (re-encoded) content.
    # PCM audio in Matroska cannot go into MP4 as is: it is re-encoded to AAC.
    mkv = make_video(tmp_path / "clip.mkv", audio="pcm_s16le")
    plain = tmp_path / "plain.mp4"
    code, out, err = run_script(
        monkeypatch, capsys, [f"model={model_file}", f"input={mkv}", f"output={plain}", "strength=0"]
    )
    assert code == 0, err
    result = probe(plain)
    assert result["audio"] == ["aac"] and result["rate"] == Fraction(12) and len(result["frames"]) == 8
    assert np.abs(result["frames"][5].astype(float) - probe(mkv)["frames"][5]).mean() < 3


def test_yuv420p_conversion_matches_ffmpeg(tmp_path):
    """Video frames leave the device as yuv420p: the colours must be those FFmpeg's converter gives."""
    rgb = np.array(Image.open(make_photo(tmp_path / "p.png", size=(64, 48), seed=2)))
    ours = rgb_to_yuv420p(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0].numpy()
    ffmpeg = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
    diff = np.abs(ours.astype(int) - ffmpeg)
    assert ours.shape == ffmpeg.shape == (72, 64)
    assert diff[:48].max() <= 1  # luma: rounding only
    assert diff[48:].mean() < 1.5  # chroma: 2x2 average vs swscale's filter, differs at sharp edges only


def test_frames_keep_their_source_time_and_never_go_back():
    frame = Fraction(1, 25)
    assert frame_slot(0, Fraction(1, 12800), frame, -1) == 0
    assert frame_slot(80384, Fraction(1, 12800), frame, 156) == 157  # 6.28 s
    assert frame_slot(1040, Fraction(1, 1000), frame, 24) == 26  # Matroska's rounded milliseconds
    assert frame_slot(None, Fraction(1, 12800), frame, 26) == 27  # no timestamp: the next slot
    # A frame from before the last one written (re-emitted after damage) is dropped, not moved.
    assert frame_slot(64512, Fraction(1, 12800), frame, 157) is None


@pytest.mark.integration
def test_damaged_packets_in_the_middle_do_not_stop_the_video(monkeypatch, capsys, tmp_path, model_file):
    clip = make_video(tmp_path / "clip.mp4", frames=60, size=(160, 120), audio=None)
    data = bytearray(clip.read_bytes())
    start = len(data) // 3  # the middle of the frame data (the index of an .mp4 is at its end)
    for k in range(start, start + len(data) // 6):
        data[k] = (data[k] * 7 + 13) % 256
    clip.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"
    code, _, err = run_script(monkeypatch, capsys, [f"model={model_file}", f"input={clip}", f"output={out}"])
    assert code == 0, err
    assert "damaged video packet" in err and err.startswith("warning: ")
    assert 0 < len(probe(out)["frames"]) < 60  # the frames before and after the damage are there


@pytest.mark.integration
def test_video_interrupted_leaves_no_file(tmp_path, stylizer, monkeypatch):
    clip = make_video(tmp_path / "clip.mp4", audio=None)
    calls = []
    original = Stylizer.stylize_frames

    def interrupt(self, frames, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the video
        return original(self, frames, **kwargs)

    monkeypatch.setattr(Stylizer, "stylize_frames", interrupt)
    threads = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        stylize_video(stylizer, clip, tmp_path / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "tiny.safetensors"]
    assert threading.active_count() == threads  # decoder and encoder threads ended


@pytest.mark.integration
def test_cli_video_errors(monkeypatch, capsys, tmp_path, model_file):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    code, _, err = run_script(monkeypatch, capsys, [f"model={model_file}", f"input={fake}"])
    assert code == 2 and "fake.mp4: not a readable video" in err
    clip = make_video(tmp_path / "clip.mp4", frames=2, audio=None)
    code, _, err = run_script(monkeypatch, capsys, [f"model={model_file}", f"input={clip}", "output=x.png"])
    assert code == 2 and "video file name" in err
    code, _, err = run_script(monkeypatch, capsys, [f"model={model_file}", f"input={clip}", "tile=512"])
    assert code == 2 and "tile" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "fake.mp4", "tiny.safetensors"]


# -- webcam (no camera here: OpenCV is replaced by a fake with the same calls) ----------------------


def fake_cv2(frames: int, opened: bool = True) -> types.ModuleType:
    cv2 = types.ModuleType("cv2")
    cv2.error = type("error", (Exception,), {})
    cv2.WINDOW_NORMAL, cv2.WND_PROP_VISIBLE, cv2.FONT_HERSHEY_SIMPLEX, cv2.INTER_AREA = 0, 1, 0, 3
    cv2.CAP_PROP_FPS = 5
    cv2.COLOR_BGR2RGB = cv2.COLOR_RGB2BGR = 4
    cv2.shown = []

    cv2.sources = []

    class VideoCapture:
        def __init__(self, source):
            cv2.sources.append(source)
            self.left = frames

        def isOpened(self):
            return opened

        def get(self, prop):
            return 50.0 if prop == cv2.CAP_PROP_FPS else 0.0

        def read(self):
            time.sleep(0.002)  # a camera delivers frames at its own pace
            self.left -= 1
            return (True, np.full((48, 64, 3), 120, np.uint8)) if self.left >= 0 else (False, None)

        def release(self):
            pass

    cv2.VideoCapture = VideoCapture
    cv2.namedWindow = lambda *a: None
    cv2.flip = lambda img, code: img[:, ::-1]
    cv2.resize = lambda img, size, interpolation=None: np.asarray(Image.fromarray(img).resize(size))
    cv2.cvtColor = lambda img, code: np.ascontiguousarray(img[..., ::-1])
    cv2.putText = lambda img, text, *a: cv2.shown.append(text)
    cv2.imshow = lambda title, img: cv2.shown.append(img.shape)
    cv2.waitKey = lambda delay: -1
    cv2.getWindowProperty = lambda title, prop: 1.0
    cv2.destroyAllWindows = lambda: None
    return cv2


@pytest.mark.integration
def test_webcam_loop_shows_stylised_frames_with_fps(stylizer, monkeypatch):
    cv2 = fake_cv2(frames=1000)
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    assert run_webcam(stylizer, 0, max_size=32, max_frames=3) == 3
    assert cv2.shown.count((24, 32, 3)) == 3  # downscaled to max_size, shown with the frame rate
    assert sum(str(t).endswith(" fps") for t in cv2.shown) == 3
    monkeypatch.setitem(sys.modules, "cv2", fake_cv2(frames=0))
    assert run_webcam(stylizer, 0) == 0  # a camera that stops delivering ends the loop


@pytest.mark.integration
def test_webcam_plays_a_video_file_at_its_frame_rate(stylizer, monkeypatch, tmp_path):
    # camera=<file>: read like a live camera at the file's 50 fps, not as fast as the disk allows.
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    cv2 = fake_cv2(frames=10)
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    start = time.perf_counter()
    shown = run_webcam(stylizer, str(clip), max_size=32)
    assert time.perf_counter() - start >= 10 / 50  # paced: 10 frames at 50 fps
    assert cv2.sources == [str(clip)] and 1 <= shown <= 10


@pytest.mark.integration
def test_cli_webcam_errors(monkeypatch, capsys, model_file):
    monkeypatch.setitem(sys.modules, "cv2", None)  # OpenCV not installed
    code, _, err = run_script(monkeypatch, capsys, [f"model={model_file}", "input=webcam"])
    assert (
        code == 2
        and "pip uninstall -y opencv-python-headless opencv-python && pip install opencv-python" in err
    )
    cv2 = fake_cv2(frames=0, opened=False)
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    code, _, err = run_script(monkeypatch, capsys, [f"model={model_file}", "input=webcam", "camera=3"])
    assert code == 2 and "camera=3" in err and "could not be opened" in err
    # A network camera or device path goes to OpenCV as given; an index as an int.
    url = "rtsp://192.168.1.20:554/stream1"
    code, _, err = run_script(monkeypatch, capsys, [f"model={model_file}", "input=webcam", f"camera='{url}'"])
    assert code == 2 and url in err
    assert cv2.sources == [3, url]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_statistics_match_var_mean(monkeypatch, dtype):
    # Slices of 7 rows: several slices and a ragged last one on a 9 x 11 image.
    monkeypatch.setattr(inference, "_STATS_ROWS", 7)
    x = (torch.randn(2, 5, 9, 11) * 3 + 2).to(dtype).contiguous(memory_format=torch.channels_last)
    mean, var = inference.channels_last_stats(x)
    ref_var, ref_mean = torch.var_mean(x.double(), dim=(2, 3), correction=0)
    assert mean.dtype == var.dtype == torch.float32
    assert torch.allclose(mean.double(), ref_mean, rtol=1e-5, atol=1e-5)
    assert torch.allclose(var.double(), ref_var, rtol=1e-5, atol=1e-5)
