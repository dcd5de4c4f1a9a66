"""Weight averaging of the style network during training: the network users get is a running
average of its weights over the end of the run, not the last step's weights.

With a constant learning rate (the paper's recipe) the weights keep moving around a good solution
from step to step, and which side of it the last step lands on is luck: checkpoints 1000 steps
apart score differently. An average over the last part of the run sits nearer the middle.

The average is the *power-function* exponential moving average of Karras et al. (2024, "Analyzing
and Improving the Training Dynamics of Diffusion Models", EDM2): after step ``t`` it weights the
weights of step ``τ`` by ``τ**γ``, so its width is a fixed fraction of the steps so far (``σ_rel``,
the profile's standard deviation over its length) whatever the run's length. A 2,000-step CPU run
and a 40,000-step GPU run average the same share of their steps, and a resumed run (the average is
a function of the global step) the same steps as the uninterrupted one.

Only the style network (``pl_module.net``) is averaged; the loss's VGG is fixed. Frozen weights
(``train_only=norms``) stay bit-identical: ``lerp`` of two equal values is exact.

Checkpoints follow Lightning's ``WeightAveraging`` convention: ``state_dict`` holds the averaged
network (what ``scripts/export.py``, ``scripts/evaluate.py`` and ``init_from`` read), and
``checkpoint["ema"]["training_state_dict"]`` the last step's weights, from which a resumed run
continues training.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from .errors import ConfigError

#: σ_rel of γ = 0, the widest profile a power function gives (γ < 0 would weight early steps most).
MAX_SIGMA_REL = math.sqrt(1 / 12)


def power_gamma(sigma_rel: float) -> float:
    """The exponent γ of the power-function profile ``τ**γ`` whose relative width is ``sigma_rel``.

    The profile over [0, t] has mean t(γ+1)/(γ+2) and variance t²(γ+1)/((γ+2)²(γ+3)), so
    σ_rel² (γ+2)² (γ+3) = γ+1, a cubic in γ with one root at γ ≥ 0 for 0 < σ_rel ≤ MAX_SIGMA_REL.
    """
    s = 1.0 / float(sigma_rel) ** 2
    roots = np.roots([1.0, 7.0, 16.0 - s, 12.0 - s])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


def power_sigma_rel(gamma: float) -> float:
    """The relative width of the profile ``τ**γ`` (the inverse of :func:`power_gamma`)."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def ema_weight(step: int, gamma: float) -> float:
    """How much of step ``step``'s weights (1-based) enters the average: 1 − (1 − 1/t)^(γ+1).

    Step 1 replaces the average (weight 1); later steps enter less and less, so that every step
    ``τ ≤ t`` ends up weighted in proportion to ``τ**γ``.
    """
    return 1.0 - (1.0 - 1.0 / step) ** (gamma + 1.0)


def check_sigma_rel(value: Any) -> float:
    """``ema=`` as a width in (0, MAX_SIGMA_REL], or a one-line ConfigError."""
    try:
        sigma_rel = float(value)
    except (TypeError, ValueError):
        sigma_rel = float("nan")
    if not 0 < sigma_rel <= MAX_SIGMA_REL:
        raise ConfigError(
            f"ema={value} must be a width between 0 and {MAX_SIGMA_REL:.3f} (a fraction of the steps; "
            "0.1 is the default), or null for the last step's weights"
        )
    return sigma_rel


class PowerEMA(Callback):
    """Keep the power-function average of ``pl_module.net``'s weights; validate and export with it.

    During validation (losses, previews) the network holds the average; at the end of training it
    keeps it, so the model file written after ``fit`` is the average.
    """

    def __init__(self, sigma_rel: float) -> None:
        self.sigma_rel = check_sigma_rel(sigma_rel)
        self.gamma = power_gamma(self.sigma_rel)
        self.average: dict[str, torch.Tensor] | None = None
        self.swapped = False  # True: the network holds the average, and self.average the training weights
        self._last_step = 0

    def _ready(self, pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        """The average, on the network's device; a fresh run's starts as the network itself."""
        current = pl_module.net.state_dict()
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in current.items()}
        for k, v in current.items():
            if self.average[k].device != v.device:
                self.average[k] = self.average[k].to(v.device)
        return self.average

    def _swap(self, pl_module: pl.LightningModule) -> None:
        average = self._ready(pl_module)
        with torch.no_grad():
            for k, v in pl_module.net.state_dict().items():
                kept = v.clone()
                v.copy_(average[k])
                average[k].copy_(kept)
        self.swapped = not self.swapped

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ready(pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ready(pl_module)  # after a resume's restore: from here on the average is on the device

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # optimiser steps so far: with accumulation, once per step
        if step <= self._last_step or self.swapped:
            return
        self._last_step = step
        average = self.average
        pairs = [(average[k], v) for k, v in pl_module.net.state_dict().items() if v.is_floating_point()]
        with torch.no_grad():
            torch._foreach_lerp_([a for a, _ in pairs], [v for _, v in pairs], ema_weight(step, self.gamma))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not self.swapped:
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.swapped:
            self._swap(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.swapped:
            self._swap(pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        average = self._ready(pl_module)
        current = pl_module.net.state_dict()
        averaged, training = (current, average) if self.swapped else (average, current)
        state = checkpoint["state_dict"]
        for k, v in averaged.items():
            state["net." + k] = v.detach().clone()
        checkpoint["ema"] = {
            "sigma_rel": self.sigma_rel,
            "training_state_dict": {k: v.detach().clone() for k, v in training.items()},
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # Lightning has loaded state_dict (the average, or a run's plain weights) into the network.
        averaged = {
            k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")
        }
        self.average = {k: v.detach().clone() for k, v in averaged.items()}
        self.swapped = False
        training = checkpoint.get("ema", {}).get("training_state_dict")
        if training is not None:
            pl_module.net.load_state_dict(training)
        self._last_step = int(checkpoint.get("global_step", 0))
