"""Pure measurements that need no VGG: grid pattern, colour histograms, luminance SSIM, flicker, spikes.

Shared by training (TensorBoard) and ``scripts/evaluate.py``. Every function takes images in
[0, 1] (:func:`spike_share`: a network's activations) and returns plain numbers or tensors; none
loads a model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .color import luminance
from .flow import DenseFlow, FrameFlow, warp

#: Period of :func:`grid_pattern`: the transformer network's two x2 stages repeat every 4 px.
GRID_PERIOD = 4
#: Bins per channel of the joint RGB histogram (8^3 = 512 colours): coarse enough that a few
#: hundred thousand pixels fill it smoothly, fine enough to tell Starry Night's blues from a photo's.
HIST_BINS = 8
#: SSIM's Gaussian window as in Wang et al. (2004): 11x11 pixels, σ = 1.5.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


#: :func:`spike_share` counts the top 0.5 % of pixels: a droplet covers a few hundred pixels of a
#: 512 px image, and a Gaussian channel puts about 5 % of its variance there.
SPIKE_TOP = 0.005


def spike_share(features: torch.Tensor, top: float = SPIKE_TOP) -> torch.Tensor:
    """Share of each channel's variance held by its ``top`` fraction of pixels, for ``(B, C, H, W)``.

    The droplets of Karras et al. (2020, StyleGAN2, section 2): an instance norm divides each
    channel by its standard deviation over the whole image, so a network can turn a channel down
    everywhere by putting one strong local spike in it, which shows as a blotch where the spike is.
    Measured on a normalisation layer's input, the spike holds most of its channel's variance
    (docs/training.md, "Droplets"); ordinary features spread it (about 0.05 for Gaussian noise).

    Differentiable (the droplet term of training, :func:`fastns.losses.droplet_loss`, lowers it):
    measure under ``torch.no_grad`` or ``torch.inference_mode``.

    Returns:
        ``(B, C)`` float32 in (0, 1]; a constant channel scores 1 (all of nothing in its top pixels).
    """
    return spike_parts(features.float().flatten(2), top)[0]


def spike_parts(
    x: torch.Tensor, top: float = SPIKE_TOP
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`spike_share` of float ``(B, C, N)`` and what its gradient needs.

    Returns ``(share, centred, top_indices, total)``: the ``(B, C)`` share, each channel minus its
    mean ``(B, C, N)``, the indices of its top pixels ``(B, C, k)`` and its sum of squares ``(B, C)``.
    """
    centred = x - x.mean(2, keepdim=True)
    d = centred.square()
    k = max(1, int(top * d.shape[2]))
    total = d.sum(2)
    top_d, indices = d.topk(k, dim=2)
    share = top_d.sum(2) / total.clamp_min(torch.finfo(torch.float32).tiny)
    return torch.where(total > 0, share, torch.ones_like(share)), centred, indices, total


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


def frame_warping_error(current: torch.Tensor, previous: torch.Tensor, flow: FrameFlow) -> torch.Tensor:
    """Lai et al.'s warping error of one frame pair: ``(B,)``, NaN where no pixel is reliable.

    The mean squared difference (over the reliable pixels and the 3 channels, images in [0, 1])
    between ``current`` (frame t, ``(B, 3, H, W)``) and ``previous`` (frame t−1) warped onto it by
    ``flow``, the flow of the *input* frames (:meth:`fastns.flow.DenseFlow.between`).
    """
    warped = warp(previous.float(), flow.flow)
    mask = flow.reliable.float()
    squared = (current.float() - warped).square().mean(1, keepdim=True) * mask
    return squared.sum((1, 2, 3)) / mask.sum((1, 2, 3))  # 0 / 0 = NaN: no reliable pixel


def warping_errors(
    inputs: torch.Tensor | Iterable[torch.Tensor],
    outputs: torch.Tensor | Iterable[torch.Tensor] | None = None,
    *,
    preset: str = "medium",
    max_size: int | None = None,
) -> list[float]:
    """The flicker of a processed clip: :func:`frame_warping_error` of each consecutive pair of ``outputs``.

    The warping error of Lai et al. (2018, "Learning Blind Video Temporal Consistency"):
    stylised frame t against stylised frame t−1 warped to t by the optical flow of the *input*
    frames t → t−1 (DIS, :mod:`fastns.flow`), over the pixels where that flow is reliable
    (forward-backward consistent and off motion boundaries, as Ruder et al. 2016, and coming from
    inside the frame). 0 for a clip that moves exactly with its
    input; per-frame stylisation flickers and scores higher. ``outputs=None`` measures the input
    clip itself: the floor (the warp's own interpolation and the flow's errors).

    Args:
        inputs: the input frames in order: ``(T, 3, H, W)`` in [0, 1], or an iterable of
            ``(3, H, W)`` / ``(1, 3, H, W)`` frames (streamed: a long clip is never held whole).
        outputs: the processed frames, same sizes (``None``: the inputs).
        preset, max_size: the DIS flow (:class:`fastns.flow.DenseFlow`); every method compared on a
            clip must use the same.

    Returns:
        One error per consecutive pair (``T − 1`` values), NaN for a pair with no reliable pixel
        (a scene cut); :func:`warping_error` averages them.
    """
    flows = DenseFlow(preset, max_size)
    pairs = ((x, x) for x in inputs) if outputs is None else zip(inputs, outputs, strict=True)
    errors: list[float] = []
    previous: tuple[np.ndarray, torch.Tensor] | None = None  # frame t−1: input luminance, output
    for x, y in pairs:
        x, y = (x if x.dim() == 4 else x[None]), (y if y.dim() == 4 else y[None])
        if x.shape[0] != 1 or y.shape != x.shape:
            raise ValueError(
                f"expected frames (3, H, W) of one size, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        luma = flows.luma(x)
        if previous is not None:
            if previous[1].shape != y.shape:
                raise ValueError(f"frames change size: {tuple(previous[1].shape)} then {tuple(y.shape)}")
            flow = flows.pair(luma, previous[0], tuple(x.shape[-2:]), x.device)
            errors.append(float(frame_warping_error(y, previous[1], flow)[0]))
        previous = (luma, y)
    return errors


def warping_error(
    inputs: torch.Tensor | Iterable[torch.Tensor],
    outputs: torch.Tensor | Iterable[torch.Tensor] | None = None,
    **flow: Any,
) -> float:
    """Lai et al.'s warping error of a clip: the mean of :func:`warping_errors` over its frame pairs.

    Pairs with no reliable pixel (scene cuts) are left out of the mean (Lai et al. count them as
    0); NaN if no pair has one. Arguments as for :func:`warping_errors`.
    """
    errors = [e for e in warping_errors(inputs, outputs, **flow) if not np.isnan(e)]
    return float(np.mean(errors)) if errors else float("nan")
