#!/usr/bin/env python
"""Host time per training step outside the maths: logging, Lightning's loop, a bare loop.

    python benchmarks/bench_train_host.py                 # 3 rounds x 600 steps, ~6 minutes on 2 cores

A GPU step is fast only if the host queues the next one in time, so the Python around the model
matters there. This measures it on the CPU with a network so small that the maths costs almost
nothing (width 0.125, one residual block, 16 px crops, random VGG16; ``experiment=quickstart``
otherwise), three ways, alternating, in one process:

- ``log every step``: ``training_step`` hands its 11 scalars to ``self.log`` at every step (what a
  CPU run does, so that the progress bar stays live);
- ``log written steps``: only on the steps Lightning writes (what a GPU run does);
- ``bare loop``: ``compute_loss``, ``backward`` and fused Adam on the same loader, no Lightning.

Reported: the median ms/step over steps 100 to the end of each run, per round, and the ratios of
the medians. Needs the training photos in ../shared/data/photos/train (or ``--photos``) and a style image
(``--style``, default ../shared/data/styles/candy.jpg).
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from pytorch_lightning.callbacks import Callback

from fastns.module import StyleTransferModule
from fastns.train import build

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


class _StepClock(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter())


def _config(photos: Path, style: Path, steps: int, run_dir: Path):
    overrides = [
        "experiment=quickstart",
        f"data.root={photos}",
        f"style.image={style}",
        "data.image_size=16",
        "model.width=0.125",
        "model.num_residual=1",
        "loss.vgg.weights=random",
        "style.size=32",
        f"trainer.max_steps={steps}",
        "trainer.val_check_interval=100000",
        "checkpoint_every=100000",
        "trainer.precision=32-true",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"run_dir={run_dir}",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "fastns" / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _median_ms(times: list[float], skip: int = 100) -> float:
    return statistics.median(b - a for a, b in zip(times[skip:-1], times[skip + 1 :], strict=True)) * 1e3


def lightning_run(cfg, run_dir: Path, log_written_only: bool) -> float:
    """Median ms/step of a real ``trainer.fit`` with the chosen logging rule."""
    real = StyleTransferModule._logs_this_step
    if log_written_only:  # the GPU rule, on the CPU
        StyleTransferModule._logs_this_step = lambda self: bool(
            self.trainer._logger_connector.should_update_logs
        )
    else:
        StyleTransferModule._logs_this_step = lambda self: True
    try:
        trainer, module, datamodule, _ = build(cfg, run_dir)
        clock = _StepClock()
        trainer.callbacks.append(clock)
        pl.seed_everything(0, verbose=False)
        trainer.fit(module, datamodule=datamodule)
    finally:
        StyleTransferModule._logs_this_step = real
    return _median_ms(clock.times)


def bare_run(cfg, run_dir: Path, steps: int) -> float:
    """Median ms/step of the same maths with no Lightning around it."""
    _, module, datamodule, _ = build(cfg, run_dir)
    datamodule.setup("fit")
    module.prepare_for_training()
    optimizer = torch.optim.Adam(module.net.parameters(), lr=1e-3, fused=True)
    loader = datamodule.train_dataloader()  # once: its worker processes persist across epochs
    times: list[float] = []
    while len(times) < steps:
        for batch in loader:
            terms = module.compute_loss(batch["image"])
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            times.append(time.perf_counter())
            if len(times) >= steps:
                break
    return _median_ms(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=SHARED / "data" / "photos" / "train")
    parser.add_argument("--style", type=Path, default=SHARED / "data" / "styles" / "candy.jpg")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/fastns_bench_train_host"))
    args = parser.parse_args()
    for path, flag in ((args.photos, "--photos"), (args.style, "--style")):
        if not path.exists():
            print(f"skipped: {path} not found (pass {flag})", file=sys.stderr)
            return 0
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    cfg = _config(args.photos, args.style, args.steps, args.run_dir)
    results: dict[str, list[float]] = {"log every step": [], "log written steps": [], "bare loop": []}
    for _ in range(args.rounds):
        results["log every step"].append(lightning_run(cfg, args.run_dir / "every", False))
        gc.collect()  # the finished run's loader workers exit before the next run starts
        results["log written steps"].append(lightning_run(cfg, args.run_dir / "written", True))
        gc.collect()
        results["bare loop"].append(bare_run(cfg, args.run_dir / "bare", args.steps))
        gc.collect()
    print(f"| variant | median ms/step per round ({args.rounds} x {args.steps} steps, steps 100+) |")
    print("|---|---|")
    for name, values in results.items():
        print(f"| {name} | {' / '.join(f'{v:.1f}' for v in values)} |")
    medians = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"\nlog every step / log written steps: {medians['log every step'] / medians['log written steps']:.3f}x "
        f"({medians['log every step'] - medians['log written steps']:.1f} ms a step); "
        f"bare loop / log written steps: {medians['bare loop'] / medians['log written steps']:.3f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
