"""scripts/export.py format=web: the page folder, and the page stylising a photo in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastns.errors import ConfigError
from fastns.modelfile import save_model
from fastns.stylize import Stylizer
from fastns.webexport import ORT_CDN, ORT_FILES, find_runtime

from . import browser
from .conftest import ROOT, make_photo
from .conftest import run_script as run_any_script
from .test_stylize import tiny_net

SCRIPT = ROOT / "scripts" / "export.py"


@pytest.fixture
def model_file(tmp_path) -> Path:
    return save_model(tmp_path / "tiny.safetensors", tiny_net(), style={"name": "tiny"})


def fake_runtime(folder: Path) -> Path:
    """An npm-package-shaped folder (dist/ inside) holding files named as onnxruntime-web's."""
    for name in ORT_FILES:
        (folder / "dist").mkdir(parents=True, exist_ok=True)
        (folder / "dist" / name).write_text(f"// {name}")
    return folder


def test_the_page_folder_holds_the_page_and_a_network_that_matches_the_stylizer(
    model_file, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "site" / "tiny"
    code, _, err = run_any_script(
        SCRIPT, [f"model={model_file}", "format=web", f"output={out}"], monkeypatch, capsys
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "model.json", "model.onnx", "stylize.js"]
    html = (out / "index.html").read_text()
    assert f'<script src="{ORT_CDN}ort.min.js">' in html  # the runtime from the CDN by default
    assert "<title>fastns: tiny</title>" in html
    assert json.loads((out / "model.json").read_text())["min_side"] == 33
    ort = pytest.importorskip("onnxruntime")
    x = torch.rand(1, 3, 45, 61)
    got = ort.InferenceSession(str(out / "model.onnx")).run(None, {"images": x.numpy()})[0]
    expected = Stylizer.load(model_file, device="cpu", precision="fp32")(x)
    assert np.abs(got - expected.numpy()).max() < 1e-4


def test_a_vendored_runtime_is_copied_so_the_page_works_offline(model_file, tmp_path, monkeypatch, capsys):
    runtime = fake_runtime(tmp_path / "node_modules" / "onnxruntime-web")
    out = tmp_path / "site"
    args = [f"model={model_file}", "format=web", f"output={out}", f"web.runtime={tmp_path}", "verify=false"]
    code, _, err = run_any_script(SCRIPT, args, monkeypatch, capsys)
    assert code == 0, err
    assert sorted(p.name for p in (out / "ort").iterdir()) == sorted(ORT_FILES)
    assert '<script src="ort/ort.min.js">' in (out / "index.html").read_text()
    assert "https://" not in (out / "index.html").read_text().split("<body>")[0]  # nothing fetched from afar
    assert find_runtime(runtime) == runtime / "dist"


def test_a_bad_runtime_or_a_used_folder_is_one_line_and_writes_nothing(
    model_file, tmp_path, monkeypatch, capsys
):
    args = [
        f"model={model_file}",
        "format=web",
        f"output={tmp_path / 'a'}",
        f"web.runtime={tmp_path / 'none'}",
    ]
    code, _, err = run_any_script(SCRIPT, args, monkeypatch, capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "web.runtime=" in err and "npm install" in err
    used = tmp_path / "b"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    code, _, err = run_any_script(
        SCRIPT, [f"model={model_file}", "format=web", f"output={used}"], monkeypatch, capsys
    )
    assert code == 2 and "output=" in err and "not an empty folder" in err
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "tiny.safetensors"]  # no half-written folder


def test_find_runtime_names_the_key_and_the_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"web.runtime=.*nowhere: no onnxruntime-web files"):
        find_runtime(tmp_path / "nowhere")


def _page_pixels(driver) -> np.ndarray:
    w, h, rgba = browser.output_pixels(driver)
    return np.frombuffer(rgba, np.uint8).reshape(h, w, 4)[..., :3].astype(np.float32) / 255


@pytest.mark.integration
def test_the_page_stylises_a_photo_in_chromium_as_pytorch_does(model_file, tmp_path, monkeypatch, capsys):
    missing = browser.browser_missing()
    if missing:
        pytest.skip(f"no headless browser: {missing}")
    runtime = browser.ort_web_runtime()
    if runtime is None:
        pytest.skip(
            f"onnxruntime-web is not installed under {browser.ORT_WEB_CACHE} (.ci/run installs it: "
            "npm install --prefix $FASTNS_ORT_WEB onnxruntime-web@1.30.0)"
        )
    site = tmp_path / "site"
    args = [f"model={model_file}", "format=web", f"output={site}", f"web.runtime={runtime}"]
    code, _, err = run_any_script(SCRIPT, args, monkeypatch, capsys)
    assert code == 0, err
    photo = make_photo(tmp_path / "photo.png", size=(72, 52), seed=2)
    stylizer = Stylizer.load(model_file, device="cpu", precision="fp32")
    content = np.asarray(Image.open(photo), np.float32) / 255
    with browser.serve(site) as url, browser.chromium() as driver:
        driver.get(url)
        assert browser.wait_for_state(driver, ("ready", "error")) == "ready", driver.find_element(
            "id", "status"
        ).text
        driver.find_element("id", "photo").send_keys(str(photo))
        assert browser.wait_for_state(driver, ("done", "error")) == "done", driver.find_element(
            "id", "status"
        ).text
        status = driver.find_element("id", "status").text
        assert "Stylised 72×52 px in" in status and "backend:" in status  # the backend and the time, said
        got = _page_pixels(driver)
        expected = np.asarray(stylizer(Image.open(photo)), np.float32) / 255
        assert got.shape == (52, 72, 3)
        assert np.abs(got - expected).max() <= 2 / 255
        assert np.abs(got - content).mean() > 0.05  # stylised, not the photo back

        # Strength and preserve colour, applied in the page as the stylizer applies them.
        driver.execute_script(
            "const s = document.getElementById('strength'); s.value = '0.5';"
            "s.dispatchEvent(new Event('input'));"
        )
        driver.find_element("id", "preserve").click()
        got = _page_pixels(driver)
        expected = (
            np.asarray(stylizer(Image.open(photo), strength=0.5, preserve_color=True), np.float32) / 255
        )
        assert np.abs(got - expected).max() <= 2 / 255

        # A file that is not an image: a message in the page, and the page still works afterwards.
        bad = tmp_path / "broken.jpg"
        bad.write_bytes(b"not a jpeg at all")
        driver.find_element("id", "photo").send_keys(str(bad))
        assert browser.wait_for_state(driver, ("error",)) == "error"
        assert "broken.jpg: not an image" in driver.find_element("id", "status").text
