"""Exports of a trained network (behind ``scripts/export.py``).

- ``safetensors``: the fastns model file, from a training checkpoint (``.ckpt``) or another project's
  network (``.pth``, ``.t7``: ``fastns.importers``).
- ``torchscript``: a scripted module (``torch.jit.load``, or libtorch from C++), no fastns needed.
- ``onnx``: an ONNX graph for onnxruntime, TensorRT, OpenVINO, browsers... (needs the ``onnx`` and
  ``onnxscript`` packages: ``pip install 'fastns[export]'``).
- ``web``: a static folder whose page stylises photos in the browser with that ONNX graph
  (:mod:`fastns.webexport`).

The TorchScript and ONNX files hold :class:`fastns.transformer.PaddedNet`: the network *with* the
stylizer's reflection border, so they give the same images as ``scripts/stylize.py`` at
``strength=1``. Input ``images``: float32 ``(N, 3, H, W)`` RGB in [0, 1], any N, H, W (ONNX: H and
W at least ``border + 1``; 41 for networks imported from jcjohnson/fast-neural-style); output
``stylised``: the same shape, in [0, 1]. Both carry the fastns metadata (format, style, network
description) as JSON: ONNX in ``metadata_props``, TorchScript in the extra file ``fastns.json``.
Each export is checked after writing against the PyTorch network on random images of two odd
sizes (max abs difference <= 1e-3; ONNX with onnxruntime when it is installed) and only then
renamed into place.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import ConfigError, FastnsError, ModelFileError, first_line
from .hfhub import PREFIX as HF_PREFIX
from .hfhub import is_hf, write_folder
from .importers import IMPORTED_SUFFIXES, load_network
from .modelfile import ModelInfo, save_model
from .sources import resolve_model
from .transformer import DEFAULT_BORDER, PaddedNet, TransformerNet
from .utils import atomic_write
from .zoo import PREFIX as ZOO_PREFIX
from .zoo import is_zoo

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)

FORMATS = {"safetensors": ".safetensors", "torchscript": ".pt", "onnx": ".onnx", "hub": "", "web": ""}
#: Largest output difference from PyTorch that an export may show, on [0, 1] images.
TOLERANCE = 1e-3
#: Image sizes the exports are checked on: odd, non-square, not multiples of 4.
_CHECK_SHAPES = ((1, 3, 67, 45), (2, 3, 50, 90))


class ExportError(FastnsError):
    """An export could not be written or does not match the PyTorch network."""


def metadata(info: ModelInfo, border: int) -> dict[str, str]:
    """String metadata for an exported graph: the model file's, plus how to call the graph."""
    meta = {
        **info.metadata(),
        "border": str(border),
        "input": "images: float32 (N, 3, H, W) RGB in [0, 1]",
        "output": "stylised: float32 (N, 3, H, W) RGB in [0, 1]",
    }
    if info.num_styles > 1:
        meta["style_names"] = json.dumps(info.style_names)
        meta["input"] += (
            f"; style_weights: float32 ({info.num_styles},), one weight per style of style_names "
            "(one-hot: a style; a mixture: a blend); default: the first style"
        )
    return meta


def _check_styles(num_styles: int) -> list[torch.Tensor | None]:
    """The style weights an export is checked with: none (the first style), each style, an even blend."""
    if num_styles == 1:
        return [None]
    return [None, *torch.eye(num_styles), torch.full((num_styles,), 1.0 / num_styles)]


def _check(run: Any, reference: torch.nn.Module, what: str, path: Path, num_styles: int = 1) -> float:
    """Max abs difference between ``run(x, w)`` and ``reference(x, w)`` on random images; raises if too large.

    ``w``: style weights (several styles; :func:`_check_styles`), or None.
    """
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for shape, w in itertools.product(_CHECK_SHAPES, _check_styles(num_styles)):
        x = torch.rand(shape, generator=gen)
        with torch.inference_mode():
            expected = reference(x) if w is None else reference(x, w)
        got = torch.as_tensor(run(x) if w is None else run(x, w))
        if got.shape != expected.shape:
            raise ExportError(f"{path}: the {what} gives shape {tuple(got.shape)} for {shape}")
        worst = max(worst, (got.float() - expected).abs().max().item())
    if not worst <= TOLERANCE:
        raise ExportError(
            f"{path}: the {what} differs from PyTorch by {worst:.2e} (> {TOLERANCE}); not written"
        )
    return worst


def export_torchscript(
    net: TransformerNet,
    info: ModelInfo,
    output: str | Path,
    border: int = DEFAULT_BORDER,
    verify: bool = True,
) -> Path:
    """Write ``net`` (with the border) as TorchScript, checked against PyTorch before it is renamed into place."""
    output = Path(output)
    module = PaddedNet(net.cpu().float().eval(), border).eval()
    extra = {"fastns.json": json.dumps(metadata(info, border))}
    # PyTorch deprecates TorchScript in favour of torch.export, but it is still what libtorch (C++)
    # and older deployments load: the warnings are about PyTorch's plans, not this file.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        scripted = torch.jit.script(module)  # scripting, not tracing: sizes stay dynamic
        with atomic_write(output) as tmp:
            torch.jit.save(scripted, str(tmp), _extra_files=extra)
            if verify:
                loaded = torch.jit.load(str(tmp), map_location="cpu")
                diff = _check(loaded, module, "TorchScript module", output, net.num_styles)
                log.info("TorchScript check: max abs difference from PyTorch %.2e", diff)
    return output


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The ONNX exporter and its optimiser log every rewrite at INFO; keep warnings and errors."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(
    net: TransformerNet,
    info: ModelInfo,
    output: str | Path,
    border: int = DEFAULT_BORDER,
    verify: bool = True,
    opset: int | None = None,
) -> Path:
    """Write ``net`` (with the border) as ONNX with dynamic batch, height and width.

    Uses PyTorch's ``torch.export``-based exporter; checked with onnxruntime when installed.
    """
    try:
        import onnx
        import onnxscript  # noqa: F401 (the exporter's dependency: fail here with a clear message)
    except ImportError as e:
        raise ConfigError(
            f"format=onnx needs the onnx and onnxscript packages ({e.name} is missing): pip install 'fastns[export]'"
        ) from None
    from torch.export import Dim

    output = Path(output)
    module = PaddedNet(net.cpu().float().eval(), border).eval()
    # Reflection padding needs sides > border (> 40 for reflect-start networks, which pad by 40 px).
    pad = max(border, net.start_pad)
    side = {"min": pad + 1, "max": 1 << 15}
    dynamic: dict[str, Any] = {
        "images": {0: Dim("batch", min=1, max=1024), 2: Dim("height", **side), 3: Dim("width", **side)}
    }
    example: tuple[torch.Tensor, ...] = (torch.rand(1, 3, 4 * pad + 8, 4 * pad + 12),)
    names = ["images"]
    if net.num_styles > 1:  # the style weights (N,): a second input
        example += (torch.full((net.num_styles,), 1.0 / net.num_styles),)
        dynamic["style_weights"] = None
        names.append("style_weights")
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                input_names=names,
                output_names=["stylised"],
                dynamic_shapes=dynamic,
                opset_version=opset,
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types; one line is what a user can act on
        raise ExportError(f"{output}: ONNX export failed ({first_line(e)})") from None
    proto = program.model_proto
    if net.num_styles > 1:
        # An initializer of the input's name is its default value (ONNX IR >= 4): the first style.
        first = torch.zeros(net.num_styles)
        first[0] = 1.0
        proto.graph.initializer.append(onnx.numpy_helper.from_array(first.numpy(), "style_weights"))
    proto.doc_string = (
        f"fastns style network ({info.style.get('name') or 'style'}): images in [0, 1] -> stylised"
    )
    for key, value in metadata(info, border).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_write(output) as tmp:
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp))
        if verify:
            try:
                import onnxruntime as ort
            except ImportError:
                log.info("onnxruntime is not installed: skipped checking the ONNX file against PyTorch")
            else:
                options = ort.SessionOptions()
                options.log_severity_level = 3  # not the notice that style_weights' default is not folded
                session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])

                def run_onnx(x: torch.Tensor, w: torch.Tensor | None = None) -> Any:
                    feed = (
                        {"images": x.numpy()}
                        if w is None
                        else {"images": x.numpy(), "style_weights": w.numpy()}
                    )
                    return session.run(None, feed)[0]

                diff = _check(run_onnx, module, "ONNX graph", output, net.num_styles)
                log.info("onnxruntime check: max abs difference from PyTorch %.2e", diff)
    return output


def run(cfg: DictConfig) -> Path:
    """Export ``cfg.model`` (a model file or training checkpoint) to ``cfg.format`` at ``cfg.output``.

    ``format=null`` takes the format from ``output``'s extension (``.onnx``, ``.pt``/``.ts``,
    ``.safetensors``), else writes the safetensors model file. ``format=hub`` writes a Hugging Face
    Hub-ready folder (:mod:`fastns.hfhub`); ``format=web`` a static page folder (:mod:`fastns.webexport`,
    ``cfg.web.runtime``).
    """
    src = resolve_model(cfg.model)  # zoo:<name> and hf:<repo> are fetched (cached) first
    fetched = _fetched_name(str(cfg.model))
    fmt = cfg.format
    if fmt is None:
        suffix = Path(cfg.output).suffix.lower() if cfg.output else ""
        fmt = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".pth": "torchscript"}.get(
            suffix, "safetensors"
        )
    fmt = str(fmt)
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not supported; use one of {sorted(FORMATS)}")
    if cfg.output:
        output = Path(cfg.output)
    elif fmt in ("hub", "web"):
        output = Path(f"{fetched}_{fmt}") if fetched else src.with_name(f"{src.stem}_{fmt}")
    elif fetched:  # in the working folder, not in a cache: zoo:jcjohnson/candy -> jcjohnson-candy.onnx
        output = Path(fetched + FORMATS[fmt])
    else:
        output = src.with_suffix(FORMATS[fmt])
    if fmt == "safetensors" and not fetched and src.suffix.lower() not in (".ckpt", *IMPORTED_SUFFIXES):
        raise ConfigError(
            f"model={src}: format=safetensors turns a training checkpoint (.ckpt), a pytorch/examples "
            "network (.pth) or a jcjohnson/fast-neural-style network (.t7) into a model file; for a model "
            "file use format=onnx, torchscript, hub or web"
        )
    if output.resolve() == src.resolve():
        raise ConfigError(f"output={output} is the input file; refusing to overwrite it")
    if not src.is_file():
        raise ModelFileError(f"{src}: no such model file")
    border = int(cfg.border)
    if border < 0:
        raise ConfigError(f"border={border} must be >= 0")
    net, info = load_network(src)
    if fmt == "safetensors":
        path = save_model(
            output, net, style=info.style, loss=info.loss, training=info.training, styles=info.styles
        )
    elif fmt == "hub":
        path = write_folder(net, info, output, report=cfg.get("report"))
    elif fmt == "web":
        from .webexport import write_web  # imports this module

        runtime = (cfg.get("web") or {}).get("runtime")
        path = write_web(net, info, output, border=border, runtime=runtime, verify=bool(cfg.verify))
    else:
        exporter = export_onnx if fmt == "onnx" else export_torchscript
        path = exporter(net, info, output, border=border, verify=bool(cfg.verify))
    log.info("wrote %s", path)
    return path


def _fetched_name(model: str) -> str | None:
    """A file name for a network fetched by name: ``zoo:jcjohnson/candy`` -> ``jcjohnson-candy``,
    ``hf:user/candy@v2`` -> ``candy``; None for a local file."""
    if is_zoo(model):
        return model[len(ZOO_PREFIX) :].replace("/", "-")
    if is_hf(model):
        return model[len(HF_PREFIX) :].partition("@")[0].rsplit("/", 1)[-1]
    return None
