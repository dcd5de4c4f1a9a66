"""Stylising image files: one image, or every image of a folder or glob into an output folder."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, FastnsError, ImageError
from ..image import (
    IMAGE_EXTENSIONS,
    check_output_path,
    find_images,
    glob_base,
    image_format,
    save_image,
)
from .stylizer import Stylizer, check_controls, load_content
from .threads import Background, Writer

log = logging.getLogger(__name__)


class SkippedFilesError(FastnsError):
    """Some files of a folder could not be read or written (the others were processed)."""


def stylize_image(
    stylizer: Stylizer,
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    max_size: int | None = None,
    **controls: Any,
) -> Path:
    """Stylise one image file into ``output`` (atomic; the format follows its extension).

    Args:
        stylizer: the network.
        input: any image file Pillow reads (EXIF orientation applied).
        output: the result; never one of the inputs.
        max_size: downscale so that the longest side is at most this, px.
        controls: ``strength``, ``preserve_color``, ``tile`` (see :meth:`Stylizer.__call__`).
    """
    output = check_output_path(output, [input])
    start = time.perf_counter()
    out = stylizer.stylize(load_content(input, max_size), **controls)
    save_image(out, output)
    log.info("wrote %s (%dx%d, %.2fs)", output, out.shape[-1], out.shape[-2], time.perf_counter() - start)
    return output


@dataclass
class FolderReport:
    """What :func:`stylize_folder` did."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (input, one-line reason)
    seconds: float = 0.0


def stylize_folder(
    stylizer: Stylizer,
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    max_size: int | None = None,
    batch_size: int = 1,
    format: str | None = None,
    progress: bool = False,
    **controls: Any,
) -> FolderReport:
    """Stylise every image of a folder (recursively) or glob pattern into ``output``, keeping the layout.

    Images of equal size (after ``max_size``) are stylised together in batches of ``batch_size``;
    loading runs in a background thread and saving in another, overlapped with the network.
    A file that cannot be read or written is skipped with a warning and listed in the report;
    the others are still processed. The caller decides what a skip means (``run`` exits non-zero).

    Args:
        stylizer: the network.
        input: a folder, or a glob pattern such as ``"shots/**/*.jpg"`` (relative paths start
            at the pattern's folder part).
        output: the output folder. It may lie inside the input folder: it is not scanned.
        max_size: downscale so that the longest side is at most this, px.
        batch_size: images per network call (same-size images only).
        format: an extension (``"png"``, ``"jpg"``...) to convert every output to; default: each
            image keeps its own format.
        progress: show a progress bar.
        controls: ``strength``, ``preserve_color``, ``tile``.
    """
    from tqdm.auto import tqdm

    check_controls(controls.get("strength", 1.0), max_size, controls.get("tile"))
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output={output} is a file; a folder input needs an output folder")
    if not output.exists() and output.suffix.lower() in IMAGE_EXTENSIONS:
        raise ConfigError(f"output={output}: a folder input needs an output folder, not an image file name")
    folder = Path(input) if Path(input).is_dir() else glob_base(str(input))
    if output.resolve() == folder.resolve():
        raise ConfigError(f"output={output} is the input folder; refusing to overwrite the input images")
    base, files = find_images(input, exclude=output)
    if not files:
        raise ImageError(f"{input}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    suffix = None
    if format:
        suffix = "." + str(format).lower().lstrip(".")
        image_format(f"x{suffix}")  # an unknown format fails now, not after the first image
    targets = {}
    inputs = {p.resolve() for p in files}
    for p in files:
        rel = p.relative_to(base)
        target = output / (rel.with_suffix(suffix) if suffix else rel)
        if target.resolve() in inputs:
            raise ConfigError(f"output={output} would overwrite the input {p}; choose another output folder")
        targets[p] = target

    report = FolderReport()
    start = time.perf_counter()
    bar = tqdm(total=len(files), desc="stylise", unit="img", disable=not progress)

    def skip(path: Path, reason: str) -> None:
        log.warning("skipped %s", reason)
        report.skipped.append((path, reason))
        bar.update(1)

    def produce(put: Callable[[Any], None]) -> None:
        for p in files:
            try:
                put((p, load_content(p, max_size)))
            except ImageError as e:
                put((p, e))

    def save(p: Path, image: torch.Tensor) -> None:
        try:
            save_image(image, targets[p])
            report.written.append(targets[p])
        except ImageError as e:
            report.skipped.append((p, str(e)))
            log.warning("skipped %s", e)
        bar.update(1)

    buckets: dict[tuple[int, int], list[tuple[Path, torch.Tensor]]] = {}

    def flush(key: tuple[int, int]) -> None:
        paths, images = zip(*buckets.pop(key), strict=True)
        out = stylizer.stylize(torch.cat(images), **controls).cpu()
        for p, image in zip(paths, out, strict=True):
            writer.submit(lambda p=p, image=image: save(p, image))

    try:
        with (
            Writer(name="save") as writer,
            Background(produce, maxsize=2 * int(batch_size) + 2, name="load") as loaded,
        ):
            for p, item in loaded:
                if isinstance(item, ImageError):
                    skip(p, str(item))
                    continue
                key = tuple(item.shape[-2:])
                buckets.setdefault(key, []).append((p, item))
                if len(buckets[key]) >= batch_size:
                    flush(key)
            for key in list(buckets):
                flush(key)
    finally:
        bar.close()
    report.seconds = time.perf_counter() - start
    return report
