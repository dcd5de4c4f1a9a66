"""What a ``model=`` value names: a file, a published network (``zoo:<name>``) or a Hub repository (``hf:<repo>``)."""

from __future__ import annotations

import os
from pathlib import Path

from . import hfhub, zoo


def resolve_model(model: str | os.PathLike) -> Path:
    """A local file for a ``model=`` value: ``zoo:`` and ``hf:`` names are fetched (cached), paths returned as given."""
    if zoo.is_zoo(model):
        return zoo.fetch(str(model)[len(zoo.PREFIX) :])
    if hfhub.is_hf(model):
        return hfhub.fetch(str(model)[len(hfhub.PREFIX) :])
    return Path(str(model))
