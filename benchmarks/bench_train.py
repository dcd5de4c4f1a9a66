#!/usr/bin/env python
"""Training step speed: fastns's step vs a plain reference step, side by side, at equal loss values.

    python benchmarks/bench_train.py                     # CPU (or the GPU when there is one), 128 and 256 px
    python benchmarks/bench_train.py --sizes 256 --steps 20 --precision bf16-mixed   # GPU or AMX CPU
    python benchmarks/bench_train.py --sizes 128 --precision bf16-mixed --temporal-weight 30   # + the temporal loss
    python benchmarks/bench_train.py --sizes 128 --precision bf16-mixed --compile   # fastns's step under torch.compile
    python benchmarks/bench_train.py --sizes 128 --precision bf16-mixed --border 32 --droplet-weight 1   # + the droplet term

The reference is the step written the straightforward way (as pytorch/examples' fast_neural_style
does): transformer forward, two full VGG16 passes up to relu4_3 (stylised output and content),
the Gram matrix of every style layer, default Adam, NCHW tensors. The fastns step is
``StyleTransferModule.training_step`` as ``scripts/train.py`` runs it. Both start from the same
weights and batch; the table reports both loss values so that "equal loss" can be checked, the
median seconds per step, steps/s and the speed-up ratio. ``--temporal-weight W`` adds a column: the
fastns step with ``loss.temporal_weight=W`` (a second, moved copy of the batch through the network),
timed in the same cell; ``--droplet-weight W`` one with ``droplet_weight=W`` (the spike share at
every norm's input). ``--border B`` runs the fastns steps with the training's reflection border
(the recipe's 32 px; the reference has none).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastns.module import StyleTransferModule
from fastns.utils import cpu_name, resolve_device
from fastns.vgg import IMAGENET_MEAN, IMAGENET_STD

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
STYLE_LAYERS = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]


def plain_gram(features: torch.Tensor) -> torch.Tensor:
    """The reference's Gram matrix, ``F Fᵀ / (C·H·W)``, differentiated by autograd as written."""
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


class ReferenceVGG(nn.Module):
    """VGG16 features up to relu4_3 in four slices, returning all four activations (no truncation)."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.slices = nn.ModuleList([features[0:4], features[4:9], features[9:16], features[16:23]])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, x):
        x = (x - self.mean) / self.std
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x)
        return out  # relu1_2, relu2_2, relu3_3, relu4_3


def reference_step(net, vgg, style_grams, weights, x, opt):
    """The straightforward training step; returns the total loss."""
    cw, sw, tw = weights
    opt.zero_grad()
    y = net(x)
    fy = vgg(y)
    fx = vgg(x)  # a second full pass, although only relu2_2 is needed for the content loss
    content = cw * F.mse_loss(fy[1], fx[1])
    style = sum(
        sw * F.mse_loss(plain_gram(f), g.expand(f.shape[0], -1, -1))
        for f, g in zip(fy, style_grams, strict=True)
    )
    tv = tw * (
        (y[..., 1:, :] - y[..., :-1, :]).pow(2).mean() + (y[..., :, 1:] - y[..., :, :-1]).pow(2).mean()
    )
    total = content + style + tv
    total.backward()
    opt.step()
    return float(total.detach())


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, steps: int, device) -> tuple[float, float]:
    fn()  # warm-up (allocators, kernel selection, lazy init)
    fn()
    times, value = [], 0.0
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        value = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=10, help="timed steps per cell (median reported)")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument(
        "--precision", default="32-true", help="32-true | bf16-mixed (fastns step only; GPUs, CPUs with AMX)"
    )
    p.add_argument(
        "--weights",
        default=None,
        help="VGG16 weights (default: ../shared's offline VGG16 if present, else random)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--temporal-weight", type=float, default=0.0, help="also time the step with the temporal loss"
    )
    p.add_argument(
        "--droplet-weight", type=float, default=0.0, help="also time the step with the droplet term"
    )
    p.add_argument(
        "--border", type=int, default=0, help="the fastns steps' reflection border (the recipe: 32)"
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="fastns's step with compile=true (torch.compile of network and loss)",
    )
    args = p.parse_args()
    device = resolve_device(args.device)
    shared_vgg = SHARED / "weights" / "vgg16_hed_features.pth"
    weights = args.weights or (str(shared_vgg) if shared_vgg.exists() else "random")
    style_path = SHARED / "data" / "styles" / "starry_night.jpg"
    style_cfg = {"image": str(style_path), "size": 256} if style_path.exists() else None
    if style_cfg is None:  # no ../shared: a synthetic style image
        from PIL import Image

        tmp = Path("/tmp/fastns_bench_style.png")
        Image.fromarray((torch.rand(256, 256, 3) * 255).byte().numpy()).save(tmp)
        style_cfg = {"image": str(tmp), "size": 256}

    torch.manual_seed(0)
    loss_cfg = {
        "content_layers": {"relu2_2": 1.0},
        "style_layers": dict.fromkeys(STYLE_LAYERS, 1.0),
        "content_weight": 1e5,
        "style_weight": 1e10,
        "tv_weight": 1e6,
        "vgg": {"arch": "vgg16", "weights": weights},
    }

    def make_module(loss: dict, **options) -> StyleTransferModule:
        mod = StyleTransferModule(
            model={"width": args.width},
            loss=loss,
            style=style_cfg,
            image_size=256,
            optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
            border=args.border,
            **options,
        ).to(device)
        mod.prepare_for_training()  # what on_fit_start does in scripts/train.py
        return mod

    module = make_module(loss_cfg, compile=args.compile)
    # Further fastns steps timed in the same cell: (column head, module).
    variants = []
    if args.temporal_weight > 0:
        variants.append(
            (
                f"fastns + temporal ({args.temporal_weight:g})",
                make_module({**loss_cfg, "temporal_weight": args.temporal_weight}),
            )
        )
    if args.droplet_weight > 0:
        variants.append(
            (
                f"fastns + droplet ({args.droplet_weight:g})",
                make_module(loss_cfg, droplet_weight=args.droplet_weight),
            )
        )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision.startswith("bf16"))

    ref_net = copy.deepcopy(module.net).to(memory_format=torch.contiguous_format)
    ref_vgg = ReferenceVGG(copy.deepcopy(module.loss_fn.encoder.features)).to(device)
    ref_grams = [module.loss_fn._style_targets[n] for n in STYLE_LAYERS]
    lw = (loss_cfg["content_weight"], loss_cfg["style_weight"], loss_cfg["tv_weight"])

    name = torch.cuda.get_device_name() if device.type == "cuda" else cpu_name()
    print(
        f"# Training step benchmark on {device} ({name}, torch {torch.__version__}, {torch.get_num_threads()} threads)\n"
    )
    print(
        f"batch {args.batch}, width {args.width}, VGG16 weights: {Path(weights).name}, fastns precision {args.precision}"
        f"{', compile=true' if args.compile else ''}, fastns border {args.border} px\n"
    )
    heads = "".join(f" {head} s/step |" for head, _ in variants)
    print(
        "| size | reference s/step | fastns s/step | reference steps/s | fastns steps/s | speed-up "
        f"| loss ref / fastns, first step | after {args.steps + 2} steps |{heads}"
    )
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(variants))
    for size in args.sizes:
        gen = torch.Generator().manual_seed(size)
        x = torch.rand(args.batch, 3, size, size, generator=gen).to(device)
        # Equal loss values: both start from the same weights and batch.
        ref_net.load_state_dict(module.net.state_dict())
        opt = module.configure_optimizers()  # fresh Adam states for both
        ref_opt = torch.optim.Adam(ref_net.parameters(), lr=1e-3)
        with torch.no_grad(), autocast:
            ours0 = float(module.compute_loss(x)["total"])
        ref0 = _reference_total(ref_net, ref_vgg, ref_grams, lw, x)

        def fastns_step(mod: StyleTransferModule, opt: torch.optim.Optimizer, x: torch.Tensor = x) -> float:
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = mod.compute_loss(x)["total"]
            loss.backward()
            opt.step()
            return float(loss.detach())

        # Both take the same number of Adam steps on the same batch from the same weights, so the
        # last step's losses show that the faster step optimises the same way (bf16 included).
        t_ref, ref_n = median_time(
            lambda x=x, o=ref_opt: reference_step(ref_net, ref_vgg, ref_grams, lw, x, o), args.steps, device
        )
        t_ours, ours_n = median_time(lambda o=opt: fastns_step(module, o), args.steps, device)
        extra = ""
        for _, variant in variants:
            variant.net.load_state_dict(module.net.state_dict())
            variant_opt = variant.configure_optimizers()
            t_variant, _ = median_time(lambda v=variant, o=variant_opt: fastns_step(v, o), args.steps, device)
            extra += f" {t_variant:.3f} ({t_variant / t_ours:.2f}x the fastns step) |"
        print(
            f"| {size} | {t_ref:.3f} | {t_ours:.3f} | {1 / t_ref:.2f} | {1 / t_ours:.2f} | {t_ref / t_ours:.2f}x | "
            f"{ref0:.4g} / {ours0:.4g} | {ref_n:.4g} / {ours_n:.4g} |{extra}",
            flush=True,
        )
    print(f"\ncommand: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}".rstrip())


@torch.no_grad()
def _reference_total(net, vgg, grams, lw, x) -> float:
    cw, sw, tw = lw
    y = net(x)
    fy, fx = vgg(y), vgg(x)
    total = cw * F.mse_loss(fy[1], fx[1])
    total = total + sum(
        sw * F.mse_loss(plain_gram(f), g.expand(f.shape[0], -1, -1)) for f, g in zip(fy, grams, strict=True)
    )
    total = total + tw * (
        (y[..., 1:, :] - y[..., :-1, :]).pow(2).mean() + (y[..., :, 1:] - y[..., :, :-1]).pow(2).mean()
    )
    return float(total.detach())


if __name__ == "__main__":
    main()
