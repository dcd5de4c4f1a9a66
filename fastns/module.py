"""LightningModule: the transformer network trained with the shared perceptual loss."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torchvision.utils import make_grid

from .errors import FastnsError, gather
from .losses import PerceptualLoss
from .metrics import grid_pattern
from .modelfile import ModelInfo, load_initial_weights
from .style import Style
from .transformer import TransformerNet

log = logging.getLogger(__name__)


class TrainingDiverged(FastnsError):
    """The loss became NaN or infinite."""


def _drop_loss_weights(module, state_dict, prefix, local_metadata) -> None:
    # The VGG inside the loss is a fixed measuring instrument loaded from its own weights: keeping
    # it out of checkpoints saves ~60-80 MB per file and lets a run resume with another VGG path.
    for key in [k for k in state_dict if k.startswith(prefix + "loss_fn.")]:
        del state_dict[key]


class StyleTransferModule(pl.LightningModule):
    """Johnson et al.'s training: ``loss(net(content), content)`` with the style fixed.

    Args:
        model: :class:`TransformerNet` constructor arguments.
        loss: :class:`PerceptualLoss` settings (``fastns/configs/loss/*.yaml``).
        style: the ``style`` config (image(s), size, scale, blend weights, name).
        image_size: training crop size (for ``style.scale``).
        optimizer: a Hydra ``_partial_`` config of a torch optimiser (Adam, lr 1e-3 in the paper).
        scheduler: optional Hydra ``_partial_`` config of a torch LR scheduler, stepped every step.
        max_previews: number of validation images in the TensorBoard preview grid.
        channels_last: run the network and VGG in channels-last memory layout (faster convolutions
            with oneDNN on CPUs and tensor cores on GPUs; the same numbers).
        compile: ``torch.compile`` the network and the loss (slow start, faster steps).
        style_warmup: steps over which the style weight rises linearly from 0 to β, so that the
            network first learns to pass the photo through (content loss only) and then to paint it.
        init_from: a fastns model file of the same architecture to start from (fine-tuning from
            another style's network) instead of random weights.
        loss_margin: pixels at each edge of the network's output left out of the loss (training
            and validation), so that the network cannot score by painting the frame of the crop;
            users get the frame cropped away by the stylizer's reflection border anyway.
    """

    def __init__(
        self,
        model: dict[str, Any],
        loss: dict[str, Any],
        style: dict[str, Any],
        image_size: int = 256,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        max_previews: int = 8,
        channels_last: bool = True,
        compile: bool = False,
        style_warmup: int = 0,
        init_from: str | None = None,
        loss_margin: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # plain dicts: stored in checkpoints and shown in TensorBoard
        self.net = TransformerNet(**model)
        if init_from:
            load_initial_weights(self.net, init_from)
        # Both may download (VGG weights, a style preset): offline, both failures are reported at once.
        self.loss_fn, self.style = gather(
            lambda: PerceptualLoss.from_config(loss), lambda: Style.from_config(style)
        )
        self.style_size = self.style.longest_side(image_size, reference=image_size)
        self.loss_fn.set_style(self.style.tensors(self.style_size), self.style.blend_weights)
        self._register_state_dict_hook(_drop_loss_weights)
        self.strict_loading = (
            False  # the loss's VGG is not in checkpoints; on_load_checkpoint checks the rest
        )
        self._last_terms: dict[str, torch.Tensor] = {}
        self._nonfinite: torch.Tensor | None = (
            None  # any non-finite loss since the last check (on the device)
        )
        self._last_finite_step = 0
        self._previews: list[torch.Tensor] = []
        self._skipped = 0
        self._skipped_files: set[int] = set()  # indices (in the training file list) of unreadable files
        self._skipped_cache: tuple[int, torch.Tensor] | None = None  # (count, its device copy)
        self._start_time = time.time()
        self._train_seconds = 0.0

    # -- what the model file and checkpoints carry --------------------------------------------------

    def style_info(self) -> dict[str, Any]:
        return {
            "name": self.style.name,
            "sources": self.style.sources,
            "size": self.style_size,
            "blend_weights": self.style.blend_weights,
        }

    def model_info(self) -> ModelInfo:
        """The network's description as a model file, a checkpoint and an export carry it."""
        return ModelInfo(
            model=dict(self.net.config),
            style=self.style_info(),
            loss=self.loss_fn.config(),
            training=self.training_summary(),
        )

    def training_summary(self) -> dict[str, Any]:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return {
            "steps": int(self.global_step),
            "final_losses": {k: float(v) for k, v in self._last_terms.items()},
            "image_size": self.hparams.image_size,
            "batch_size": getattr(dm, "batch_size", None),
            "world_size": self.trainer.world_size if self._trainer is not None else 1,
            "precision": str(self.trainer.precision) if self._trainer is not None else None,
            "train_seconds": round(self._train_seconds + (time.time() - self._start_time), 1),
            "skipped_files": self._skipped,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is not None and self._nonfinite is not None:
            self._check_finite()  # never write diverged weights
        # The unreadable files' indices too, so that a resumed run keeps counting distinct files.
        checkpoint["fastns"] = {
            **self.model_info().as_dict(),
            "skipped_file_indices": sorted(self._skipped_files),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = {k.removeprefix("net.") for k in checkpoint.get("state_dict", {}) if k.startswith("net.")}
        missing = sorted(set(self.net.state_dict()) - saved)
        if missing:
            raise FastnsError(
                f"the checkpoint does not fit this network (no weights for net.{missing[0]}); "
                "resume with the same model settings it was trained with"
            )
        prev = checkpoint.get("fastns", {}).get("training", {})
        self._train_seconds = float(prev.get("train_seconds", 0.0))
        self._skipped_files = set(checkpoint.get("fastns", {}).get("skipped_file_indices", []))
        self._skipped = int(prev.get("skipped_files", len(self._skipped_files)))

    # -- training ----------------------------------------------------------------------------

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def prepare_for_training(self) -> None:
        """Memory layout and compilation; called once the module is on its device."""
        if self.hparams.channels_last:
            self.net.to(memory_format=torch.channels_last)
            self.loss_fn.encoder.to(memory_format=torch.channels_last)
        if self.hparams.compile and not getattr(self, "_compiled", False):
            # Plain attributes (not submodules): checkpoints keep the uncompiled names.
            object.__setattr__(self, "_net_step", torch.compile(self.net))
            object.__setattr__(self, "_loss_step", torch.compile(self.loss_fn))
            self._compiled = True

    def stylise_and_loss(self, content: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The network's stylisation of ``content`` (B, 3, H, W) in [0, 1] and its loss terms."""
        if self.hparams.channels_last:
            content = content.contiguous(memory_format=torch.channels_last)
        net = getattr(self, "_net_step", self.net)
        loss = getattr(self, "_loss_step", self.loss_fn)
        stylised = net(content)
        m = int(self.hparams.get("loss_margin") or 0)
        if m:
            return stylised, loss(stylised[..., m:-m, m:-m], content[..., m:-m, m:-m])
        return stylised, loss(stylised, content)

    def compute_loss(self, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss terms of the network's stylisation of ``content`` (what training minimises)."""
        return self.stylise_and_loss(content)[1]

    def on_fit_start(self) -> None:
        self.prepare_for_training()

    def on_train_start(self) -> None:
        self._start_time = time.time()
        if self.global_step == 0 and self.trainer.is_global_zero and self.logger is not None:
            experiment = self.logger.experiment
            if hasattr(experiment, "add_image"):
                for i, img in enumerate(self.style.tensors(self.style_size)):
                    experiment.add_image(f"style/{i}" if len(self.style.images) > 1 else "style", img[0], 0)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Count skipped files on the host, before the batch goes to the GPU: reading a GPU
        # tensor every step would stall the pipeline.
        if isinstance(batch, dict):
            batch.pop("skipped", None)
            indices = batch.pop("skipped_files", None)
            if indices is not None and self._trainer is not None and self.trainer.training:
                # Distinct files, not skip events: a broken file comes up again every epoch.
                new = set(indices[indices >= 0].tolist()) - self._skipped_files
                if new:
                    self._skipped_files |= new
                    self._skipped = len(self._skipped_files)
                    log.warning("%d unreadable training image(s) skipped so far", self._skipped)
        return batch

    def _queues_steps(self) -> bool:
        """Whether the device runs queued work while the host goes on (CUDA, MPS); a CPU computes in the call."""
        return self.device.type != "cpu"

    def _nan_check_every(self) -> int:
        # On a CPU reading the loss costs nothing: check every step, before its update. On a GPU a
        # read per step would serialise host and device (measured: half the steps/s on an H100),
        # so the flag accumulates on the device and is read every log_every_n_steps steps and
        # before any checkpoint is written: diverged weights never reach a checkpoint.
        return max(1, int(self.trainer.log_every_n_steps)) if self._queues_steps() else 1

    def _check_finite(self, value: torch.Tensor | None = None) -> None:
        flag = self._nonfinite
        bad = bool(flag) if flag is not None else False
        # Decide together: in DDP one rank stopping alone would leave the others waiting forever.
        if not self.trainer.strategy.reduce_boolean_decision(bad, all=False):
            self._last_finite_step = self.global_step
            return
        if value is not None and self._nan_check_every() == 1:
            what = f"the loss became {float(value)} at step {self.global_step}; training stopped before the update"
        else:
            what = (
                f"the loss became NaN or infinite between steps {self._last_finite_step} and {self.global_step}; "
                "training stopped"
            )
        raise TrainingDiverged(
            f"{what}, and no checkpoint holds diverged weights: the last good one is checkpoints/last.ckpt in the run "
            "folder (resume with ckpt_path=last after lowering optimizer.lr or the loss weights)"
        )

    def training_objective(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """What a training step minimises: the loss's total, with the style term ramped in over
        the first ``style_warmup`` steps (the logged terms stay the loss's own)."""
        warmup = int(self.hparams.style_warmup)
        ramp = 1.0 if warmup <= 0 else min(1.0, (self.global_step + 1) / warmup)
        return terms["total"] if ramp >= 1.0 else terms["total"] - (1.0 - ramp) * terms["style"]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        content = batch["image"]  # (B, 3, S, S) in [0, 1]
        terms = self.compute_loss(content)
        objective = self.training_objective(terms)
        bad = ~torch.isfinite(terms["total"].detach())  # stays on the device
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
        if (self.global_step + 1) % self._nan_check_every() == 0:
            self._check_finite(terms["total"].detach())
        self._last_terms = {k: v.detach() for k, v in terms.items()}
        if not self._logs_this_step():
            return objective
        for name, value in terms.items():
            self.log(
                f"train/loss/{name}",
                value,
                on_step=True,
                on_epoch=False,
                prog_bar=name in ("total", "content", "style"),
                batch_size=content.shape[0],
            )
        self.log(
            "train/skipped_files",
            self._skipped_on(content.device),
            on_step=True,
            on_epoch=False,
            batch_size=content.shape[0],
        )
        return objective

    def _logs_this_step(self) -> bool:
        """Whether ``training_step`` hands its scalars to ``self.log`` this step.

        Lightning writes step scalars only every ``log_every_n_steps`` steps, yet each ``self.log``
        call costs host time at every step (11 calls a step; benchmarks/bench_train_host.py measures
        it). On a GPU that is time the host does not spend queueing the next step, so only the steps
        Lightning writes are logged (the progress bar refreshes on those too). On a CPU, where a step
        takes far longer than its logging, every step is logged and the bar stays live.
        """
        if not self._queues_steps() or self._trainer is None:
            return True
        # The test Lightning's own LearningRateMonitor and ThroughputMonitor use.
        return bool(getattr(self.trainer._logger_connector, "should_update_logs", True))

    def _skipped_on(self, device: torch.device) -> torch.Tensor:
        """The skipped-file count as a tensor on ``device``, copied there only when it changes.

        Logging a Python number copies it to the GPU at every step, and a copy from pageable host
        memory first waits for everything queued on the GPU: one host-device sync per step, which
        stops the host from running ahead to queue the next step.
        """
        cached = self._skipped_cache
        if cached is None or cached[0] != self._skipped or cached[1].device != device:
            cached = self._skipped_cache = (self._skipped, torch.tensor(float(self._skipped), device=device))
        return cached[1]

    # -- validation and previews -----------------------------------------------------------------

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        content = batch["image"]
        stylised, terms = self.stylise_and_loss(content)
        for name, value in terms.items():
            self.log(
                f"val/loss/{name}",
                value,
                on_step=False,
                on_epoch=True,
                sync_dist=True,
                batch_size=content.shape[0],
            )
        # The fixed 4x4 px pattern (cross-hatch) the network can learn: watch it develop
        # (docs/training.md); photos score below ~1.
        self.log(
            "val/grid_pattern",
            grid_pattern(stylised).mean(),
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            batch_size=content.shape[0],
        )
        n = self.hparams.max_previews - sum(p.shape[0] for p in self._previews) // 2
        if n > 0:
            self._previews.append(torch.cat([content[:n], stylised[:n]]).float().cpu())

    def on_validation_epoch_end(self) -> None:
        previews, self._previews = self._previews, []
        if (
            self.trainer.sanity_checking
            or not previews
            or not self.trainer.is_global_zero
            or self.logger is None
        ):
            return
        contents = torch.cat([p[: p.shape[0] // 2] for p in previews])
        stylised = torch.cat([p[p.shape[0] // 2 :] for p in previews])
        # Top row: the fixed validation photos; bottom row: the network's stylisations.
        grid = make_grid(torch.cat([contents, stylised]), nrow=contents.shape[0], padding=2, pad_value=1.0)
        experiment = self.logger.experiment
        if hasattr(experiment, "add_image"):
            experiment.add_image("preview", grid.clamp(0, 1), self.global_step)

    # -- optimisation -------------------------------------------------------------------------

    def configure_optimizers(self):
        opt_cfg = self.hparams.optimizer or {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
        optimizer = instantiate(opt_cfg)(params=self.net.parameters())
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
