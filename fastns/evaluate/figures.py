"""The report's pictures: the contact sheet (Pillow) and the loss curves (matplotlib).

``contact_sheet.png`` shows, per photo, the network's output beside Gatys results after a few
iteration counts; ``loss_curves.png`` is Johnson et al.'s Figure 5 for the user's photos.
Both are written atomically. :func:`tile_sheet` draws the contact sheet's captioned grid for any
images (``benchmarks/bench_quality.py`` draws its style-by-photo sheet with it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..image import tensor_to_pil
from ..utils import atomic_write
from .gatys import START_NAMES
from .measure import summarize_iterations

#: Tiles of images smaller than this (longest side, px) are enlarged by a whole factor to reach it.
MIN_TILE = 128
#: Caption font size, px: 1/12 of a tile's width, within these bounds.
FONT_PX = (12, 20)
#: White space between tiles and around the sheet, px.
PAD = 6
#: Space between a line of text and the next, px, on top of the font size.
LINE_GAP = 5
#: Colours of matplotlib's default cycle ("C0" ... "C9"): one per photo in the loss curves.
COLORS = 10
#: Up to this many photos the loss curves name each in a legend; beyond it the colours repeat.
MAX_LEGEND = COLORS
#: Size of one column (per Gatys start) of the loss curves, inches, and its resolution.
CURVES_COLUMN_INCHES, CURVES_HEIGHT_INCHES, CURVES_DPI = 5.2, 7.6, 110


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` px where it can scale."""
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:  # pragma: no cover - older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def tile_sheet(
    columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[tuple[torch.Tensor | None, str]]]
) -> Image.Image:
    """A grid of images with a two-line heading per column and a caption under every tile.

    ``columns`` holds each column's two heading lines; each row holds one ``(image, caption)``
    per column, the image ``(1, 3, H, W)`` in [0, 1] or ``None`` (an empty tile). Every column is
    as wide as the widest image and every row as tall as its tallest; images are centred in their
    column at their own pixels, enlarged by one whole factor (nearest neighbour) when the largest
    is under :data:`MIN_TILE` px, so that small images stay legible.
    """
    sizes = [img.shape[-2:] for row in rows for img, _ in row if img is not None]
    max_h, max_w = max(h for h, _ in sizes), max(w for _, w in sizes)
    scale = max(1, math.ceil(MIN_TILE / max(max_w, max_h)))
    cell_w = max_w * scale
    font_px = max(FONT_PX[0], min(FONT_PX[1], cell_w // 12))
    font = _font(font_px)
    line = font_px + LINE_GAP
    pad = PAD
    header = 2 * line + pad
    row_heights = [
        max((img.shape[-2] for img, _ in row if img is not None), default=0) * scale + line + pad
        for row in rows
    ]
    width = len(columns) * (cell_w + pad) + pad
    height = header + sum(row_heights) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (top, bottom) in enumerate(columns):
        x = pad + c * (cell_w + pad)
        draw.text((x, pad), _fit_text(draw, top, font, cell_w), fill="black", font=font)
        draw.text((x, pad + line), _fit_text(draw, bottom, font, cell_w), fill="black", font=font)

    y = header
    for row, row_h in zip(rows, row_heights, strict=True):
        for c, (img, caption) in enumerate(row):
            x = pad + c * (cell_w + pad)
            if img is not None:
                im = tensor_to_pil(img)
                if scale > 1:
                    im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
                sheet.paste(im, (x + (cell_w - im.width) // 2, y))
            draw.text(
                (x, y + row_h - line - pad // 2),
                _fit_text(draw, caption, font, cell_w),
                fill="black",
                font=font,
            )
        y += row_h
    return sheet


def write_contact_sheet(
    path: Path,
    records: Sequence[Mapping],
    pictures: Sequence[Mapping],
    inits: Sequence[str],
    sheet_iterations: Sequence[int],
) -> Path:
    """The contact sheet: a row per image (photo | network | Gatys per start and iteration count).

    Tiles are the evaluated images at their own pixels (upscaled by a whole factor, nearest
    neighbour, only when ``image_size`` is under :data:`MIN_TILE` px so that small runs stay legible).
    """
    columns: list[tuple[str, str]] = [("photo", ""), ("network", "")]
    for k in inits:
        for n in sheet_iterations:
            columns.append((f"Gatys ({'photo' if k == 'content' else k})", f"{n} iterations"))
    rows = []
    for rec, pics in zip(records, pictures, strict=True):
        net_total = rec["network"]["loss"]["total"]
        tiles: list[tuple[torch.Tensor | None, str]] = [
            (pics["content"], rec["image"]),
            (pics["network"], f"loss {net_total:.3g}"),
        ]
        for k in inits:
            traj = pics["gatys"][k]["trajectory"]
            for n in sheet_iterations:
                snap = pics["gatys"][k]["snapshots"].get(n)
                i = min(n, len(traj) - 1)
                ratio = traj[i] / net_total if net_total > 0 else math.nan
                tiles.append((snap, f"{traj[i]:.3g} ({ratio:.2f}x)"))
        rows.append(tiles)
    sheet = tile_sheet(columns, rows)
    with atomic_write(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def _plain_log_labels(ax: Any) -> None:
    """Label a log y axis with plain numbers (0.6, 2, 40 rather than 6x10^-1).

    These axes often span less than a decade, where the powers of ten alone leave them nearly
    unlabelled: then the 2, 3, 4 and 6 minor ticks get labels too.
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter  # heavy: only for this figure

    def plain(value: float, _pos: int) -> str:
        return f"{value:g}"

    def some(value: float, _pos: int) -> str:
        # The leading digit; the 1e-9 keeps an exact power of ten (log10 = 1.9999999...) in its decade.
        mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
        return f"{value:g}" if mantissa in (2, 3, 4, 6) else ""

    low, high = ax.get_ylim()
    ax.yaxis.set_major_formatter(FuncFormatter(plain))
    ax.yaxis.set_minor_formatter(
        # Under 1.5 decades the powers of ten alone would leave one or two labels.
        FuncFormatter(some) if low > 0 and math.log10(high / low) < 1.5 else NullFormatter()
    )


def write_loss_curves(path: Path, records: Sequence[Mapping], inits: Sequence[str], budget: int) -> Path:
    """Gatys total loss against L-BFGS iterations, with the network's loss as horizontal lines.

    Top row: absolute losses per image (log y), the network's loss dashed in the image's colour,
    a dot at the equivalent iteration. Bottom row: the same divided by the network's loss, so
    that images of different loss scales share one axis; the black line is their geometric mean
    and y = 1 is the network.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: imported only for this figure
    from matplotlib.figure import Figure

    # A Figure with its own Agg canvas: no pyplot, no global backend state, no display needed.
    fig = Figure(
        figsize=(CURVES_COLUMN_INCHES * len(inits), CURVES_HEIGHT_INCHES),
        dpi=CURVES_DPI,
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(inits), squeeze=False, sharex=True)
    colors = [f"C{i % COLORS}" for i in range(len(records))]
    for c, k in enumerate(inits):
        top, bottom = axes[0][c], axes[1][c]
        ratios = []
        for r, color in zip(records, colors, strict=True):
            traj = np.asarray(r["gatys"][k]["trajectory"], dtype=np.float64)
            target = r["network"]["loss"]["total"]
            its = np.arange(len(traj))
            label = r["image"] if len(records) <= MAX_LEGEND else None
            top.plot(its, traj, color=color, lw=1.0, label=label)
            top.axhline(target, color=color, lw=0.9, ls="--")
            eq = r["gatys"][k]["equivalent_iterations"]
            if eq is not None:
                top.plot([eq], [traj[eq]], "o", color=color, ms=4)
            if target > 0:
                ratio = traj / target
                ratios.append(ratio)
                bottom.plot(its, ratio, color=color, lw=0.7, alpha=0.6)
        if ratios:
            n = min(len(x) for x in ratios)
            with np.errstate(divide="ignore", invalid="ignore"):
                gmean = np.exp(np.mean(np.log(np.stack([x[:n] for x in ratios])), axis=0))
            bottom.plot(np.arange(n), gmean, color="black", lw=2.0, label="geometric mean")
        bottom.axhline(1.0, color="black", lw=1.0, ls="--", label="network")
        median = summarize_iterations([r["gatys"][k]["equivalent_iterations"] for r in records], budget)[
            "median"
        ]
        if median is not None:
            bottom.axvline(median, color="0.4", lw=1.0, ls=":", label=f"median equivalent: {median:g} it.")
        start = START_NAMES[k]
        top.set_title(f"Gatys L-BFGS from {start}")
        top.set_ylabel("total loss")
        bottom.set_ylabel("loss / network's loss")
        bottom.set_xlabel("L-BFGS iteration")
        for ax in (top, bottom):
            ax.set_yscale("log")
            ax.set_xlim(0, budget)
            _plain_log_labels(ax)
            ax.grid(True, which="both", alpha=0.25)
        bottom.legend(loc="upper right", fontsize=8)
        if c == 0 and len(records) <= MAX_LEGEND:
            top.legend(loc="upper right", fontsize=7)
    fig.suptitle("Gatys optimisation vs the network (dashed): Johnson et al. 2016, Figure 5")
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
