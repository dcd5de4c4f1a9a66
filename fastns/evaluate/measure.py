"""What is measured on one photo, and how the per-photo numbers are summarised over photos.

:func:`evaluate_image` runs the network and the Gatys optimisations on one photo and returns
its record (losses, equivalent iterations, speed, SSIM, colour distance, grid pattern);
:func:`droplet_share` looks inside the network for droplets; :func:`aggregate` turns the records
into means and medians. :func:`time_call` is the clock.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..losses import PerceptualLoss
from ..metrics import color_histogram, grid_pattern, histogram_distance, spike_share, ssim_luminance
from ..optimize import white_noise
from ..stylize import Stylizer
from ..transformer import PaddedNet, kept_region, last_norm
from .gatys import GatysRun, equivalent_iterations, run_gatys

#: Forward passes run before timing the network (first-call allocation, oneDNN/cuDNN kernel choice).
WARMUP_RUNS = 2


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


def _loss_floats(terms: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
    return {k: float(v) for k, v in terms.items()}


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
    style: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """All measurements for one photo ``content`` ``(1, 3, H, W)`` on the loss's device.

    ``style``: which of the network's styles (networks of several styles; the loss must hold that
    style's targets).

    Returns:
        ``(metrics, pictures)``: the JSON-ready per-image record and, for the figures, the
        network output, the Gatys snapshots and the trajectories.
    """
    device = content.device
    h, w = content.shape[-2:]
    loss_fn.set_content(content)  # the same content targets for the network and for Gatys

    # The network: output, loss, time.
    # (1, 3, H, W) in [0, 1]; cloned out of inference mode so that the loss may use it freely.
    output = stylizer.stylize(content, style=style).to(device).clone()
    with torch.no_grad():
        net_loss = _loss_floats(loss_fn(output))
    net_seconds = time_call(lambda: stylizer.stylize(content, style=style), timing_runs, device=device)
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


def droplet_share(
    net: torch.nn.Module, image: torch.Tensor, border: int, style: torch.Tensor | None = None
) -> float | None:
    """Median over channels of :func:`~fastns.metrics.spike_share` at the input of the last norm.

    ``net``: the network in its training form (a :class:`~fastns.transformer.TransformerNet`, not
    the stylizer's inference copy, whose folded norms work in place); ``image`` (1, 3, H, W) in
    [0, 1] on its device, run through the ``border`` as users stylise; ``style``: style weights (N,)
    of a network of several styles. None when the network has no normalisation layer.

    The decoder's last norm is where the droplets of the recipe's networks were largest
    (docs/training.md, "Droplets"): about 0.1 without blotches, 0.2 and up with them. Only the
    part of the map that becomes the output counts: a spike in the reflected border is cropped
    off with it and shows nowhere (where the 4-style networks put theirs, docs/train.md).
    """
    norm = last_norm(net)
    if norm is None:
        return None
    seen: list[torch.Tensor] = []
    handle = norm.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        with torch.inference_mode():
            PaddedNet(net, border)(image.float(), style)
    finally:
        handle.remove()
    return float(spike_share(kept_region(seen[-1], image.shape[-2:], border, net)).median())


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
        # None: not measured (droplet_size=null, or a report from before the measure)
        "droplet_share": {"network": summarize([r["network"].get("droplet_share") for r in records])},
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
