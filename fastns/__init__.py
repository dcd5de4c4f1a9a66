"""fastns: fast neural style transfer.

Feed-forward style networks (Johnson et al. 2016) trained with the Gatys perceptual loss, and the
classic Gatys per-image optimisation and texture synthesis as reference. Images are float tensors
``(B, 3, H, W)`` in [0, 1] at every public boundary.
"""

from .errors import FastnsError
from .image import load_image, save_image
from .losses import PerceptualLoss, gram_matrix
from .version import __version__
from .vgg import VGGFeatures

__all__ = [
    "FastnsError",
    "PerceptualLoss",
    "Stylizer",
    "VGGFeatures",
    "gram_matrix",
    "load_image",
    "save_image",
    "__version__",
]


def __getattr__(name: str):
    # The stylizer is imported on first use, so that `import fastns` stays light.
    if name == "Stylizer":
        from .stylize import Stylizer

        return Stylizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
