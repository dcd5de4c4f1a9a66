#!/usr/bin/env python
"""Export a trained network. Options: configs/tools/export.yaml.

python scripts/export.py model=outputs/.../checkpoints/last.ckpt output=model.safetensors
python scripts/export.py model=runs/starry/model.safetensors format=onnx output=starry.onnx
python scripts/export.py model=runs/starry/model.safetensors format=torchscript output=starry.pt
"""

import hydra
from omegaconf import DictConfig

from fastns.cli import checked_command_line, user_errors


@checked_command_line("../configs/tools", "export")
@hydra.main(version_base="1.3", config_path="../configs/tools", config_name="export")
@user_errors
def main(cfg: DictConfig) -> None:
    from fastns.export import run  # here, not at the top: --help answers without loading PyTorch

    run(cfg)


if __name__ == "__main__":
    main()
