"""Colour-space helpers for luminance-only ("original colours") style transfer.

``preserve_color(content, stylised)`` keeps the stylised image's luminance and the content
image's chrominance, as jcjohnson/neural-style's ``-original_colors 1`` does (the post-hoc
"colour transfer" variant of Gatys et al. 2016b, "Preserving Color in Neural Artistic Style
Transfer"). Images are ``(B, 3, H, W)`` in [0, 1]. Also the RGB -> yuv420p conversion that video
encoders take (:func:`rgb_to_yuv420p`), done on the network's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# BT.601 RGB -> YUV (analogue form, as in neural-style's image.rgb2yuv).
_RGB_TO_YUV = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [-0.14713, -0.28886, 0.436],
        [0.615, -0.51499, -0.10001],
    ]
)


def rgb_to_yuv(images: torch.Tensor) -> torch.Tensor:
    m = _RGB_TO_YUV.to(images.device, images.dtype)
    return torch.einsum("ij,bjhw->bihw", m, images)


def yuv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    m = torch.linalg.inv(_RGB_TO_YUV.double()).to(images.device, images.dtype)
    return torch.einsum("ij,bjhw->bihw", m, images)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """BT.601 luma ``(B, 1, H, W)`` of RGB images."""
    return rgb_to_yuv(images)[:, :1]


def preserve_color(content: torch.Tensor, stylised: torch.Tensor) -> torch.Tensor:
    """Stylised luminance + content chrominance. ``content`` is resized to ``stylised`` if needed."""
    if content.shape[-2:] != stylised.shape[-2:]:
        content = F.interpolate(
            content, size=stylised.shape[-2:], mode="bicubic", align_corners=False, antialias=True
        )
    y = rgb_to_yuv(stylised)[:, :1]
    uv = rgb_to_yuv(content.to(stylised.dtype))[:, 1:]
    return yuv_to_rgb(torch.cat([y, uv], dim=1)).clamp(0, 1)


def rgb_to_yuv420p(images: torch.Tensor) -> torch.Tensor:
    """RGB ``(B, 3, H, W)`` in [0, 1], H and W even -> ``(B, H * 3 // 2, W)`` uint8 yuv420p planes.

    The layout ``av.VideoFrame.from_ndarray(..., format="yuv420p")`` takes: the Y plane, then U and
    V at half resolution (2x2 averages), each plane's bytes in order. BT.601 limited range, as
    FFmpeg's swscale converts untagged rgb24 to yuv420p, so the colours are what the CPU path gives.
    """
    b, _, h, w = images.shape
    r, g, bl = images.unbind(1)
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * bl
    r, g, bl = F.avg_pool2d(images, 2).unbind(1)  # chroma is linear in RGB: average first
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * bl
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * bl
    planes = [p.round().clamp_(0, 255).to(torch.uint8).flatten(1) for p in (y, u, v)]
    return torch.cat(planes, 1).view(b, h * 3 // 2, w)
