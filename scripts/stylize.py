#!/usr/bin/env python
"""Stylise images, folders, videos or the webcam with a trained model. Options: configs/tools/stylize.yaml.

python scripts/stylize.py model=runs/starry/model.safetensors input=photo.jpg output=out.jpg
python scripts/stylize.py model=... input=holiday/ output=holiday_styled/
python scripts/stylize.py model=... input=clip.mp4 output=clip_styled.mp4
python scripts/stylize.py model=... input=webcam
"""

import hydra
from omegaconf import DictConfig

from fastns.cli import checked_command_line, user_errors


@checked_command_line("../configs/tools", "stylize")
@hydra.main(version_base="1.3", config_path="../configs/tools", config_name="stylize")
@user_errors
def main(cfg: DictConfig) -> None:
    from fastns.stylize import run  # here, not at the top: --help answers without loading PyTorch

    run(cfg)


if __name__ == "__main__":
    main()
