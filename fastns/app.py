"""The web app (``scripts/app.py``, ``fastns app``): a Gradio page that stylises photos with a folder of networks.

A photo is uploaded or taken with the webcam; the page offers every model file found under
``models`` (a folder, searched recursively, or one file), the style or a blend of two for networks of
several styles, strength, preserve colour and a maximum size. The photo is stylised by
:class:`fastns.stylize.Stylizer` itself (same pixels as ``scripts/stylize.py``; photos larger than
``tile`` run in tiles, as there), on the CPU or a GPU, and shown beside the input, downloadable at
full size as PNG. Example photos (scikit-image's samples, or a folder) fill a gallery.

Requests are queued (``concurrency`` at a time, ``queue_size`` waiting): the network runs for one
user at a time instead of all of them running out of memory together. A photo that cannot be read,
or is too small, shows a one-line message in the page and the app goes on serving. It listens on
127.0.0.1 unless ``host`` says otherwise (Gradio has no login: expose it on purpose only). Gradio's
usage analytics are off unless ``GRADIO_ANALYTICS_ENABLED`` says otherwise.
Needs Gradio: ``pip install 'fastns[app]'``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, FastnsError, first_line
from .image import IMAGE_EXTENSIONS, open_image
from .importers import TORCH7_SUFFIXES

if TYPE_CHECKING:
    import gradio as gr
    from omegaconf import DictConfig
    from PIL import Image

    from .stylize import Stylizer

log = logging.getLogger(__name__)

#: The model files the app lists: fastns's own, and other projects' networks (fastns.importers); not
#: ``.pt``, which is also what ``format=torchscript`` writes.
MODEL_SUFFIXES = (".safetensors", ".pth", *TORCH7_SUFFIXES)
#: The second style's "no blend" choice.
NO_BLEND = "(none)"


def find_models(models: str | Path) -> dict[str, Path]:
    """The model files under ``models`` (a folder, recursively, or one file), by the name the page shows.

    A file called ``model.safetensors`` is named after its folder (``runs/candy/model.safetensors``
    -> ``candy``), others after themselves, with their folder when that is needed to tell them apart.

    Raises:
        ConfigError: ``models`` is missing or holds no model file.
    """
    root = Path(models).expanduser()
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in MODEL_SUFFIXES and p.is_file())
    else:
        raise ConfigError(f"models={models}: no such file or folder")
    if not files:
        raise ConfigError(f"models={models}: no model files ({', '.join(MODEL_SUFFIXES)}) in it")
    named: dict[str, Path] = {}
    for path in files:
        name = path.parent.name if path.stem == "model" and path.parent != root else path.stem
        if name in named or not name:
            name = path.relative_to(root).with_suffix("").as_posix() if root.is_dir() else path.name
        named[name] = path
    return named


def find_examples(examples: str | Path | None) -> list[Path]:
    """The gallery's photos: the image files in ``examples``, or scikit-image's samples when None."""
    if examples is None:
        from .data import sample_photos

        return sample_photos()
    folder = Path(examples).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"examples={examples}: no such folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


class Models:
    """Stylizers for the model files, loaded when first chosen; the ``keep`` most recently used stay loaded."""

    def __init__(self, files: dict[str, Path], *, device: str, precision: str, keep: int = 2) -> None:
        self.files = files
        self.device, self.precision, self.keep = device, precision, keep
        self._loaded: OrderedDict[str, Stylizer] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Stylizer:
        from .stylize import Stylizer

        if name not in self.files:
            raise ConfigError(f"model {name!r}: not one of {', '.join(self.files)}")
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = Stylizer.load(
                    self.files[name], device=self.device, precision=self.precision
                )
                while len(self._loaded) > self.keep:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(name)
            return self._loaded[name]


def style_spec(styles: list[str], style: str | None, second: str | None, blend: float) -> Any:
    """The stylizer's ``style=`` for the page's choices: None (one style), a name, or a blend of two.

    ``blend`` is the second style's share (0: the first style only).
    """
    if len(styles) <= 1:
        return None
    first = style if style in styles else styles[0]
    if not second or second == NO_BLEND or second == first or blend <= 0:
        return first
    if blend >= 1:
        return second
    return {first: 1.0 - float(blend), second: float(blend)}


def stylize_photo(
    models: Models,
    photo: str | None,
    model: str,
    style: str | None = None,
    second: str | None = None,
    blend: float = 0.0,
    strength: float = 1.0,
    preserve_color: bool = False,
    max_size: float | None = None,
    tile: int | None = None,
) -> Image.Image:
    """Stylise the photo file ``photo`` as the page's controls say; a user's error is one line (``FastnsError``)."""
    if not photo:
        raise ConfigError("no photo: upload one, take one with the webcam or pick an example")
    stylizer = models[model]
    image = open_image(photo)  # EXIF orientation applied, any mode -> RGB; ImageError names the file
    limit = int(max_size) if max_size else None
    return stylizer(
        image,
        strength=float(strength),
        preserve_color=bool(preserve_color),
        max_size=limit,
        tile=tile,
        style=style_spec(stylizer.styles, style, second, float(blend)),
    )


def build_app(cfg: DictConfig) -> gr.Blocks:
    """The Gradio page for ``cfg`` (fastns/configs/tools/app.yaml), not yet launched."""
    gr = _gradio()
    models = Models(find_models(cfg.models), device=str(cfg.device), precision=str(cfg.precision))
    names = list(models.files)
    examples = find_examples(cfg.examples)
    tile = int(cfg.tile) if cfg.tile else None

    def styles_of(model: str) -> tuple[Any, Any, Any]:
        """The style controls for ``model``: shown with its styles when it has several."""
        try:
            styles = models[model].styles if model else []
        except FastnsError as e:
            raise gr.Error(first_line(e)) from None
        several = len(styles) > 1
        return (
            gr.Dropdown(choices=styles, value=styles[0] if styles else None, visible=several),
            gr.Dropdown(choices=[NO_BLEND, *styles], value=NO_BLEND, visible=several),
            gr.Slider(value=0.0, visible=several),
        )

    def run(*args: Any) -> Image.Image:
        try:
            return stylize_photo(models, *args, tile=tile)
        except FastnsError as e:
            raise gr.Error(first_line(e)) from None
        except (RuntimeError, MemoryError) as e:  # e.g. out of memory: this request fails, the app serves on
            log.exception("stylisation failed")
            raise gr.Error(f"stylisation failed: {first_line(e)}") from None

    with gr.Blocks(title="fastns: neural style transfer") as app:
        gr.Markdown("## fastns: stylise a photo\nUpload a photo or take one with the webcam, choose a style.")
        with gr.Row():
            with gr.Column():
                photo = gr.Image(
                    label="Photo", sources=["upload", "webcam", "clipboard"], type="filepath", elem_id="photo"
                )
                photo.preprocess = _readable(photo.preprocess, gr)
                model = gr.Dropdown(choices=names, value=names[0], label="Model", elem_id="model")
                style = gr.Dropdown(label="Style", visible=False, elem_id="style")
                second = gr.Dropdown(label="Blend with", visible=False, elem_id="second")
                blend = gr.Slider(0, 1, value=0, step=0.05, label="Blend", visible=False, elem_id="blend")
                strength = gr.Slider(0, 1, value=1, step=0.05, label="Strength", elem_id="strength")
                preserve = gr.Checkbox(label="Preserve colour", elem_id="preserve")
                max_size = gr.Number(
                    value=cfg.max_size,
                    label="Maximum size (longest side, px; empty: the photo's own)",
                    minimum=8,
                    precision=0,
                    elem_id="max-size",
                )
                button = gr.Button("Stylise", variant="primary", elem_id="run")
            with gr.Column():
                result = gr.Image(
                    label="Stylised",
                    type="pil",
                    format="png",  # lossless, at full size: what the download button gives
                    interactive=False,
                    buttons=["download", "fullscreen"],
                    elem_id="result",
                )
        if examples:
            gr.Examples(examples=[[str(p)] for p in examples], inputs=[photo], label="Example photos")
        controls = [photo, model, style, second, blend, strength, preserve, max_size]
        button.click(run, inputs=controls, outputs=result, api_name="stylize")
        model.change(styles_of, inputs=model, outputs=[style, second, blend], api_name=False)
        app.load(styles_of, inputs=model, outputs=[style, second, blend], api_name=False)
    app.queue(default_concurrency_limit=int(cfg.concurrency), max_size=int(cfg.queue_size))
    app.fastns_allowed_paths = sorted({str(p.parent) for p in examples})  # type: ignore[attr-defined]
    return app


def _readable(preprocess: Any, gr: Any) -> Any:
    """``gr.Image.preprocess`` whose unreadable uploads give the page a one-line message, not a bare "Error".

    Gradio opens the upload with Pillow before the handler runs. Wrapped on the instance: a subclass
    of a Gradio component makes Gradio write a ``.pyi`` stub beside the module that defines it.
    """

    def wrapped(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as e:
            name = getattr(payload, "orig_name", None) or "the upload"
            raise gr.Error(f"{name}: not an image that can be read ({first_line(e)})") from None

    return wrapped


def launch(app: gr.Blocks, cfg: DictConfig, *, block: bool = True) -> str:
    """Serve ``app`` on ``cfg.host``:``cfg.port``; returns its URL (``block=False``: in a thread)."""
    app.launch(
        server_name=str(cfg.host),
        server_port=int(cfg.port),
        inbrowser=bool(cfg.open_browser),
        share=False,
        show_error=True,
        quiet=not block,
        prevent_thread_lock=not block,
        allowed_paths=getattr(app, "fastns_allowed_paths", []),
    )
    return str(app.local_url)


def run(cfg: DictConfig) -> None:
    """Serve the app until interrupted (Ctrl-C)."""
    if not 1 <= int(cfg.port) <= 65535:
        raise ConfigError(f"port={cfg.port} must be between 1 and 65535")
    app = build_app(cfg)
    log.info("serving fastns on http://%s:%s (Ctrl-C stops)", cfg.host, cfg.port)
    launch(app, cfg)


def _gradio() -> Any:
    # Gradio reports usage to its makers by default; a local tool should not phone home unasked.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise ConfigError("the app needs Gradio: pip install 'fastns[app]'") from None
    return gradio
