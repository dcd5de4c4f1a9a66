#!/usr/bin/env python
"""Export a trained network. Options: fastns/configs/tools/export.yaml.

python scripts/export.py model=outputs/.../checkpoints/last.ckpt output=model.safetensors
python scripts/export.py model=runs/starry/model.safetensors format=onnx output=starry.onnx
python scripts/export.py model=runs/starry/model.safetensors format=torchscript output=starry.pt
python scripts/export.py model=runs/starry/model.safetensors format=web output=site/starry/   # docs/web.md
"""

from fastns.commands import export

if __name__ == "__main__":
    export()
