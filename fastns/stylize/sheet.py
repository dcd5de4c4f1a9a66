"""A style sheet of a network of several styles: one image of a photo in every style and every 50/50 blend.

``scripts/stylize.py ... sheet=true`` writes it. Layout, each picture labelled above::

    input    | style 1  | style 2  | ... | style N
    1 + 2    | 1 + 3    | ...                          (the pairwise 50/50 blends, N + 1 a row)
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from PIL import Image, ImageDraw

from ..image import tensor_to_pil
from .stylizer import Stylizer

#: Space between pictures, px (white).
GAP = 4
#: Height of the label strip above each picture, px (Pillow's default bitmap font is 11 px high).
LABEL = 14


def sheet_cells(stylizer: Stylizer, content: torch.Tensor, **controls: Any) -> list[tuple[str, torch.Tensor]]:
    """``(label, image)`` of the sheet in order: the input, each style, then each pair's 50/50 blend.

    ``content``: (1, 3, H, W) in [0, 1]; ``controls``: as for :meth:`Stylizer.stylize`.
    """
    names = stylizer.styles
    cells = [("input", content)]
    cells += [(name, stylizer.stylize(content, style=name, **controls)) for name in names]
    for a, b in itertools.combinations(names, 2):
        cells.append((f"{a} + {b}", stylizer.stylize(content, style={a: 0.5, b: 0.5}, **controls)))
    return cells


def style_sheet(stylizer: Stylizer, content: torch.Tensor, **controls: Any) -> Image.Image:
    """The sheet as one RGB image (module docstring); arguments as for :func:`sheet_cells`."""
    cells = sheet_cells(stylizer, content, **controls)
    columns = 1 + stylizer.num_styles
    h, w = content.shape[-2:]
    rows = 1 + -(-(len(cells) - columns) // columns)
    canvas = Image.new("RGB", (columns * (w + GAP) + GAP, rows * (h + LABEL + GAP) + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, image) in enumerate(cells):
        row, col = divmod(i, columns)
        x, y = GAP + col * (w + GAP), GAP + row * (h + LABEL + GAP)
        draw.text((x + 1, y + 1), label, fill="black")
        canvas.paste(tensor_to_pil(image), (x, y + LABEL))
    return canvas
