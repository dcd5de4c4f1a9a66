"""User-facing errors.

Anything a user can cause (a bad file, a wrong config value, no network) raises a
:class:`FastnsError` whose message is one line that names the file or config key. The
scripts print that line and exit non-zero; they never show a traceback for it.
"""

from __future__ import annotations


class FastnsError(Exception):
    """An error caused by the user's input or environment, with a one-line message."""


class ImageError(FastnsError):
    """An image file is missing, unreadable or cannot be written."""


class DownloadError(FastnsError):
    """A file could not be downloaded or failed its checksum."""


class ConfigError(FastnsError):
    """A configuration value is invalid."""


class ModelFileError(FastnsError):
    """A model file is not a fastns model or comes from an incompatible version."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none): what one-line errors quote."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
