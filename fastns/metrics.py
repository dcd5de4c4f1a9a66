"""Image measurements that need no VGG, shared by training (TensorBoard) and ``scripts/evaluate.py``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .color import luminance

#: Period of :func:`grid_pattern`: the transformer network's two x2 stages repeat every 4 px.
GRID_PERIOD = 4


def grid_pattern(images: torch.Tensor, period: int = GRID_PERIOD) -> torch.Tensor:
    """Strength of a fixed ``period`` x ``period`` pixel pattern in each of ``(B, 3, H, W)`` in [0, 1].

    The BT.601 luminance minus its ``period`` x ``period`` moving average (which removes the image's
    smooth content and keeps any pattern that repeats every ``period`` px) is folded onto a
    ``period`` x ``period`` grid: the mean, over all blocks, of the pixel at each of the period²
    positions. Image detail averages out of that pattern (photos and Gatys results score below ~1);
    a texture locked to the pixel grid does not, like the cross-hatch that the transformer network,
    whose two x2 stages repeat every 4 px, can learn (docs/training.md).

    Returns:
        ``(B,)`` float32 on the images' device: the RMS of each image's pattern about its mean, in
        1/255 units. Images smaller than two blocks on a side score 0.
    """
    y = luminance(images.detach().float().clamp(0, 1))  # (B, 1, H, W)
    if min(y.shape[-2:]) < 2 * period:
        return torch.zeros(y.shape[0], device=y.device)
    # float64 where the device has it: the pattern is a small difference of large sums.
    y = y.double() if y.device.type != "mps" else y
    smooth = F.avg_pool2d(y, period, stride=1)  # (B, 1, H - p + 1, W - p + 1)
    o = period // 2  # smooth[i, j] is centred at (i + o - 1/2, j + o - 1/2): a ramp leaves a constant
    detail = y[..., o : o + smooth.shape[-2], o : o + smooth.shape[-1]] - smooth
    h, w = (detail.shape[-2] // period) * period, (detail.shape[-1] // period) * period
    blocks = detail[:, 0, :h, :w].reshape(-1, h // period, period, w // period, period)
    pattern = blocks.mean((1, 3))  # (B, period, period)
    pattern = pattern - pattern.mean((1, 2), keepdim=True)
    return (pattern.square().mean((1, 2)).sqrt() * 255).float()
