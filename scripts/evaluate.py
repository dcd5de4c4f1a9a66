#!/usr/bin/env python
"""Evaluate a trained network against Gatys optimisation. Options: fastns/configs/tools/evaluate.yaml.

python scripts/evaluate.py model=runs/starry/model.safetensors images=photos/val/ output=report/ image_size=256
python scripts/evaluate.py model=... images=photos/val/ max_images=5 image_size=128 gatys_iterations=200
"""

from fastns.commands import evaluate

if __name__ == "__main__":
    evaluate()
