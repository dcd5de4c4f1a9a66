"""The fastns model file: ``model.safetensors`` = weights + everything needed to rebuild the network.

The file is a plain `safetensors <https://github.com/huggingface/safetensors>`_ file (no pickle:
loading it cannot run code). Its string metadata holds:

- ``format``: ``"fastns.transformer"``, ``format_version``: an integer, bumped on incompatible changes;
- ``fastns_version``: the version that wrote it;
- ``model``: JSON of the :class:`TransformerNet` constructor arguments (its whole description);
- ``style``: JSON of the style (name, sources, size);
- ``loss``: JSON of the :class:`PerceptualLoss` settings the network was trained with;
- ``training``: JSON summary (steps, final losses, image size, batch size, time...).

``load_model(path)`` rebuilds the network from this alone: no Hydra, no Lightning, no VGG.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import FastnsError, ModelFileError
from .transformer import TransformerNet
from .utils import atomic_write

FORMAT = "fastns.transformer"
FORMAT_VERSION = 1


@dataclass
class ModelInfo:
    """What a model file says about itself."""

    model: dict[str, Any]
    style: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    fastns_version: str = __version__
    format_version: int = FORMAT_VERSION


def save_model(
    path: str | os.PathLike,
    net: TransformerNet,
    *,
    style: dict[str, Any] | None = None,
    loss: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``net`` and its description to ``path`` atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "fastns_version": __version__,
        "model": json.dumps(net.config),
        "style": json.dumps(style or {}),
        "loss": json.dumps(loss or {}),
        "training": json.dumps(training or {}),
    }
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_info(path: str | os.PathLike) -> ModelInfo:
    """The metadata of a model file, validated (raises :class:`ModelFileError`)."""
    return _open(Path(path))[1]


def _open(path: Path) -> tuple[dict[str, torch.Tensor], ModelInfo]:
    from safetensors import safe_open

    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # header parse errors, truncated files, other formats
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelFileError(
            f"{path}: not a fastns model file (not a readable safetensors file: {reason})"
        ) from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: a safetensors file, but not a fastns model (no '{FORMAT}' metadata)")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise ModelFileError(
            f"{path}: damaged fastns metadata (format_version={meta.get('format_version')!r})"
        ) from None
    written_by = meta.get("fastns_version", "?")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written by fastns {written_by} in model format {version}; this fastns {__version__} "
            f"reads format {FORMAT_VERSION}: upgrade fastns"
        )
    if version < 1:
        raise ModelFileError(f"{path}: model format {version} (fastns {written_by}) is no longer supported")
    try:
        info = ModelInfo(
            model=json.loads(meta["model"]),
            style=json.loads(meta.get("style", "{}")),
            loss=json.loads(meta.get("loss", "{}")),
            training=json.loads(meta.get("training", "{}")),
            fastns_version=written_by,
            format_version=version,
        )
    except (KeyError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: damaged fastns metadata ({type(e).__name__}: {e})") from None
    return tensors, info


def load_model(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[TransformerNet, ModelInfo]:
    """Rebuild the network stored in ``path``; returns it in eval mode, with its :class:`ModelInfo`."""
    path = Path(path)
    tensors, info = _open(path)
    try:
        net = TransformerNet(**info.model)
    except (TypeError, FastnsError) as e:
        raise ModelFileError(f"{path}: the network description in the file is not valid here ({e})") from None
    missing, unexpected = net.state_dict().keys() - tensors.keys(), tensors.keys() - net.state_dict().keys()
    if missing or unexpected:
        what = f"missing {sorted(missing)[0]}" if missing else f"unexpected {sorted(unexpected)[0]}"
        raise ModelFileError(f"{path}: the weights do not match the network described in the file ({what})")
    try:
        net.load_state_dict(tensors)
    except RuntimeError as e:
        raise ModelFileError(
            f"{path}: the weights do not match the network described in the file ({str(e).splitlines()[-1].strip()})"
        ) from None
    return net.to(device).eval(), info
