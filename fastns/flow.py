"""Optical flow between video frames, warping by it, and where it can be trusted.

Shared by the flicker measure (:func:`fastns.metrics.warping_error`) and flow-guided stylisation
(:mod:`fastns.stylize.temporal`), so both judge motion the same way.

- **Flow**: OpenCV's DIS optical flow (Kroeger et al. 2016, "Fast Optical Flow using Dense
  Inverse Search") on the frames' BT.601 luminance, 8-bit. It needs no network weights, takes
  4–20 ms per 640x480 frame on one CPU core (``fast`` … ``medium``), and is deterministic, so every
  stylisation of a clip is measured against the same flow. ``max_size`` computes it (and its
  reliability) on downscaled frames and upsamples it, the vectors scaled to full-size pixels.
- **Convention**: a flow ``w`` from frame ``a`` to frame ``b`` is ``(B, 2, H, W)`` in pixels
  (x, then y) on ``a``'s grid, with ``a(p) ≈ b(p + w(p))``. :func:`warp` samples ``b`` at
  ``p + w(p)``, which brings ``b`` onto ``a``'s grid.
- **Reliability** (Ruder, Dosovitskiy & Brox 2016, "Artistic style transfer for videos"):
  a pixel's flow is trusted where the forward and backward flows agree,
  ``|w + ŵ|² ≤ 0.01 (|w|² + |ŵ|²) + 0.5`` with ``ŵ`` the reverse flow sampled at ``p + w(p)``
  (it fails at disocclusions), away from motion boundaries,
  ``|∇u|² + |∇v|² ≤ 0.01 |w|² + 0.002``, and where ``p + w(p)`` lies inside the frame
  (a departure from the paper, which lets the border replicate: what enters the frame has no past).

Images are ``(B, 3, H, W)`` in [0, 1] on any device; the flow is computed on the CPU (OpenCV) and
returned on the images' device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .color import luminance
from .errors import ConfigError

#: DIS presets by name (OpenCV's ``DISOPTICAL_FLOW_PRESET_*``): ``medium`` is the most accurate,
#: ``fast`` ~4x faster, ``ultrafast`` faster still and coarse. docs/stylize.md compares them.
PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}
#: Ruder et al.'s forward-backward consistency thresholds: relative (0.01) and absolute (0.5 px²).
CONSISTENCY_RELATIVE, CONSISTENCY_ABSOLUTE = 0.01, 0.5
#: Frames with a side under this are padded for DIS, which refuses tiny images (px).
MIN_FLOW_SIDE = 16
#: Ruder et al.'s motion-boundary thresholds on the flow's squared gradient (per px², and absolute).
BOUNDARY_RELATIVE, BOUNDARY_ABSOLUTE = 0.01, 0.002


def import_cv2() -> Any:
    """OpenCV (the ``opencv-python-headless`` dependency, or the GUI build ``opencv-python``)."""
    try:
        import cv2
    except ImportError:
        raise ConfigError(
            "optical flow needs OpenCV: pip install opencv-python-headless (or opencv-python)"
        ) from None
    return cv2


@dataclass
class FrameFlow:
    """How frame t relates to frame t−1: ``flow`` (t → t−1) and where it is ``reliable``.

    Attributes:
        flow: ``(B, 2, H, W)`` float32, px: frame t's pixel ``p`` was at ``p + flow(p)`` in t−1,
            so ``warp(previous, flow)`` is frame t−1 seen on frame t's grid.
        reliable: ``(B, 1, H, W)`` bool on frame t's grid: consistent forward and backward flow,
            no motion boundary, source inside the frame.
    """

    flow: torch.Tensor
    reliable: torch.Tensor

    @property
    def reliable_fraction(self) -> torch.Tensor:
        """``(B,)``: the share of frame t's pixels whose flow is reliable."""
        return self.reliable.float().mean((1, 2, 3))


class DenseFlow:
    """DIS optical flow between luminance frames, computed on the CPU.

    Args:
        preset: ``"medium"``, ``"fast"`` or ``"ultrafast"`` (:data:`PRESETS`).
        max_size: compute the flow on frames downscaled so that their longest side is at most this
            (px), then upsample it; ``None``: at the frames' size.
    """

    def __init__(self, preset: str = "medium", max_size: int | None = None) -> None:
        if preset not in PRESETS:
            raise ConfigError(f"flow preset={preset!r}: expected one of {', '.join(PRESETS)}")
        if max_size is not None and int(max_size) < 16:
            raise ConfigError(f"flow max_size={max_size} must be at least 16 px (or null: full size)")
        self.cv2 = import_cv2()
        self.preset = preset
        self.max_size = None if max_size is None else int(max_size)
        self._dis = self.cv2.DISOpticalFlow_create(PRESETS[preset])

    def luma(self, images: torch.Tensor) -> np.ndarray:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, h, w)`` uint8 luminance at the flow's size (CPU)."""
        y = luminance(images.detach().float().clamp(0, 1))  # (B, 1, H, W)
        h, w = self.flow_size(*images.shape[-2:])
        if (h, w) != tuple(images.shape[-2:]):
            y = F.interpolate(y, size=(h, w), mode="area")
        return y[:, 0].mul(255).round_().to(torch.uint8).cpu().numpy()

    def flow_size(self, height: int, width: int) -> tuple[int, int]:
        """The size ``(h, w)`` the flow is computed at, for frames of ``height`` x ``width``."""
        if self.max_size is None or max(height, width) <= self.max_size:
            return height, width
        scale = self.max_size / max(height, width)
        return max(8, round(height * scale)), max(8, round(width * scale))

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow from luminance ``a`` to ``b``, both ``(h, w)`` uint8: ``(h, w, 2)`` float32, ``a(p) ≈ b(p + w)``."""
        h, w = a.shape
        if min(h, w) < MIN_FLOW_SIDE:  # DIS refuses frames under ~10 px: pad by replication, crop after
            pad = ((0, max(0, MIN_FLOW_SIDE - h)), (0, max(0, MIN_FLOW_SIDE - w)))
            a, b = np.pad(a, pad, mode="edge"), np.pad(b, pad, mode="edge")
        flow = self._dis.calc(np.ascontiguousarray(a), np.ascontiguousarray(b), None)
        return flow[:h, :w]

    def pair(self, a: np.ndarray, b: np.ndarray, size: tuple[int, int], device: torch.device) -> FrameFlow:
        """Flow from ``a`` (frame t, luminance) to ``b`` (frame t−1) at full ``size`` ``(H, W)``, and where it is reliable.

        ``a`` and ``b`` are ``(B, h, w)`` uint8 at :meth:`flow_size`. Flow and mask are computed at
        that size, then upsampled (the mask by nearest neighbour).
        """
        back = np.stack([self(x, y) for x, y in zip(a, b, strict=True)])  # t -> t-1, (B, h, w, 2)
        fore = np.stack([self(y, x) for x, y in zip(a, b, strict=True)])  # t-1 -> t
        back_t = torch.from_numpy(back).permute(0, 3, 1, 2)
        reliable = reliable_mask(back_t, torch.from_numpy(fore).permute(0, 3, 1, 2))
        if tuple(reliable.shape[-2:]) != tuple(size):
            reliable = F.interpolate(reliable.float(), size=size, mode="nearest") > 0.5
        return FrameFlow(_upsample(back_t, size).to(device), reliable.to(device))

    def between(self, current: torch.Tensor, previous: torch.Tensor) -> FrameFlow:
        """:class:`FrameFlow` of frames ``current`` (t) and ``previous`` (t−1), ``(B, 3, H, W)`` in [0, 1]."""
        if current.shape != previous.shape:
            raise ValueError(
                f"frames of different shapes: {tuple(current.shape)} and {tuple(previous.shape)}"
            )
        return self.pair(self.luma(current), self.luma(previous), tuple(current.shape[-2:]), current.device)


def _upsample(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A flow ``(B, 2, h, w)`` in px resized to ``size`` ``(H, W)``, its vectors scaled to the new pixels."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow.contiguous()
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([size[1] / w, size[0] / h], dtype=flow.dtype).view(1, 2, 1, 1)
    return out * scale


def _grid(flow: torch.Tensor) -> torch.Tensor:
    """Sampling positions ``p + flow(p)`` as ``grid_sample``'s ``(B, H, W, 2)`` grid in [-1, 1] (pixel centres)."""
    b, _, h, w = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    x = (xs + flow[:, 0]) * (2 / w) + (1 / w - 1)  # align_corners=False: pixel i's centre is (2i + 1) / w - 1
    y = (ys + flow[:, 1]) * (2 / h) + (1 / h - 1)
    return torch.stack([x, y], dim=-1)


def warp(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``images`` ``(B, C, H, W)`` sampled at ``p + flow(p)`` (bilinear, border replicated).

    With ``flow`` from frame t to frame t−1 this brings frame t−1 onto frame t's grid. An integer
    flow moves whole pixels (exact up to float rounding, ~1e-7).
    """
    if images.shape[0] != flow.shape[0] or images.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"images {tuple(images.shape)} and flow {tuple(flow.shape)} do not match")
    grid = _grid(flow.to(images.dtype))
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inside_frame(flow: torch.Tensor) -> torch.Tensor:
    """Where ``p + flow(p)`` lies inside the frame: ``(B, 1, H, W)`` bool (what :func:`warp` can
    fetch without inventing a border)."""
    return (_grid(flow).abs() <= 1).all(-1)[:, None]


def reliable_mask(flow: torch.Tensor, reverse: torch.Tensor, motion_boundaries: bool = True) -> torch.Tensor:
    """Where ``flow`` (a → b) can be trusted, given the ``reverse`` flow (b → a): ``(B, 1, H, W)`` bool on a's grid.

    Ruder et al.'s forward-backward check and (``motion_boundaries``) their motion-boundary
    check, and the source ``p + flow(p)`` inside the frame (module docstring).
    """
    h, w = flow.shape[-2:]
    back = warp(reverse, flow)  # ŵ(p + w(p)): should be −w(p)
    agree = (flow + back).square().sum(1) <= CONSISTENCY_RELATIVE * (
        flow.square().sum(1) + back.square().sum(1)
    ) + CONSISTENCY_ABSOLUTE
    ok = agree & inside_frame(flow)[:, 0]
    if motion_boundaries:
        # Central differences (one-sided at the edges) of u and v along x and y.
        dx = torch.gradient(flow, dim=-1)[0] if w > 1 else torch.zeros_like(flow)
        dy = torch.gradient(flow, dim=-2)[0] if h > 1 else torch.zeros_like(flow)
        gradient = dx.square().sum(1) + dy.square().sum(1)
        ok &= gradient <= BOUNDARY_RELATIVE * flow.square().sum(1) + BOUNDARY_ABSOLUTE
    return ok[:, None]
