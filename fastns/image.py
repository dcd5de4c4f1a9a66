"""Image files in and out.

Every image that leaves this module is a float tensor of shape ``(B, 3, H, W)`` with values
in [0, 1] (``B = 1`` for a single file). Everything about file formats and colour modes lives
here: any Pillow-readable file in any mode (L, LA, P, RGBA, CMYK, I;16, ...) is turned into RGB,
with EXIF orientation applied and transparency composited on white. Finding the images of a folder
or glob (:func:`find_images`, one extension list) and resizing to a longest side live here too.
Saving is atomic: the image is written to a temporary file in the destination folder and renamed
over the final name, so an interrupted run never leaves a half-written image behind.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ConfigError, ImageError
from .utils import atomic_write

# A truncated file must be an error, not a silently grey-filled image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Extensions read when scanning folders, for training, stylising and evaluation alike (Pillow
#: reads more when given a file directly).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")

#: The smallest image side any task takes, px: the network's two stride-2 stages and VGG's three
#: poolings before relu4_x need that much.
MIN_SIDE = 8

# Pillow's save options per format: high quality by default, these are outputs people look at.
_SAVE_OPTIONS = {
    "JPEG": {"quality": 95, "subsampling": 0},
    "WEBP": {"quality": 95},
    "PNG": {"compress_level": 6},
}


def _modes_16bit() -> tuple[str, ...]:
    return ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _modes_16bit():
        # Pillow's convert("L") clips 16-bit values at 255 instead of scaling them.
        arr = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if (mode != "I" or arr.max(initial=0) > 255) else 255.0
        arr = np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        arr = arr * 255.0 if arr.max(initial=0) <= 1.0 else arr
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def open_image(path: str | os.PathLike, max_side: int | None = None) -> Image.Image:
    """Open an image file as an 8-bit RGB Pillow image, EXIF orientation applied.

    Args:
        path: the image file. Multi-frame files (GIF, TIFF, WebP) give their first frame.
        max_side: if given, JPEGs are decoded at reduced resolution when that still leaves at
            least ``max_side`` pixels on every side (much faster for huge photos). The caller
            still resizes to the exact size it needs.

    Raises:
        ImageError: one line naming the file, for a missing, empty, truncated, too large or
            non-image file.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file, not an image")
    try:
        with Image.open(path) as im:
            im.seek(0)
            if max_side is not None and im.format == "JPEG":
                im.draft(None, (max_side, max_side))
            im.load()
            im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: image too large to open safely ({e})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{path}: cannot read image ({e})") from None


def fit_longest(width: int, height: int, size: int) -> tuple[int, int]:
    """Width and height scaled so that the longest side is ``size`` (aspect ratio kept)."""
    if size <= 0:
        raise ConfigError(f"image size must be a positive number of pixels, got {size}")
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_pil(im: Image.Image, longest: int) -> Image.Image:
    """A Pillow image resized (Lanczos, antialiased) so that its longest side is ``longest``."""
    if max(im.size) == longest:
        return im
    return im.resize(fit_longest(*im.size, longest), Image.Resampling.LANCZOS, reducing_gap=3.0)


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """8-bit RGB Pillow image -> float tensor (1, 3, H, W) in [0, 1]."""
    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255.0).contiguous()


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """Float tensor (1, 3, H, W) or (3, H, W), values in [0, 1] (clamped), -> RGB Pillow image."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected a single image, got a batch of {image.shape[0]}")
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image tensor of shape (3, H, W), got {tuple(image.shape)}")
    arr = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, mode="RGB")


def load_image(
    path: str | os.PathLike,
    size: int | None = None,
    device: torch.device | str | None = None,
    *,
    max_size: int | None = None,
) -> torch.Tensor:
    """Load an image file as a float tensor (1, 3, H, W) in [0, 1].

    Args:
        path: any image file Pillow reads, in any colour mode.
        size: if given, resize (Lanczos, antialiased) so that the longest side is ``size``.
        device: where to put the tensor.
        max_size: if given, downscale (only) so that the longest side is at most ``max_size``.
    """
    im = open_image(path, max_side=size or max_size)
    if size is not None:
        im = resize_pil(im, size)
    elif max_size is not None and max(im.size) > max_size:
        im = resize_pil(im, max_size)
    return pil_to_tensor(im).to(device)


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (B, 3, H, W) image in [0, 1] to ``size = (H, W)`` (bicubic, antialiased)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def resize_longest(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a (B, 3, H, W) image so that its longest side is ``size``."""
    h, w = image.shape[-2:]
    new_w, new_h = fit_longest(w, h, size)
    return resize(image, (new_h, new_w))


def image_format(path: str | os.PathLike) -> str:
    """Pillow format name for a file name's extension, e.g. ``out.jpg`` -> ``JPEG``."""
    ext = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise ImageError(
            f"{path}: unknown image extension {ext or '(none)'!r}; use .png, .jpg, .webp, .bmp or .tif"
        )
    return fmt


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save a (1, 3, H, W) or (3, H, W) image in [0, 1] atomically; the format follows the extension.

    The file is written under a temporary name in the same folder and renamed into place, so
    a reader (or an interrupted run) never sees a half-written file under the final name.
    """
    path = Path(path)
    fmt = image_format(path)
    pil = tensor_to_pil(image)
    try:
        with atomic_write(path) as tmp:
            pil.save(tmp, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))
    except OSError as e:
        raise ImageError(f"{path}: cannot write ({e.strerror or e})") from None
    return path


def check_output_path(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> Path:
    """Validate an output file name before any work is done.

    Refuses an output that is one of the inputs (we never overwrite an input file) and an
    extension we cannot write, so a long run does not fail at its very end.
    """
    output = Path(output)
    image_format(output)
    if output.is_dir():
        raise ConfigError(f"output={output} is a folder; give a file name such as {output / 'out.png'}")
    folder = output.parent
    while not folder.exists():  # the nearest existing folder above: missing ones are created on writing
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"output={output}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"output={output}: cannot write in {folder} (permission denied)")
    for inp in inputs:
        if inp is None:
            continue
        inp = Path(inp)
        same = output.resolve() == inp.resolve() or (
            output.exists() and inp.exists() and output.samefile(inp)
        )
        if same:
            raise ConfigError(f"output={output} is the input file {inp}; refusing to overwrite an input")
    return output


def glob_base(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard (where relative paths start)."""
    parts = Path(pattern).parts
    first_magic = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return Path(*parts[:first_magic]) if first_magic else Path(".")


def find_images(input: str | os.PathLike, exclude: Path | None = None) -> tuple[Path, list[Path]]:
    """The image files of a folder (recursively) or a glob pattern, sorted, and the folder they are relative to.

    Only files with an extension of :data:`IMAGE_EXTENSIONS` (any case) count. Files under
    ``exclude`` (an output folder inside the input folder) and hidden files (the temporary
    ``.name.part`` files of an interrupted run) are left out.

    Raises:
        ImageError: ``input`` is neither a folder nor a glob pattern.
    """
    pattern = str(input)
    if Path(pattern).is_dir():
        base = Path(pattern)
        candidates: Iterable[Path] = base.rglob("*")
    elif glob.has_magic(pattern):
        base = glob_base(pattern)
        candidates = (Path(p) for p in glob.glob(pattern, recursive=True))
    else:
        raise ImageError(f"{input}: no such file or folder")
    exclude_resolved = exclude.resolve() if exclude is not None else None
    files = []
    for p in candidates:
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS or p.name.startswith("."):
            continue
        if exclude_resolved is not None and exclude_resolved in p.resolve().parents:
            continue
        files.append(p)
    return base, sorted(files)
