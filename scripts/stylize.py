#!/usr/bin/env python
"""Stylise images, folders, videos or the webcam with a trained model. Options: fastns/configs/tools/stylize.yaml.

python scripts/stylize.py model=runs/starry/model.safetensors input=photo.jpg output=out.jpg
python scripts/stylize.py model=... input=holiday/ output=holiday_styled/
python scripts/stylize.py model=... input=clip.mp4 output=clip_styled.mp4
python scripts/stylize.py model=... input=webcam
"""

from fastns.commands import stylize

if __name__ == "__main__":
    stylize()
