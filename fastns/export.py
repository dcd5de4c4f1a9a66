"""Exports of a trained network (behind ``scripts/export.py``)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from .errors import ConfigError

log = logging.getLogger(__name__)

FORMATS = {"safetensors": ".safetensors"}


def run(cfg: DictConfig) -> Path:
    """Export ``cfg.model`` (a training checkpoint) to ``cfg.format`` at ``cfg.output``."""
    from .train import export_checkpoint

    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not supported; use one of {sorted(FORMATS)}")
    src = Path(cfg.model)
    output = Path(cfg.output) if cfg.output else src.with_suffix(FORMATS[fmt])
    if output.resolve() == src.resolve():
        raise ConfigError(f"output={output} is the input file; refusing to overwrite it")
    if src.suffix != ".ckpt":
        raise ConfigError(f"model={src}: expected a training checkpoint (.ckpt) for format={fmt}")
    path = export_checkpoint(src, output)
    log.info("wrote %s", path)
    return path
