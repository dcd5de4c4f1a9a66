"""The web app (scripts/app.py): model files found and named, the stylizer's pixels, errors in the page, a queue."""

from __future__ import annotations

import contextlib
import io
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from fastns.app import Models, find_models, style_spec, stylize_photo
from fastns.commands import CONFIGS
from fastns.errors import ConfigError, ImageError
from fastns.modelfile import save_model
from fastns.stylize import Stylizer

from . import browser
from .conftest import make_photo
from .test_stylize import tiny_net


@pytest.fixture
def runs(tmp_path) -> Path:
    """A folder of runs as scripts/train.py leaves them: one network of one style, one of two."""
    save_model(tmp_path / "runs" / "candy" / "model.safetensors", tiny_net(), style={"name": "candy"})
    save_model(
        tmp_path / "runs" / "pair" / "model.safetensors",
        tiny_net(seed=1, num_styles=2),
        styles=[{"name": "wave"}, {"name": "mosaic"}],
    )
    return tmp_path / "runs"


def app_config(models: Path, **overrides):
    """fastns/configs/tools/app.yaml as the script composes it, with ``overrides``."""
    cfg = OmegaConf.load(CONFIGS / "tools" / "app.yaml")
    for key in ("defaults", "hydra"):
        del cfg[key]
    cfg.models = str(models)
    cfg.examples = None
    cfg.precision = "fp32"
    return OmegaConf.merge(cfg, overrides)


def test_model_files_are_found_and_named_after_their_run(runs, tmp_path):
    (runs / "notes.txt").write_text("not a model")
    found = find_models(runs)
    assert found == {
        "candy": runs / "candy" / "model.safetensors",
        "pair": runs / "pair" / "model.safetensors",
    }
    assert find_models(runs / "candy" / "model.safetensors") == {
        "candy": runs / "candy" / "model.safetensors"
    }
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"models=.*empty: no model files"):
        find_models(tmp_path / "empty")
    with pytest.raises(ConfigError, match=r"models=.*nowhere: no such file or folder"):
        find_models(tmp_path / "nowhere")


def test_the_style_and_blend_controls_become_the_stylizers_style():
    assert style_spec(["candy"], None, None, 0.5) is None
    assert style_spec(["wave", "mosaic"], "mosaic", "(none)", 0.5) == "mosaic"
    assert style_spec(["wave", "mosaic"], "wave", "mosaic", 0.25) == {"wave": 0.75, "mosaic": 0.25}
    assert style_spec(["wave", "mosaic"], "wave", "mosaic", 1.0) == "mosaic"


def test_the_app_gives_the_stylizers_pixels_and_one_line_for_a_bad_photo(runs, tmp_path):
    models = Models(find_models(runs), device="cpu", precision="fp32")
    photo = make_photo(tmp_path / "photo.png", size=(60, 44), seed=3)
    blended = stylize_photo(models, str(photo), "pair", "wave", "mosaic", 0.3, 0.8, True, None)
    reference = Stylizer.load(runs / "pair" / "model.safetensors", device="cpu", precision="fp32")
    expected = reference(
        Image.open(photo), strength=0.8, preserve_color=True, style={"wave": 0.7, "mosaic": 0.3}
    )
    assert np.array_equal(np.asarray(blended), np.asarray(expected))
    assert stylize_photo(models, str(photo), "candy", max_size=40).size == (40, 29)  # downscaled to max_size
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match=r"broken.jpg: not an image file"):
        stylize_photo(models, str(bad), "candy")


def _gradio():
    return pytest.importorskip("gradio", reason="the app needs Gradio (pip install -e '.[app]')")


@contextlib.contextmanager
def serving(cfg) -> Iterator[str]:
    from fastns.app import build_app, launch

    app = build_app(cfg)
    try:
        yield launch(app, cfg, block=False)
    finally:
        app.close()


@pytest.mark.integration
def test_concurrent_requests_are_queued_and_all_answered(runs, tmp_path, monkeypatch):
    _gradio()
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client, handle_file

    photos = [make_photo(tmp_path / f"p{i}.png", size=(48 + 8 * i, 40), seed=i) for i in range(3)]
    with serving(app_config(runs, port=browser.free_port())) as url:
        assert url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
        client = Client(url, verbose=False)

        def ask(photo: Path) -> tuple[int, int]:
            result = client.predict(
                handle_file(str(photo)), "candy", None, None, 0, 1, False, None, api_name="/stylize"
            )
            return Image.open(result).size

        with ThreadPoolExecutor(3) as pool:
            sizes = list(pool.map(ask, photos))
    assert sizes == [(48, 40), (56, 40), (64, 40)]


@pytest.mark.integration
def test_the_app_stylises_an_upload_in_chromium(runs, tmp_path, monkeypatch):
    _gradio()
    missing = browser.browser_missing()
    if missing:
        pytest.skip(f"no headless browser: {missing}")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = make_photo(tmp_path / "photo.png", size=(96, 70), seed=4)
    expected = np.asarray(
        Stylizer.load(runs / "candy" / "model.safetensors", device="cpu", precision="fp32")(
            Image.open(photo)
        ),
        np.float32,
    )
    content = np.asarray(Image.open(photo), np.float32)
    with serving(app_config(runs, port=browser.free_port())) as url, browser.chromium() as driver:
        driver.get(url)
        wait = WebDriverWait(driver, 60, poll_frequency=0.1)

        def upload(path: Path) -> None:
            wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#photo input[type=file]")).send_keys(
                str(path)
            )
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photo img"))  # uploaded and shown

        # A file that is not an image: a message in the page, and the app serves on.
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"not a png")
        upload(bad)
        driver.find_element(By.CSS_SELECTOR, "#run").click()
        message = wait.until(lambda d: "not an image that can be read" in d.page_source and d.page_source)
        assert "broken.png: not an image that can be read" in message

        driver.get(url)  # a fresh page on the same server
        upload(photo)
        driver.find_element(By.CSS_SELECTOR, "#run").click()
        src = wait.until(
            lambda d: [e.get_attribute("src") for e in d.find_elements(By.CSS_SELECTOR, "#result img")]
        )
        with urllib.request.urlopen(src[0]) as response:  # what the download button saves
            result = Image.open(io.BytesIO(response.read()))
        assert result.format == "PNG" and result.size == (96, 70)  # the full size, lossless
        got = np.asarray(result.convert("RGB"), np.float32)
        assert np.abs(got - expected).max() <= 2
        assert np.abs(got - content).mean() > 0.05 * 255  # stylised, not the photo back
