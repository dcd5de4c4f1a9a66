"""User-facing errors.

Anything a user can cause (a bad file, a wrong config value, no network) raises a
:class:`FastnsError` whose message is one line that names the file or config key. The
scripts print that line and exit non-zero; they never show a traceback for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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


def gather(*steps: Callable[[], T]) -> list[T]:
    """Run every step, even after one fails to download, so that all missing downloads are reported at once.

    Offline, the VGG weights and the style image both fail: one error naming both saves a second
    attempt. Any other error stops at once, as usual.

    Raises:
        DownloadError: the messages of every step that failed to download, in order, joined.
    """
    results: list[T] = []
    failed: list[str] = []
    for step in steps:
        try:
            results.append(step())
        except DownloadError as e:
            failed.append(first_line(e))
    if failed:
        raise DownloadError(" — and: ".join(failed))
    return results


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none): what one-line errors quote.

    An error raised in a DataLoader worker process reaches the main process as "Caught X in
    DataLoader worker process N" followed by the worker's traceback, whose last line is the
    original ``module.X: message``: that message is the one to quote.
    """
    text = str(e).strip()
    if not text:
        return type(e).__name__
    lines = text.splitlines()
    if lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        last = lines[-1]
        prefix = f"{type(e).__module__}.{type(e).__qualname__}: "
        return last.removeprefix(prefix) if last.startswith(prefix) else last
    return lines[0]
