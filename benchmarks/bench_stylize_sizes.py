"""Stylizer cost growth: ms per megapixel and peak memory from 512² to 4096², whole images and tiles.

    python benchmarks/bench_stylize_sizes.py                          # CPU: 512 1024 2048 4096, tile 1024
    python benchmarks/bench_stylize_sizes.py --device cuda --sizes 1024 4096 8192 --tile 2048

Every cell runs in a fresh process, so that its peak memory (max RSS; on CUDA also the peak
allocated device memory) is its own. The path is the Stylizer's default (``precision=auto``), with
``tile=--tile`` for the tiled rows; random weights, a random image; the median of ``--repeats`` calls
after one warm-up call. Flat ms/MP means the cost grows with the pixels and nothing else.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastns.stylize import Stylizer  # noqa: E402
from fastns.transformer import TransformerNet  # noqa: E402


def one(size: int, tile: int | None, device: str, width: float, repeats: int) -> dict:
    """Time one cell in this process; returns its figures."""
    torch.manual_seed(0)
    stylizer = Stylizer(TransformerNet(width=width), device=device)
    x = torch.rand(1, 3, size, size)

    def call() -> None:
        stylizer.stylize(x, tile=tile)
        if stylizer.device.type == "cuda":
            torch.cuda.synchronize()

    call()  # warm-up: allocations, kernel choice
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    gpu = torch.cuda.max_memory_allocated() / 2**20 if stylizer.device.type == "cuda" else None
    return {
        "dtype": str(stylizer.dtype).removeprefix("torch."),
        "seconds": seconds,
        "ms_per_mp": seconds * 1e3 / (size * size / 1e6),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gpu_mb": gpu,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    p.add_argument("--tile", type=int, default=1024, help="tile size of the tiled rows")
    p.add_argument("--untiled-up-to", type=int, default=2048, help="largest size also run as a whole image")
    p.add_argument("--device", default="cpu")
    p.add_argument("--width", type=float, default=1.0, help="network width (1.0 full, 0.5 half)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--one", nargs=2, metavar=("SIZE", "TILE"), help=argparse.SUPPRESS)  # a child process
    args = p.parse_args()
    if args.one:
        size, tile = int(args.one[0]), (None if args.one[1] == "none" else int(args.one[1]))
        print(json.dumps(one(size, tile, args.device, args.width, args.repeats)))
        return

    rows = []
    for size in args.sizes:
        for tile in ([None] if size <= args.untiled_up_to else []) + (
            [args.tile] if size > args.tile else []
        ):
            cmd = [sys.executable, __file__, "--one", str(size), str(tile or "none"), "--device", args.device]
            cmd += ["--width", str(args.width), "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append((size, tile, json.loads(out.strip().splitlines()[-1])))
            print(f"  {size} tile={tile}: {rows[-1][2]}", file=sys.stderr, flush=True)
    print(
        f"torch {torch.__version__}, device {args.device}, width {args.width}, {torch.get_num_threads()} threads"
    )
    print("| size | tile | dtype | s / image | ms / MP | max RSS MB | peak GPU MB |")
    print("|---|---|---|---:|---:|---:|---:|")
    for size, tile, r in rows:
        gpu = "–" if r["gpu_mb"] is None else f"{r['gpu_mb']:.0f}"
        print(
            f"| {size}x{size} | {tile or 'whole'} | {r['dtype']} | {r['seconds']:.2f} | {r['ms_per_mp']:.0f} "
            f"| {r['rss_mb']:.0f} | {gpu} |"
        )
    print(f"\ncommand: python benchmarks/bench_stylize_sizes.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
