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


#: What ``style`` takes: ``style=<name>`` is short for ``style.name=<name>``.
STYLE_KEYS = ("name", "image", "size", "blend_weights")


def style_config(cfg_style: Any) -> dict[str, Any]:
    """``style`` as a mapping: a bare string (``style=candy``, ``style=all``) is ``{"name": ...}``."""
    if cfg_style is None:
        return {}
    if isinstance(cfg_style, str):
        return {"name": cfg_style}
    out = dict(cfg_style)
    unknown = set(out) - set(STYLE_KEYS)
    if unknown:
        raise ConfigError(f"unknown key style.{sorted(unknown)[0]}; style takes {list(STYLE_KEYS)}")
    return out


def select_styles(
    cfg_style: Any, info: ModelInfo, model_path: str | os.PathLike
) -> list[tuple[str | None, dict]]:
    """The network's styles to evaluate: ``[(name, its description in the model file), ...]``.

    A single-style network gives ``[(None, info.style)]``. A network of several styles gives every
    style (``style.name`` null or ``all``) or the one named; its name is what the stylizer takes.
    """
    cfg = style_config(cfg_style)
    name = cfg.get("name")
    names = info.style_names
    listed = f"the network's styles: {', '.join(names)}"
    if info.num_styles == 1:
        if name not in (None, "all", names[0]):
            raise ConfigError(f"style={name}: {model_path} holds one style ({names[0]}); leave style out")
        return [(None, dict(info.style or {}))]
    if name in (None, "all"):
        if cfg.get("image") is not None:
            raise ConfigError(
                f"style.image replaces one style's image; name that style too (style.name=<name>); {listed}"
            )
        return [(n, dict(s)) for n, s in zip(names, info.styles or [{}] * len(names), strict=True)]
    if name not in names:
        raise ConfigError(f"style={name}: no such style in {model_path}; {listed}")
    i = names.index(name)
    return [(name, dict(info.styles[i]) if info.styles else {"name": name})]


def load_style(
    cfg_style: Any, info: ModelInfo, model_path: str | os.PathLike, model_style: Mapping | None = None
) -> Style:
    """The style the loss targets come from: the model's (sources, size), or ``style.image``/``style.size``.

    ``model_style``: the description of the network's style being evaluated (a network of several
    styles, :func:`select_styles`); default the model file's single style.
    """
    cfg_style = style_config(cfg_style)
    model_style = (info.style if model_style is None else model_style) or {}
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
