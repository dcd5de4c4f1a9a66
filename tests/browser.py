"""Headless Chromium for the browser tests (and benchmarks/bench_web.py): Debian's chromium and chromedriver
driven by Selenium, a static file server on loopback, and where the vendored onnxruntime-web lies.

Nothing here downloads a browser: Selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver
(``FASTNS_CHROMIUM``, ``FASTNS_CHROMEDRIVER`` override them), and :func:`browser_missing` says why a
test must skip when they or Selenium are absent.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = Path(os.environ.get("FASTNS_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("FASTNS_CHROMEDRIVER", "/usr/bin/chromedriver"))
#: Where .ci/run installs the npm package onnxruntime-web (``npm install --prefix``); FASTNS_ORT_WEB overrides.
ORT_WEB_CACHE = Path(os.environ.get("FASTNS_ORT_WEB", Path(tempfile.gettempdir()) / "fastns-npm"))


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (a line for ``pytest.skip``), or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            return f"{path} not found (apt-get install {package}, or set FASTNS_{path.name.upper()})"
    return None


def ort_web_runtime() -> Path | None:
    """The onnxruntime-web package folder installed under :data:`ORT_WEB_CACHE`, or None."""
    for folder in (ORT_WEB_CACHE, ORT_WEB_CACHE / "node_modules" / "onnxruntime-web"):
        if (folder / "dist" / "ort.min.js").is_file() or (folder / "ort.min.js").is_file():
            return folder
    return None


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[object]:
    """A headless Chromium WebDriver with a throw-away profile (removed afterwards)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fastns-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` as static files on loopback (a thread, as ``python -m http.server`` does); yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def wait_for_state(driver: object, states: tuple[str, ...], timeout: float = 120.0) -> str:
    """Wait until the exported page's ``#status`` reaches one of ``states``; returns that state."""
    from selenium.webdriver.support.ui import WebDriverWait

    def state(d: object) -> str | bool:
        value = d.execute_script("return document.getElementById('status').dataset.state")  # type: ignore[attr-defined]
        return value if value in states else False

    return str(WebDriverWait(driver, timeout, poll_frequency=0.1).until(state))


def output_pixels(driver: object) -> tuple[int, int, bytes]:
    """The exported page's output canvas as (width, height, RGBA bytes)."""
    import base64

    w, h, b64 = driver.execute_script(  # type: ignore[attr-defined]
        """const c = document.getElementById('output');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = ''; for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode(...d.subarray(i, i + 8192));
        return [c.width, c.height, btoa(s)];"""
    )
    return int(w), int(h), base64.b64decode(b64)
