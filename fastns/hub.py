"""Downloading and caching files named by URL (style images), verified by SHA-256.

A source is either a local path or an ``http(s)://`` URL. A URL may carry its checksum in a
pip-style fragment, ``https://host/starry_night.jpg#sha256=0592ab...``: that keeps the checksum
attached to the URL it belongs to, so overriding ``style.image`` on the command line never
leaves a stale checksum behind. Downloads go to ``$FASTNS_CACHE`` (default: the user's cache
folder, e.g. ``~/.cache/fastns``), are written to a temporary file, verified, then renamed into
place, and are reused on the next run.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import DownloadError
from .utils import atomic_write

_SHA256_FRAGMENT = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_TIMEOUT_S = 30


def cache_dir() -> Path:
    """The download cache: ``$FASTNS_CACHE`` or the platform's user cache folder."""
    env = os.environ.get("FASTNS_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("fastns"))


def is_url(source: str | os.PathLike) -> bool:
    return isinstance(source, str) and source.split(":", 1)[0].lower() in ("http", "https", "file")


def split_checksum(url: str) -> tuple[str, str | None]:
    """``'https://x/a.jpg#sha256=ab..'`` -> ``('https://x/a.jpg', 'ab..')``."""
    base, _, fragment = url.partition("#")
    if not fragment:
        return url, None
    m = _SHA256_FRAGMENT.match(fragment)
    if m is None:
        raise DownloadError(f"{url}: the URL fragment must be '#sha256=<64 hex digits>', got '#{fragment}'")
    return base, m.group(1).lower()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_path(url: str) -> Path:
    """Where ``url`` is (or would be) cached. Files with a checksum are keyed by it."""
    base, sha = split_checksum(url)
    name = Path(urllib.parse.urlparse(base).path).name or "download"
    key = sha[:16] if sha else hashlib.sha256(base.encode()).hexdigest()[:16]
    return cache_dir() / "files" / f"{key}-{name}"


def download(url: str, *, key: str = "style.image", hint: str | None = None) -> Path:
    """Return a local copy of ``url``, downloading and verifying it on first use.

    Args:
        url: ``http(s)://`` or ``file://`` URL, optionally with ``#sha256=<hex>``.
        key: the config key the URL came from, named in error messages so the user knows what
            to change to pass a local file instead.
        hint: what to do instead, when the default (``pass <key>=/path/to/<file>``) does not fit.

    Raises:
        DownloadError: offline, HTTP error, or checksum mismatch (one line, says what to do).
    """
    base, sha = split_checksum(url)
    dest = cached_path(url)
    if dest.exists() and (sha is None or sha256_file(dest) == sha):
        return dest
    how_to_fix = hint or f"download it yourself and pass {key}=/path/to/{dest.name.split('-', 1)[1]}"
    try:
        with atomic_write(dest) as tmp:
            try:
                req = urllib.request.Request(base, headers={"User-Agent": "fastns"})
                with open(tmp, "wb") as out, urllib.request.urlopen(req, timeout=_TIMEOUT_S) as resp:
                    shutil.copyfileobj(resp, out)
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                raise DownloadError(f"could not download {base} ({reason}); {how_to_fix}") from None
            if sha is not None:
                got = sha256_file(tmp)
                if got != sha:
                    raise DownloadError(
                        f"checksum mismatch for {base}: expected sha256 {sha[:12]}..., got {got[:12]}...; {how_to_fix}"
                    )
    except OSError as e:
        raise DownloadError(
            f"cannot write to the download cache {dest.parent} ({e.strerror or e}); set FASTNS_CACHE"
        ) from None
    return dest


def resolve(source: str | os.PathLike, *, key: str = "style.image") -> Path:
    """A local path for ``source``: URLs are downloaded (cached), paths are returned as given."""
    if is_url(source):
        return download(str(source), key=key)
    return Path(os.path.expanduser(str(source)))
