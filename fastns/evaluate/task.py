"""The evaluation task behind ``scripts/evaluate.py``: a config in, a report folder out.

:func:`run` checks every setting and input, evaluates each photo (:mod:`.measure`), and writes
``metrics.json``, ``report.md`` (:mod:`.report`), ``contact_sheet.png`` and ``loss_curves.png``
(:mod:`.figures`) to the output folder, each atomically. The package docstring explains what is
measured and where it departs from the paper.
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from ..errors import ConfigError, ImageError
from ..hub import sha256_file
from ..image import MIN_SIDE, load_image
from ..metrics import GRID_PERIOD, HIST_BINS, SPIKE_TOP, SSIM_SIGMA, color_histogram
from ..stylize import Stylizer
from ..stylize.temporal import make_temporal
from ..utils import as_list, atomic_write, cpu_name, resolve_device
from ..version import __version__
from .figures import write_contact_sheet, write_loss_curves
from .files import CURVES_FILE, METRICS_FILE, REPORT_FILE, REPORT_FILES, SHEET_FILE, json_safe
from .gatys import GATYS_INITS, START_NAMES
from .inputs import (
    _positive_ints,
    build_model_loss,
    find_photos,
    load_model_for_evaluation,
    load_style,
    loss_settings,
    select_styles,
)
from .measure import aggregate, droplet_share, evaluate_image
from .report import format_iterations, render_index, render_report, summary_lines
from .video import VIDEO_REPORT_FILES, evaluate_video

log = logging.getLogger(__name__)

#: Format version of metrics.json, bumped on incompatible changes.
METRICS_VERSION = 1


def _versions(device: torch.device) -> dict[str, Any]:
    """The software and hardware this run measured on (timings depend on both)."""
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = cpu_name()
    return {
        "fastns": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "hardware": hardware,
        "torch_threads": torch.get_num_threads(),
    }


def _command() -> str | None:
    """The command line that produced this run (Hydra's overrides), or None outside Hydra."""
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except Exception:  # not under @hydra.main (called from Python)
        return None
    return " ".join(["python scripts/evaluate.py", *(shlex.quote(o) for o in overrides)])


def run(cfg: DictConfig) -> Path:
    """Evaluate ``cfg.model`` on ``cfg.images`` and write the report folder ``cfg.output``.

    See ``fastns/configs/tools/evaluate.yaml`` for the keys. Every input is checked and every photo
    loaded before the long part, so a bad file fails in the first seconds and nothing is written.
    Returns the report folder.
    """
    if cfg.get("model") is None:
        raise ConfigError("missing required setting model: pass model=path/to/model.safetensors")
    if cfg.get("images") is None and cfg.get("video") is None:
        raise ConfigError(
            "missing required setting images: pass images=folder/, a file or a glob (or video=clip.mp4)"
        )
    if cfg.get("images") is not None and cfg.get("video") is not None:
        raise ConfigError("images= and video= make different reports: pass one of them")
    output = Path(str(cfg.output or "report"))
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output={output} is a file; the report needs a folder (e.g. output=report/)")
    if cfg.get("video") is not None:
        return run_video(cfg, output)
    image_size = int(cfg.image_size)
    if image_size < MIN_SIDE:
        raise ConfigError(f"image_size={image_size} must be at least {MIN_SIDE} px")
    budget = int(cfg.gatys_iterations)
    if budget < 1:
        raise ConfigError(f"gatys_iterations={budget} must be >= 1")
    inits = [str(i) for i in as_list(cfg.gatys_init)]
    bad = [i for i in inits if i not in GATYS_INITS]
    if not inits or bad or len(set(inits)) != len(inits):
        raise ConfigError(f"gatys_init={inits} must list one or both of {list(GATYS_INITS)}")
    speed_iterations = _positive_ints(cfg.speed_iterations, "speed_iterations")
    requested_sheet = _positive_ints(cfg.sheet_iterations, "sheet_iterations")
    # Iteration counts beyond the budget show the last image, labelled with its real count.
    sheet_iterations = sorted({min(n, budget) for n in requested_sheet})
    timing_runs = int(cfg.timing_runs)
    if timing_runs < 1:
        raise ConfigError(f"timing_runs={timing_runs} must be >= 1")
    seed = int(cfg.seed)
    droplet_size = cfg.get("droplet_size")
    if droplet_size is not None and int(droplet_size) < MIN_SIDE:
        raise ConfigError(f"droplet_size={droplet_size} must be at least {MIN_SIDE} px, or null")
    device = resolve_device(cfg.device)
    torch.manual_seed(seed)

    # Inputs, cheapest first, all before the long part.
    model_path = Path(str(cfg.model))
    net, info = load_model_for_evaluation(model_path)
    cfg_style = OmegaConf.to_container(cfg.style) if isinstance(cfg.style, DictConfig) else cfg.style
    selected = select_styles(cfg_style, info, model_path)
    photos = find_photos(cfg.images, output, cfg.get("max_images"))
    contents = []
    for p in photos:
        # (1, 3, H, W), longest side image_size; kept on the CPU until its turn (many photos, small GPU)
        img = load_image(p, size=image_size)
        if min(img.shape[-2:]) < MIN_SIDE:
            raise ImageError(
                f"{p}: {img.shape[-1]}x{img.shape[-2]} px at image_size={image_size} is too small "
                f"(the loss needs {MIN_SIDE} px on each side); raise image_size or leave it out"
            )
        contents.append(img)
    styles = [load_style(cfg_style, info, model_path, model_style=desc) for _, desc in selected]
    loss_cfg = (
        OmegaConf.to_container(cfg.loss, resolve=True) if isinstance(cfg.loss, DictConfig) else cfg.loss
    )
    settings = loss_settings(info, loss_cfg, model_path)
    loss_fn = build_model_loss(settings, settings["vgg"] != (info.loss.get("vgg") or {}), device)

    # The inference path users get (border, folded norms, layout).
    if cfg.get("input_noise") is not None:
        net.set_input_noise(float(cfg.input_noise))  # the stylizer and the droplet measure both use it
    stylizer = Stylizer(net, info=info, device=device, precision=str(cfg.precision), border=int(cfg.border))

    # One untimed forward and backward pass of the loss: the first one pays for lazy set-up
    # (allocator, oneDNN/cuDNN kernel choice), which must not count as a Gatys iteration.
    warm = contents[0].to(device).clone().requires_grad_(True)
    loss_fn.set_style(styles[0].tensors(styles[0].size, device), styles[0].blend_weights)
    loss_fn.set_content(warm.detach())
    loss_fn(warm)["total"].backward()

    settings_run = dict(
        image_size=image_size,
        budget=budget,
        inits=inits,
        speed_iterations=speed_iterations,
        sheet_iterations=sheet_iterations,
        timing_runs=timing_runs,
        seed=seed,
        device=device,
        droplet_size=None if droplet_size is None else int(droplet_size),
        net=net,
    )
    if len(selected) == 1:
        name, desc = selected[0]
        _evaluate_style(
            cfg,
            model_path,
            info,
            name,
            desc,
            styles[0],
            stylizer,
            loss_fn,
            photos,
            contents,
            output,
            **settings_run,
        )
        return output
    # A network of several styles: a full report per style in <output>/<name>/, and an index.
    done = []
    for (name, desc), style in zip(selected, styles, strict=True):
        log.info("style %d of %d: %s", len(done) + 1, len(selected), name)
        folder = output / str(name)
        metrics = _evaluate_style(
            cfg,
            model_path,
            info,
            name,
            desc,
            style,
            stylizer,
            loss_fn,
            photos,
            contents,
            folder,
            **settings_run,
        )
        done.append((str(name), metrics))
    index = {
        "metrics_version": METRICS_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": _command(),
        "model": {"path": str(model_path), "sha256": sha256_file(model_path), "styles": info.style_names},
        "styles": {
            name: {"report": f"{name}/{REPORT_FILE}", "aggregate": m["aggregate"]} for name, m in done
        },
    }
    with atomic_write(output / METRICS_FILE) as tmp:
        tmp.write_text(json.dumps(json_safe(index), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    with atomic_write(output / REPORT_FILE) as tmp:
        tmp.write_text(render_index(index, {name: m for name, m in done}), encoding="utf-8")
    log.info("wrote %s (%s, and a report per style)", output, ", ".join((METRICS_FILE, REPORT_FILE)))
    return output


def _evaluate_style(
    cfg: DictConfig,
    model_path: Path,
    info: Any,
    name: str | None,
    desc: Mapping,
    style: Any,
    stylizer: Stylizer,
    loss_fn: Any,
    photos: list[Path],
    contents: list[torch.Tensor],
    output: Path,
    *,
    image_size: int,
    budget: int,
    inits: list[str],
    speed_iterations: list[int],
    sheet_iterations: list[int],
    timing_runs: int,
    seed: int,
    device: torch.device,
    droplet_size: int | None,
    net: Any,
) -> dict[str, Any]:
    """Evaluate one of the network's styles (``name``; None: its only style) and write its report folder.

    ``net``: the network in its training form, for :func:`droplet_share` at ``droplet_size`` px
    (None: not measured).
    """
    style_images = style.tensors(style.size, device)
    loss_fn.set_style(style_images, style.blend_weights)
    weights = style.blend_weights or [1.0] * len(style_images)
    style_hist = sum(w * color_histogram(s) for w, s in zip(weights, style_images, strict=True)) / sum(
        weights
    )
    log.info(
        "evaluating %s (style %s) on %d image(s) at %d px: %s %s (weights: %s), Gatys L-BFGS %d iterations from %s, device %s",
        model_path,
        style.name,
        len(photos),
        image_size,
        loss_fn.encoder.arch,
        "normalised loss" if loss_fn.normalize else "loss",
        loss_fn.encoder.weights_source,
        budget,
        " and ".join(inits),
        device,
    )

    records, pictures = [], []
    bar = tqdm(
        total=len(photos) * len(inits) * budget,
        desc="gatys" if name is None else f"gatys ({name})",
        unit="it",
        disable=not bool(cfg.progress),
        dynamic_ncols=True,
    )
    try:
        for index, (path, content) in enumerate(zip(photos, contents, strict=True)):
            bar.set_postfix_str(f"image {index + 1}/{len(photos)}: {path.name}", refresh=False)
            record, pics = evaluate_image(
                path,
                content.to(device),
                stylizer=stylizer,
                loss_fn=loss_fn,
                style_hist=style_hist,
                inits=inits,
                iterations=budget,
                speed_iterations=speed_iterations,
                snapshot_at=sheet_iterations,
                timing_runs=timing_runs,
                seed=seed,
                on_iteration=lambda: bar.update(1),
                style=name,
            )
            if droplet_size is not None:
                # At a size where droplets show (they are a few blobs at 512 px, not at 128 px).
                record["network"]["droplet_share"] = droplet_share(
                    net,
                    load_image(path, size=droplet_size),
                    int(cfg.border),
                    None if name is None else stylizer.style_weights(name).cpu(),
                )
            # An early-stopped run does not fill its share of the bar: keep the total honest.
            bar.n = (index + 1) * len(inits) * budget
            bar.refresh()
            records.append(record)
            pictures.append(pics)
            log.info(
                "%s: network loss %.4g in %.3g s; reaches Gatys %s; SSIM %.3f",
                path.name,
                record["network"]["loss"]["total"],
                record["speed"]["network_seconds"],
                ", ".join(
                    f"from {START_NAMES[k]} at {format_iterations(record['gatys'][k]['equivalent_iterations'], budget)} it"
                    for k in inits
                ),
                record["network"]["ssim"],
            )
    finally:
        bar.close()

    summary = aggregate(records, inits, budget, speed_iterations)
    network = dict(info.model)
    metrics = {
        "metrics_version": METRICS_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": _command(),
        "config": OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg),
        "model": {
            "path": str(model_path),
            "sha256": sha256_file(model_path),
            "network": network,
            # a network of several styles: the style evaluated here (the others: info.style_names)
            "style": dict(desc),
            "loss": info.loss,
            "training": info.training,
            "fastns_version": info.fastns_version,
        },
        "evaluation": {
            "image_size": image_size,
            "gatys_iterations": budget,
            "gatys_init": inits,
            "gatys_optimizer": "lbfgs",
            "seed": seed,
            "border": int(cfg.border),
            "precision": str(stylizer.dtype).removeprefix("torch."),
            "timing_runs": timing_runs,
            "sheet_iterations": sheet_iterations,
            "speed_iterations": speed_iterations,
            "loss": loss_fn.config(),
            "style": {
                "name": style.name,
                "sources": style.sources,
                "size": style.size,
                "blend_weights": style.blend_weights,
            },
            "color_histogram": f"joint RGB, {HIST_BINS}^3 bins, symmetric chi-squared distance (0 = same colours, 1 = disjoint)",
            "ssim": f"scikit-image structural_similarity on BT.601 luminance, Gaussian window sigma {SSIM_SIGMA:g}, data range 1",
            "droplet_size": droplet_size,
            "droplet_share": f"median over channels of the share of the variance held by the top {SPIKE_TOP:.1%} of pixels, at the input of the network's last normalisation layer, at droplet_size px",
            "grid": f"RMS of the {GRID_PERIOD}x{GRID_PERIOD} phase-mean pattern of the BT.601 luminance minus its {GRID_PERIOD}x{GRID_PERIOD} moving average, in 1/255",
        },
        "versions": _versions(device),
        "images": records,
        "aggregate": summary,
    }
    if name is not None:
        metrics["evaluation"]["network_style"] = name
    metrics = json_safe(metrics)

    output.mkdir(parents=True, exist_ok=True)
    write_contact_sheet(output / SHEET_FILE, records, pictures, inits, sheet_iterations)
    write_loss_curves(output / CURVES_FILE, records, inits, budget)
    with atomic_write(output / METRICS_FILE) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    with atomic_write(output / REPORT_FILE) as tmp:
        tmp.write_text(render_report(metrics), encoding="utf-8")
    for line in summary_lines(metrics):
        log.info("%s", line)
    log.info("wrote %s (%s)", output, ", ".join(REPORT_FILES))
    return metrics


def run_video(cfg: DictConfig, output: Path) -> Path:
    """``video=clip.mp4``: the flicker report (:mod:`.video`) of the model, per frame and with
    ``temporal=flow``, and of the ``compare`` model if given, into ``output``."""
    device = resolve_device(cfg.device)
    frames = cfg.get("frames")
    frames = None if frames is None else int(frames)
    start, loss_frames = int(cfg.get("start") or 0), int(cfg.get("loss_frames") or 8)
    if frames is not None and frames < 2:
        raise ConfigError(f"frames={frames} must be at least 2 (the warping error compares frame pairs)")
    if start < 0 or loss_frames < 1:
        raise ConfigError(f"start={start} must be >= 0 and loss_frames={loss_frames} >= 1")
    max_size = cfg.get("max_size")
    max_size = None if max_size is None else int(max_size)
    flow = dict(cfg.get("flow") or {})
    video = Path(str(cfg.video))
    model_path = Path(str(cfg.model))
    cfg_style = OmegaConf.to_container(cfg.style) if isinstance(cfg.style, DictConfig) else cfg.style
    models = [(model_path, *load_model_for_evaluation(model_path))]
    if cfg.get("compare") is not None:
        models.append((Path(str(cfg.compare)), *load_model_for_evaluation(Path(str(cfg.compare)))))
    chosen = []
    for path, _, info in models:
        selected = select_styles(cfg_style, info, path)
        if len(selected) > 1:
            raise ConfigError(
                f"{path} holds {len(selected)} styles; a video report is for one: pass style=<name> "
                f"(the network's styles: {', '.join(info.style_names)})"
            )
        chosen.append(selected[0])
    info = models[0][2]
    style = load_style(cfg_style, info, model_path, model_style=chosen[0][1])
    loss_cfg = (
        OmegaConf.to_container(cfg.loss, resolve=True) if isinstance(cfg.loss, DictConfig) else cfg.loss
    )
    settings = loss_settings(info, loss_cfg, model_path)
    loss_fn = build_model_loss(settings, settings["vgg"] != (info.loss.get("vgg") or {}), device)
    loss_fn.set_style(style.tensors(style.size, device), style.blend_weights)

    methods = []
    for n, ((_, net, minfo), (name, _)) in enumerate(zip(models, chosen, strict=True)):
        stylizer = Stylizer(
            net, info=minfo, device=device, precision=str(cfg.precision), border=int(cfg.border)
        )
        prefix = "" if n == 0 else "compare: "
        methods.append((f"{prefix}per frame", stylizer, None, name))
        methods.append((f"{prefix}temporal=flow", stylizer, make_temporal("flow", **flow), name))
    extra = {
        "command": _command(),
        "config": OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg),
        "model": {"path": str(model_path), "sha256": sha256_file(model_path), "style": chosen[0][1]},
        "versions": _versions(device),
    }
    if len(models) > 1:
        extra["compare"] = {
            "path": str(models[1][0]),
            "sha256": sha256_file(models[1][0]),
            "style": chosen[1][1],
            "loss": models[1][2].loss,
        }
    evaluate_video(
        video,
        output,
        methods,
        loss_fn,
        start=start,
        frames=frames,
        max_size=max_size,
        loss_frames=loss_frames,
        flow_preset=str(flow.get("preset", "medium")),
        extra=extra,
    )
    log.info("wrote %s (%s)", output, ", ".join(VIDEO_REPORT_FILES))
    return output
