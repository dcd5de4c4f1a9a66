"""Synthetic motion for the temporal loss: two "frames" made from one photo, and the flow between them.

A temporally stable network commutes with small motions: stylising a moved frame should give the
moved stylisation, ``net(warp(x)) ≈ warp(net(x))`` (Ruder et al. 2018; Gao et al. 2018, ReCoNet;
Huang et al. 2017). Video datasets are not needed to train for it (Gupta et al. 2017 used the
same idea with noise): :func:`random_motion` draws, per image, a small camera-like motion
(translation, rotation, zoom) plus an optional smooth local flow, as a flow in pixels that
:func:`fastns.flow.warp` applies to any image of the same size, exactly as the video code warps
frames along DIS flow. Pixels whose source lies outside the frame are not valid (no invented border).

Used by training only (:class:`fastns.module.StyleTransferModule`); the loss term itself is
:func:`fastns.losses.temporal_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .flow import inside_frame, warp


@dataclass(frozen=True)
class MotionSettings:
    """The random motion's size (``loss.temporal`` in the training config).

    Attributes:
        shift: largest translation, px (uniform in [-shift, shift] on each axis).
        rotation: largest rotation about the centre, degrees.
        zoom: largest relative zoom (0.02 = ±2 %).
        local: amplitude of a smooth random local flow, px (0 = rigid motion only): things that
            move against the background.
        noise: standard deviation of Gaussian noise added to the moved frame, in [0, 1] pixel
            units (sensor noise and compression between frames; Gupta et al. 2017).
    """

    shift: float = 4.0
    rotation: float = 1.0
    zoom: float = 0.02
    local: float = 1.0
    noise: float = 0.01

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> MotionSettings:
        """Settings from ``loss.temporal``; an unknown key or a negative value is a one-line error."""
        data = dict(cfg or {})
        known = [f.name for f in fields(cls)]
        unknown = set(data) - set(known)
        if unknown:
            raise ConfigError(f"unknown key loss.temporal.{sorted(unknown)[0]}; loss.temporal takes {known}")
        out = {}
        for key, value in data.items():
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"loss.temporal.{key}={value!r} is not a number") from None
            if not math.isfinite(out[key]) or out[key] < 0:
                raise ConfigError(f"loss.temporal.{key}={value!r} must be a finite number >= 0")
        return cls(**out)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def random_motion(
    batch: int,
    height: int,
    width: int,
    settings: MotionSettings,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A random small motion per image, as a flow ``(B, 2, H, W)`` in px for :func:`fastns.flow.warp`.

    The moved frame at pixel p shows the original at ``p + flow(p)``: a rotation and zoom about
    the centre, then a translation, plus a smooth local flow (bicubic upsampling of a 4 x 4 field).
    """

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=device) * 2 - 1

    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2,
        torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2,
        indexing="ij",
    )
    angle = uniform(batch) * math.radians(settings.rotation)
    scale = (1 + uniform(batch) * settings.zoom)[:, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    shift = uniform(batch, 2) * settings.shift
    u = (cos * xs - sin * ys) * scale - xs + shift[:, 0, None, None]
    v = (sin * xs + cos * ys) * scale - ys + shift[:, 1, None, None]
    flow = torch.stack([u, v], dim=1)
    if settings.local > 0:
        field = uniform(batch, 2, 4, 4) * settings.local
        flow = flow + F.interpolate(field, size=(height, width), mode="bicubic", align_corners=True)
    return flow


def moved_frame(
    images: torch.Tensor, settings: MotionSettings, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The second "frame" of each image ``(B, 3, H, W)``: ``(moved, flow, valid)``.

    ``moved`` is ``images`` warped by a :func:`random_motion` with the settings' noise added (in
    [0, 1]); ``valid`` ``(B, 1, H, W)`` (float) marks the pixels whose source is inside the frame.
    """
    b, _, h, w = images.shape
    flow = random_motion(b, h, w, settings, device=images.device, generator=generator)
    moved = warp(images, flow)
    if settings.noise > 0:
        noise = torch.randn(moved.shape, generator=generator, device=images.device, dtype=moved.dtype)
        moved = (moved + settings.noise * noise).clamp(0, 1)
    return moved, flow, inside_frame(flow).to(images.dtype)
