"""Image loading/saving: every format and mode users throw at us, and every bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastns.errors import ConfigError, ImageError
from fastns.image import check_output_path, load_image, resize_longest, save_image

from .conftest import make_photo


def _check(t: torch.Tensor, h: int, w: int) -> None:
    assert t.shape == (1, 3, h, w)
    assert t.dtype == torch.float32
    assert t.is_contiguous()
    assert 0.0 <= t.min() and t.max() <= 1.0


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "bmp", "tif", "gif"])
def test_loads_common_formats(tmp_path, ext):
    path = make_photo(tmp_path / f"a.{ext}", size=(30, 20))
    t = load_image(path)
    _check(t, 20, 30)
    ref = load_image(make_photo(tmp_path / "ref.png", size=(30, 20)))
    tol = 0.12 if ext in ("jpg", "webp", "gif") else 1e-6  # lossy / palette formats
    assert (t - ref).abs().mean() < tol


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1", "I", "F"])
def test_loads_any_mode_as_rgb(tmp_path, mode):
    fmt = {"CMYK": "TIFF", "F": "TIFF", "I": "TIFF"}.get(mode)
    path = make_photo(tmp_path / f"m_{mode}.{'tif' if fmt else 'png'}", mode=mode, fmt=fmt)
    _check(load_image(path), 32, 48)


def test_grayscale_gives_equal_channels(tmp_path):
    t = load_image(make_photo(tmp_path / "g.png", mode="L"))
    assert torch.equal(t[:, 0], t[:, 1]) and torch.equal(t[:, 1], t[:, 2])


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255  # red...
    rgba[:, 5:, 3] = 255  # ...opaque only on the right half
    path = tmp_path / "t.png"
    Image.fromarray(rgba, "RGBA").save(path)
    t = load_image(path)
    assert torch.allclose(t[0, :, :, :5], torch.ones(3, 10, 5))  # transparent -> white
    assert torch.allclose(t[0, :, :, 5:], torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand(3, 10, 5))


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    arr = np.full((8, 8), 32768, np.uint16)
    arr[:, 4:] = 65535
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    t = load_image(path)
    assert abs(t[0, 0, 0, 0].item() - 0.5) < 0.01  # Pillow's convert("L") would clip this to 1.0
    assert t[0, 0, 0, 7].item() == 1.0


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red, right half black, as stored
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif, quality=100)
    t = load_image(path)
    assert t.shape == (1, 3, 40, 20)  # portrait after rotation
    # Stored left (red) ends up on top after a 90° clockwise rotation.
    assert t[0, 0, :15].mean() > 0.9 and t[0, 0, 25:].mean() < 0.1


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    t = load_image(path)
    assert t[0, 0].mean() > 0.9 and t[0, 2].mean() < 0.1  # red, the first frame


def test_resize_longest_side(tmp_path):
    path = make_photo(tmp_path / "big.jpg", size=(300, 200))
    _check(load_image(path, size=60), 40, 60)
    _check(load_image(make_photo(tmp_path / "tall.png", size=(20, 50)), size=100), 100, 40)
    _check(resize_longest(torch.rand(1, 3, 30, 60), 20), 10, 20)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "no such file"),
        ("empty", "empty file"),
        ("text", "not an image"),
        ("truncated", "cannot read image"),
        ("folder", "is a folder"),
    ],
)
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, kind, message):
    path = tmp_path / f"bad_{kind}.jpg"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "truncated":
        make_photo(tmp_path / "full.jpg", size=(200, 150))
        data = (tmp_path / "full.jpg").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(ImageError) as e:
        load_image(path)
    text = str(e.value)
    assert str(path) in text and message in text
    assert "\n" not in text


def test_save_round_trip_is_exact_for_png(tmp_path):
    t = load_image(make_photo(tmp_path / "a.png"))
    out = save_image(t, tmp_path / "sub" / "dir" / "b.png")  # creates folders
    assert torch.equal(load_image(out), t)


@pytest.mark.parametrize("ext", ["jpg", "jpeg", "webp", "bmp", "tif"])
def test_save_follows_extension(tmp_path, ext):
    out = save_image(torch.rand(1, 3, 16, 24), tmp_path / f"o.{ext}")
    assert (
        Image.open(out).format
        == {"jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP", "tif": "TIFF"}[ext]
    )


def test_save_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves the previous file untouched and no temporary files."""
    out = tmp_path / "o.png"
    save_image(torch.zeros(1, 3, 8, 8), out)
    before = out.read_bytes()

    def boom(self, fp, *a, **k):
        Path(fp).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_image(torch.ones(1, 3, 8, 8), out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]


def test_save_unknown_extension_is_a_clear_error(tmp_path):
    with pytest.raises(ImageError, match="unknown image extension"):
        save_image(torch.rand(1, 3, 4, 4), tmp_path / "out.xyz")
    assert not (tmp_path / "out.xyz").exists()


def test_output_may_not_be_an_input(tmp_path):
    src = make_photo(tmp_path / "in.png")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        check_output_path(src, [src])
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        check_output_path(tmp_path / "." / "in.png", [str(src)])
    assert check_output_path(tmp_path / "out.png", [src]) == tmp_path / "out.png"
