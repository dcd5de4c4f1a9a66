"""The model zoo: networks other projects published, by name (``model=zoo:<name>``).

``model=zoo:mosaic`` downloads the published file once (into ``$FASTNS_CACHE``, by
:func:`fastns.hub.download`), takes the network out of its archive if it comes in one, converts it
with :mod:`fastns.importers` and keeps the result as a fastns model file in
``$FASTNS_CACHE/zoo/``; later runs load that file and touch no network. Every step is checked:

- a file with a known SHA-256 is verified against it (a mismatch is refused and nothing is kept);
  the original projects never published checksums, so for the others the download is verified by
  its structure: it must convert (the importers refuse anything that is not that network, and
  never run code from a file) and give a finite image;
- the SHA-256 of what was downloaded is written into the model file (``training.source_sha256``),
  so a converted network always says which bytes it came from;
- offline, or when a source is gone, one line names the URL and how to pass a local copy instead.

The networks: the four of pytorch/examples' ``fast_neural_style`` (one zip archive) and the ten of
jcjohnson/fast-neural-style (Johnson et al.'s own, Torch7: six instance-norm, four from the paper).
``python scripts/stylize.py zoo=list`` prints the table.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DownloadError, ModelFileError, first_line
from .hub import cache_dir, download, sha256_file
from .importers import load_network
from .modelfile import save_model

log = logging.getLogger(__name__)

#: ``model=`` values that name a zoo network start with this.
PREFIX = "zoo:"

_EXAMPLES_ZIP = "https://www.dropbox.com/s/lrvwfehqdcxoza8/saved_models.zip?dl=1"
_JCJOHNSON = "https://cs.stanford.edu/people/jcjohns/fast-neural-style/models"


@dataclass(frozen=True)
class ZooEntry:
    """One published network."""

    name: str
    #: Where the original project publishes it (an archive when ``member`` is set).
    url: str
    #: The network's file inside the archive at ``url``; ``None``: ``url`` is the network itself.
    member: str | None
    #: SHA-256 of the file at ``url``, where known; otherwise it is verified by its structure.
    sha256: str | None
    #: The project that trained and published it.
    source: str
    #: The painting, as the project names it.
    style: str

    @property
    def file_name(self) -> str:
        return Path(self.member or self.url.split("?")[0]).name


def _examples(style: str) -> ZooEntry:
    return ZooEntry(
        style, _EXAMPLES_ZIP, f"saved_models/{style}.pth", None, "pytorch/examples fast_neural_style", style
    )


def _jcjohnson(family: str, style: str) -> ZooEntry:
    name = f"jcjohnson/{style}" if family == "instance_norm" else f"jcjohnson/eccv16/{style}"
    return ZooEntry(
        name, f"{_JCJOHNSON}/{family}/{style}.t7", None, None, f"jcjohnson/fast-neural-style {family}", style
    )


#: Every network ``model=zoo:<name>`` can fetch, by name.
ENTRIES: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        *(_examples(s) for s in ("candy", "mosaic", "rain_princess", "udnie")),
        *(
            _jcjohnson("instance_norm", s)
            for s in ("candy", "la_muse", "mosaic", "feathers", "the_scream", "udnie")
        ),
        *(_jcjohnson("eccv16", s) for s in ("the_wave", "starry_night", "la_muse", "composition_vii")),
    ]
}


def is_zoo(model: str | os.PathLike) -> bool:
    return isinstance(model, str) and model.startswith(PREFIX)


def table() -> str:
    """The zoo as a Markdown table (``zoo=list``)."""
    rows = ["| name | painting | from | checksum | URL |", "|---|---|---|---|---|"]
    for e in ENTRIES.values():
        where = f"{e.url} ({e.member})" if e.member else e.url
        sha = e.sha256[:12] + "..." if e.sha256 else "not published: checked by structure"
        rows.append(f"| `zoo:{e.name}` | {e.style} | {e.source} | {sha} | {where} |")
    return "\n".join(rows)


def cached_model(name: str) -> Path:
    """Where the converted model file of zoo network ``name`` is kept."""
    return cache_dir() / "zoo" / (name.replace("/", "--") + ".safetensors")


def entry(name: str) -> ZooEntry:
    """The zoo network called ``name``, or a one-line error listing the names."""
    found = ENTRIES.get(name)
    if found is None:
        raise ModelFileError(
            f"model=zoo:{name}: no such network in the zoo; one of {', '.join(ENTRIES)} "
            "(python scripts/stylize.py zoo=list)"
        )
    return found


def fetch(name: str) -> Path:
    """The model file of zoo network ``name``: downloaded, verified and converted on first use, then cached."""
    e = entry(name)
    dest = cached_model(name)
    if dest.is_file():
        return dest
    hint = f"download {e.url} yourself and pass model=/path/to/{e.file_name}" + (
        f" ({e.member} in the archive)" if e.member else ""
    )
    url = e.url + (f"#sha256={e.sha256}" if e.sha256 else "")
    try:
        archive = download(url, key="model", hint=hint)
    except DownloadError as err:
        raise DownloadError(f"model=zoo:{name}: {first_line(err)}") from None
    with tempfile.TemporaryDirectory(prefix="fastns-zoo-") as tmp:
        network = archive if e.member is None else _extract(archive, e.member, Path(tmp), name)
        try:
            net, info = load_network(network)
        except ModelFileError as err:
            archive.unlink(missing_ok=True)  # not kept: the next run downloads it again
            raise ModelFileError(
                f"model=zoo:{name}: the download from {e.url} is not the published network, "
                f"removed from the cache ({first_line(err)})"
            ) from None
        with torch.no_grad():
            if not torch.isfinite(net(torch.rand(1, 3, 64, 64))).all():
                raise ModelFileError(f"model=zoo:{name}: the network from {e.url} gives non-finite images")
        training = {
            **info.training,
            "source": e.source,
            "source_url": e.url,
            "source_sha256": sha256_file(network),
        }
        save_model(dest, net, style={**info.style, "name": e.style}, loss=info.loss, training=training)
    log.info("zoo:%s: converted %s into %s", name, e.file_name, dest)
    return dest


def _extract(archive: Path, member: str, folder: Path, name: str) -> Path:
    """``member`` of the zip ``archive``, copied into ``folder`` (nothing else is read or written)."""
    try:
        with zipfile.ZipFile(archive) as z:
            if member not in z.namelist():
                archive.unlink(missing_ok=True)
                raise ModelFileError(f"model=zoo:{name}: the archive from {archive.name} has no {member}")
            out = folder / Path(member).name  # the base name only: no path from the archive is used
            with z.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile:
        archive.unlink(missing_ok=True)
        raise ModelFileError(
            f"model=zoo:{name}: the download is not a zip archive, removed from the cache"
        ) from None
    return out
