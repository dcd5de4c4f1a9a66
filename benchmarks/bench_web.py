"""On the web: the app's answer time against the stylizer's own, and the exported page's time in headless Chromium.

    python benchmarks/bench_web.py                                   # random networks (same cost as trained ones)
    python benchmarks/bench_web.py --model runs/quality/candy/model.safetensors --repeat 5

- **app**: a 1-megapixel photo (1155 x 866) through the running app (scripts/app.py's defaults, on a
  loopback port) with gradio_client: upload, queue, stylise, PNG, download; against
  ``Stylizer.__call__`` on the same Pillow image with the same settings (max_size, tile). Goal: the
  app within the stylizer's time + 20 %. The network: ``--model``, or a random full-width one.
- **page**: ``scripts/export.py format=web`` of a half-width network (``TransformerNet(width=0.5)``,
  random weights) with onnxruntime-web copied in, served on loopback and run in headless Chromium
  on a 512 x 512 photo; the time the page reports (decode, network, controls, drawing). Goal: < 10 s.

Needs Gradio, Selenium, /usr/bin/chromium and chromedriver, and onnxruntime-web under
``$FASTNS_ORT_WEB`` (default /tmp/fastns-npm; ``npm install --prefix /tmp/fastns-npm onnxruntime-web@1.30.0``).
Each figure is the median of ``--repeat`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastns.app import build_app, find_models, launch  # noqa: E402
from fastns.commands import CONFIGS  # noqa: E402
from fastns.export import run as export  # noqa: E402
from fastns.modelfile import save_model  # noqa: E402
from fastns.stylize import Stylizer  # noqa: E402
from fastns.transformer import TransformerNet  # noqa: E402
from fastns.utils import cpu_name  # noqa: E402
from tests import browser  # noqa: E402
from tests.conftest import make_photo  # noqa: E402


def bench_app(model: Path, photo: Path, repeat: int) -> tuple[float, float]:
    """(stylizer s, app s) for ``photo``, with the app's default settings; the two alternate, so that a
    busy machine slows both alike."""
    from gradio_client import Client, handle_file

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    cfg = OmegaConf.load(CONFIGS / "tools" / "app.yaml")
    for key in ("defaults", "hydra"):
        del cfg[key]
    cfg.models, cfg.examples, cfg.port = str(model), None, browser.free_port()
    stylizer = Stylizer.load(model, device=str(cfg.device), precision=str(cfg.precision))
    image = Image.open(photo)
    image.load()
    app = build_app(cfg)
    try:
        client = Client(launch(app, cfg, block=False), verbose=False)
        label = next(iter(find_models(model)))  # the name the page lists it under

        def own() -> None:
            stylizer(image, max_size=cfg.max_size, tile=cfg.tile)

        def served() -> None:
            out = client.predict(
                handle_file(str(photo)), label, None, None, 0, 1, False, cfg.max_size, api_name="/stylize"
            )
            Image.open(out).load()

        times: dict[str, list[float]] = {"own": [], "served": []}
        for i in range(repeat + 1):  # the first round is the warm-up (allocations, the app's model load)
            for name, fn in (("own", own), ("served", served)):
                t = time.perf_counter()
                fn()
                if i:
                    times[name].append(time.perf_counter() - t)
    finally:
        app.close()
    return statistics.median(times["own"]), statistics.median(times["served"])


def bench_page(folder: Path, repeat: int) -> tuple[float, str]:
    """(page-reported seconds, backend) for a 512 x 512 photo through a half-width network."""
    runtime = browser.ort_web_runtime()
    missing = browser.browser_missing() or (
        None if runtime else f"no onnxruntime-web under {browser.ORT_WEB_CACHE}"
    )
    if missing:
        raise SystemExit(f"bench_web.py: {missing}")
    torch.manual_seed(0)
    model = save_model(folder / "half.safetensors", TransformerNet(width=0.5), style={"name": "half"})
    site = folder / "site"
    export(OmegaConf.create({"model": str(model), "format": "web", "output": str(site), "border": 32,
                             "verify": True, "web": {"runtime": str(runtime)}}))  # fmt: skip
    photo = make_photo(folder / "p512.png", size=(512, 512), seed=5)
    times = []
    with browser.serve(site) as url, browser.chromium() as driver:
        driver.get(url)
        browser.wait_for_state(driver, ("ready",))
        driver.find_element("id", "photo").send_keys(str(photo))
        for _ in range(repeat + 1):  # the first is the warm-up
            browser.wait_for_state(driver, ("done",))
            times.append(float(driver.find_element("id", "status").get_attribute("data-ms")) / 1000)
            driver.execute_script("document.getElementById('status').dataset.state = 'clicked'")
            driver.find_element("id", "run").click()
        browser.wait_for_state(driver, ("done",))
        backend = driver.find_element("id", "status").text.split("backend: ", 1)[-1]
    return statistics.median(times[1:]), backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="the app's network (default: a random full-width one)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_web_") as tmp:
        folder = Path(tmp)
        model = args.model
        if model is None:
            torch.manual_seed(0)
            model = save_model(
                folder / "full" / "model.safetensors", TransformerNet(), style={"name": "full"}
            )
        photo = make_photo(folder / "p1mp.png", size=(1155, 866), seed=6)
        own, served = bench_app(model, photo, args.repeat)
        page, backend = bench_page(folder, args.repeat)
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"command: python benchmarks/bench_web.py {' '.join(sys.argv[1:])}".rstrip())
    print("| what | image | seconds | goal |")
    print("|---|---|---:|---|")
    print(
        f"| Stylizer (network {model.name if args.model is None else args.model}) | 1155 x 866 | {own:.2f} | |"
    )
    print(
        f"| app (gradio_client round trip) | 1155 x 866 | {served:.2f} | <= {1.2 * own:.2f} ({served / own - 1:+.0%}) |"
    )
    print(f"| page, headless Chromium ({backend}), width=0.5 | 512 x 512 | {page:.2f} | < 10 |")


if __name__ == "__main__":
    main()
