"""The config-driven task behind ``scripts/stylize.py``: an image, folder, glob, video or the webcam."""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError, ImageError
from ..image import check_output_path, glob_base, pil_to_tensor, save_image
from ..zoo import table as zoo_table
from .files import SkippedFilesError, stylize_folder, stylize_image
from .sheet import style_sheet
from .stylizer import Stylizer, check_controls, load_content
from .temporal import make_temporal
from .video import VIDEO_EXTENSIONS, stylize_video
from .webcam import import_cv2, run_webcam

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)


def default_output(input: str | os.PathLike) -> Path:
    """Where ``output=null`` writes: ``photo_stylised.jpg``, ``clip_stylised.mp4``, ``holiday_stylised/``."""
    text = str(input)
    path = Path(text)
    if path.is_dir() or glob.has_magic(text):
        folder = path if path.is_dir() else glob_base(text)
        folder = folder.resolve()
        return folder.with_name(f"{folder.name}_stylised")
    return path.with_name(f"{path.stem}_stylised{path.suffix}")


def _style_setting(cfg: DictConfig) -> Any:
    """``style=``: None, a name, ``all``, or ``{name: weight}`` (as plain data)."""
    from omegaconf import OmegaConf

    style = cfg.get("style")
    if OmegaConf.is_config(style):
        return OmegaConf.to_container(style, resolve=True)
    return None if style is None else (style if isinstance(style, dict | list) else str(style))


def _check_style(stylizer: Stylizer, style: Any, kind: str, sheet: bool) -> None:
    """Refuse, in one line listing the network's styles, a style setting this network or input cannot take."""
    listed = ", ".join(stylizer.styles)
    if style == "all":
        if kind not in ("image", "folder"):
            raise ConfigError(
                f"style=all is for images and folders (one output per style); for a {kind} pick one of: {listed}"
            )
        return
    if style is None and stylizer.num_styles > 1 and kind != "webcam" and not sheet:
        raise ConfigError(
            f"this network holds {stylizer.num_styles} styles ({listed}): pass style=<name>, a blend "
            f'style="{{{stylizer.styles[0]}:0.5,{stylizer.styles[1]}:0.5}}", style=all or sheet=true'
        )
    if not sheet:
        stylizer.style_weights(style)  # an unknown name or bad weights: the one-line error, before any work


def _kind(input: str) -> str:
    if input.lower() == "webcam":
        return "webcam"
    path = Path(input)
    if path.is_dir() or (not path.exists() and glob.has_magic(input)):
        return "folder"
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return "video"
    return "image"


def run(cfg: DictConfig) -> Any:
    """Stylise ``cfg.input`` (image, folder, glob, video or ``webcam``) with ``cfg.model``.

    See ``fastns/configs/tools/stylize.yaml`` for the keys. Returns the output path (image), the
    :class:`FolderReport`, the :class:`VideoReport`, or the number of webcam frames shown.

    Raises:
        SkippedFilesError: after a folder run in which some files could not be read or written
            (all the others were written); the script prints it and exits with status 2.
    """
    zoo = cfg.get("zoo")
    if zoo is not None:
        if str(zoo) != "list":
            raise ConfigError(
                f"zoo={zoo}: the only value is list (prints the networks model=zoo:<name> fetches)"
            )
        print(zoo_table())
        return None
    if cfg.input is None:
        raise ConfigError("missing required setting input: pass input=photo.jpg, a folder, a video or webcam")
    input = str(cfg.input)
    kind = _kind(input)
    if kind == "image" and not Path(input).exists():
        raise ImageError(f"{input}: no such file")
    output = Path(cfg.output) if cfg.output else None
    if kind != "webcam" and output is None:
        output = default_output(input)
    controls = {"strength": float(cfg.strength), "preserve_color": bool(cfg.preserve_color)}
    max_size = int(cfg.max_size) if cfg.max_size else None
    tile = int(cfg.tile) if cfg.tile else None
    check_controls(controls["strength"], max_size, tile)
    if kind in ("video", "webcam") and tile is not None:
        raise ConfigError("tile= is for still images; for video use max_size= to bound the frame size")
    # Before the model loads: a bad setting, or no OpenCV for the flow, fails at once.
    temporal = make_temporal(cfg.get("temporal"), **(cfg.get("flow") or {}))
    if temporal is not None and kind not in ("video", "webcam"):
        raise ConfigError(
            f"temporal={cfg.temporal} is for video and the webcam; a {kind} has no frames to follow"
        )
    style, sheet = _style_setting(cfg), bool(cfg.get("sheet") or False)
    if sheet and kind != "image":
        raise ConfigError(f"sheet=true is for one image (the input in every style and blend), not a {kind}")
    if sheet and not cfg.output:
        output = Path(input).with_name(f"{Path(input).stem}_sheet{Path(input).suffix}")
    if kind == "image" and output is not None:
        check_output_path(output, [input])
    if kind == "webcam":
        import_cv2()  # before the model loads: a missing OpenCV should fail at once
    stylizer = Stylizer.load(
        cfg.model,
        device=str(cfg.device),
        precision=str(cfg.precision),
        compile=cfg.compile,
        channels_last=None if cfg.channels_last is None else bool(cfg.channels_last),
        border=int(cfg.border),
        cuda_graphs=None if cfg.cuda_graphs is None else bool(cfg.cuda_graphs),
        input_noise=None if cfg.get("input_noise") is None else float(cfg.input_noise),
    )
    if stylizer.device.type == "cuda":
        # Videos and folders repeat a few sizes: let cuDNN pick the fastest kernels per size. A
        # process-wide setting, so the task sets it, not the library's Stylizer.
        torch.backends.cudnn.benchmark = True
    log.info("%r, input %s (%s)", stylizer, input, kind)
    batch_size = int(cfg.batch_size) if cfg.batch_size else (4 if stylizer.device.type == "cuda" else 1)
    _check_style(stylizer, style, kind, sheet)
    if sheet:
        content = load_content(input, max_size)
        image = style_sheet(stylizer, content, tile=tile, **controls)
        save_image(pil_to_tensor(image), output)
        log.info("wrote %s: the input, %d style(s) and their blends", output, stylizer.num_styles)
        return output
    if style == "all":
        names = stylizer.styles
        outputs = [_per_style(output, name, kind) for name in names]
        if kind == "image":
            for path in outputs:
                check_output_path(path, [input])
        results = [
            _run_one(cfg, stylizer, kind, input, path, max_size, tile, batch_size, temporal, controls, name)
            for name, path in zip(names, outputs, strict=True)
        ]
        return results
    return _run_one(cfg, stylizer, kind, input, output, max_size, tile, batch_size, temporal, controls, style)


def _per_style(output: Path, name: str, kind: str) -> Path:
    """Where ``style=all`` writes a style's output: ``photo_stylised_candy.jpg``, ``holiday_stylised/candy/``."""
    if kind == "folder":
        return output / name
    return output.with_name(f"{output.stem}_{name}{output.suffix}")


def _run_one(
    cfg: DictConfig,
    stylizer: Stylizer,
    kind: str,
    input: str,
    output: Path | None,
    max_size: int | None,
    tile: int | None,
    batch_size: int,
    temporal: Any,
    controls: dict[str, Any],
    style: Any,
) -> Any:
    """Stylise the input into ``output`` with one style setting."""
    controls = {**controls, "style": style}
    progress = bool(cfg.progress)

    if kind == "webcam":
        return run_webcam(
            stylizer,
            cfg.camera,
            max_size=max_size or 720,
            mirror=bool(cfg.mirror),
            temporal=temporal,
            **controls,
        )
    if kind == "video":
        report = stylize_video(
            stylizer,
            input,
            output,
            max_size=max_size,
            batch_size=batch_size,
            codec=cfg.video.codec,
            crf=int(cfg.video.crf),
            preset=str(cfg.video.preset),
            progress=progress,
            temporal=temporal,
            **controls,
        )
        log.info(
            "wrote %s: %d frames of %dx%d in %.1fs (%.1f fps end to end), %d audio stream(s)",
            report.output,
            report.frames,
            *report.size,
            report.seconds,
            report.fps,
            report.audio_streams,
        )
        if temporal is not None:
            log.info(
                "temporal=flow: %d frame(s) restarted the blend (the first and scene cuts)", temporal.restarts
            )
        if report.damaged_packets:
            log.warning(
                "%s: %d damaged video packet(s) skipped; the other frames were written, with their timing",
                input,
                report.damaged_packets,
            )
        return report
    if kind == "folder":
        report = stylize_folder(
            stylizer,
            input,
            output,
            max_size=max_size,
            batch_size=batch_size,
            format=cfg.format,
            progress=progress,
            tile=tile,
            **controls,
        )
        log.info("wrote %d image(s) to %s in %.1fs", len(report.written), output, report.seconds)
        if report.skipped:
            first, reason = report.skipped[0]
            if not report.written:
                raise SkippedFilesError(
                    f"none of {len(report.skipped)} file(s) could be stylised (first: {reason})"
                )
            raise SkippedFilesError(
                f"{len(report.skipped)} of {len(report.skipped) + len(report.written)} file(s) skipped "
                f"(first: {reason}); the others were written to {output}"
            )
        return report
    return stylize_image(stylizer, input, output, max_size=max_size, tile=tile, **controls)
