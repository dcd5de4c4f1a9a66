"""The model zoo: download, verification, conversion and cache, against a server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import functools
import http.server
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from fastns import zoo
from fastns.errors import DownloadError, ModelFileError
from fastns.hub import cache_dir, sha256_file
from fastns.importers import load_network
from fastns.modelfile import load_model
from fastns.sources import resolve_model

from .conftest import ROOT, make_photo, run_script
from .test_importers import examples_checkpoint


class _Server:
    """Static files from a folder on a free loopback port; counts the requests."""

    def __init__(self, root: Path):
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    """A pytorch/examples-style archive (saved_models/mosaic.pth inside a zip) on a loopback server."""
    root = tmp_path / "www"
    root.mkdir()
    pth = tmp_path / "mosaic.pth"
    examples_checkpoint(pth, width=0.25)
    with zipfile.ZipFile(root / "saved_models.zip", "w") as z:
        z.write(pth, "saved_models/mosaic.pth")
        z.writestr("saved_models/readme.txt", "not a network")
    (root / "broken.t7").write_bytes(b"\x00" * 64)
    with _Server(root) as server:
        yield server, pth


def _entry(monkeypatch, name: str, url: str, member: str | None = None, sha256: str | None = None):
    e = zoo.ZooEntry(name, url, member, sha256, "test", name)
    monkeypatch.setitem(zoo.ENTRIES, name, e)
    return e


def _files_in_cache() -> list[Path]:
    return sorted(p for p in cache_dir().rglob("*") if p.is_file())


def test_a_zoo_network_is_downloaded_verified_converted_and_cached_once(served, monkeypatch):
    server, pth = served
    _entry(monkeypatch, "mosaic", f"{server.url}/saved_models.zip?dl=1", "saved_models/mosaic.pth")
    path = resolve_model("zoo:mosaic")
    assert path == zoo.cached_model("mosaic") and path.suffix == ".safetensors"
    net, info = load_model(path)
    x = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        assert torch.equal(net(x), load_network(pth)[0](x))  # the published network, converted exactly
    assert info.style["name"] == "mosaic"
    assert info.training["source_url"].startswith(server.url)
    assert info.training["source_sha256"] == sha256_file(pth)  # the bytes it came from
    assert len(server.requests) == 1
    assert resolve_model("zoo:mosaic") == path
    assert len(server.requests) == 1  # cached: the second use touches no network


def test_a_wrong_checksum_is_refused_and_leaves_no_file(served, monkeypatch):
    server, _ = served
    _entry(
        monkeypatch, "mosaic", f"{server.url}/saved_models.zip", "saved_models/mosaic.pth", sha256="0" * 64
    )
    with pytest.raises(DownloadError, match=r"^model=zoo:mosaic: checksum mismatch for http://127\.0\.0\.1"):
        zoo.fetch("mosaic")
    assert _files_in_cache() == []


def test_a_download_that_is_not_the_network_is_refused_and_not_kept(served, monkeypatch):
    server, _ = served
    _entry(monkeypatch, "broken", f"{server.url}/broken.t7")
    with pytest.raises(
        ModelFileError, match=r"^model=zoo:broken: the download from .* is not the published network"
    ):
        zoo.fetch("broken")
    _entry(monkeypatch, "nomember", f"{server.url}/saved_models.zip", "saved_models/candy.pth")
    with pytest.raises(ModelFileError, match="has no saved_models/candy.pth"):
        zoo.fetch("nomember")
    assert _files_in_cache() == []


def test_offline_is_one_line_saying_how_to_pass_a_local_file(monkeypatch):
    _entry(
        monkeypatch, "candy", "http://127.0.0.1:9/saved_models.zip", "saved_models/candy.pth"
    )  # refused at once
    with pytest.raises(DownloadError) as info:
        zoo.fetch("candy")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("model=zoo:candy: could not download http://127.0.0.1:9/saved_models.zip")
    assert msg.endswith("pass model=/path/to/candy.pth (saved_models/candy.pth in the archive)")


def test_an_unknown_name_lists_the_zoo():
    with pytest.raises(
        ModelFileError, match=r"model=zoo:vangogh: no such network in the zoo; one of candy, mosaic"
    ):
        resolve_model("zoo:vangogh")


def test_the_table_names_every_published_network():
    text = zoo.table()
    assert len(zoo.ENTRIES) == 14  # pytorch/examples' four and jcjohnson/fast-neural-style's ten
    for name, e in zoo.ENTRIES.items():
        assert f"`zoo:{name}`" in text and e.url in text


@pytest.mark.integration
def test_stylize_and_export_take_a_zoo_name(served, tmp_path, monkeypatch, capsys):
    server, pth = served
    _entry(monkeypatch, "mosaic", f"{server.url}/saved_models.zip", "saved_models/mosaic.pth")
    photo = make_photo(tmp_path / "photo.png")
    code, _, err = run_script(
        ROOT / "scripts" / "stylize.py",
        ["model=zoo:mosaic", f"input={photo}", f"output={tmp_path / 'out.png'}"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err and (tmp_path / "out.png").is_file()
    code, _, err = run_script(
        ROOT / "scripts" / "export.py",
        ["model=zoo:mosaic", f"output={tmp_path / 'mosaic.safetensors'}"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    assert load_model(tmp_path / "mosaic.safetensors")[1].training["source_sha256"] == sha256_file(pth)
    code, out, _ = run_script(ROOT / "scripts" / "stylize.py", ["zoo=list"], monkeypatch, capsys)
    assert code == 0 and "`zoo:jcjohnson/eccv16/starry_night`" in out
