"""Tiled inference: huge images through the network in bounded memory, exactly as untiled.

Cutting the image into independent tiles would give every tile its own InstanceNorm statistics:
each tile is then normalised differently and the result shows seams and a shifted tone per tile.
:func:`stylize_tiled` instead runs the network stage by stage with every InstanceNorm given the
statistics of the *whole* image, so the result equals the untiled one (up to float rounding).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import nn

from ..transformer import TransformerNet, pad_image
from .inference import InstanceNormAct

#: Context around each tile, px at full resolution: more than the receptive-field radius of the
#: encoder (about 11 px) and of the decoder (about 7 px), so tiles are exact (:func:`stylize_tiled`).
TILE_CONTEXT = 16
#: Smallest tile, px: smaller tiles would spend most of their time on the context.
MIN_TILE = 128


@dataclass(frozen=True)
class Tile:
    """A tile of a map: ``core`` (the pixels it produces) inside ``box`` (core + context), as y0, y1, x0, x1."""

    core: tuple[int, int, int, int]
    box: tuple[int, int, int, int]

    def cut(self, x: torch.Tensor) -> torch.Tensor:
        y0, y1, x0, x1 = self.box
        return x[..., y0:y1, x0:x1]

    def core_of(self, y: torch.Tensor) -> torch.Tensor:
        """The core part of ``y``, something computed from this box at any resolution (a multiple of 1/4)."""
        scale = Fraction(y.shape[-2], self.box[1] - self.box[0])
        origin = (self.box[0], self.box[0], self.box[2], self.box[2])
        y0, y1, x0, x1 = (int((v - o) * scale) for v, o in zip(self.core, origin, strict=True))
        return y[..., y0:y1, x0:x1]

    def paste(self, target: torch.Tensor, y: torch.Tensor, scale: Fraction) -> None:
        """Copy the core of ``y`` into ``target``, a map at ``scale`` x this tile's map resolution."""
        y0, y1, x0, x1 = (int(v * scale) for v in self.core)
        target[..., y0:y1, x0:x1] = self.core_of(y)


def splits(length: int, size: int, align: int) -> list[int]:
    """Boundaries (multiples of ``align``) of near-equal parts of at most ``size`` covering ``length``."""
    n = math.ceil(length / size)
    return [min(length, round(i * length / n / align) * align) for i in range(n)] + [length]


def tiles(height: int, width: int, size: int, context: int, align: int) -> list[Tile]:
    """Cores of at most ``size`` px partitioning a map, each with ``context`` px around it (clipped to the map)."""
    ys, xs = splits(height, size, align), splits(width, size, align)
    tiles = []
    for y0, y1 in itertools.pairwise(ys):
        for x0, x1 in itertools.pairwise(xs):
            box = (
                max(0, y0 - context),
                min(height, y1 + context),
                max(0, x0 - context),
                min(width, x1 + context),
            )
            tiles.append(Tile((y0, y1, x0, x1), box))
    return tiles


class StopForward(Exception):
    """Ends a statistics pass at the InstanceNorm being measured."""


@contextlib.contextmanager
def whole_map_norm_stats(
    stage: nn.Module,
    tiles: list[Tile],
    tile_input: Callable[[Tile], torch.Tensor],
    style: torch.Tensor | None = None,
) -> Iterator[None]:
    """Give each InstanceNorm of ``stage`` the statistics of the whole map, measured over ``tiles``.

    A norm's statistics depend on its input over the whole map, which depends on the earlier
    norms' statistics: so one pass over the tiles per norm, each running the stage up to that
    norm (the earlier ones already fixed) and measuring its input over the tile *cores* only,
    which partition the map. Per-core means and variances are merged in float64 with Chan et
    al.'s parallel formula (stable, unlike summing squares). The statistics are cleared on exit.
    ``style``: the style weights (B, N) of a network of several styles, handed to ``stage``.
    """
    norms = [m for m in stage.modules() if isinstance(m, InstanceNormAct)]
    current: list[Tile] = []
    try:
        for norm in norms:
            count, mean, m2 = 0, torch.zeros(()), torch.zeros(())

            def measure(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                nonlocal count, mean, m2
                core = current[0].core_of(args[0])
                var_t, mean_t = torch.var_mean(core.float(), dim=(2, 3), correction=0)
                n_t = core.shape[-2] * core.shape[-1]
                mean_t, m2_t = mean_t.double().cpu(), var_t.double().cpu() * n_t
                delta, total = mean_t - mean, count + n_t
                mean = mean + delta * (n_t / total)
                m2 = m2 + m2_t + delta**2 * (count * n_t / total)
                count = total
                raise StopForward

            handle = norm.register_forward_pre_hook(measure)
            try:
                for t in tiles:
                    current[:] = [t]
                    with contextlib.suppress(StopForward):
                        stage(tile_input(t), style)
            finally:
                handle.remove()
            device = norm.weight.device
            norm.stats = (mean.float().to(device), (m2 / count).float().to(device))
        yield
    finally:
        for norm in norms:
            norm.stats = None


def stylize_tiled(
    net: TransformerNet,
    images: torch.Tensor,
    tile: int,
    border: int,
    to_device: Callable[[torch.Tensor], torch.Tensor],
    finish: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    channels_last: bool = False,
    style: torch.Tensor | None = None,
) -> torch.Tensor:
    """Tiled inference, equal to the untiled ``net(images, border, style)`` (up to float rounding).

    Args:
        net: the network's inference copy (its InstanceNorms are :class:`InstanceNormAct`).
        images: ``(B, 3, H, W)`` in [0, 1] on the CPU.
        tile: the largest tile side, px (rounded down to a multiple of 4, at least :data:`MIN_TILE`).
        border: reflection padding around the image, as untiled.
        to_device: puts a CPU tensor on the network's device, dtype and memory layout.
        finish: ``finish(content, stylised)`` of each output region (content on the CPU, stylised
            float32 on the device) -> the CPU pixels to write (the stylizer's controls).
        channels_last: the memory layout of the network's activations.
        style: a network of several styles: the style weights, (N,) or (B, N), on its device.

    The network runs in its three stages:

    1. **encoder** (full to 1/4 resolution) over tiles of ``tile`` px plus :data:`TILE_CONTEXT`
       px of context, with each InstanceNorm given the statistics of the *whole* image
       (:func:`whole_map_norm_stats`); the tile cores are written into the 1/4-resolution map;
    2. **residual blocks** on that whole map at once: 1/16 of the pixels (at most 128 channels),
       so their InstanceNorms see the whole map as they do untiled;
    3. **decoder** (1/4 to full resolution) over tiles of that map, again with whole-map
       statistics; each core is cropped to the image, finished, and copied into the output on
       the CPU.

    Tiles are cut from the same border-padded image as the untiled path, at multiples of 4
    px, and their context exceeds the stages' receptive-field radius (about 11 and 7 px),
    so every core pixel sees exactly what it sees untiled: no feathering is needed and there
    are no seams. Cost: the statistics take one extra pass per InstanceNorm of a stage, up to
    that norm (about 1.6x the untiled compute with the default network). Memory: one tile's
    activations on the device, plus the 1/4-resolution map (128 channels at 1/16 of the
    pixels: 0.8 GB in fp16 for 8000x6000), plus input and output images on the CPU.
    """
    bsz, _, h, w = images.shape
    padded, border = pad_image(net.with_grain(images), border)  # as TransformerNet.forward
    hp, wp = padded.shape[-2:]
    tile = max(MIN_TILE, tile - tile % 4)
    if style is not None and style.dim() == 1:
        style = style.unsqueeze(0).expand(bsz, -1)  # (B, N)

    # 1. Encoder: full-resolution tiles -> the 1/4-resolution map.
    enc_tiles = tiles(hp, wp, tile, TILE_CONTEXT, align=4)
    quarter: torch.Tensor | None = None
    with whole_map_norm_stats(net.encoder, enc_tiles, lambda t: to_device(t.cut(padded)), style):
        for t in enc_tiles:
            y = net.encoder(to_device(t.cut(padded)), style)  # (B, C, box/4)
            if quarter is None:
                layout = torch.channels_last if channels_last else torch.contiguous_format
                shape = (bsz, y.shape[1], hp // 4, wp // 4)
                quarter = torch.empty(shape, dtype=y.dtype, device=y.device, memory_format=layout)
            t.paste(quarter, y, scale=Fraction(1, 4))
    assert quarter is not None
    # 2. Residual blocks on the whole 1/4-resolution map.
    quarter = net.residuals(quarter, style)
    # 3. Decoder: 1/4-resolution tiles -> full resolution, cropped to the image.
    out = torch.empty(bsz, 3, h, w)
    dec_tiles = tiles(hp // 4, wp // 4, tile // 4, TILE_CONTEXT // 4, align=1)
    with whole_map_norm_stats(net.decoder, dec_tiles, lambda t: t.cut(quarter), style):
        for t in dec_tiles:
            y = net.head(net.decoder(t.cut(quarter), style).float())  # (B, 3, 4 * box) in [0, 1]
            (cy0, cy1, cx0, cx1), (by0, _, bx0, _) = (4 * v for v in t.core), (4 * v for v in t.box)
            y0, y1, x0, x1 = (
                max(cy0, border),
                min(cy1, border + h),
                max(cx0, border),
                min(cx1, border + w),
            )
            if y0 >= y1 or x0 >= x1:
                continue  # a core entirely in the border
            piece = y[..., y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
            region = (..., slice(y0 - border, y1 - border), slice(x0 - border, x1 - border))
            out[region] = finish(images[region], piece)
    return out
