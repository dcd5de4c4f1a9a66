#!/usr/bin/env python
"""Flicker of stylised video: the warping error per frame and with ``temporal=flow``, and the flow's cost.

    python benchmarks/bench_temporal.py --model runs/candy/model.safetensors        # the shared clips, defaults
    python benchmarks/bench_temporal.py --model ... --clips cup.mp4:0 --frames 60 --max-size 320
    python benchmarks/bench_temporal.py --model ... --blend 0.5 0.7 --flow-size 320 null --preset fast medium

For every clip (``../shared/data/video/`` by default) a segment of ``--frames`` frames, decoded at
``--max-size`` (as ``scripts/stylize.py max_size=`` does), goes through the network frame by frame
(``temporal=none``), then through the same path with each ``temporal=flow`` setting
(:class:`fastns.stylize.temporal.FlowBlend` inside ``Stylizer.stylize_frames``, as in a video run).
The table gives Lai et al.'s warping error (:func:`fastns.metrics.warping_error`: DIS ``medium`` at
full frame size, the same flow for every row) of the input clip (the floor), of the per-frame output
and of each flow setting, its ratio to per-frame, the network's median time per frame and the
blend's (flow both ways, warps, masks) as a share of it. ``--save DIR`` writes a few frames of each
row side by side as PNGs, to look for ghosts around fast motion.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastns.metrics import warping_error  # noqa: E402
from fastns.stylize import Stylizer  # noqa: E402
from fastns.stylize.temporal import FlowBlend  # noqa: E402
from fastns.stylize.video import read_frames  # noqa: E402
from fastns.utils import cpu_name  # noqa: E402

CLIPS = ROOT.parent / "shared" / "data" / "video"


def as_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


def run(
    stylizer: Stylizer, frames: np.ndarray, blend: FlowBlend | None
) -> tuple[np.ndarray, list[float], list[float]]:
    """Stylise frame by frame; returns the output, the network's seconds per frame and the blend's."""
    net_times, blend_times = [], []

    def timed(content: torch.Tensor, stylised: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        out = blend(content, stylised)
        blend_times.append(time.perf_counter() - t)
        return out

    out = []
    for frame in frames:
        t = time.perf_counter()
        out.append(stylizer.stylize_frames(frame[None], temporal=timed if blend else None)[0])
        net_times.append(time.perf_counter() - t - (blend_times[-1] if blend else 0.0))
    return np.stack(out), net_times, blend_times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a model file (model.safetensors)")
    p.add_argument(
        "--clips",
        nargs="+",
        default=["cup.mp4:80", "tree.avi:27", "vtest.avi:212"],
        help="in ../shared/data/video, or paths; :N starts at decoded frame N (default: the 40 frames of most motion)",
    )
    p.add_argument("--frames", type=int, default=40, help="frames per clip")
    p.add_argument("--max-size", type=int, default=640, help="longest side of the frames (px), as max_size=")
    p.add_argument("--blend", type=float, nargs="+", default=[0.6], help="flow.blend values")
    p.add_argument("--flow-size", nargs="+", default=["640"], help="flow.max_size values (px, or null)")
    p.add_argument("--preset", nargs="+", default=["medium"], help="flow.preset values")
    p.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads (default: theirs)")
    p.add_argument("--save", type=Path, default=None, help="write frame strips (PNG) to this folder")
    args = p.parse_args()
    if args.threads:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    stylizer = Stylizer.load(args.model, device="cpu")
    print(f"{stylizer!r} on {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print(
        "| clip | frames, size | method | warping error (1e-3) | vs per frame | network ms/frame | flow ms/frame | overhead | restarts |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for clip in args.clips:
        name, _, start = clip.partition(":")
        path = Path(name) if Path(name).is_file() else CLIPS / name
        frames = read_frames(path, start=int(start or 0), count=args.frames, max_size=args.max_size)
        inputs = as_tensor(frames)
        shape = f"{start or 0}-{int(start or 0) + len(frames) - 1} at {frames.shape[2]}x{frames.shape[1]}"
        floor = warping_error(inputs)
        print(f"| {path.name} | {shape} | input (floor) | {floor * 1e3:.3f} | | | | | |")
        per_frame, net, _ = run(stylizer, frames, None)
        base = warping_error(inputs, as_tensor(per_frame))
        net_ms = statistics.median(net) * 1e3
        print(f"| {path.name} | {shape} | per frame | {base * 1e3:.3f} | 1.00 | {net_ms:.0f} | | | |")
        strips = [per_frame]
        for preset in args.preset:
            for size in args.flow_size:
                for b in args.blend:
                    max_size = None if str(size).lower() in ("null", "none") else int(size)
                    blend = FlowBlend(blend=b, preset=preset, max_size=max_size)
                    out, net, times = run(stylizer, frames, blend)
                    err = warping_error(inputs, as_tensor(out))
                    flow_ms = statistics.median(times) * 1e3
                    ref = statistics.median(net) * 1e3
                    print(
                        f"| {path.name} | {shape} | flow blend={b} preset={preset} size={size} | {err * 1e3:.3f} "
                        f"| {err / base:.2f} | {ref:.0f} | {flow_ms:.1f} | {flow_ms / ref:.0%} | {blend.restarts} |"
                    )
                    strips.append(out)
        if args.save:
            from PIL import Image

            args.save.mkdir(parents=True, exist_ok=True)
            picks = np.linspace(1, len(frames) - 1, 4).round().astype(int)
            rows = [np.concatenate([frames[i] for i in picks], 1)] + [
                np.concatenate([s[i] for i in picks], 1) for s in strips
            ]
            Image.fromarray(np.concatenate(rows, 0)).save(args.save / f"{path.stem}.png")
    print(f"\npython benchmarks/bench_temporal.py {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
