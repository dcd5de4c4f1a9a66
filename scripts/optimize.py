#!/usr/bin/env python
"""Gatys style transfer / texture synthesis. Options: configs/optimize.yaml and the README.

python scripts/optimize.py content=photo.jpg style=starry_night output=out.png
python scripts/optimize.py content=null style=starry_night output=texture.png image_size=512
"""

import hydra
from omegaconf import DictConfig

from fastns.cli import checked_command_line, user_errors


@checked_command_line("../configs", "optimize")
@hydra.main(version_base="1.3", config_path="../configs", config_name="optimize")
@user_errors
def main(cfg: DictConfig) -> None:
    from fastns.optimize import run  # here, not at the top: --help answers without loading PyTorch

    run(cfg)


if __name__ == "__main__":
    main()
