"""Training task behind ``scripts/train.py``: Hydra config in, run folder with checkpoints and model out.

A run folder ``D`` (``hydra.run.dir``) receives::

    D/.hydra/config.yaml            the resolved config (Hydra)
    D/tensorboard/                  TensorBoard event files: losses, previews, style, hparams
    D/checkpoints/step_NNNNNN.ckpt  periodic Lightning checkpoints (no "=": pastes into model=... as it is)
    D/checkpoints/last.ckpt         the latest checkpoint (resume with ckpt_path=last)
    D/model.safetensors             the trained network (see fastns.modelfile), written at the end
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_fabric.utilities.seed import pl_worker_init_function
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from .averaging import PowerEMA, check_sigma_rel
from .data import ContentDataModule
from .errors import ConfigError, FastnsError, ModelFileError
from .modelfile import check_architecture, load_checkpoint, save_model
from .module import StyleTransferModule
from .style import resolve_styles
from .transformer import TransformerNet
from .utils import native_bf16

log = logging.getLogger(__name__)


class GracefulStop(Callback):
    """Ctrl-C (SIGINT) or SIGTERM: finish the current step, save ``last.ckpt``, stop cleanly.

    A second Ctrl-C aborts at once (the last periodic checkpoint is still there). All DDP ranks
    agree on the stop at the same step, so the checkpoint is consistent.
    """

    def __init__(self, ckpt_dir: Path, sync_every: int = 10) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.sync_every = max(1, int(sync_every))
        self.requested: str | None = None
        self.saved: Path | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.requested is not None:
            self._restore()
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(
            f"\n{self.requested}: stopping after this step and saving a checkpoint (Ctrl-C again to abort)",
            file=sys.stderr,
        )

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def on_train_start(self, trainer, pl_module) -> None:
        # After Lightning's own SIGTERM handler (registered after on_fit_start), which would
        # otherwise raise mid-epoch without saving.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # With several processes, agreeing is a collective operation that stalls the GPU pipeline:
        # do it every few steps (a stop then waits at most that many steps).
        if trainer.world_size > 1 and trainer.global_step % self.sync_every:
            return
        if trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False):
            self.saved = self.ckpt_dir / "last.ckpt"
            trainer.save_checkpoint(self.saved, weights_only=False)
            trainer.should_stop = True
            self.requested = self.requested or "stop on another rank"

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()


def _ignore_sigint_in_workers(worker_id: int) -> None:
    # Ctrl-C reaches every process of the terminal's group; a data worker that dies of it would
    # crash the main process before GracefulStop can save. Only the main process handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pl_worker_init_function(worker_id)


class _DataModule(ContentDataModule):
    def _loader(self, dataset, shuffle):
        loader = super()._loader(dataset, shuffle)
        if loader.num_workers > 0:
            loader.worker_init_fn = _ignore_sigint_in_workers
        return loader


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``last`` -> ``<run_dir>/checkpoints/last.ckpt`` (must exist); a path must exist; None: fresh run."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        last = run_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError(
                f"ckpt_path=last: no checkpoint at {last}; pass the interrupted run's folder with hydra.run.dir=<run folder>"
            )
        return str(last)
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    return str(ckpt_path)


def check_checkpoint(path: str) -> TransformerNet:
    """Refuse a checkpoint to resume from that is corrupt, truncated or not this project's, in one line.

    Read with ``weights_only=True`` (tensors and plain data, never code), as Lightning reads it
    after this (``trainer.fit(weights_only=True)``) whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says.
    Returns the checkpoint's network.
    """
    try:
        return load_checkpoint(path)[0]
    except ModelFileError as e:
        raise ConfigError(f"ckpt_path={e}") from None


def resolve_precision(precision: Any, accelerator: Any) -> str:
    """``trainer.precision=auto``: ``bf16-mixed`` where bfloat16 is native, else ``32-true``.

    Native means a CUDA GPU of compute capability 8.0+ (A100, H100, RTX 30xx and newer) or a CPU with
    AMX or AVX-512 BF16 (``fastns.utils.bf16_is_native``). There the step is faster at the same
    losses (benchmarks/README.md measures it); the Gram matrices and loss sums stay fp32 under
    autocast. Any other value is passed to Lightning unchanged.
    """
    if str(precision) != "auto":
        return precision
    device = _train_device(accelerator)
    if device is None:  # MPS, TPU, ...: Lightning's default
        return "32-true"
    return "bf16-mixed" if native_bf16(device) else "32-true"


def progress_refresh_rate(trainer_cfg: Any) -> int:
    """Steps between progress-bar refreshes: 1 on a CPU, ``log_every_n_steps`` on GPUs and others.

    The bar reads the logged losses back to the host at every refresh. On a GPU a read per step
    makes the host wait for each step before it queues the next; a CPU step is not queued.
    """
    if _train_device(trainer_cfg.get("accelerator", "auto")) == torch.device("cpu"):
        return 1
    return max(1, int(trainer_cfg.get("log_every_n_steps", 10)))


def _train_device(accelerator: Any) -> torch.device | None:
    """The kind of device Lightning will train on for ``trainer.accelerator``: cuda, cpu, or None (other)."""
    acc = str(accelerator)
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    if acc == "cpu" or (acc == "auto" and not torch.backends.mps.is_available()):
        return torch.device("cpu")
    return None


def _plain(cfg: DictConfig | None) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if cfg is not None else None


def check_loss_margin(margin: int, image_size: int) -> None:
    """A ``loss_margin`` that leaves at least half of each training crop to the loss."""
    if margin < 0 or 4 * margin > image_size:
        raise ConfigError(
            f"loss_margin={margin} must be between 0 and a quarter of the crop size "
            f"(data.image_size={image_size}: at most {image_size // 4})"
        )


def check_border(border: int) -> None:
    """A training ``border`` the network can run with: reflection padding of 0 px or more."""
    if border < 0:
        raise ConfigError(f"border={border} must be 0 or more (px of reflection padding around each crop)")


def build(
    cfg: DictConfig, run_dir: Path
) -> tuple[pl.Trainer, StyleTransferModule, ContentDataModule, GracefulStop]:
    """Everything ``train`` needs, built from the config (also used by tests)."""
    datamodule = _DataModule(**_plain(cfg.data), seed=int(cfg.seed))
    datamodule.setup("fit")  # a missing or empty photo folder fails here, before anything is built or written
    check_loss_margin(int(cfg.get("loss_margin") or 0), int(cfg.data.image_size))
    check_border(int(cfg.get("border") or 0))
    ema = cfg.get("ema")
    ema = None if ema is None else check_sigma_rel(ema)
    styles = cfg.get("styles")
    module = StyleTransferModule(
        model=_plain(cfg.model),
        loss=_plain(cfg.loss),
        style=_plain(cfg.style),
        image_size=int(cfg.data.image_size),
        optimizer=_plain(cfg.optimizer),
        scheduler=_plain(cfg.get("scheduler")),
        max_previews=int(cfg.preview_images),
        channels_last=bool(cfg.channels_last),
        compile=bool(cfg.compile),
        style_warmup=int(cfg.get("style_warmup") or 0),
        init_from=cfg.get("init_from"),
        loss_margin=int(cfg.get("loss_margin") or 0),
        loss_jitter=bool(cfg.get("loss_jitter", False)),
        border=int(cfg.get("border") or 0),
        phase_jitter=bool(cfg.get("phase_jitter", False)),
        droplet_weight=float(cfg.get("droplet_weight") or 0.0),
        styles=None if styles is None else resolve_styles(_plain(styles), _plain(cfg.style)),
        train_only=cfg.get("train_only"),
        norms_lr=cfg.get("norms_lr"),
        seed=int(cfg.seed),
        style_sampling=str(cfg.get("style_sampling") or "image"),
    )
    ckpt_dir = run_dir / "checkpoints"
    stopper = GracefulStop(ckpt_dir)
    # The average first: a checkpoint of step N then holds step N's average (resumes match).
    callbacks: list[Callback] = [] if ema is None else [PowerEMA(ema)]
    callbacks += [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="step_{step:06d}",
            auto_insert_metric_name=False,
            every_n_train_steps=int(cfg.checkpoint_every),
            save_top_k=-1,
            save_last=True,
        ),
        stopper,
    ]
    if cfg.get("scheduler") or module.norms_lr:
        callbacks.append(LearningRateMonitor(logging_interval="step"))  # a schedule: show its rate
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=progress_refresh_rate(cfg.trainer)))
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
    precision = resolve_precision(
        cfg.trainer.get("precision", "32-true"), cfg.trainer.get("accelerator", "auto")
    )
    # The data module shares each step's photos among the ranks itself (fastns.data.TrainingOrder).
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=str(run_dir),
        precision=precision,
        use_distributed_sampler=False,
    )
    return trainer, module, datamodule, stopper


#: Lightning warnings that do not apply here: the loss's VGG is meant to stay in eval mode, small
#: datasets (the quickstart) have fewer batches per epoch than the logging interval, a run resumed
#: mid-epoch takes the epoch's remaining photos (fastns.data.TrainingOrder counts from the restored
#: step; Lightning only knows loaders that save a state of their own), and the rest are about
#: Lightning's internals. Silenced while ``train`` runs, not at import.
IGNORED_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode",
    r"The number of training batches .* logging interval",
    r"You're resuming from a checkpoint that ended before the epoch ended",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"You have overridden `on_before_batch_transfer` in `LightningModule`",
    r"Precision bf16-mixed is not supported by the model summary",
)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train a style network as configured; returns a summary (steps, losses, paths)."""
    run_dir = Path(cfg.run_dir)
    try:
        with warnings.catch_warnings():
            for message in IGNORED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            return _train(cfg)
    except FastnsError:
        _remove_if_unused(run_dir)
        raise


def _remove_if_unused(run_dir: Path) -> None:
    """Remove a run folder that a failed start left with nothing but Hydra's own files in it.

    Hydra writes ``.hydra/`` and ``train.log`` before the task starts; a folder holding any other
    file (checkpoints, TensorBoard events, the user's files) is kept.
    """
    try:
        # Stops at the first other file: a run folder given as a big existing folder is not walked.
        files = (p.relative_to(run_dir) for p in run_dir.rglob("*") if p.is_file())
        if run_dir.is_dir() and all(f.parts[0] == ".hydra" or str(f) == "train.log" for f in files):
            shutil.rmtree(run_dir)
    except OSError as e:  # leave it; the error being reported matters more
        log.debug("could not remove %s: %s", run_dir, e)


def _train(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")  # TF32 on Ampere and newer GPUs; no effect on CPU
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
    saved = None if ckpt_path is None else check_checkpoint(ckpt_path)

    trainer, module, datamodule, stopper = build(cfg, run_dir)
    if saved is not None:
        # A run resumed with another network (an override dropped, or a changed experiment's
        # defaults) would otherwise fail deep inside Lightning's state-dict loading.
        try:
            check_architecture(saved, module.net, f"ckpt_path={ckpt_path}", ignore=("input_noise",))
        except ModelFileError as e:
            raise ConfigError(str(e)) from None
    log.info("run folder: %s", run_dir.resolve())
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    if stopper.requested is None:
        # The periodic checkpoints may not fall on the last step: make last.ckpt the final state,
        # so that exporting or extending the run starts from where it ended. (Collective in DDP.)
        trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    summary = module.training_summary()
    summary["ema"] = cfg.get("ema")  # the weights are the average of the run's end (fastns.averaging)
    summary["run_dir"] = str(run_dir)
    if stopper.requested is not None:
        if trainer.is_global_zero:
            print(
                f"stopped at step {trainer.global_step}; checkpoint saved to {stopper.saved}. "
                f"Resume with: ckpt_path=last hydra.run.dir={run_dir}",
                file=sys.stderr,
            )
        summary["interrupted"] = stopper.requested  # SIGINT, SIGTERM or "stop on another rank"
        return summary
    if trainer.is_global_zero:
        info = module.model_info()
        model_path = save_model(
            run_dir / "model.safetensors",
            module.net.cpu(),
            style=info.style,
            loss=info.loss,
            training=summary,
            styles=info.styles,
        )
        summary["model"] = str(model_path)
        log.info("wrote %s (%d steps)", model_path, summary["steps"])
    return summary
