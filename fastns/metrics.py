"""Pure image measurements that need no VGG: grid pattern, colour histograms, luminance SSIM.

Shared by training (TensorBoard) and ``scripts/evaluate.py``. Every function takes images in
[0, 1] and returns plain numbers or tensors; none loads a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .color import luminance

#: Period of :func:`grid_pattern`: the transformer network's two x2 stages repeat every 4 px.
GRID_PERIOD = 4
#: Bins per channel of the joint RGB histogram (8^3 = 512 colours): coarse enough that a few
#: hundred thousand pixels fill it smoothly, fine enough to tell Starry Night's blues from a photo's.
HIST_BINS = 8
#: SSIM's Gaussian window as in Wang et al. (2004): 11x11 pixels, σ = 1.5.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


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
    # float64 where the device has it: the pattern is a small difference of large sums.
    y = y.double() if y.device.type != "mps" else y
    pattern = grid_fold(y, period)[:, 0]  # (B, period, period)
    return (pattern.square().mean((1, 2)).sqrt() * 255).float()


def grid_fold(images: torch.Tensor, period: int = GRID_PERIOD) -> torch.Tensor:
    """The fixed ``period`` x ``period`` pattern of each channel of ``(B, C, H, W)``: ``(B, C, period, period)``.

    Each channel minus its ``period`` x ``period`` moving average, folded onto the grid (the mean over
    all blocks of each position), about its mean. Differentiable: :func:`grid_pattern` measures it,
    ``fastns.losses.grid_loss`` penalises it. Zero for images smaller than two blocks on a side.
    """
    b, c = images.shape[:2]
    if min(images.shape[-2:]) < 2 * period:
        return images.new_zeros(b, c, period, period)
    smooth = F.avg_pool2d(images, period, stride=1)  # (B, C, H - p + 1, W - p + 1)
    o = period // 2  # smooth[i, j] is centred at (i + o - 1/2, j + o - 1/2): a ramp leaves a constant
    detail = images[..., o : o + smooth.shape[-2], o : o + smooth.shape[-1]] - smooth
    h, w = (detail.shape[-2] // period) * period, (detail.shape[-1] // period) * period
    pattern = detail[..., :h, :w].reshape(b, c, h // period, period, w // period, period).mean((2, 4))
    return pattern - pattern.mean((2, 3), keepdim=True)


def color_histogram(image: torch.Tensor, bins: int = HIST_BINS) -> torch.Tensor:
    """Joint RGB histogram of ``(1, 3, H, W)`` or ``(3, H, W)`` in [0, 1]: ``(bins**3,)``, summing to 1."""
    x = image.detach().float().reshape(3, -1).clamp(0, 1)  # (3, H*W)
    q = (x * bins).long().clamp_(max=bins - 1)  # per-channel bin of each pixel
    index = (q[0] * bins + q[1]) * bins + q[2]  # (H*W,) joint bin
    hist = torch.bincount(index.cpu(), minlength=bins**3).double()
    return hist / hist.sum()


def histogram_distance(p: torch.Tensor, q: torch.Tensor) -> float:
    """Symmetric chi-squared distance ``½ Σ (p − q)² / (p + q)`` of two normalised histograms.

    0 for identical colour distributions, 1 for disjoint ones (no colour in common); unlike
    the one-sided chi-squared it is symmetric and defined for empty bins.
    """
    p, q = p.double(), q.double()
    s = p + q
    nz = s > 0
    return float(0.5 * ((p[nz] - q[nz]) ** 2 / s[nz]).sum())


def ssim_luminance(image: torch.Tensor, reference: torch.Tensor) -> float:
    """SSIM (Wang et al. 2004) between the BT.601 luminance of two ``(1, 3, H, W)`` images in [0, 1].

    scikit-image's ``structural_similarity`` with the paper's settings: an 11x11 Gaussian window
    (σ = 1.5), population covariances, data range 1. Luminance only, because style transfer is
    meant to change the colours: this measures how much of the photo's *structure* survives.
    1 = identical structure; unrelated images score near 0. Images under 11 px on a side use the
    largest odd uniform window that fits.
    """
    from skimage.metrics import structural_similarity  # a heavy import, needed only here

    a = luminance(image.detach().float().cpu().clamp(0, 1))[0, 0].numpy().astype(np.float64)
    b = luminance(reference.detach().float().cpu().clamp(0, 1))[0, 0].numpy().astype(np.float64)
    side = min(a.shape)
    if side >= SSIM_WINDOW:
        kwargs: dict[str, Any] = {
            "gaussian_weights": True,
            "sigma": SSIM_SIGMA,
            "use_sample_covariance": False,
        }
    else:
        kwargs = {"win_size": max(3, side - (side + 1) % 2)}  # the largest odd window that fits, >= 3
    return float(structural_similarity(a, b, data_range=1.0, **kwargs))
