"""Shared fixtures. Tests are offline and use tiny images; ../shared is optional."""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "fastns" / "configs"
# The data folder that lives beside the project on development machines and in CI.
SHARED = Path(os.environ.get("FASTNS_SHARED", ROOT.parent / "shared"))
SHARED_VGG16 = SHARED / "weights" / "vgg16_hed_features.pth"

requires_shared = pytest.mark.skipif(
    not (SHARED / "data").is_dir(), reason=f"{SHARED} (shared data) not present"
)
requires_shared_vgg = pytest.mark.skipif(not SHARED_VGG16.is_file(), reason=f"{SHARED_VGG16} not present")


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory, monkeypatch):
    """No test writes to the user's caches or depends on their environment."""
    monkeypatch.setenv("FASTNS_CACHE", str(tmp_path_factory.mktemp("fastns_cache")))
    torch.manual_seed(0)


def make_photo(path: Path, size=(48, 32), seed=0, mode="RGB", fmt=None) -> Path:
    """A small synthetic 'photo' (smooth gradients + blobs + noise) saved in the given mode."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.stack([xx, yy, 1 - xx * yy], axis=-1)
    for _ in range(3):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r**2] = rng.uniform(0, 1, 3)
    img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
    im = Image.fromarray((img * 255).astype(np.uint8), "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt)
    return path


@pytest.fixture
def photo(tmp_path) -> Path:
    return make_photo(tmp_path / "photo.png", size=(48, 36), seed=1)


@pytest.fixture
def style_file(tmp_path) -> Path:
    """A stripy, colourful 'painting' that differs clearly from the photos."""
    h, w = 40, 40
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack(
        [(np.sin(xx / 2.0) + 1) / 2, (np.sin((xx + yy) / 3.0) + 1) / 2, (np.cos(yy / 2.5) + 1) / 2], -1
    )
    path = tmp_path / "style.png"
    Image.fromarray((img * 255).astype(np.uint8), "RGB").save(path)
    return path


@pytest.fixture
def tiny_loss_cfg() -> dict:
    """A cheap loss: random-weight VGG16, shallow layers (unit tests only, never for quality)."""
    return {
        "content_layers": {"relu2_2": 1.0},
        "style_layers": {"relu1_2": 1.0, "relu2_2": 1.0},
        "content_weight": 1.0,
        "style_weight": 1e5,
        "tv_weight": 0.0,
        "vgg": {"arch": "vgg16", "weights": "random", "pooling": "max"},
    }


def compose(config_name: str, overrides: list[str]):
    """Compose one of the project's real configs with overrides (as the scripts would)."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return _compose(config_name=config_name, overrides=overrides)


def run_script(script: Path, args: list[str], monkeypatch, capsys=None) -> tuple[int, str, str]:
    """Run ``scripts/<name>.py`` in-process as a user would: its exit status, stdout and stderr."""
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    code = 0
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return code, out, err
