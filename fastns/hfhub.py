"""Hugging Face Hub folders: one written for a model file (``format=hub``), one read by name (``model=hf:``).

A Hub-ready folder (``python scripts/export.py model=... format=hub output=hub/candy/``) holds:

- ``model.safetensors``: the fastns model file, unchanged (weights + the network's description);
- ``config.json``: the same description as JSON (network, style, loss, training), readable without
  fastns, e.g. by the Hub's web page;
- ``README.md``: the model card, with the Hub's metadata header (``library_name: fastns``,
  ``pipeline_tag: image-to-image``), the painting, a sample stylisation, how to use it, the training
  summary, and the evaluation numbers when the report of ``scripts/evaluate.py`` is given
  (``report=path/to/report/``);
- ``style.jpg`` (the painting, when its file or cached download is available) and ``sample.jpg``
  (scikit-image's astronaut photo beside its stylisation).

Upload it with ``huggingface-cli upload user/candy hub/candy/`` (or the web page). Anyone then
stylises with ``model=hf:user/candy`` (``@revision`` optional): :func:`fetch` downloads
``model.safetensors`` with ``huggingface_hub`` (the optional extra ``fastns[hub]``) into the Hub's
own cache, and ``HF_HUB_OFFLINE=1`` uses that cache alone. The folder is written under a temporary
name and renamed into place, so an interrupted export leaves no half-written folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import ConfigError, DownloadError, FastnsError, ModelFileError, first_line
from .modelfile import FORMAT, FORMAT_VERSION, ModelInfo, save_model
from .transformer import TransformerNet
from .utils import atomic_folder

#: ``model=`` values that name a Hugging Face Hub repository start with this.
PREFIX = "hf:"
#: The files of a Hub-ready folder.
MODEL_FILE, CONFIG_FILE, CARD_FILE, STYLE_FILE, SAMPLE_FILE = (
    "model.safetensors",
    "config.json",
    "README.md",
    "style.jpg",
    "sample.jpg",
)
#: Longest side of the pictures in the folder, px.
PICTURE_SIZE = 512


def is_hf(model: str | os.PathLike) -> bool:
    return isinstance(model, str) and model.startswith(PREFIX)


def fetch(spec: str) -> Path:
    """The model file of Hub repository ``spec`` (``user/repo`` or ``user/repo@revision``), downloaded once.

    Raises:
        ModelFileError: ``huggingface_hub`` is not installed.
        DownloadError: the repository, revision or file cannot be had (offline: not in the cache).
    """
    repo, _, revision = spec.partition("@")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ModelFileError(
            f"model=hf:{spec} needs the huggingface_hub package: pip install 'fastns[hub]'"
        ) from None
    try:
        return Path(hf_hub_download(repo_id=repo, filename=MODEL_FILE, revision=revision or None))
    except Exception as e:  # offline and not cached, no such repo or revision, a bad repo id, HTTP errors
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        hint = (
            "HF_HUB_OFFLINE is set and it is not in the local Hub cache"
            if offline
            else "check the name, or download model.safetensors yourself and pass model=/path/to/it"
        )
        raise DownloadError(
            f"model=hf:{spec}: cannot get {MODEL_FILE} ({type(e).__name__}: {first_line(e)}); {hint}"
        ) from None


# -- writing a folder ---------------------------------------------------------------------------------


def write_folder(
    net: TransformerNet,
    info: ModelInfo,
    output: str | os.PathLike,
    *,
    report: str | os.PathLike | None = None,
) -> Path:
    """Write the Hub-ready folder of ``net`` at ``output`` (module docstring); returns its path.

    Raises:
        ConfigError: ``output`` exists and is not an empty folder, or ``report`` has no metrics.json.
    """
    output = Path(output)
    metrics = _read_metrics(report) if report else None
    with atomic_folder(output, "format=hub") as tmp:
        save_model(
            tmp / MODEL_FILE,
            net,
            style=info.style,
            loss=info.loss,
            training=info.training,
            styles=info.styles,
        )
        config = {"library_name": "fastns", "format": FORMAT, "format_version": FORMAT_VERSION}
        config |= {"fastns_version": info.fastns_version, **info.as_dict()}
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        has_style = _write_style_image(info, tmp / STYLE_FILE)
        _write_sample(net, info, tmp / SAMPLE_FILE)
        (tmp / CARD_FILE).write_text(model_card(info, has_style=has_style, metrics=metrics))
    return output


def _read_metrics(report: str | os.PathLike) -> dict[str, Any]:
    from .evaluate.files import METRICS_FILE

    path = Path(report)
    path = path / METRICS_FILE if path.is_dir() else path
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"report={report}: no readable {METRICS_FILE} of scripts/evaluate.py ({first_line(e)})"
        ) from None


def _write_style_image(info: ModelInfo, path: Path) -> bool:
    """The painting (the first style source), if its file or cached download is here; else False."""
    from .hub import cached_path, is_url

    for source in info.style.get("sources") or []:
        local = cached_path(source) if is_url(source) else Path(str(source))
        if local.is_file():
            try:
                with Image.open(local) as im:
                    im = im.convert("RGB")
                    im.thumbnail((PICTURE_SIZE, PICTURE_SIZE), Image.Resampling.LANCZOS)
                    im.save(path, quality=90)
                return True
            except (OSError, ValueError):
                continue
    return False


def _write_sample(net: TransformerNet, info: ModelInfo, path: Path) -> None:
    """scikit-image's astronaut photo (the first of the quickstart's samples) and its stylisation, side by side."""
    from .data import sample_photos
    from .image import open_image, resize_pil
    from .stylize import Stylizer

    photo = resize_pil(open_image(sample_photos()[0]), PICTURE_SIZE // 2)
    stylised = Stylizer(net, info=info, device="cpu", precision="fp32")(photo)
    sheet = Image.new("RGB", (photo.width * 2, photo.height))
    sheet.paste(photo, (0, 0))
    sheet.paste(stylised, (photo.width, 0))
    sheet.save(path, quality=90)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def model_card(info: ModelInfo, *, has_style: bool, metrics: dict[str, Any] | None = None) -> str:
    """The folder's ``README.md``: Hub metadata, pictures, usage, training and evaluation."""
    name = info.style.get("name") or "style"
    lines = [
        "---",
        "library_name: fastns",
        "pipeline_tag: image-to-image",
        "tags: [style-transfer, neural-style-transfer, fastns]",
        "---",
        "",
        f"# {name}: a fast neural style network",
        "",
        "A feed-forward style network (Johnson, Alahi & Fei-Fei 2016) trained with "
        "[fastns](https://github.com/fastns/fastns): one forward pass stylises a photo of any size.",
        "",
    ]
    if has_style:
        lines += [f"![the painting]({STYLE_FILE})", ""]
    lines += [f"![a photo and its stylisation]({SAMPLE_FILE})", ""]
    lines += [
        "## Use",
        "",
        "```bash",
        "pip install 'fastns[hub]'",
        "fastns stylize model=hf:<this repo> input=photo.jpg output=out.jpg",
        "```",
        "",
        f"or download `{MODEL_FILE}` and pass `model=/path/to/{MODEL_FILE}`. It is a safetensors file "
        "(no code runs when it loads); its description is also in `config.json`.",
        "",
        "## Network",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| `{k}` | {_fmt(v)} |" for k, v in sorted(info.model.items())),
        "",
    ]
    training = {k: v for k, v in info.training.items() if not isinstance(v, dict) and k != "run_dir"}
    if training:
        lines += [
            "## Training",
            "",
            "| | |",
            "|---|---|",
            *(f"| {k} | {_fmt(v)} |" for k, v in training.items()),
        ]
        losses = info.training.get("final_losses") or {}
        if losses:
            lines += ["", "Final loss terms: " + ", ".join(f"{k} {_fmt(v)}" for k, v in losses.items()) + "."]
        lines += [""]
    if info.loss:
        weights = {k: info.loss[k] for k in ("content_weight", "style_weight", "tv_weight") if k in info.loss}
        lines += [
            "Loss: "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in weights.items())
            + "; the full settings are in `config.json`.",
            "",
        ]
    if metrics:
        lines += _evaluation_lines(metrics)
    return "\n".join(lines).rstrip() + "\n"


def _evaluation_lines(metrics: dict[str, Any]) -> list[str]:
    """The headline numbers of an evaluation report (docs/evaluation.md explains them)."""
    from .evaluate.report import summary_lines

    try:
        summary = summary_lines(metrics)
    except (KeyError, TypeError, ValueError, FastnsError):
        return []
    return [
        "## Evaluation",
        "",
        "From `scripts/evaluate.py` (fastns docs/evaluation.md):",
        "",
        *(f"- {s}" for s in summary),
        "",
    ]
