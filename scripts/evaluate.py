#!/usr/bin/env python
"""Evaluate a trained network against Gatys optimisation. Options: configs/tools/evaluate.yaml.

python scripts/evaluate.py model=runs/starry/model.safetensors images=photos/val/ output=report/ image_size=256
python scripts/evaluate.py model=... images=photos/val/ max_images=5 image_size=128 gatys_iterations=200
"""

import hydra
from omegaconf import DictConfig

from fastns.cli import checked_command_line, user_errors


@checked_command_line("../configs/tools", "evaluate")
@hydra.main(version_base="1.3", config_path="../configs/tools", config_name="evaluate")
@user_errors
def main(cfg: DictConfig) -> None:
    from fastns.evaluate import run  # here, not at the top: --help answers without loading PyTorch

    run(cfg)


if __name__ == "__main__":
    main()
