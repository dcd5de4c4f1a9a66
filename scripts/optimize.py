#!/usr/bin/env python
"""Gatys style transfer / texture synthesis. Options: fastns/configs/optimize.yaml and the README.

python scripts/optimize.py content=photo.jpg style=starry_night output=out.png
python scripts/optimize.py content=null style=starry_night output=texture.png image_size=512
"""

from fastns.commands import optimize

if __name__ == "__main__":
    optimize()
