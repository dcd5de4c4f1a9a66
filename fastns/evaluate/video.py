"""The flicker report behind ``scripts/evaluate.py video=clip.mp4``: one clip, several ways to stylise it.

Rows (methods): the input clip itself (the floor), the network frame by frame, the network with
``temporal=flow`` (:class:`~fastns.stylize.temporal.FlowBlend`, the settings of ``flow.*``), and,
with ``compare=<model file>`` (e.g. a network trained with ``loss.temporal_weight``), that network
frame by frame and with ``temporal=flow``. For each:

- Lai et al.'s **warping error** per frame pair and its mean (:func:`fastns.metrics.warping_errors`,
  the same DIS flow of the input frames for every row);
- the **loss** (content, style, total) of ``loss_frames`` evenly spaced frames, measured with the
  first model's own loss and style targets, so that every row is judged by the same objective
  (stability must not cost the style);
- the **time per frame** (median; the network and, for ``temporal=flow``, the blend).

Writes ``metrics.json``, ``report.md``, ``frames.png`` (the same frames for every row, side by
side) and ``warping_error.png`` (the per-pair error of every row), each atomically.
"""

from __future__ import annotations

import datetime
import json
import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..hub import sha256_file
from ..losses import PerceptualLoss
from ..metrics import warping_errors
from ..stylize import Stylizer
from ..stylize.temporal import FlowBlend
from ..stylize.video import read_frames
from ..utils import atomic_write
from .figures import tile_sheet
from .files import METRICS_FILE, REPORT_FILE, json_safe

log = logging.getLogger(__name__)

#: The pictures of a video report.
FRAMES_FILE, WARPING_FILE = "frames.png", "warping_error.png"
VIDEO_REPORT_FILES = (METRICS_FILE, REPORT_FILE, FRAMES_FILE, WARPING_FILE)
#: Frames shown per row in frames.png: consecutive pairs make flicker visible, so 2 x 3.
STRIP_FRAMES = 6


def _tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(255)


def stylise_clip(
    stylizer: Stylizer, frames: np.ndarray, *, temporal: FlowBlend | None = None, style: Any = None
) -> tuple[np.ndarray, list[float]]:
    """Every frame through ``stylizer`` in order (as a video run does, one at a time), with its time in s."""
    out, seconds = [], []
    for frame in frames:
        start = time.perf_counter()
        out.append(stylizer.stylize_frames(frame[None], temporal=temporal, style=style)[0])
        seconds.append(time.perf_counter() - start)
    return np.stack(out), seconds


def sampled_losses(
    loss_fn: PerceptualLoss, frames: np.ndarray, outputs: np.ndarray, indices: Sequence[int]
) -> dict[str, float]:
    """Median content, style and total loss of ``outputs[i]`` for ``frames[i]``, over ``indices``."""
    terms: dict[str, list[float]] = {"content": [], "style": [], "total": []}
    with torch.no_grad():
        for i in indices:
            content = _tensor(frames[i : i + 1]).to(loss_fn_device(loss_fn))
            out = _tensor(outputs[i : i + 1]).to(content.device)
            t = loss_fn(out, content)
            for k in terms:
                terms[k].append(float(t[k]))
    return {k: statistics.median(v) for k, v in terms.items()}


def loss_fn_device(loss_fn: PerceptualLoss) -> torch.device:
    return next(loss_fn.encoder.parameters()).device


def write_strip(
    path: Path, frames: np.ndarray, rows: Mapping[str, np.ndarray], picks: Sequence[int], first: int = 0
) -> Path:
    """frames.png: a row per method (the input first), the same frames in every row; ``picks``
    index ``frames``, whose first is the clip's frame ``first``."""
    columns = [(f"frame {first + i}", "") for i in picks]
    grid = [[(_tensor(frames[i : i + 1]), "input") for i in picks]]
    for label, out in rows.items():
        grid.append([(_tensor(out[i : i + 1]), label) for i in picks])
    sheet = tile_sheet(columns, grid)
    with atomic_write(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def write_warping_plot(path: Path, errors: Mapping[str, Sequence[float]], first: int) -> Path:
    """warping_error.png: the warping error of each frame pair, a line per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: imported only for this figure
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for label, values in errors.items():
        x = np.arange(first + 1, first + 1 + len(values))
        ax.plot(x, np.asarray(values, dtype=np.float64) * 1e3, lw=1.2, label=label)
    ax.set_xlabel("frame")
    ax.set_ylabel("warping error (1e-3, lower = steadier)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _mean(values: Sequence[float]) -> float | None:
    ok = [v for v in values if not np.isnan(v)]
    return float(np.mean(ok)) if ok else None


def evaluate_video(
    video: Path,
    output: Path,
    methods: Sequence[tuple[str, Stylizer, FlowBlend | None, Any]],
    loss_fn: PerceptualLoss,
    *,
    start: int = 0,
    frames: int | None = 60,
    max_size: int | None = 640,
    loss_frames: int = 8,
    flow_preset: str = "medium",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure each ``(label, stylizer, temporal, style)`` of ``methods`` on the clip and write the report.

    ``loss_fn`` must hold the style targets to judge every method by (the first model's).
    Returns the metrics (also written to ``metrics.json``).
    """
    clip = read_frames(video, start=start, count=frames, max_size=max_size)
    inputs = _tensor(clip)
    t, h, w = clip.shape[:3]
    log.info("%s: %d frames from frame %d at %dx%d", video, t, start, w, h)
    picks = sorted(
        {int(i) for i in np.linspace(0, t - 1, min(loss_frames, t)).round()}
    )  # frames whose loss is measured
    floor = warping_errors(inputs, preset=flow_preset)
    rows: dict[str, Any] = {
        "input": {
            "warping_error": _mean(floor),
            "warping_errors": floor,
            "loss": None,
            "seconds_per_frame": None,
        }
    }
    strips: dict[str, np.ndarray] = {}
    for label, stylizer, temporal, style in methods:
        if label in rows:
            raise ConfigError(f"two methods named {label!r}")
        out, seconds = stylise_clip(stylizer, clip, temporal=temporal, style=style)
        errs = warping_errors(inputs, _tensor(out), preset=flow_preset)
        rows[label] = {
            "warping_error": _mean(errs),
            "warping_errors": errs,
            "loss": sampled_losses(loss_fn, clip, out, picks),
            "seconds_per_frame": statistics.median(seconds),
            "restarts": temporal.restarts if temporal is not None else None,
        }
        strips[label] = out
        log.info(
            "%s: warping error %.3g (input %.3g), %.0f ms/frame",
            label,
            rows[label]["warping_error"] or float("nan"),
            rows["input"]["warping_error"] or float("nan"),
            rows[label]["seconds_per_frame"] * 1e3,
        )
    # The strip: three consecutive pairs where the clip moves most, so flicker shows between neighbours.
    motion = np.nan_to_num(np.asarray(floor, dtype=np.float64), nan=0.0)
    centres = [int(c) for c in np.linspace(0, t - 2, 3).round()] if t >= 2 else [0]
    if len(motion) >= 3:
        centres = sorted(int(i) for i in np.argsort(-motion)[:3])
    strip = sorted({i for c in centres for i in (c, c + 1) if i < t})[:STRIP_FRAMES]
    output.mkdir(parents=True, exist_ok=True)
    write_strip(output / FRAMES_FILE, clip, strips, strip, first=start)
    write_warping_plot(output / WARPING_FILE, {k: v["warping_errors"] for k, v in rows.items()}, first=start)
    metrics = {
        "metrics_version": 1,
        "kind": "video",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **(dict(extra) if extra else {}),
        "video": {
            "path": str(video),
            "sha256": sha256_file(video),
            "start": start,
            "frames": t,
            "size": [w, h],
            "flow_preset": flow_preset,
            "loss_frames": [start + i for i in picks],  # the clip's frame numbers
            "strip_frames": [start + i for i in strip],
        },
        "loss": loss_fn.config(),
        "methods": rows,
    }
    metrics = json_safe(metrics)
    with atomic_write(output / METRICS_FILE) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    with atomic_write(output / REPORT_FILE) as tmp:
        tmp.write_text(render_video_report(metrics), encoding="utf-8")
    return metrics


def render_video_report(metrics: Mapping[str, Any]) -> str:
    """report.md of a video evaluation: the table of methods, how to read it, the pictures."""
    v = metrics["video"]
    rows = metrics["methods"]
    base = rows.get("per frame", {}).get("warping_error")
    out = [f"# Flicker of `{metrics.get('model', {}).get('path', '?')}` on `{v['path']}`", ""]
    if metrics.get("command"):
        out += ["Made with:", "", "```bash", metrics["command"], "```", ""]
    versions = metrics.get("versions") or {}
    out += [
        f"Frames {v['start']}–{v['start'] + v['frames'] - 1} ({v['frames']} frames) at {v['size'][0]}x{v['size'][1]}; "
        f"DIS flow `{v['flow_preset']}`; device {versions.get('device', '?')} ({versions.get('hardware', '?')}, "
        f"{versions.get('torch_threads', '?')} thread(s)); {metrics['created']}.",
        "",
        "| method | warping error (1e-3) | vs per frame | content | style | total | ms / frame |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def num(x: float | None, scale: float = 1.0, fmt: str = ".3g") -> str:
        return "–" if x is None else format(x * scale, fmt)

    for label, r in rows.items():
        loss = r.get("loss") or {}
        ratio = None if base in (None, 0) or r["warping_error"] is None else r["warping_error"] / base
        out.append(
            f"| {label} | {num(r['warping_error'], 1e3)} | {num(ratio, fmt='.2f')} | {num(loss.get('content'))} "
            f"| {num(loss.get('style'))} | {num(loss.get('total'))} | {num(r.get('seconds_per_frame'), 1e3, '.0f')} |"
        )
    out += [
        "",
        "- **Warping error** (Lai et al. 2018): stylised frame t against frame t−1 moved onto it by the "
        "optical flow of the *input* frames, over the pixels where that flow is reliable; mean over "
        "the frame pairs. The input's own error is the floor (the flow's and the warp's errors). "
        "Lower is steadier.",
        f"- **Loss** of frames {', '.join(map(str, v['loss_frames']))} (medians), with the first model's loss "
        "and style targets for every row: a steadier method should not pay for it in style.",
        "- **ms / frame**: median per frame, one frame at a time (network and, for `temporal=flow`, the blend).",
        "",
        f"![frames]({FRAMES_FILE})",
        "",
        f"`{FRAMES_FILE}`: the same frames (consecutive pairs where the clip moves most) for every row.",
        "",
        f"![warping error per frame]({WARPING_FILE})",
        "",
    ]
    return "\n".join(out)
