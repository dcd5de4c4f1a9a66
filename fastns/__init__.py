"""fastns: fast neural style transfer.

Feed-forward style networks (Johnson et al. 2016) trained with the Gatys perceptual loss, and the
classic Gatys per-image optimisation and texture synthesis as reference. Images are float tensors
``(B, 3, H, W)`` in [0, 1] at every public boundary.

The public names below are imported on first use (PEP 562), so that ``import fastns`` and a
script's ``--help`` answer without loading PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .errors import FastnsError
    from .image import load_image, save_image
    from .losses import PerceptualLoss, gram_matrix
    from .stylize import Stylizer
    from .vgg import VGGFeatures

#: Public name -> the module that defines it.
_EXPORTS = {
    "FastnsError": "errors",
    "PerceptualLoss": "losses",
    "Stylizer": "stylize",
    "VGGFeatures": "vgg",
    "gram_matrix": "losses",
    "load_image": "image",
    "save_image": "image",
}

__all__ = [
    "FastnsError",
    "PerceptualLoss",
    "Stylizer",
    "VGGFeatures",
    "__version__",
    "gram_matrix",
    "load_image",
    "save_image",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value
