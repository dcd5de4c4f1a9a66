"""Style images from the ``style`` config group: presets, local files, URLs, blends."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image

from . import hub
from .errors import ConfigError
from .image import open_image, pil_to_tensor, resize_pil
from .utils import as_list

#: The style presets (``style=candy``), also valid entries of ``styles=[...]``.
PRESETS_DIR = Path(__file__).resolve().parent / "configs" / "style"


class Style:
    """One or more style images with their size settings.

    Args:
        image: a path or URL (``#sha256=<hex>`` fragment verified), or a list of them to blend.
        name: a short name for logs and model files; default: the file name(s) without extension.
        size: longest side, in pixels, the style image is resized to (``None``: native size).
        scale: if set, the style size is ``scale`` × the output's longest side instead of ``size``
            (neural-style's ``-style_scale``).
        blend_weights: one weight per image, normalised to sum to 1 (default: equal).
    """

    def __init__(
        self,
        image: str | os.PathLike | Sequence[str | os.PathLike],
        name: str | None = None,
        size: int | None = 512,
        scale: float | None = None,
        blend_weights: Sequence[float] | None = None,
    ) -> None:
        sources = [str(s) for s in as_list(image)]
        if not sources:
            raise ConfigError(
                "style.image is empty; pass style=<preset> or style.image=/path/to/painting.jpg"
            )
        if size is not None and int(size) <= 0:
            raise ConfigError(
                f"style.size={size} must be a positive number of pixels (or null for the native size)"
            )
        if scale is not None and float(scale) <= 0:
            raise ConfigError(f"style.scale={scale} must be positive (or null to use style.size)")
        weights = None if blend_weights is None else [float(w) for w in as_list(blend_weights)]
        if weights is not None and len(weights) != len(sources):
            raise ConfigError(
                f"style.blend_weights has {len(weights)} values for {len(sources)} style images"
            )
        self.sources = sources
        self.paths = [hub.resolve(s, key="style.image") for s in sources]
        self.images: list[Image.Image] = [open_image(p) for p in self.paths]
        self.name = str(name) if name else self.name_of(sources)
        self.size = None if size is None else int(size)
        self.scale = None if scale is None else float(scale)
        self.blend_weights = weights

    @staticmethod
    def name_of(image: str | os.PathLike | Sequence[str | os.PathLike]) -> str:
        """The default name of a style: its image's file stem (stems joined by ``+`` for a blend)."""
        sources = [str(s) for s in as_list(image)]
        return "+".join(Path(hub.split_checksum(s)[0] if hub.is_url(s) else s).stem for s in sources)

    @classmethod
    def from_config(cls, cfg: Mapping) -> Style:
        known = {"image", "name", "size", "scale", "blend_weights"}
        unknown = set(cfg) - known
        if unknown:
            raise ConfigError(f"unknown key style.{sorted(unknown)[0]}; style takes {sorted(known)}")
        if cfg.get("image") in (None, "???"):
            raise ConfigError(
                "style.image is not set; pass style=<preset> or style.image=/path/to/painting.jpg"
            )
        return cls(**{k: cfg[k] for k in known if k in cfg})

    def longest_side(self, output_longest: int, reference: int | None = None) -> int | None:
        """Style size for an output whose longest side is ``output_longest``.

        ``reference`` is the output size at which ``style.size`` applies (the final size of a
        multi-scale run); at other sizes the style is scaled in proportion, so brush strokes
        keep the same size relative to the output at every scale.
        """
        if self.scale is not None:
            return max(1, round(self.scale * output_longest))
        if self.size is None:
            if reference is None:
                return None
            return max(1, round(max(self.images[0].size) * output_longest / reference))
        ref = reference or output_longest
        return max(1, round(self.size * output_longest / ref))

    def tensors(self, longest: int | None, device: torch.device | str | None = None) -> list[torch.Tensor]:
        """The style images as ``(1, 3, H, W)`` tensors in [0, 1], longest side ``longest``."""
        out = []
        for im in self.images:
            if longest is not None:
                im = resize_pil(im, longest)
            out.append(pil_to_tensor(im).to(device))
        return out

    def __repr__(self) -> str:
        return f"Style(name={self.name!r}, sources={self.sources}, size={self.size}, scale={self.scale})"


def presets() -> list[str]:
    """The names of the style presets (``fastns/configs/style/*.yaml``, ``custom`` aside)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml") if p.stem != "custom")


def resolve_styles(entries: Sequence, base: Mapping) -> list[dict]:
    """The ``style`` configs of ``styles=[...]`` (a network of several styles), in order.

    Each entry is a preset name (``candy``), an image path or URL (named by its file stem), or a
    mapping of ``style`` keys (``{image: a.jpg, name: a}``). Every style takes ``base``'s size
    settings (the ``style`` config: ``style.size``, ``style.scale``), a preset's own keys over them.

    Raises:
        ConfigError: an empty list, an entry that is neither a preset nor an existing file or URL,
            or two styles of the same name (names address styles when stylising).
    """
    from omegaconf import OmegaConf

    entries = list(as_list(entries))
    if not entries:
        raise ConfigError("styles=[] is empty; list presets or image paths: styles=[candy,mosaic]")
    common = {k: v for k, v in base.items() if k in ("size", "scale")}
    out: list[dict] = []
    for entry in entries:
        if isinstance(entry, Mapping):
            cfg = {**common, **dict(entry)}
        else:
            text = str(entry)
            preset = PRESETS_DIR / f"{text}.yaml"
            if "/" not in text and preset.is_file() and text != "custom":
                values = OmegaConf.to_container(OmegaConf.load(preset))
                values.pop("defaults", None)
                cfg = {**common, **values, "name": text}
            elif hub.is_url(text) or Path(text).expanduser().is_file():
                cfg = {**common, "image": text}
            else:
                raise ConfigError(
                    f"styles: {text!r} is neither a style preset ({', '.join(presets())}) nor an image file"
                )
        out.append(cfg)
    names = [str(c.get("name") or Style.name_of(c["image"])) for c in out]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(
                f"styles: two styles are named {name!r}; give one another name ({{image: ..., name: ...}})"
            )
    return out
