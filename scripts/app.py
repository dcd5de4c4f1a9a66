#!/usr/bin/env python
"""Serve the web app: stylise photos in a browser page. Options: fastns/configs/tools/app.yaml (docs/web.md).

python scripts/app.py models=runs/                       # every model file under runs/, http://127.0.0.1:7860
python scripts/app.py models=runs/candy/model.safetensors port=8080
"""

from fastns.commands import app

if __name__ == "__main__":
    app()
