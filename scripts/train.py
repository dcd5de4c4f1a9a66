#!/usr/bin/env python
"""Train a feed-forward style network. Options: fastns/configs/train.yaml and the README.

python scripts/train.py style=starry_night data.root=/data/coco/train2014
python scripts/train.py experiment=quickstart
"""

from fastns.commands import train

if __name__ == "__main__":
    train()
