"""The browser-only page (``scripts/export.py format=web``): a static folder that stylises photos in the browser.

The folder holds

- ``index.html`` and ``stylize.js`` (from ``fastns/webpage/``): choose a photo, set strength,
  preserve colour, a maximum size and (networks of several styles) the style; the page runs the
  network with onnxruntime-web (WebGPU where the browser has it, else WebAssembly), applies the
  controls as :mod:`fastns.stylize` does, shows the result beside the photo with the backend and
  the time taken, and offers it as a PNG download. Nothing leaves the browser;
- ``model.onnx``: the network with its reflection border (:func:`fastns.export.export_onnx`);
- ``model.json``: what the page needs to know about it (style names, smallest side, border);
- ``ort/`` (with ``runtime=``): onnxruntime-web's script and WebAssembly files, so that the page
  works offline. Without it the page loads them from onnxruntime-web's public CDN, pinned to
  :data:`ORT_VERSION`.

Any static file server will do (``python -m http.server -d site/candy``); ``file://`` will not, as
browsers refuse to ``fetch`` local files. Multi-threaded WebAssembly needs a cross-origin-isolated
page (COOP/COEP headers), which plain static servers do not send: the page then runs on one thread.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .errors import ConfigError
from .export import export_onnx
from .modelfile import ModelInfo
from .transformer import TransformerNet
from .utils import atomic_folder

#: The onnxruntime-web release the page is written for (the CDN link, and the tests' vendored copy).
ORT_VERSION = "1.30.0"
#: Where the page loads the runtime from when it is not copied into the folder.
ORT_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_VERSION}/dist/"
#: The runtime's files the page needs: the script (WebGPU and WebAssembly backends) and its WebAssembly.
ORT_FILES = ("ort.min.js", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm")
#: The page's own files, shipped in the package.
PAGE_DIR = Path(__file__).resolve().parent / "webpage"
PAGE_FILES = ("index.html", "stylize.js")


def find_runtime(runtime: str | os.PathLike) -> Path:
    """The folder holding :data:`ORT_FILES`: ``runtime`` itself, its ``dist/`` (the npm package's
    folder, ``node_modules/onnxruntime-web``) or ``node_modules/onnxruntime-web/dist`` under it (an
    ``npm install`` prefix).

    Raises:
        ConfigError: none of them holds the files (one line naming ``web.runtime`` and the folder).
    """
    root = Path(runtime).expanduser()
    for folder in (root, root / "dist", root / "node_modules" / "onnxruntime-web" / "dist"):
        if all((folder / name).is_file() for name in ORT_FILES):
            return folder
    raise ConfigError(
        f"web.runtime={runtime}: no onnxruntime-web files ({', '.join(ORT_FILES)}) there, in dist/ or in "
        f"node_modules/onnxruntime-web/dist/; install them with "
        f"npm install --prefix {runtime} onnxruntime-web@{ORT_VERSION}"
    )


def page_html(title: str, runtime_src: str) -> str:
    """``index.html`` with the style's name and the runtime script's address filled in."""
    template = (PAGE_DIR / "index.html").read_text(encoding="utf-8")
    escaped = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return template.replace("{{title}}", escaped).replace("{{ort_src}}", runtime_src)


def write_web(
    net: TransformerNet,
    info: ModelInfo,
    output: str | os.PathLike,
    *,
    border: int,
    runtime: str | os.PathLike | None = None,
    verify: bool = True,
) -> Path:
    """Write the page folder for ``net`` at ``output`` (a new or empty folder), all or nothing.

    Args:
        border: reflection padding built into ``model.onnx`` (px), as in the stylizer.
        runtime: copy onnxruntime-web from this folder (:func:`find_runtime`) into ``ort/``;
            None: the page loads it from :data:`ORT_CDN`.
        verify: check ``model.onnx`` against PyTorch (onnxruntime) before the folder is written.

    Raises:
        ConfigError: ``output`` exists and is not an empty folder, or ``runtime`` has no runtime.
    """
    output = Path(output)
    ort_dir = find_runtime(runtime) if runtime is not None else None
    with atomic_folder(output, "format=web") as tmp:
        export_onnx(net, info, tmp / "model.onnx", border=border, verify=verify)
        name = (
            str(info.style.get("name") or "style") if info.num_styles == 1 else " + ".join(info.style_names)
        )
        described = {
            "name": name,
            "styles": info.style_names if info.num_styles > 1 else [],
            "border": border,
            # Reflection padding needs each side > the padding (the graph's smallest input).
            "min_side": max(border, net.start_pad) + 1,
            "fastns_version": info.fastns_version,
        }
        (tmp / "model.json").write_text(json.dumps(described, indent=2) + "\n", encoding="utf-8")
        src = "ort/ort.min.js" if ort_dir else ORT_CDN + "ort.min.js"
        (tmp / "index.html").write_text(page_html(f"fastns: {name}", src), encoding="utf-8")
        shutil.copyfile(PAGE_DIR / "stylize.js", tmp / "stylize.js")
        if ort_dir:
            (tmp / "ort").mkdir()
            for file in ORT_FILES:
                shutil.copyfile(ort_dir / file, tmp / "ort" / file)
    return output
