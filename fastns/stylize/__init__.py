"""Stylising with a trained network: the :class:`Stylizer` and the images, folders, video and webcam built on it.

Library API (needs only the model file: no VGG, Hydra or Lightning at run time)::

    from fastns import Stylizer
    stylizer = Stylizer.load("runs/starry/model.safetensors")  # device auto: cuda > mps > cpu
    out = stylizer(Image.open("photo.jpg"), strength=0.8)      # PIL in -> PIL out

Modules, from the network up:

- :mod:`~fastns.stylize.inference`: the network's inference copy (norms folded, precision);
- :mod:`~fastns.stylize.tiling`: huge images in tiles, exactly as untiled;
- :mod:`~fastns.stylize.stylizer`: :class:`Stylizer`, tensors / Pillow images / video frames in and out;
- :mod:`~fastns.stylize.threads`: background loading, decoding, saving and encoding;
- :mod:`~fastns.stylize.files`, :mod:`~fastns.stylize.video`, :mod:`~fastns.stylize.webcam`: the inputs;
- :mod:`~fastns.stylize.temporal`: ``temporal=flow``, frames blended along the optical flow (less flicker);
- :mod:`~fastns.stylize.task`: ``run(cfg)``, the config-driven task behind ``scripts/stylize.py``.
"""

from .files import FolderReport, SkippedFilesError, stylize_folder, stylize_image
from .inference import PRECISIONS
from .stylizer import Stylizer
from .task import default_output, run
from .temporal import FlowBlend
from .video import VIDEO_EXTENSIONS, VideoError, VideoReport, stylize_video
from .webcam import run_webcam

__all__ = [
    "PRECISIONS",
    "VIDEO_EXTENSIONS",
    "FlowBlend",
    "FolderReport",
    "SkippedFilesError",
    "Stylizer",
    "VideoError",
    "VideoReport",
    "default_output",
    "run",
    "run_webcam",
    "stylize_folder",
    "stylize_image",
    "stylize_video",
]
