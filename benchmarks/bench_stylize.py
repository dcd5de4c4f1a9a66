#!/usr/bin/env python
"""Stylizer speed: the optimised inference path vs the plain eager fp32 forward, side by side.

    python benchmarks/bench_stylize.py                         # CPU, and the GPU when there is one
    python benchmarks/bench_stylize.py --quick                 # a smoke run: small sizes, few repeats
    python benchmarks/bench_stylize.py --variants opt compile bf16 --sizes 1024
    python benchmarks/bench_stylize.py --device cuda --video 240   # + a 1080p clip end to end
    python benchmarks/bench_stylize.py --device cuda --variants opt eager --batches 1 4  # CUDA graphs' share
    python benchmarks/bench_stylize.py --num-styles 1 4 --sizes 512 --variants opt   # N-style networks' cost

For every device, network width and image size, the table has one row per path:

- ``plain``: what one writes by hand — ``net(F.pad(x, 32, "reflect"))`` cropped, ``torch.no_grad``,
  fp32, NCHW, cuDNN autotuning off (the same border as the stylizer, so the outputs are comparable);
- ``opt``: :class:`fastns.Stylizer` with its defaults, what users get (inference mode, folded
  InstanceNorm + ReLU, channels-last on the CPU, cuDNN autotuning, ``precision=auto``: fp16 on CUDA,
  bf16 on CPUs with AMX or AVX-512 BF16, fp32 elsewhere; on CUDA, replayed from a CUDA graph per
  input shape from its second call); the path column names the precision it chose;
- ``eager``: the defaults without CUDA graphs (the same as ``opt`` on CPUs);
- ``fp32``: the same in fp32, the exact optimised path (outputs equal ``plain`` up to rounding);
- ``compile``: the defaults with ``torch.compile`` (compile time is reported apart and not timed);
- ``bf16``: the same in bf16 (on CPUs with AMX this is what ``opt`` picks).

All paths use the same random weights (speed does not depend on them) and the same input; the
``max |Δ|`` column is the largest difference from ``plain`` on [0, 1] outputs (8-bit levels: x255).
Times are medians of ``--repeats`` calls after warm-up; ``--batches 1 4`` adds rows of 4 images per
call (ms / image and fps count images).
``--num-styles 1 4`` runs each network as a single-style one and as one of 4 styles (conditional
instance norm, the first style selected), side by side. ``--video N`` adds one end-to-end row: a synthetic N-frame 1920x1080 H.264 clip with AAC audio
through ``fastns.stylize.stylize_video`` (decode, network, encode, mux), full-width network.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fastns.stylize import Stylizer, stylize_video
from fastns.transformer import DEFAULT_BORDER, TransformerNet
from fastns.utils import cpu_name

WIDTHS = {"full": 1.0, "half": 0.5}
SIZES = ["256", "512", "1024", "1920x1080"]


def parse_size(text: str) -> tuple[int, int]:
    """``"512"`` -> (512, 512); ``"1920x1080"`` -> (1080, 1920) as (H, W)."""
    w, _, h = text.partition("x")
    return (int(h or w), int(w))


def timeit(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median seconds per call of ``fn`` after ``warmup`` calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def plain_forward(net: TransformerNet, x: torch.Tensor, border: int) -> torch.Tensor:
    with torch.no_grad():
        padded = F.pad(x, (border,) * 4, mode="reflect")
        if net.num_styles == 1:
            y = net(padded)
        else:  # the first style, as the stylizer's default
            y = net(
                padded,
                style=F.one_hot(torch.zeros(x.shape[0], dtype=torch.long), net.num_styles)
                .float()
                .to(x.device),
            )
    return y[..., border : border + x.shape[-2], border : border + x.shape[-1]]


def make_clip(path: Path, frames: int, size: tuple[int, int] = (1920, 1080), fps: int = 30) -> Path:
    """A synthetic H.264 + AAC clip: a moving colour field (cheap to make, not trivial to encode)."""
    import av

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt, v.options = w, h, "yuv420p", {"preset": "ultrafast", "crf": "20"}
        a = c.add_stream("aac", rate=48000)
        a.layout = "stereo"
        for i in range(frames):
            img = np.stack(
                [
                    128 + 100 * np.sin((xx + 8 * i) / 90),
                    128 + 100 * np.sin((yy - 5 * i) / 70),
                    128 + 100 * np.sin((xx + yy + 3 * i) / 130),
                ],
                -1,
            ).astype(np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        n = 48000 * frames // fps
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / 48000)).astype(np.float32)
        stereo = np.ascontiguousarray(np.stack([tone, tone]))
        for s in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(stereo[:, s : s + 1024]), format="fltp", layout="stereo"
            )
            frame.sample_rate = 48000
            for p in a.encode(frame):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--device", nargs="+", default=["cpu", "cuda"], help="devices to measure (absent ones are skipped)"
    )
    p.add_argument("--networks", nargs="+", default=list(WIDTHS), choices=list(WIDTHS))
    p.add_argument(
        "--num-styles", nargs="+", type=int, default=[1], help="styles per network (1 = single-style)"
    )
    p.add_argument("--sizes", nargs="+", default=None, help=f"N (square) or WxH (default: {' '.join(SIZES)})")
    p.add_argument(
        "--variants", nargs="+", default=["opt", "fp32"], choices=["opt", "eager", "fp32", "compile", "bf16"]
    )
    p.add_argument(
        "--batches", nargs="+", type=int, default=[1], help="images per call (rows per batch size)"
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="timed calls per row (default 5 on GPU, 3 on CPU)"
    )
    p.add_argument(
        "--video", type=int, default=0, help="frames of a 1080p clip to stylise end to end (0: none)"
    )
    p.add_argument("--video-preset", default="veryfast", help="x264 preset for the --video row")
    p.add_argument("--batch-size", type=int, default=4, help="frames per network call for the --video row")
    p.add_argument("--quick", action="store_true", help="smoke run: sizes 128 and 256, 2 repeats")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.repeats = args.sizes or ["128", "256"], args.repeats or 2
    args.sizes = args.sizes or SIZES

    devices = [
        torch.device(d)
        for d in args.device
        if d == "cpu" or (d.startswith("cuda") and torch.cuda.is_available())
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads ({cpu_name()})", end="")
    if any(d.type == "cuda" for d in devices):
        print(f", GPU {torch.cuda.get_device_name()}", end="")
    print(f"; border {DEFAULT_BORDER} px; random weights\n")
    print("| device | network | size | path | ms / image | fps | ms / MP | speed-up | max \\|Δ\\| |")
    print("|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        repeats = args.repeats or (5 if device.type == "cuda" else 3)
        warmup = 3 if device.type == "cuda" else 1
        for width_name, num_styles in [(n, k) for n in args.networks for k in args.num_styles]:
            name = width_name if num_styles == 1 else f"{width_name}, {num_styles} styles"
            torch.manual_seed(0)
            net = TransformerNet(width=WIDTHS[width_name], num_styles=num_styles).eval()
            plain_net = copy.deepcopy(net).to(device)
            paths: dict[str, Stylizer] = {}
            compile_seconds: dict[str, float] = {}
            for variant in args.variants:
                if (
                    variant == "bf16"
                    and device.type == "cpu"
                    and not torch.ops.mkldnn._is_mkldnn_bf16_supported()
                ):
                    continue
                precision = variant if variant in ("bf16", "fp32") else "auto"
                paths[variant] = Stylizer(
                    net,
                    device=device,
                    precision=precision,
                    compile=variant == "compile",
                    cuda_graphs=False if variant == "eager" else None,
                )
            for size, batch in [(s, b) for s in args.sizes for b in args.batches]:
                h, w = parse_size(size)
                x = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0)).to(device)
                mp = batch * h * w / 1e6
                torch.backends.cudnn.benchmark = False
                plain_s = timeit(
                    lambda x=x, n=plain_net: plain_forward(n, x, DEFAULT_BORDER), device, repeats, warmup
                )
                reference = plain_forward(plain_net, x, DEFAULT_BORDER)
                label = f"{w}x{h}" if batch == 1 else f"{batch}x{w}x{h}"
                print(
                    f"| {device.type} | {name} | {label} | plain | {plain_s * 1e3 / batch:.1f} | {batch / plain_s:.1f} | {plain_s * 1e3 / mp:.1f} | 1.00 | 0 |"
                )
                for variant, stylizer in paths.items():
                    torch.backends.cudnn.benchmark = device.type == "cuda"
                    if variant == "compile":
                        start = time.perf_counter()
                        stylizer.stylize(x)
                        compile_seconds[label] = time.perf_counter() - start
                    s = timeit(lambda x=x, st=stylizer: st.stylize(x), device, repeats, warmup)
                    diff = (stylizer.stylize(x) - reference).abs().max().item()
                    shown = (
                        f"opt ({str(stylizer.dtype).removeprefix('torch.')})" if variant == "opt" else variant
                    )
                    print(
                        f"| {device.type} | {name} | {label} | {shown} | {s * 1e3 / batch:.1f} | {batch / s:.1f} | "
                        f"{s * 1e3 / mp:.1f} | {plain_s / s:.2f} | {diff:.1e} ({diff * 255:.2f}/255) |"
                    )
                del x, reference
            if compile_seconds:
                print(
                    f"\n(compile warm-up, {device.type} {name}: "
                    + ", ".join(f"{k} {v:.0f} s" for k, v in compile_seconds.items())
                    + ")\n"
                )
    if args.video:
        device = devices[-1]
        with tempfile.TemporaryDirectory() as tmp:
            clip = make_clip(Path(tmp) / "clip.mp4", args.video)
            for compiled in [False, True] if "compile" in args.variants else [False]:
                torch.manual_seed(0)
                stylizer = Stylizer(TransformerNet(width=1.0), device=device, compile=compiled)
                # A first run warms up (cuDNN autotuning, compilation); the second is timed.
                stylize_video(
                    stylizer, clip, Path(tmp) / "warm.mp4", batch_size=args.batch_size, preset="ultrafast"
                )
                report = stylize_video(
                    stylizer,
                    clip,
                    Path(tmp) / "out.mp4",
                    batch_size=args.batch_size,
                    preset=args.video_preset,
                )
                print(
                    f"\nvideo end to end ({device.type}, full network, {str(stylizer.dtype).removeprefix('torch.')}"
                    f"{', compiled' if compiled else ''}): {report.frames} frames 1920x1080 + AAC, "
                    f"x264 preset {args.video_preset}, batch {args.batch_size}: {report.seconds:.2f} s, "
                    f"**{report.fps:.1f} fps**"
                )
    print(f"\ncommand: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
