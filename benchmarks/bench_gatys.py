#!/usr/bin/env python
"""Speed of Gatys optimisation: one iteration (VGG forward + backward) and a whole L-BFGS run.

    python benchmarks/bench_gatys.py                       # CPU, or the GPU when there is one
    python benchmarks/bench_gatys.py --sizes 256 512 --repeats 5 --run-iterations 500
    python benchmarks/bench_gatys.py --precisions fp32 bf16 --run-iterations 300   # bf16 VGG vs fp32

Prints a Markdown table (median of --repeats timings) and the command that produced it. VGG
weights do not change the speed, so random weights are used unless --weights is given; the full
run uses ../shared's tubingen x starry_night when present (synthetic images otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from fastns.image import load_image
from fastns.losses import PerceptualLoss
from fastns.optimize import optimize_image
from fastns.utils import cpu_name, resolve_device
from fastns.vgg import IMAGENET_MEAN, IMAGENET_STD, layer_names

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

LOSSES = {
    # name: (arch, content layers, style layers) - the two presets of fastns/configs/loss/
    "gatys": ("vgg19", ["relu4_2"], ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]),
    "johnson": ("vgg16", ["relu2_2"], ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]),
}


def make_loss(name: str, arch: str, weights: str, device):
    _, content, style = LOSSES[name]
    cfg = {
        "content_layers": dict.fromkeys(content, 1.0),
        "style_layers": dict.fromkeys(style, 1.0),
        "content_weight": 1.0,
        "style_weight": 1e6,
        "vgg": {"arch": arch, "weights": weights},
    }
    return PerceptualLoss.from_config(cfg, device)


def images(size: int, device):
    content_path, style_path = SHARED / "content" / "tubingen.jpg", SHARED / "styles" / "starry_night.jpg"
    if content_path.exists() and style_path.exists():
        return load_image(content_path, size, device), load_image(style_path, size, device)
    gen = torch.Generator().manual_seed(0)
    h = size * 3 // 4
    return torch.rand(1, 3, h, size, generator=gen).to(device), torch.rand(
        1, 3, size, size, generator=gen
    ).to(device)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def reference_iteration(
    arch: str, content_layers: list[str], style_layers: list[str], content, style, repeats: int, device
) -> float:
    """Median seconds of one plain iteration: what a first implementation does.

    The whole of torchvision's VGG ``features`` runs on the image, and on the content and style
    images again to recompute the targets, every iteration, in fp32; the same loss terms (mean
    squared errors of features and of C·H·W-normalised Gram matrices). Random weights: the speed
    does not depend on them.
    """
    full = getattr(torchvision.models, arch)().features.to(device).eval().requires_grad_(False)
    for i, m in enumerate(full):
        if isinstance(m, torch.nn.ReLU):
            full[i] = torch.nn.ReLU(inplace=False)
    index = {name: i for i, name in enumerate(layer_names(arch))}
    wanted = {index[n] for n in [*content_layers, *style_layers]}
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def run(img):
        x, out = (img - mean) / std, {}
        for i, m in enumerate(full):  # all layers, whatever the loss needs
            x = m(x)
            if i in wanted:
                out[i] = x
        return out

    content_ids = [index[n] for n in content_layers]
    style_ids = [index[n] for n in style_layers]

    def total(x):
        fx = run(x)
        with torch.no_grad():
            fc, fs = run(content), run(style)
        return sum(F.mse_loss(fx[j], fc[j]) for j in content_ids) + sum(
            F.mse_loss(plain_gram(fx[j]), plain_gram(fs[j])) for j in style_ids
        )

    return median_iteration(total, content, repeats, device)


def plain_gram(features: torch.Tensor) -> torch.Tensor:
    """The reference's Gram matrix, ``F Fᵀ / (C·H·W)``, differentiated by autograd as written."""
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def median_iteration(total, content, repeats: int, device) -> float:
    """Median seconds of ``total(x).backward()`` for an image ``x`` the size of ``content``."""
    x = content.clone().requires_grad_(True)
    times = []
    for i in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        x.grad = None
        total(x).backward()
        sync(device)
        if i > 0:  # the first call warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_iteration(loss, content, repeats: int, device, dtype=torch.float32) -> float:
    """Median seconds of one loss evaluation + backward at the content's size (VGG in ``dtype``)."""

    def total(x):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            return loss(x)["total"]

    return median_iteration(total, content, repeats, device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes", type=int, nargs="+", default=[256, 512], help="longest sides to time one iteration at"
    )
    p.add_argument("--archs", nargs="+", default=["vgg16", "vgg19"])
    p.add_argument("--repeats", type=int, default=5, help="timed iterations per cell (median reported)")
    p.add_argument("--run-size", type=int, default=256, help="size of the whole L-BFGS run")
    p.add_argument("--run-iterations", type=int, default=500, help="iterations of the whole run (0: skip)")
    p.add_argument(
        "--weights", default="random", help="VGG weights: random | imagenet | path (speed is the same)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precisions", nargs="+", default=["fp32"], choices=sorted(DTYPES), help="VGG compute precisions"
    )
    args = p.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)

    print(
        f"# Gatys benchmark on {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else cpu_name()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads)\n"
    )
    print(
        "## One iteration (loss forward + backward through VGG), gatys layers (content relu4_2, style relu1_1..relu5_1);\n"
        "the plain reference runs the whole VGG and recomputes the targets every iteration, in fp32\n"
    )
    print(
        "| arch | size | image | precision | s / iteration | iterations / s | plain reference s / iteration | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for arch in args.archs:
        loss = make_loss("gatys", arch, args.weights, device)
        for size in args.sizes:
            content, style = images(size, device)
            loss.set_style(style)
            loss.set_content(content)
            h, w = content.shape[-2:]
            _, c_layers, s_layers = LOSSES["gatys"]
            ref = reference_iteration(arch, c_layers, s_layers, content, style, args.repeats, device)
            for precision in args.precisions:
                sec = time_iteration(loss, content, args.repeats, device, DTYPES[precision])
                print(
                    f"| {arch} | {size} | {w}x{h} | {precision} | {sec:.3f} | {1 / sec:.2f} | {ref:.3f} | {ref / sec:.2f}x |",
                    flush=True,
                )

    if args.run_iterations > 0:
        print(
            f"\n## Whole run: {args.run_iterations} L-BFGS iterations (strong Wolfe) at {args.run_size} px\n"
        )
        print(
            "| loss | arch | precision | evaluations | seconds | s / iteration | loss start -> end | final loss in fp32 |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name in ("johnson", "gatys"):
            arch = LOSSES[name][0]
            loss = make_loss(name, arch, args.weights, device)
            content, style = images(args.run_size, device)
            loss.set_style(style)
            loss.set_content(content)
            for precision in args.precisions:
                sync(device)
                r = optimize_image(
                    loss,
                    content,
                    iterations=args.run_iterations,
                    progress=False,
                    compute_dtype=DTYPES[precision],
                )
                sync(device)
                with torch.no_grad():
                    exact = float(loss(r.image)["total"])  # the same yardstick for every precision
                print(
                    f"| {name} | {arch} | {precision} | {r.evaluations} | {r.seconds:.1f} | "
                    f"{r.seconds / args.run_iterations:.3f} | {r.losses[0]['total']:.3g} -> {r.losses[-1]['total']:.3g} | "
                    f"{exact:.4g} |",
                    flush=True,
                )

    print(f"\ncommand: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
