"""The fastns model file: ``model.safetensors`` = weights + everything needed to rebuild the network.

The file is a plain `safetensors <https://github.com/huggingface/safetensors>`_ file (no pickle:
loading it cannot run code). Its string metadata holds:

- ``format``: ``"fastns.transformer"``, ``format_version``: an integer, bumped on incompatible changes;
- ``fastns_version``: the version that wrote it;
- ``model``: JSON of the :class:`TransformerNet` constructor arguments (its whole description);
- ``style``: JSON of the style (name, sources, size);
- ``styles`` (networks of several styles only, ``model.num_styles`` = N > 1): JSON list of the N
  styles in the network's order, each as ``style`` is for a single-style network (name, sources,
  size); ``style`` then holds only their names joined (``{"name": "candy, mosaic"}``), so
  single-style files are unchanged;
- ``loss``: JSON of the :class:`PerceptualLoss` settings the network was trained with;
- ``training``: JSON summary (steps, final losses, image size, batch size, time...).

``load_model(path)`` rebuilds the network from this alone: no Hydra, no Lightning, no VGG.
:class:`ModelInfo` is the one description of a trained network, also carried by training
checkpoints (``load_checkpoint``) and by the TorchScript/ONNX exports. Other projects' files:
``fastns.importers``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import FastnsError, ModelFileError, first_line
from .transformer import TransformerNet
from .utils import atomic_write
from .version import __version__

FORMAT = "fastns.transformer"
FORMAT_VERSION = 1


@dataclass
class ModelInfo:
    """What a model file says about itself: the network's description and where it came from.

    The one description of a trained network: training checkpoints carry it as a plain dict
    (:meth:`as_dict`, under ``"fastns"``), model files and the TorchScript/ONNX exports as string
    metadata (:meth:`metadata`).
    """

    model: dict[str, Any]
    style: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    fastns_version: str = __version__
    format_version: int = FORMAT_VERSION
    #: Networks of several styles: one ``style``-like dict per style, in the network's order.
    styles: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The description as plain data (what a training checkpoint stores)."""
        out = {"model": self.model, "style": self.style, "loss": self.loss, "training": self.training}
        if self.styles:  # single-style descriptions stay as they were
            out["styles"] = self.styles
        return out

    @property
    def num_styles(self) -> int:
        """N, the styles the network holds."""
        return int(self.model.get("num_styles", 1))

    @property
    def style_names(self) -> list[str]:
        """The styles' names in the network's order (``style1``... where the file names none)."""
        if self.num_styles == 1:
            return [str(self.style.get("name") or "style")]
        names = [str(s.get("name") or "") for s in self.styles]
        if len(names) != self.num_styles or not all(names):
            return [f"style{i + 1}" for i in range(self.num_styles)]
        return names

    def metadata(self) -> dict[str, str]:
        """String metadata for a model file or an exported graph (JSON values)."""
        return {
            "format": FORMAT,
            "format_version": str(self.format_version),
            "fastns_version": self.fastns_version,
            **{key: json.dumps(value) for key, value in self.as_dict().items()},
        }


def save_model(
    path: str | os.PathLike,
    net: TransformerNet,
    *,
    style: dict[str, Any] | None = None,
    loss: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    styles: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``net`` and its description to ``path`` atomically (temporary file, then rename).

    ``styles``: a network of several styles, one description per style (module docstring); its
    ``style`` entry defaults to their names.
    """
    styles = list(styles or []) if getattr(net, "num_styles", 1) > 1 else []
    if styles and len(styles) != net.num_styles:
        raise ValueError(f"{len(styles)} style descriptions for a network of {net.num_styles} styles")
    if styles and not style:
        style = {"name": ", ".join(str(s.get("name")) for s in styles)}
    info = ModelInfo(
        model=dict(net.config), style=style or {}, loss=loss or {}, training=training or {}, styles=styles
    )
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=info.metadata())
    return Path(path)


def read_info(path: str | os.PathLike) -> ModelInfo:
    """The metadata of a model file, validated (raises :class:`ModelFileError`)."""
    return _open(Path(path))[1]


def _open(path: Path) -> tuple[dict[str, torch.Tensor], ModelInfo]:
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # header parse errors, truncated files, other formats
        raise ModelFileError(
            f"{path}: not a fastns model file (not a readable safetensors file: {first_line(e)})"
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
            styles=list(json.loads(meta.get("styles", "[]"))),
        )
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: damaged fastns metadata ({type(e).__name__}: {e})") from None
    return tensors, info


def _build(path: Path, description: dict[str, Any], weights: dict[str, torch.Tensor]) -> TransformerNet:
    """The network that ``description`` describes, with ``weights``; a mismatch is a one-line error."""
    try:
        net = TransformerNet(**description)
    except (TypeError, FastnsError) as e:
        raise ModelFileError(f"{path}: the network description in the file is not valid here ({e})") from None
    missing, unexpected = net.state_dict().keys() - weights.keys(), weights.keys() - net.state_dict().keys()
    if missing or unexpected:
        what = f"missing {sorted(missing)[0]}" if missing else f"unexpected {sorted(unexpected)[0]}"
        raise ModelFileError(f"{path}: the weights do not match the network described in the file ({what})")
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise ModelFileError(
            f"{path}: the weights do not match the network described in the file ({str(e).splitlines()[-1].strip()})"
        ) from None
    return net


def load_model(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[TransformerNet, ModelInfo]:
    """Rebuild the network stored in ``path``; returns it in eval mode, with its :class:`ModelInfo`."""
    path = Path(path)
    tensors, info = _open(path)
    return _build(path, info.model, tensors).to(device).eval(), info


def check_architecture(
    source: TransformerNet, net: TransformerNet, what: str, ignore: tuple[str, ...] = ()
) -> None:
    """Refuse ``source``'s weights for ``net`` unless the two are the same architecture.

    The error names the first differing setting and the overrides that would configure
    ``source``'s architecture; ``ignore`` lists settings that may differ.
    """
    theirs = {k: v for k, v in source.config.items() if k not in ignore}
    mine = {k: v for k, v in net.config.items() if k not in ignore}
    if theirs == mine:
        return
    differ = sorted(k for k in {*theirs, *mine} if theirs.get(k) != mine.get(k))
    name = differ[0]
    overrides = " ".join(f"model.{k}={theirs[k]}" for k in differ if k in theirs)
    raise ModelFileError(
        f"{what}: its network has {name}={theirs.get(name)!r}, the configured one model.{name}={mine.get(name)!r}; "
        f"pass {overrides} to train its architecture, or use a file of the configured one"
    )


def load_initial_weights(net: TransformerNet, path: str | os.PathLike, key: str = "init_from") -> ModelInfo:
    """Copy the weights of the model file ``path`` into ``net`` (training's ``init_from``).

    Fine-tuning from another style's network starts from one that already keeps the subject and
    paints; the two must be the same architecture, and a mismatch names the first differing setting.
    ``net`` may hold more styles than the file (adding styles): the file's styles come first, with
    their γ, β unchanged, and each new style starts from the mean of theirs.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelFileError(f"{key}={path}: no such model file")
    source, info = load_model(path)
    # The number of styles may grow, and the input's grain is a setting of the run, not of the weights.
    check_architecture(source, net, f"{key}={path}", ignore=("num_styles", "input_noise"))
    if source.num_styles > net.num_styles:
        raise ModelFileError(
            f"{key}={path}: its network holds {source.num_styles} styles, more than the {net.num_styles} configured"
        )
    weights = source.state_dict()
    if source.num_styles < net.num_styles:
        target = net.state_dict()
        for name, value in weights.items():
            if target[name].shape != value.shape:  # a norm's γ or β: (C,) or (N0, C) -> (N, C)
                rows = value if value.dim() == 2 else value[None]
                extra = rows.mean(0, keepdim=True).expand(net.num_styles - rows.shape[0], -1)
                weights[name] = torch.cat([rows, extra])
    net.load_state_dict(weights)
    return info


def load_checkpoint(path: str | os.PathLike) -> tuple[TransformerNet, ModelInfo]:
    """The network and description in a training checkpoint (``.ckpt`` of ``scripts/train.py``).

    Read with ``torch.load(weights_only=True)``: tensors and plain data only, never code.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelFileError(
            f"{path}: not a readable checkpoint ({type(e).__name__}: {first_line(e)})"
        ) from None
    meta = data.get("fastns") if isinstance(data, dict) else None
    if not meta:
        raise ModelFileError(f"{path}: not a fastns training checkpoint (no 'fastns' entry)")
    try:
        weights = {k.removeprefix("net."): v for k, v in data["state_dict"].items() if k.startswith("net.")}
        info = ModelInfo(
            model=dict(meta["model"]),
            style=dict(meta.get("style") or {}),
            loss=dict(meta.get("loss") or {}),
            training=dict(meta.get("training") or {}),
            styles=list(meta.get("styles") or []),
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise ModelFileError(f"{path}: damaged fastns checkpoint ({first_line(e)})") from None
    return _build(path, info.model, weights).eval(), info
