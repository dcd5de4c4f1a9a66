"""Make docs/images/contact_sheet.jpg, the README's picture: photos (top row) and their stylisations.

The photos are scikit-image's bundled samples (public domain / CC0); the networks are quickstart
runs (``experiment=quickstart``: 400 steps of the half-width network at 128 px on a CPU), one per
style, e.g.::

    python scripts/train.py experiment=quickstart style=candy hydra.run.dir=runs/candy
    python docs/images/make_contact_sheet.py runs/candy/model.safetensors runs/starry_night/model.safetensors ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import skimage
from PIL import Image, ImageDraw, ImageFont

from fastns import Stylizer
from fastns.image import open_image, resize_pil

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")
CELL = 256  # longest side of every photo and stylisation, px
LABEL = 22  # height of a row's label strip, px


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model files, one row each")
    parser.add_argument("--output", default=str(Path(__file__).with_name("contact_sheet.jpg")))
    args = parser.parse_args()

    folder = Path(skimage.__file__).parent / "data"
    photos = [resize_pil(open_image(folder / name), CELL) for name in PHOTOS]
    rows = [("photo", photos)]
    for path in args.models:
        stylizer = Stylizer.load(path, device="cpu", precision="fp32")
        rows.append((stylizer.name, [stylizer(p) for p in photos]))

    widths = [p.width for p in photos]
    sheet = Image.new(
        "RGB", (sum(widths) + 4 * (len(photos) + 1), len(rows) * (CELL + LABEL + 4) + 4), "white"
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    y = 4
    for name, images in rows:
        draw.text((6, y + 2), name, fill="black", font=font)
        x = 4
        for im in images:
            sheet.paste(im, (x, y + LABEL + (CELL - im.height) // 2))
            x += im.width + 4
        y += CELL + LABEL + 4
    sheet.save(args.output, quality=80, optimize=True)
    print(f"wrote {args.output} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
