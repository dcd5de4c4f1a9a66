#!/usr/bin/env python
"""Train a feed-forward style network. Options: configs/train.yaml and the README.

python scripts/train.py style=starry_night data.root=/data/coco/train2014
python scripts/train.py experiment=quickstart
"""

import hydra
from omegaconf import DictConfig

from fastns.cli import checked_command_line, interrupted_status, user_errors


@checked_command_line("../configs", "train")
@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
@user_errors
def main(cfg: DictConfig) -> None:
    from fastns.train import train  # here, not at the top: --help answers without loading PyTorch

    summary = train(cfg)
    if summary.get("interrupted"):  # stopped by a signal, checkpoint saved: not a finished run
        raise SystemExit(interrupted_status(summary["interrupted"]))


if __name__ == "__main__":
    main()
