"""Evaluation: a trained network against the Gatys optimisation it approximates.

Johnson, Alahi & Fei-Fei (2016) train a feed-forward network to minimise, in one forward pass,
the same perceptual loss that Gatys et al. minimise per image with L-BFGS. Their Figure 5 asks
how many L-BFGS iterations the optimisation needs to reach the network's loss (50-100 in the
paper), and their Table 1 how much faster the network is. This module answers both questions on
the user's own photos, with the model's own loss, and adds two measurements that need no VGG:

- **Perceptual loss** of the network's output, every term the model was trained on
  (``content/relu2_2``, ``style/relu3_3``, ``tv``, ``content``, ``style``, ``total``), computed by
  the one :class:`~fastns.losses.PerceptualLoss` built from the settings in the model file.
- **Equivalent Gatys iterations** (Figure 5): L-BFGS Gatys optimisation of the same photo with the
  same loss, from white noise and from the photo itself, for ``gatys_iterations``; the first
  iteration whose loss is at or below the network's (:func:`equivalent_iterations`), or none
  (``> budget``) if the budget ends first.
- **Speed** (Table 1): the network's forward time (warm-up, then the median of several passes)
  against the Gatys time for 100 / 300 / 500 iterations, measured in this run (per-iteration time
  x N where N is beyond the budget), and the speed-up ratios.
- **Content and colour**: SSIM between the luminance of the output and of the photo
  (:func:`ssim_luminance`), and the chi-squared distance between the joint RGB colour histograms
  of the output and of the style image (:func:`histogram_distance`; 0 = identical colours).
  Both are also given for the Gatys results, and the colour distance for the photo itself, so
  each number has a reference.
- **Grid pattern**: the strength of a fixed 4x4-pixel pattern (:func:`fastns.metrics.grid_pattern`),
  the cross-hatch a network with two x2 stages can learn (docs/training.md), for the photo, the
  network and the Gatys results. Photos score below ~1 (in 1/255).

Choices, and where they depart from the paper:

- Photos are resized so that their **longest side** is ``image_size`` and keep their aspect
  ratio: no centre crop, as the stylizer treats them. Johnson et al. used 256x256 / 512x512 /
  1024x1024 squares.
- The network's output is what a user gets from ``scripts/stylize.py``: the
  :class:`~fastns.stylize.Stylizer` with its reflection ``border`` (``border=0``: the bare network
  as trained) in ``precision`` (fp32 by default, as Johnson et al. timed it).
- The style targets use the style image at the size it had in training (``ModelInfo.style.size``,
  px), whatever ``image_size`` is: the network's strokes have a fixed size in pixels, so that is
  the style it learned. The Gatys runs use the very same targets.
- Gatys' pixels are optimised unconstrained (as in :func:`fastns.optimize.optimize_image` and
  neural-style); its losses are those of the unclamped image, while the network's output is in
  [0, 1] by construction.

Everything runs seeded (white noise, random VGG weights), so a rerun gives the same numbers
except for the timings. :func:`run` is the config-driven task behind ``scripts/evaluate.py``; it
writes ``metrics.json``, ``report.md``, ``contact_sheet.png`` and ``loss_curves.png``, each
atomically.
"""

from __future__ import annotations

import copy
import datetime
import glob
import json
import logging
import math
import os
import platform
import shlex
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from . import __version__
from .color import luminance
from .errors import ConfigError, FastnsError, ImageError, ModelFileError
from .hub import sha256_file
from .image import load_image, tensor_to_pil
from .losses import PerceptualLoss
from .metrics import GRID_PERIOD, grid_pattern
from .modelfile import ModelInfo, load_model
from .optimize import build_loss, optimize_image, white_noise
from .style import Style
from .utils import as_list, atomic_write, resolve_device

if TYPE_CHECKING:
    from .stylize import Stylizer

log = logging.getLogger(__name__)

#: The files a report folder receives.
METRICS_FILE, REPORT_FILE, SHEET_FILE, CURVES_FILE = (
    "metrics.json",
    "report.md",
    "contact_sheet.png",
    "loss_curves.png",
)
REPORT_FILES = (METRICS_FILE, REPORT_FILE, SHEET_FILE, CURVES_FILE)
#: Where a Gatys optimisation can start: Gatys' white noise, or the photo itself.
GATYS_INITS = ("noise", "content")
#: How the report names them.
START_NAMES = {"noise": "white noise", "content": "the photo"}
#: Bins per channel of the joint RGB histogram (8^3 = 512 colours): coarse enough that a few
#: hundred thousand pixels fill it smoothly, fine enough to tell Starry Night's blues from a photo's.
HIST_BINS = 8
#: Forward passes run before timing the network (first-call allocation, oneDNN/cuDNN kernel choice).
WARMUP_RUNS = 2
#: Smallest side of a photo at ``image_size``: the VGG's relu4_x layers need 8 px (three poolings).
MIN_SIDE = 8
#: Format version of metrics.json, bumped on incompatible changes.
METRICS_VERSION = 1


# --------------------------------------------------------------------------------------------------
# Measurements (pure functions)
# --------------------------------------------------------------------------------------------------


def equivalent_iterations(trajectory: Sequence[float], target: float) -> int | None:
    """The first iteration at which an optimisation's loss is at or below ``target`` (Figure 5).

    Args:
        trajectory: ``trajectory[i]`` is the loss after ``i`` iterations (``[0]``: the start).
        target: the loss to match, e.g. the network's.

    Returns:
        The smallest ``i`` with ``trajectory[i] <= target``; ``None`` if the trajectory never gets
        there ("> budget"). NaN losses never count as reached. The *first* crossing is the one
        Johnson et al. read off their curves; L-BFGS with a line search decreases the loss at every
        iteration, so it is also the last one in practice.
    """
    if target is None or math.isnan(target):
        return None
    for i, value in enumerate(trajectory):
        if value is not None and value <= target:  # NaN compares False
            return i
    return None


def color_histogram(image: torch.Tensor, bins: int = HIST_BINS) -> torch.Tensor:
    """Joint RGB histogram of ``(1, 3, H, W)`` or ``(3, H, W)`` in [0, 1]: ``(bins**3,)``, summing to 1."""
    x = image.detach().float().reshape(3, -1).clamp(0, 1)  # (3, H*W)
    q = (x * bins).long().clamp_(max=bins - 1)  # per-channel bin of each pixel
    index = (q[0] * bins + q[1]) * bins + q[2]  # (H*W,) joint bin
    hist = torch.bincount(index.cpu(), minlength=bins**3).double()
    return hist / hist.sum()


def histogram_distance(p: torch.Tensor, q: torch.Tensor) -> float:
    """Symmetric chi-squared distance ``½ Σ (p − q)² / (p + q)`` of two normalised histograms.

    0 for identical colour distributions, 1 for disjoint ones (no colour in common); unlike
    the one-sided chi-squared it is symmetric and defined for empty bins.
    """
    p, q = p.double(), q.double()
    s = p + q
    nz = s > 0
    return float(0.5 * ((p[nz] - q[nz]) ** 2 / s[nz]).sum())


def ssim_luminance(image: torch.Tensor, reference: torch.Tensor) -> float:
    """SSIM (Wang et al. 2004) between the BT.601 luminance of two ``(1, 3, H, W)`` images in [0, 1].

    scikit-image's ``structural_similarity`` with the paper's settings: an 11x11 Gaussian window
    (σ = 1.5), population covariances, data range 1. Luminance only, because style transfer is
    meant to change the colours: this measures how much of the photo's *structure* survives.
    1 = identical structure; unrelated images score near 0. Images under 11 px on a side use the
    largest odd uniform window that fits.
    """
    from skimage.metrics import structural_similarity

    a = luminance(image.detach().float().cpu().clamp(0, 1))[0, 0].numpy().astype(np.float64)
    b = luminance(reference.detach().float().cpu().clamp(0, 1))[0, 0].numpy().astype(np.float64)
    side = min(a.shape)
    if side >= 11:
        kwargs: dict[str, Any] = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    else:
        kwargs = {"win_size": max(3, side - (side + 1) % 2)}
    return float(structural_similarity(a, b, data_range=1.0, **kwargs))


def summarize(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "median"}`` of per-image values; ``None`` entries (not measured) are left out."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "median": None}
    return {"mean": statistics.fmean(vals), "median": statistics.median(vals)}


def summarize_iterations(values: Sequence[int | None], budget: int) -> dict[str, Any]:
    """Mean and median of equivalent iterations, where ``None`` means "more than ``budget``".

    The median is exact as long as at least half the images reached the network's loss (an
    unreached image ranks above every reached one); otherwise it is ``None`` (> budget). The mean
    is ``None`` as soon as one image did not reach it; ``mean_lower_bound`` then counts those
    images as ``budget + 1``, so the true mean is at least that.
    """
    n = len(values)
    reached = [int(v) for v in values if v is not None]
    out: dict[str, Any] = {"reached": len(reached), "images": n, "budget": int(budget)}
    if n == 0:
        return {**out, "mean": None, "median": None, "mean_lower_bound": None}
    ranked = sorted(math.inf if v is None else float(v) for v in values)
    mid = (ranked[(n - 1) // 2] + ranked[n // 2]) / 2
    out["median"] = mid if math.isfinite(mid) else None
    out["mean"] = statistics.fmean(reached) if len(reached) == n else None
    out["mean_lower_bound"] = statistics.fmean(budget + 1 if v is None else v for v in values)
    return out


def time_call(
    fn: Callable[[], Any], runs: int, warmup: int = WARMUP_RUNS, device: torch.device | None = None
) -> float:
    """Median wall time of ``fn()`` in seconds over ``runs`` calls, after ``warmup`` untimed ones.

    The median, not the mean: on a shared machine an occasional slow call says more about the
    neighbours than about the network. GPU work is synchronised before each clock reading.
    """

    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device is not None and device.type == "mps":
            torch.mps.synchronize()

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------------
# Gatys runs
# --------------------------------------------------------------------------------------------------


@dataclass
class GatysRun:
    """One L-BFGS Gatys optimisation with what the evaluation keeps of it.

    ``losses[i]`` are the loss terms after ``i`` iterations (``i = 0 .. iterations``),
    ``elapsed[i]`` the seconds from the start to the end of iteration ``i`` (``elapsed[0] = 0``),
    ``snapshots[i]`` the image after ``i`` iterations for the requested ``i`` (on the CPU, in [0, 1]).
    """

    init: str
    losses: list[dict[str, float]]
    elapsed: list[float]
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    evaluations: int = 0
    image: torch.Tensor | None = None  # the final image (CPU, [0, 1])

    @property
    def iterations(self) -> int:
        """Iterations actually run (fewer than asked only if the loss stopped being finite)."""
        return len(self.losses) - 1

    @property
    def trajectory(self) -> list[float]:
        return [t["total"] for t in self.losses]

    @property
    def seconds_per_iteration(self) -> float | None:
        n = len(self.elapsed) - 1
        return self.elapsed[-1] / n if n > 0 else None

    def seconds_for(self, iterations: int) -> tuple[float | None, bool]:
        """Time for ``iterations`` iterations and whether it was measured (else per-iteration x N)."""
        if iterations < len(self.elapsed):
            return self.elapsed[iterations], True
        per = self.seconds_per_iteration
        return (None if per is None else per * iterations), False


def run_gatys(
    loss_fn: PerceptualLoss,
    init: torch.Tensor,
    iterations: int,
    *,
    name: str = "noise",
    snapshot_at: Sequence[int] = (),
    on_iteration: Callable[[], None] | None = None,
) -> GatysRun:
    """Gatys optimisation (L-BFGS, strong-Wolfe line search) of ``init``, timed per iteration.

    Args:
        loss_fn: the loss, with style and content targets set.
        init: the starting image ``(1, 3, H, W)``.
        iterations: the budget.
        name: what ``init`` is (``noise`` or ``content``), for the record.
        snapshot_at: iterations whose image to keep (the contact sheet); 0 is the start.
        on_iteration: called after every iteration (progress bars).
    """
    wanted = set(snapshot_at)
    snapshots = {0: init.detach().clamp(0, 1).cpu().clone()} if 0 in wanted else {}
    elapsed = [0.0]

    def callback(i: int, image: torch.Tensor, terms: dict[str, float]) -> None:
        elapsed.append(time.perf_counter() - start)
        if i in wanted:
            snapshots[i] = image.detach().clamp(0, 1).cpu().clone()
        if on_iteration is not None:
            on_iteration()

    start = time.perf_counter()
    result = optimize_image(
        loss_fn, init, iterations=iterations, optimizer="lbfgs", callback=callback, progress=False
    )
    final = result.image.cpu().clone()
    # An early stop (non-finite loss) leaves fewer iterations than asked: the last image stands in.
    for i in wanted - set(snapshots):
        snapshots[i] = final
    return GatysRun(
        init=name,
        losses=result.losses,
        elapsed=elapsed,
        snapshots=snapshots,
        evaluations=result.evaluations,
        image=final,
    )


# --------------------------------------------------------------------------------------------------
# Inputs: model, loss, style, photos
# --------------------------------------------------------------------------------------------------


def load_model_for_evaluation(path: str | os.PathLike) -> tuple[Any, ModelInfo]:
    """The network and its description; a training checkpoint gets the command that converts it."""
    path = Path(str(path))
    if path.suffix == ".ckpt":
        raise ModelFileError(
            f"{path}: a training checkpoint, not a model file; turn it into one with "
            f"python scripts/export.py model={path}"
        )
    net, info = load_model(path, "cpu")
    if not info.loss:
        raise ModelFileError(
            f"{path}: the model file has no loss settings (not written by scripts/train.py), "
            "so there is no objective to evaluate it against"
        )
    return net, info


def loss_settings(
    info: ModelInfo, overrides: Mapping | None, model_path: str | os.PathLike
) -> dict[str, Any]:
    """The model's loss settings with the ``loss.vgg.*`` overrides that are not null applied.

    Only the VGG can be changed: it is the measuring instrument (e.g. a local copy of the same
    weights offline), while the layers and weights define the objective the network was trained on.
    """
    settings = copy.deepcopy(dict(info.loss))
    vgg = dict(settings.get("vgg") or {})
    given = {}
    for key, value in dict((overrides or {}).get("vgg") or {}).items():
        if value is not None:
            given[key] = value
    unknown = set(dict(overrides or {})) - {"vgg"}
    if unknown:
        raise ConfigError(
            f"loss.{sorted(unknown)[0]} cannot be changed here: the evaluation uses the loss stored in "
            f"{model_path}; only loss.vgg.arch / loss.vgg.weights / loss.vgg.pooling can be overridden"
        )
    for key, value in given.items():
        if key in vgg and str(vgg[key]) != str(value):
            log.info("loss.vgg.%s=%s (the model was trained with %s)", key, value, vgg[key])
        vgg[key] = value
    settings["vgg"] = vgg
    return settings


def build_model_loss(settings: Mapping, vgg_overridden: bool, device: torch.device) -> PerceptualLoss:
    """:func:`fastns.optimize.build_loss`, with a hint when the model file's own VGG cannot be loaded."""
    try:
        return build_loss(dict(settings), device)
    except FastnsError as e:
        if vgg_overridden or "pass " in str(e):
            raise
        arch = (settings.get("vgg") or {}).get("arch", "vgg16")
        raise type(e)(
            f"{e} (the VGG named in the model file; pass loss.vgg.weights=/path/to/{arch}.pth)"
        ) from None


def load_style(cfg_style: Mapping, info: ModelInfo, model_path: str | os.PathLike) -> Style:
    """The style the loss targets come from: the model's (sources, size), or ``style.image``/``style.size``."""
    known = {"image", "size", "blend_weights"}
    unknown = set(cfg_style) - known
    if unknown:
        raise ConfigError(f"unknown key style.{sorted(unknown)[0]}; style takes {sorted(known)}")
    model_style = info.style or {}
    override = as_list(cfg_style.get("image"))
    sources = [str(s) for s in override] or [str(s) for s in as_list(model_style.get("sources"))]
    if not sources:
        raise ConfigError(
            f"{model_path}: the model file names no style image; pass style.image=/path/to/painting.jpg"
        )
    size = cfg_style.get("size") or model_style.get("size")
    weights = cfg_style.get("blend_weights")
    if weights is None and not override:
        weights = model_style.get("blend_weights")
    try:
        return Style(
            image=sources,
            name=model_style.get("name") if not override else None,
            size=int(size) if size else None,
            blend_weights=None if weights is None else [float(w) for w in as_list(weights)],
        )
    except FastnsError as e:
        if override:
            raise
        raise type(e)(
            f"the style image of {model_path} cannot be loaded ({e}); pass style.image=/path/to/painting.jpg"
        ) from None


def find_photos(images: str | os.PathLike, output: Path, max_images: int | None) -> list[Path]:
    """The photos to evaluate: a file, a folder (recursive) or a glob; sorted, at most ``max_images``.

    A report folder inside the images folder is left out, and so are earlier report pictures
    (``contact_sheet.png``, ``loss_curves.png``) found directly in the output folder.
    """
    from .stylize import find_images  # folder / glob search shared with scripts/stylize.py

    text = str(images)
    path = Path(text)
    out = output.resolve()
    own = {(out / name) for name in REPORT_FILES}
    if path.is_file():
        if path.resolve() in own:
            raise ConfigError(
                f"images={path} is a file of this report ({out}); refusing to overwrite an input"
            )
        files = [path]
    else:
        if not path.is_dir() and not glob.has_magic(text):
            raise ImageError(f"images={text}: no such file or folder")
        exclude = out if path.is_dir() and path.resolve() != out else None
        _, files = find_images(text, exclude=exclude)
        files = [p for p in files if p.resolve() not in own]
        if not files:
            what = (
                "no image files (.jpg .png .webp ...) in this folder or below"
                if path.is_dir()
                else "no image matches"
            )
            raise ImageError(f"images={text}: {what}")
    if max_images is not None:
        if int(max_images) < 1:
            raise ConfigError(f"max_images={max_images} must be >= 1 (or null for all images)")
        if len(files) > int(max_images):
            log.info(
                "evaluating the first %d of %d images (max_images=%d)", max_images, len(files), max_images
            )
        files = files[: int(max_images)]
    return files


def _positive_ints(values: Any, key: str) -> list[int]:
    out = sorted({int(v) for v in as_list(values)})
    if any(v < 1 for v in out):
        raise ConfigError(f"{key}={list(as_list(values))} must be positive iteration counts")
    return out


# --------------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------------


def _loss_floats(terms: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
    return {k: float(v) for k, v in terms.items()}


def _versions(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = platform.processor() or platform.machine()
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
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except Exception:  # not under @hydra.main (called from Python)
        return None
    return " ".join(["python scripts/evaluate.py", *(shlex.quote(o) for o in overrides)])


def _json_safe(obj: Any) -> Any:
    """Plain JSON: non-finite floats become null (``json`` would write NaN, which is not JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def evaluate_image(
    path: Path,
    content: torch.Tensor,
    *,
    stylizer: Stylizer,
    loss_fn: PerceptualLoss,
    style_hist: torch.Tensor,
    inits: Sequence[str],
    iterations: int,
    speed_iterations: Sequence[int],
    snapshot_at: Sequence[int],
    timing_runs: int,
    seed: int,
    on_iteration: Callable[[], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """All measurements for one photo ``content`` ``(1, 3, H, W)`` on the loss's device.

    Returns:
        ``(metrics, pictures)``: the JSON-ready per-image record and, for the figures, the
        network output, the Gatys snapshots and the trajectories.
    """
    device = content.device
    h, w = content.shape[-2:]
    loss_fn.set_content(content)  # the same content targets for the network and for Gatys

    # The network: output, loss, time.
    # (1, 3, H, W) in [0, 1]; cloned out of inference mode so that the loss may use it freely.
    output = stylizer.stylize(content).to(device).clone()
    with torch.no_grad():
        net_loss = _loss_floats(loss_fn(output))
    net_seconds = time_call(lambda: stylizer.stylize(content), timing_runs, device=device)
    target = net_loss["total"]

    record: dict[str, Any] = {
        "image": path.name,
        "path": str(path),
        "size": [int(w), int(h)],
        "network": {
            "loss": net_loss,
            "ssim": ssim_luminance(output, content),
            "color_distance": histogram_distance(color_histogram(output), style_hist),
            "grid": float(grid_pattern(output)),
        },
        "content": {
            "color_distance": histogram_distance(color_histogram(content), style_hist),
            "grid": float(grid_pattern(content)),
        },
        "gatys": {},
    }
    pictures: dict[str, Any] = {"content": content.cpu(), "network": output.cpu(), "gatys": {}}

    runs: dict[str, GatysRun] = {}
    for init_name in inits:
        torch.manual_seed(seed)
        start = white_noise((h, w), seed=seed, device=device) if init_name == "noise" else content
        gatys = run_gatys(
            loss_fn, start, iterations, name=init_name, snapshot_at=snapshot_at, on_iteration=on_iteration
        )
        runs[init_name] = gatys
        record["gatys"][init_name] = {
            "equivalent_iterations": equivalent_iterations(gatys.trajectory, target),
            "iterations": gatys.iterations,
            "budget": int(iterations),
            "evaluations": gatys.evaluations,
            "final_loss": gatys.losses[-1],
            "trajectory": gatys.trajectory,
            "seconds": gatys.elapsed[-1],
            "seconds_per_iteration": gatys.seconds_per_iteration,
            # Content and colour of the final image, for comparison with the network's.
            "ssim": ssim_luminance(gatys.image, content),
            "color_distance": histogram_distance(color_histogram(gatys.image), style_hist),
            "grid": float(grid_pattern(gatys.image)),
        }
        pictures["gatys"][init_name] = {"snapshots": gatys.snapshots, "trajectory": gatys.trajectory}

    # Speed (Table 1): Gatys time for N iterations (mean over the starting points), speed-up.
    speed: dict[str, Any] = {"network_seconds": net_seconds, "gatys": {}}
    for n in speed_iterations:
        measured = [runs[k].seconds_for(n) for k in runs]
        secs = [s for s, _ in measured if s is not None]
        seconds = statistics.fmean(secs) if secs else None
        speed["gatys"][str(n)] = {
            "seconds": seconds,
            "measured": all(m for _, m in measured),
            "speedup": seconds / net_seconds if seconds is not None and net_seconds > 0 else None,
        }
    per_it = [r.seconds_per_iteration for r in runs.values() if r.seconds_per_iteration is not None]
    speed["gatys_seconds_per_iteration"] = statistics.fmean(per_it) if per_it else None
    record["speed"] = speed
    return record, pictures


def aggregate(
    records: Sequence[Mapping], inits: Sequence[str], budget: int, speed_iterations: Sequence[int]
) -> dict[str, Any]:
    """Mean and median over images of every per-image number (see :func:`summarize`)."""
    terms = list(dict.fromkeys(k for r in records for k in r["network"]["loss"]))
    out: dict[str, Any] = {
        "images": len(records),
        "network_loss": {k: summarize([r["network"]["loss"].get(k) for r in records]) for k in terms},
        "equivalent_iterations": {
            k: summarize_iterations([r["gatys"][k]["equivalent_iterations"] for r in records], budget)
            for k in inits
        },
        "ssim": {"network": summarize([r["network"]["ssim"] for r in records])},
        "color_distance": {
            "content": summarize([r["content"]["color_distance"] for r in records]),
            "network": summarize([r["network"]["color_distance"] for r in records]),
        },
        "grid": {
            "content": summarize([r["content"].get("grid") for r in records]),
            "network": summarize([r["network"].get("grid") for r in records]),
        },
        "gatys_final_loss": {
            k: summarize([r["gatys"][k]["final_loss"]["total"] for r in records]) for k in inits
        },
    }
    for k in inits:
        out["ssim"][f"gatys_{k}"] = summarize([r["gatys"][k].get("ssim") for r in records])
        out["color_distance"][f"gatys_{k}"] = summarize(
            [r["gatys"][k].get("color_distance") for r in records]
        )
        out["grid"][f"gatys_{k}"] = summarize([r["gatys"][k].get("grid") for r in records])
    out["speed"] = {
        "network_seconds": summarize([r["speed"]["network_seconds"] for r in records]),
        "gatys_seconds_per_iteration": summarize(
            [r["speed"]["gatys_seconds_per_iteration"] for r in records]
        ),
        "gatys": {
            str(n): {
                "seconds": summarize([r["speed"]["gatys"][str(n)]["seconds"] for r in records]),
                "speedup": summarize([r["speed"]["gatys"][str(n)]["speedup"] for r in records]),
                "measured": all(r["speed"]["gatys"][str(n)]["measured"] for r in records),
            }
            for n in speed_iterations
        },
    }
    return out


def run(cfg: DictConfig) -> Path:
    """Evaluate ``cfg.model`` on ``cfg.images`` and write the report folder ``cfg.output``.

    See ``configs/tools/evaluate.yaml`` for the keys. Every input is checked and every photo
    loaded before the long part, so a bad file fails in the first seconds and nothing is written.
    Returns the report folder.
    """
    if cfg.get("model") is None:
        raise ConfigError("missing required setting model: pass model=path/to/model.safetensors")
    if cfg.get("images") is None:
        raise ConfigError("missing required setting images: pass images=folder/, a file or a glob")
    output = Path(str(cfg.output or "report"))
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output={output} is a file; the report needs a folder (e.g. output=report/)")
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
    device = resolve_device(cfg.device)
    torch.manual_seed(seed)

    # Inputs, cheapest first, all before the long part.
    model_path = Path(str(cfg.model))
    net, info = load_model_for_evaluation(model_path)
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
    style = load_style(cfg.style, info, model_path)
    loss_cfg = (
        OmegaConf.to_container(cfg.loss, resolve=True) if isinstance(cfg.loss, DictConfig) else cfg.loss
    )
    settings = loss_settings(info, loss_cfg, model_path)
    loss_fn = build_model_loss(settings, settings["vgg"] != (info.loss.get("vgg") or {}), device)
    style_images = style.tensors(style.size, device)
    loss_fn.set_style(style_images, style.blend_weights)
    weights = style.blend_weights or [1.0] * len(style_images)
    style_hist = sum(w * color_histogram(s) for w, s in zip(weights, style_images, strict=True)) / sum(
        weights
    )

    from .stylize import Stylizer  # the inference path users get (border, folded norms, layout)

    stylizer = Stylizer(net, info=info, device=device, precision=str(cfg.precision), border=int(cfg.border))
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

    # One untimed forward and backward pass of the loss: the first one pays for lazy set-up
    # (allocator, oneDNN/cuDNN kernel choice), which must not count as a Gatys iteration.
    warm = contents[0].to(device).clone().requires_grad_(True)
    loss_fn.set_content(warm.detach())
    loss_fn(warm)["total"].backward()

    records, pictures = [], []
    bar = tqdm(
        total=len(photos) * len(inits) * budget,
        desc="gatys",
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
    metrics = {
        "metrics_version": METRICS_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": _command(),
        "config": OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg),
        "model": {
            "path": str(model_path),
            "sha256": sha256_file(model_path),
            "network": info.model,
            "style": info.style,
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
            "ssim": "scikit-image structural_similarity on BT.601 luminance, Gaussian window sigma 1.5, data range 1",
            "grid": f"RMS of the {GRID_PERIOD}x{GRID_PERIOD} phase-mean pattern of the BT.601 luminance minus its {GRID_PERIOD}x{GRID_PERIOD} moving average, in 1/255",
        },
        "versions": _versions(device),
        "images": records,
        "aggregate": summary,
    }
    metrics = _json_safe(metrics)

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
    return output


# --------------------------------------------------------------------------------------------------
# Report: text
# --------------------------------------------------------------------------------------------------


def format_iterations(value: float | None, budget: int) -> str:
    """An equivalent-iteration count for people: ``73``, or ``> 300`` when the budget ran out."""
    return f"> {budget}" if value is None else f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _g(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.3g} ms"
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def _speedup(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}x" if value >= 10 else f"{value:.2g}x"


def _iter_summary(s: Mapping, budget: int) -> tuple[str, str]:
    """(mean, median) cells of an equivalent-iteration summary."""
    mean = (
        format_iterations(s["mean"], budget)
        if s["mean"] is not None
        else ("–" if s.get("mean_lower_bound") is None else f"≥ {s['mean_lower_bound']:.0f}")
    )
    return mean, format_iterations(s["median"], budget)


def summary_lines(metrics: Mapping) -> list[str]:
    """The headline findings, one sentence each (report.md's summary and the log)."""
    agg, ev = metrics["aggregate"], metrics["evaluation"]
    budget, n = ev["gatys_iterations"], agg["images"]
    lines = []
    for k in ev["gatys_init"]:
        s = agg["equivalent_iterations"][k]
        mean, median = _iter_summary(s, budget)
        start = START_NAMES[k]
        lines.append(
            f"Gatys L-BFGS from {start} reaches the network's loss after a median of {median} iterations "
            f"(mean {mean}; {s['reached']} of {n} images within {budget})."
        )
    sp = agg["speed"]
    times = ", ".join(
        f"{_seconds(v['seconds']['median'])} for {k}" + ("" if v["measured"] else " (est.)")
        for k, v in sp["gatys"].items()
    )
    ups = " / ".join(_speedup(v["speedup"]["median"]) for v in sp["gatys"].values())
    lines.append(
        f"The network takes {_seconds(sp['network_seconds']['median'])} per image at {ev['image_size']} px; "
        f"Gatys takes {times} iterations: {ups} faster (medians)."
    )
    ssim = agg["ssim"]
    parts = [f"network {_g(ssim['network']['median'], 3)}"] + [
        f"Gatys from {START_NAMES[k]} {_g(ssim[f'gatys_{k}']['median'], 3)}" for k in ev["gatys_init"]
    ]
    lines.append("SSIM of the luminance to the photo (1 = same structure): " + ", ".join(parts) + ".")
    cd = agg["color_distance"]
    parts = [f"photo {_g(cd['content']['median'], 3)}", f"network {_g(cd['network']['median'], 3)}"] + [
        f"Gatys from {START_NAMES[k]} {_g(cd[f'gatys_{k}']['median'], 3)}" for k in ev["gatys_init"]
    ]
    lines.append("Colour-histogram distance to the style (0 = same colours): " + ", ".join(parts) + ".")
    grid = agg.get("grid")
    if grid:  # reports written before the grid measure have none
        parts = [
            f"photo {_g(grid['content']['median'], 2)}",
            f"network {_g(grid['network']['median'], 2)}",
        ] + [f"Gatys from {START_NAMES[k]} {_g(grid[f'gatys_{k}']['median'], 2)}" for k in ev["gatys_init"]]
        lines.append(
            f"Fixed {GRID_PERIOD}x{GRID_PERIOD} px pattern (cross-hatch; in 1/255, photos below ~1): "
            + ", ".join(parts)
            + "."
        )
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def render_report(metrics: Mapping) -> str:
    """report.md: summary, tables (aggregate, speed, per image), pictures, how to read them, settings."""
    agg, ev, model = metrics["aggregate"], metrics["evaluation"], metrics["model"]
    budget, inits = ev["gatys_iterations"], ev["gatys_init"]
    loss, training = ev["loss"], model.get("training") or {}
    norm = "per-layer normalised terms" if loss.get("normalize") else "the papers' normalisation"
    n = agg["images"]
    out = [f"# Evaluation of `{model['path']}` ({ev['style']['name']})", ""]
    command = metrics.get("command")
    out += [
        "Made with:",
        "",
        "```bash",
        command or "fastns.evaluate.run(cfg)  # from Python; config in metrics.json",
        "```",
        "",
    ]
    versions = metrics["versions"]
    out += [
        f"{n} image(s) at {ev['image_size']} px (longest side), Gatys L-BFGS for {budget} iterations from "
        f"{' and from '.join(START_NAMES[k] for k in inits)}; "
        f"{loss['vgg']['arch']} with weights `{loss['vgg']['weights']}`; device {versions['device']} "
        f"({versions['hardware']}, {versions['torch_threads']} CPU thread(s)); fastns {versions['fastns']}, "
        f"torch {versions['torch']}; {metrics['created']}.",
        "",
        "## Summary",
        "",
    ]
    out += [f"- {line}" for line in summary_lines(metrics)] + [""]

    # Aggregate table.
    rows = []
    for term, s in agg["network_loss"].items():
        rows.append([f"network loss `{term}`", _g(s["mean"]), _g(s["median"])])
    for k in inits:
        rows.append(
            [
                f"Gatys from {START_NAMES[k]}: loss after {budget} iterations",
                _g(agg["gatys_final_loss"][k]["mean"]),
                _g(agg["gatys_final_loss"][k]["median"]),
            ]
        )
    for k in inits:
        mean, median = _iter_summary(agg["equivalent_iterations"][k], budget)
        s = agg["equivalent_iterations"][k]
        rows.append(
            [f"equivalent Gatys iterations from {START_NAMES[k]} ({s['reached']}/{n} reached)", mean, median]
        )
    for key, label in [
        ("network", "network"),
        *((f"gatys_{k}", f"Gatys from {START_NAMES[k]}") for k in inits),
    ]:
        rows.append(
            [
                f"SSIM to the photo: {label}",
                _g(agg["ssim"][key]["mean"], 3),
                _g(agg["ssim"][key]["median"], 3),
            ]
        )
    for key, label in [
        ("content", "the photo itself"),
        ("network", "network"),
        *((f"gatys_{k}", f"Gatys from {START_NAMES[k]}") for k in inits),
    ]:
        s = agg["color_distance"][key]
        rows.append([f"colour distance to the style: {label}", _g(s["mean"], 3), _g(s["median"], 3)])
    for key, label in [
        ("content", "the photo itself"),
        ("network", "network"),
        *((f"gatys_{k}", f"Gatys from {START_NAMES[k]}") for k in inits),
    ]:
        s = agg.get("grid", {}).get(key)
        if s:
            rows.append(
                [
                    f"{GRID_PERIOD}x{GRID_PERIOD} px pattern (1/255): {label}",
                    _g(s["mean"], 2),
                    _g(s["median"], 2),
                ]
            )
    out += [f"## Aggregate ({n} images)", ""] + _table(["metric", "mean", "median"], rows) + [""]

    # Speed, Johnson et al. Table 1.
    sp = agg["speed"]
    rows = [
        [
            "network forward pass",
            _seconds(sp["network_seconds"]["mean"]),
            _seconds(sp["network_seconds"]["median"]),
            "",
            "",
        ]
    ]
    estimated = False
    for k, v in sp["gatys"].items():
        mark = "" if v["measured"] else " (est.)"
        estimated |= not v["measured"]
        rows.append(
            [
                f"Gatys, {k} iterations{mark}",
                _seconds(v["seconds"]["mean"]),
                _seconds(v["seconds"]["median"]),
                _speedup(v["speedup"]["mean"]),
                _speedup(v["speedup"]["median"]),
            ]
        )
    out += [f"## Speed at {ev['image_size']} px (Johnson et al., Table 1)", ""]
    out += _table(["", "time (mean)", "time (median)", "speed-up (mean)", "speed-up (median)"], rows) + [""]
    per_it = sp["gatys_seconds_per_iteration"]
    note = (
        f"Gatys L-BFGS costs {_seconds(per_it['median'])} per iteration (median over images, measured over "
        f"its {budget} iterations; one iteration may evaluate the loss more than once in its line search)."
    )
    if estimated:
        note += f" **(est.)**: beyond `gatys_iterations={budget}` the time is the measured time per iteration × N."
    note += (
        f" The network time is the median of {ev['timing_runs']} forward passes after a warm-up "
        f"({ev['precision']}, border {ev['border']} px, as `scripts/stylize.py`). Both were measured in "
        "this run on the same device; on a machine busy with other work both slow down, not always "
        "equally, so compare speed-ups from quiet runs."
    )
    out += [note, ""]

    # Per image.
    terms = [t for t in ("content", "style", "tv") if t in agg["network_loss"]]
    header = ["image", "size", "loss", *terms]
    header += [f"≈ Gatys it. from {START_NAMES[k]}" for k in inits]
    header += ["SSIM", "colour dist. photo → network", "network time", "Gatys time / it."]
    rows = []
    for r in metrics["images"]:
        w, h = r["size"]
        rows.append(
            [
                f"`{r['image']}`",
                f"{w}x{h}",
                _g(r["network"]["loss"]["total"]),
                *(_g(r["network"]["loss"][t]) for t in terms),
                *(format_iterations(r["gatys"][k]["equivalent_iterations"], budget) for k in inits),
                _g(r["network"]["ssim"], 3),
                f"{_g(r['content']['color_distance'], 2)} → {_g(r['network']['color_distance'], 2)}",
                _seconds(r["speed"]["network_seconds"]),
                _seconds(r["speed"]["gatys_seconds_per_iteration"]),
            ]
        )
    out += ["## Per image", ""] + _table(header, rows, "ll" + "r" * (len(header) - 2)) + [""]
    style_terms = [t for t in agg["network_loss"] if t.startswith(("style/", "content/"))]
    if style_terms:
        out += ["Loss terms per layer (network):", ""]
        rows = [
            [f"`{r['image']}`", *(_g(r["network"]["loss"][t]) for t in style_terms)]
            for r in metrics["images"]
        ]
        out += _table(["image", *(f"`{t}`" for t in style_terms)], rows) + [""]

    out += [
        "## Pictures",
        "",
        f"![contact sheet]({SHEET_FILE})",
        "",
        f"`{SHEET_FILE}`: one row per image — the photo, the network's output, then Gatys from "
        f"{' and from '.join(START_NAMES[k] for k in inits)} after "
        f"{', '.join(map(str, ev['sheet_iterations']))} iterations. Under each result: its total loss and, "
        "in brackets, that loss relative to the network's (below 1x: Gatys has done better than the "
        "network on the network's own objective).",
        "",
        f"![loss curves]({CURVES_FILE})",
        "",
        f"`{CURVES_FILE}`: top, the Gatys total loss against L-BFGS iterations (log scale) for every "
        "image, with the network's loss as a dashed line of the same colour and a dot where Gatys "
        "reaches it; bottom, the same curves divided by the network's loss, with their geometric "
        "mean in black: where it crosses 1 is the typical equivalent iteration count (Figure 5).",
        "",
        "## How to read this",
        "",
        "- **Loss** is the objective the network was trained on (the model file's loss settings: "
        f"content {', '.join(loss['content_layers'])}, style {', '.join(loss['style_layers'])}, "
        f"α={loss['content_weight']:g}, β={loss['style_weight']:g}, TV {loss['tv_weight']:g}, "
        f"{norm}). Lower is better; the numbers compare models evaluated with the same VGG weights only.",
        "- **Equivalent Gatys iterations** (Johnson et al. 2016, Figure 5): the first L-BFGS iteration at "
        "which per-image optimisation of the same loss is at least as good as the network's single "
        f"forward pass. Johnson et al. report 50–100. `> {budget}`: not within the budget "
        "(`gatys_iterations`); the network is then better than that many iterations. From the photo "
        "the optimisation starts with the content term at zero, so it usually needs fewer iterations "
        "than from white noise.",
        "- **Speed** (Table 1): how many times faster one forward pass is than Gatys with "
        f"{'/'.join(agg['speed']['gatys'])} iterations. Johnson et al. measured about 200x, 600x and "
        "1000x for 100, 300 and 500 iterations on a GPU (GTX Titan X) at 256–1024 px.",
        "- **SSIM** (0–1) of the luminance compares the output's structure with the photo's: higher "
        "keeps more of the photo, lower means the style has taken over more. It is not a quality "
        "score; compare it with the Gatys columns.",
        "- **Colour distance** (0–1): symmetric χ² distance between the joint RGB histograms "
        f"({HIST_BINS}³ bins) of an image and of the style image; 0 = identical colour "
        "distributions. The photo's own distance is the starting point; a network that has learnt "
        "the palette brings it down.",
        f"- **{GRID_PERIOD}x{GRID_PERIOD} px pattern** (in 1/255): the luminance minus its "
        f"{GRID_PERIOD}x{GRID_PERIOD} moving average, folded onto a {GRID_PERIOD}x{GRID_PERIOD} grid (the "
        "mean pixel at each position of every block), and the RMS of that pattern. Image content averages out: photos and Gatys results score below ~1. A network "
        "that paints a fixed texture locked to its two x2 stages (a fine cross-hatch) scores several "
        "units; docs/training.md shows what the numbers look like.",
        "",
        "## Settings",
        "",
        f"- model: `{model['path']}` (sha256 `{model['sha256'][:16]}…`), written by fastns "
        f"{model.get('fastns_version')}; network {json.dumps(model['network'])}",
        f"- training: {training.get('steps', '?')} steps at {training.get('image_size', '?')} px",
        f"- style: {', '.join(f'`{s}`' for s in ev['style']['sources'])} at {ev['style']['size'] or 'native'} px",
        f"- loss: `{json.dumps(loss)}`",
        f"- seed {ev['seed']}: reruns give the same numbers except the timings. All numbers are in `{METRICS_FILE}`.",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# Report: pictures
# --------------------------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:  # pragma: no cover - older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def write_contact_sheet(
    path: Path,
    records: Sequence[Mapping],
    pictures: Sequence[Mapping],
    inits: Sequence[str],
    sheet_iterations: Sequence[int],
) -> Path:
    """The contact sheet: a row per image (photo | network | Gatys per start and iteration count).

    Tiles are the evaluated images at their own pixels (upscaled by a whole factor, nearest
    neighbour, only when ``image_size`` is under 128 px so that small runs stay legible).
    """
    columns: list[tuple[str, str]] = [("photo", ""), ("network", "")]
    for k in inits:
        for n in sheet_iterations:
            columns.append((f"Gatys ({'photo' if k == 'content' else k})", f"{n} iterations"))
    max_w = max(p["content"].shape[-1] for p in pictures)
    max_h = max(p["content"].shape[-2] for p in pictures)
    scale = max(1, math.ceil(128 / max(max_w, max_h)))
    cell_w = max_w * scale
    font_px = max(12, min(20, cell_w // 12))
    font = _font(font_px)
    line = font_px + 5
    pad = 6
    header = 2 * line + pad
    row_heights = [p["content"].shape[-2] * scale + line + pad for p in pictures]
    width = len(columns) * (cell_w + pad) + pad
    height = header + sum(row_heights) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (top, bottom) in enumerate(columns):
        x = pad + c * (cell_w + pad)
        draw.text((x, pad), _fit_text(draw, top, font, cell_w), fill="black", font=font)
        draw.text((x, pad + line), _fit_text(draw, bottom, font, cell_w), fill="black", font=font)

    y = header
    for rec, pics, row_h in zip(records, pictures, row_heights, strict=True):
        net_total = rec["network"]["loss"]["total"]
        tiles: list[tuple[torch.Tensor, str]] = [
            (pics["content"], rec["image"]),
            (pics["network"], f"loss {net_total:.3g}"),
        ]
        for k in inits:
            traj = pics["gatys"][k]["trajectory"]
            for n in sheet_iterations:
                snap = pics["gatys"][k]["snapshots"].get(n)
                i = min(n, len(traj) - 1)
                ratio = traj[i] / net_total if net_total > 0 else math.nan
                tiles.append((snap, f"{traj[i]:.3g} ({ratio:.2f}x)"))
        for c, (img, caption) in enumerate(tiles):
            x = pad + c * (cell_w + pad)
            if img is not None:
                im = tensor_to_pil(img)
                if scale > 1:
                    im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
                sheet.paste(im, (x + (cell_w - im.width) // 2, y))
            draw.text(
                (x, y + row_h - line - pad // 2),
                _fit_text(draw, caption, font, cell_w),
                fill="black",
                font=font,
            )
        y += row_h
    with atomic_write(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def _plain_log_labels(ax: Any) -> None:
    """Label a log y axis with plain numbers (0.6, 2, 40 rather than 6x10^-1).

    These axes often span less than a decade, where the powers of ten alone leave them nearly
    unlabelled: then the 2, 3, 4 and 6 minor ticks get labels too.
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def plain(value: float, _pos: int) -> str:
        return f"{value:g}"

    def some(value: float, _pos: int) -> str:
        mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
        return f"{value:g}" if mantissa in (2, 3, 4, 6) else ""

    low, high = ax.get_ylim()
    ax.yaxis.set_major_formatter(FuncFormatter(plain))
    ax.yaxis.set_minor_formatter(
        FuncFormatter(some) if low > 0 and math.log10(high / low) < 1.5 else NullFormatter()
    )


def write_loss_curves(path: Path, records: Sequence[Mapping], inits: Sequence[str], budget: int) -> Path:
    """Gatys total loss against L-BFGS iterations, with the network's loss as horizontal lines.

    Top row: absolute losses per image (log y), the network's loss dashed in the image's colour,
    a dot at the equivalent iteration. Bottom row: the same divided by the network's loss, so
    that images of different loss scales share one axis; the black line is their geometric mean
    and y = 1 is the network.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure with its own Agg canvas: no pyplot, no global backend state, no display needed.
    fig = Figure(figsize=(5.2 * len(inits), 7.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(inits), squeeze=False, sharex=True)
    colors = [f"C{i % 10}" for i in range(len(records))]
    for c, k in enumerate(inits):
        top, bottom = axes[0][c], axes[1][c]
        ratios = []
        for r, color in zip(records, colors, strict=True):
            traj = np.asarray(r["gatys"][k]["trajectory"], dtype=np.float64)
            target = r["network"]["loss"]["total"]
            its = np.arange(len(traj))
            label = r["image"] if len(records) <= 10 else None
            top.plot(its, traj, color=color, lw=1.0, label=label)
            top.axhline(target, color=color, lw=0.9, ls="--")
            eq = r["gatys"][k]["equivalent_iterations"]
            if eq is not None:
                top.plot([eq], [traj[eq]], "o", color=color, ms=4)
            if target > 0:
                ratio = traj / target
                ratios.append(ratio)
                bottom.plot(its, ratio, color=color, lw=0.7, alpha=0.6)
        if ratios:
            n = min(len(x) for x in ratios)
            with np.errstate(divide="ignore", invalid="ignore"):
                gmean = np.exp(np.mean(np.log(np.stack([x[:n] for x in ratios])), axis=0))
            bottom.plot(np.arange(n), gmean, color="black", lw=2.0, label="geometric mean")
        bottom.axhline(1.0, color="black", lw=1.0, ls="--", label="network")
        median = summarize_iterations([r["gatys"][k]["equivalent_iterations"] for r in records], budget)[
            "median"
        ]
        if median is not None:
            bottom.axvline(median, color="0.4", lw=1.0, ls=":", label=f"median equivalent: {median:g} it.")
        start = START_NAMES[k]
        top.set_title(f"Gatys L-BFGS from {start}")
        top.set_ylabel("total loss")
        bottom.set_ylabel("loss / network's loss")
        bottom.set_xlabel("L-BFGS iteration")
        for ax in (top, bottom):
            ax.set_yscale("log")
            ax.set_xlim(0, budget)
            _plain_log_labels(ax)
            ax.grid(True, which="both", alpha=0.25)
        bottom.legend(loc="upper right", fontsize=8)
        if c == 0 and len(records) <= 10:
            top.legend(loc="upper right", fontsize=7)
    fig.suptitle("Gatys optimisation vs the network (dashed): Johnson et al. 2016, Figure 5")
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


__all__ = [
    "GatysRun",
    "aggregate",
    "color_histogram",
    "equivalent_iterations",
    "histogram_distance",
    "render_report",
    "run",
    "run_gatys",
    "ssim_luminance",
    "summarize",
    "summarize_iterations",
    "time_call",
]
