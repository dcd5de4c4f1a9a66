"""The evaluation's inputs, checked: the model file, its loss, the style image, the photos.

Each function turns one config value into what the evaluation runs on, or raises a
:class:`~fastns.errors.FastnsError` whose one-line message says which value to change.
"""

from __future__ import annotations

import copy
import glob
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, FastnsError, ImageError, ModelFileError
from ..image import find_images
from ..losses import PerceptualLoss
from ..modelfile import ModelInfo, load_model
from ..style import Style
from ..utils import as_list
from .files import REPORT_FILES

log = logging.getLogger(__name__)


def load_model_for_evaluation(path: str | os.PathLike) -> tuple[Any, ModelInfo]:
    """The network and its description; a training checkpoint gets the command that converts it."""
    path = Path(str(path))
    if path.suffix == ".ckpt":
        raise ModelFileError(
            f"{path}: a training checkpoint, not a model file; turn it into one with "
            f"python scripts/export.py model={path}"
        )
    net, info = load_model(path, "cpu")
    if not info.loss:
        raise ModelFileError(
            f"{path}: the model file has no loss settings (not written by scripts/train.py), "
            "so there is no objective to evaluate it against"
        )
    return net, info


def loss_settings(
    info: ModelInfo, overrides: Mapping | None, model_path: str | os.PathLike
) -> dict[str, Any]:
    """The model's loss settings with the ``loss.vgg.*`` overrides that are not null applied.

    Only the VGG can be changed: it is the measuring instrument (e.g. a local copy of the same
    weights offline), while the layers and weights define the objective the network was trained on.
    """
    settings = copy.deepcopy(dict(info.loss))
    vgg = dict(settings.get("vgg") or {})
    given = {}
    for key, value in dict((overrides or {}).get("vgg") or {}).items():
        if value is not None:
            given[key] = value
    unknown = set(dict(overrides or {})) - {"vgg"}
    if unknown:
        raise ConfigError(
            f"loss.{sorted(unknown)[0]} cannot be changed here: the evaluation uses the loss stored in "
            f"{model_path}; only loss.vgg.arch / loss.vgg.weights / loss.vgg.pooling can be overridden"
        )
    for key, value in given.items():
        if key in vgg and str(vgg[key]) != str(value):
            log.info("loss.vgg.%s=%s (the model was trained with %s)", key, value, vgg[key])
        vgg[key] = value
    settings["vgg"] = vgg
    return settings


def build_model_loss(settings: Mapping, vgg_overridden: bool, device: torch.device) -> PerceptualLoss:
    """:meth:`PerceptualLoss.from_config`, with a hint when the model file's own VGG cannot be loaded."""
    try:
        return PerceptualLoss.from_config(dict(settings), device)
    except FastnsError as e:
        # A message that already says what to "pass " needs no second hint.
        if vgg_overridden or "pass " in str(e):
            raise
        arch = (settings.get("vgg") or {}).get("arch", "vgg16")
        raise type(e)(
            f"{e} (the VGG named in the model file; pass loss.vgg.weights=/path/to/{arch}.pth)"
        ) from None


def load_style(cfg_style: Mapping, info: ModelInfo, model_path: str | os.PathLike) -> Style:
    """The style the loss targets come from: the model's (sources, size), or ``style.image``/``style.size``."""
    known = {"image", "size", "blend_weights"}
    unknown = set(cfg_style) - known
    if unknown:
        raise ConfigError(f"unknown key style.{sorted(unknown)[0]}; style takes {sorted(known)}")
    model_style = info.style or {}
    override = as_list(cfg_style.get("image"))
    sources = [str(s) for s in override] or [str(s) for s in as_list(model_style.get("sources"))]
    if not sources:
        raise ConfigError(
            f"{model_path}: the model file names no style image; pass style.image=/path/to/painting.jpg"
        )
    size = cfg_style.get("size") or model_style.get("size")
    weights = cfg_style.get("blend_weights")
    if weights is None and not override:
        weights = model_style.get("blend_weights")
    try:
        return Style(
            image=sources,
            name=model_style.get("name") if not override else None,
            size=int(size) if size else None,
            blend_weights=None if weights is None else [float(w) for w in as_list(weights)],
        )
    except FastnsError as e:
        if override:
            raise
        raise type(e)(
            f"the style image of {model_path} cannot be loaded ({e}); pass style.image=/path/to/painting.jpg"
        ) from None


def find_photos(images: str | os.PathLike, output: Path, max_images: int | None) -> list[Path]:
    """The photos to evaluate: a file, a folder (recursive) or a glob; sorted, at most ``max_images``.

    A report folder inside the images folder is left out, and so are earlier report pictures
    (``contact_sheet.png``, ``loss_curves.png``) found directly in the output folder.
    """
    text = str(images)
    path = Path(text)
    out = output.resolve()
    own = {(out / name) for name in REPORT_FILES}
    if path.is_file():
        if path.resolve() in own:
            raise ConfigError(
                f"images={path} is a file of this report ({out}); refusing to overwrite an input"
            )
        files = [path]
    else:
        if not path.is_dir() and not glob.has_magic(text):
            raise ImageError(f"images={text}: no such file or folder")
        exclude = out if path.is_dir() and path.resolve() != out else None
        _, files = find_images(text, exclude=exclude)  # the folder / glob search of scripts/stylize.py
        files = [p for p in files if p.resolve() not in own]
        if not files:
            what = (
                "no image files (.jpg .png .webp ...) in this folder or below"
                if path.is_dir()
                else "no image matches"
            )
            raise ImageError(f"images={text}: {what}")
    if max_images is not None:
        if int(max_images) < 1:
            raise ConfigError(f"max_images={max_images} must be >= 1 (or null for all images)")
        if len(files) > int(max_images):
            log.info(
                "evaluating the first %d of %d images (max_images=%d)", max_images, len(files), max_images
            )
        files = files[: int(max_images)]
    return files


def _positive_ints(values: Any, key: str) -> list[int]:
    """The distinct values of a list setting, sorted; a ConfigError naming ``key`` if any is below 1."""
    out = sorted({int(v) for v in as_list(values)})
    if any(v < 1 for v in out):
        raise ConfigError(f"{key}={list(as_list(values))} must be positive iteration counts")
    return out
