"""The screenshots of docs/web.md: the app and the exported page, each stylising a photo in headless Chromium.

    python benchmarks/screenshots_web.py --model runs/quality/candy/model.safetensors \\
        --photo ../shared/data/photos/val/101085.jpg --out docs/images/

Writes ``web_app.jpg`` (scripts/app.py's page after a stylisation) and ``web_page.jpg`` (the page of
``scripts/export.py format=web``, with onnxruntime-web copied in from ``$FASTNS_ORT_WEB``). Needs what
benchmarks/bench_web.py needs.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastns.app import build_app, launch  # noqa: E402
from fastns.commands import CONFIGS  # noqa: E402
from fastns.export import run as export  # noqa: E402
from tests import browser  # noqa: E402


def save_jpeg(png: bytes, path: Path) -> None:
    Image.open(io.BytesIO(png)).convert("RGB").save(path, quality=85, optimize=True)
    print(f"wrote {path}")


def shoot_app(model: Path, photo: Path, out: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    cfg = OmegaConf.load(CONFIGS / "tools" / "app.yaml")
    for key in ("defaults", "hydra"):
        del cfg[key]
    cfg.models, cfg.examples, cfg.port = str(model), None, browser.free_port()
    app = build_app(cfg)
    try:
        url = launch(app, cfg, block=False)
        with browser.chromium(1280, 1000) as driver:
            driver.get(url)
            wait = WebDriverWait(driver, 120)
            wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#photo input[type=file]")).send_keys(
                str(photo)
            )
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photo img"))
            driver.find_element(By.CSS_SELECTOR, "#run").click()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result img"))
            wait.until(lambda d: d.execute_script("return document.querySelector('#result img').complete"))
            driver.execute_script("window.scrollTo(0, 0)")  # the click scrolled the button into view
            save_jpeg(driver.get_screenshot_as_png(), out / "web_app.jpg")
    finally:
        app.close()


def shoot_page(model: Path, photo: Path, out: Path) -> None:
    runtime = browser.ort_web_runtime()
    if runtime is None:
        raise SystemExit(f"screenshots_web.py: no onnxruntime-web under {browser.ORT_WEB_CACHE}")
    with tempfile.TemporaryDirectory(prefix="shots_web_") as tmp:
        site = Path(tmp) / "site"
        export(OmegaConf.create({"model": str(model), "format": "web", "output": str(site), "border": 32,
                                 "verify": True, "web": {"runtime": str(runtime)}}))  # fmt: skip
        with browser.serve(site) as url, browser.chromium(1100, 760) as driver:
            driver.get(url)
            browser.wait_for_state(driver, ("ready",))
            driver.execute_script("document.getElementById('max-size').value = '512'")
            driver.find_element("id", "photo").send_keys(str(photo))
            browser.wait_for_state(driver, ("done",))
            save_jpeg(driver.get_screenshot_as_png(), out / "web_page.jpg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--photo", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    missing = browser.browser_missing()
    if missing:
        raise SystemExit(f"screenshots_web.py: {missing}")
    args.out.mkdir(parents=True, exist_ok=True)
    shoot_app(args.model, args.photo, args.out)
    shoot_page(args.model, args.photo, args.out)


if __name__ == "__main__":
    main()
