"""Style presets, URL downloads with checksums and the cache. No test touches the network."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import yaml

from fastns import hub
from fastns.errors import ConfigError, DownloadError
from fastns.style import Style

from .conftest import CONFIGS, SHARED, compose, make_photo, requires_shared

REQUIRED = [
    "starry_night",
    "candy",
    "mosaic",
    "composition_vii",
    "feathers",
    "la_muse",
    "the_scream",
    "udnie",
    "wave",
]
PRESETS = sorted(p.stem for p in (CONFIGS / "style").glob("*.yaml") if p.stem != "custom")


def _preset(name: str) -> dict:
    return yaml.safe_load((CONFIGS / "style" / f"{name}.yaml").read_text())


def test_required_presets_exist():
    assert set(REQUIRED) <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_names_upstream_url_with_checksum(name):
    url, sha = hub.split_checksum(_preset(name)["image"])
    assert (
        url
        == f"https://raw.githubusercontent.com/jcjohnson/fast-neural-style/master/images/styles/{name}.jpg"
    )
    assert sha is not None and len(sha) == 64
    cfg = compose("optimize", [f"style={name}", "content=null"])
    assert cfg.style.size > 0  # every preset has a default style size


@requires_shared
@pytest.mark.parametrize("name", PRESETS)
def test_preset_checksums_match_the_shared_files(name):
    local = SHARED / "data" / "styles" / f"{name}.jpg"
    if not local.exists():
        pytest.skip(f"{local.name} is not in ../shared")
    _, sha = hub.split_checksum(_preset(name)["image"])
    assert hashlib.sha256(local.read_bytes()).hexdigest() == sha


@requires_shared
def test_preset_checksums_match_the_upstream_list_in_shared_readme():
    """../shared/README.md lists the SHA-256 of every upstream style image, copied here or not."""
    listed = {}
    for line in (SHARED / "README.md").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 64 and parts[1].endswith(".jpg"):
            listed[parts[1][:-4]] = parts[0]
    assert set(PRESETS) <= set(listed)
    for name in PRESETS:
        assert hub.split_checksum(_preset(name)["image"])[1] == listed[name], name


def _file_url(path) -> str:
    return path.resolve().as_uri()


def test_download_is_cached_and_verified(tmp_path):
    src = make_photo(tmp_path / "painting.png")
    sha = hub.sha256_file(src)
    url = f"{_file_url(src)}#sha256={sha}"
    first = hub.download(url)
    assert first.read_bytes() == src.read_bytes()
    assert first.is_relative_to(hub.cache_dir())
    src.unlink()  # "offline" now: the cached copy must be used without fetching
    assert hub.download(url) == first


def test_checksum_mismatch_is_an_error_and_caches_nothing(tmp_path):
    src = make_photo(tmp_path / "painting.png")
    url = f"{_file_url(src)}#sha256={'0' * 64}"
    with pytest.raises(DownloadError) as e:
        hub.download(url)
    msg = str(e.value)
    assert "checksum mismatch" in msg and "style.image=" in msg and "\n" not in msg
    assert not any(p.is_file() for p in hub.cache_dir().rglob("*"))


def test_offline_download_says_how_to_pass_a_local_file():
    url = "http://127.0.0.1:9/starry_night.jpg#sha256=" + "a" * 64  # the discard port: refused at once
    with pytest.raises(DownloadError) as e:
        hub.download(url)
    msg = str(e.value)
    assert msg.startswith("could not download http://127.0.0.1:9/starry_night.jpg")
    assert "style.image=/path/to/starry_night.jpg" in msg


def test_bad_checksum_fragment():
    with pytest.raises(DownloadError, match="sha256="):
        hub.split_checksum("https://x/a.jpg#md5=abc")


def test_preseeded_cache_satisfies_a_preset_offline(tmp_path):
    """A file put in the cache under the preset's checksum is used with no download."""
    src = make_photo(tmp_path / "starry_night.jpg")
    url = f"https://example.invalid/starry_night.jpg#sha256={hub.sha256_file(src)}"
    dest = hub.cached_path(url)
    dest.parent.mkdir(parents=True)
    shutil.copy(src, dest)
    assert hub.resolve(url) == dest


def test_style_from_config_local_file_and_blend(tmp_path, style_file):
    other = make_photo(tmp_path / "b.png", size=(64, 32))
    s = Style.from_config({"image": [str(style_file), str(other)], "size": 32, "blend_weights": [1, 2]})
    assert s.name == "style+b"
    tensors = s.tensors(s.longest_side(256))
    assert [t.shape[-2:] for t in tensors] == [(32, 32), (16, 32)]
    assert s.longest_side(128, reference=256) == 16  # proportional at smaller multi-scale stages
    assert Style(str(style_file), scale=0.5).longest_side(100) == 50


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"image": "???"}, "style.image is not set"),
        ({"image": "x.jpg", "colour": 1}, "unknown key style.colour"),
        ({"image": ["a.jpg", "b.jpg"], "blend_weights": [1]}, "blend_weights has 1 values"),
        ({"image": "a.jpg", "size": 0}, "style.size=0"),
    ],
)
def test_style_config_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        Style.from_config(cfg)
