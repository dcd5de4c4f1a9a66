"""LightningModule: the transformer network trained with the shared perceptual loss.

Several styles in one network (``styles=[...]``; Dumoulin, Shlens & Kudlur 2017): each style has its
own :class:`PerceptualLoss` (its Gram targets computed once), all sharing the one VGG; each training
step draws a style per photo (``style_sampling=image``) or one for the whole batch (``batch``, as
Dumoulin et al.), seeded by the seed, the rank and the step so that a resumed run draws what the
uninterrupted one would, and trains the network with those styles' one-hot weights. Validation
measures every style. Adding styles to a trained network (``init_from`` +
``styles``) trains only the new styles' γ, β (``train_only=norms``): the others stay bit-identical.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchvision.utils import make_grid

from .errors import ConfigError, FastnsError, ModelFileError, gather
from .flow import warp
from .losses import PerceptualLoss, droplet_loss, temporal_loss
from .metrics import grid_pattern
from .modelfile import ModelInfo, load_initial_weights, read_info
from .motion import moved_frame
from .style import Style
from .transformer import CondInstanceNorm2d, StyleAffine, TransformerNet, norm_inputs, watch_norm_inputs

log = logging.getLogger(__name__)


class TrainingDiverged(FastnsError):
    """The loss became NaN or infinite."""


def _drop_loss_weights(module, state_dict, prefix, local_metadata) -> None:
    # The VGG inside the loss is a fixed measuring instrument loaded from its own weights: keeping
    # it out of checkpoints saves ~60-80 MB per file and lets a run resume with another VGG path.
    losses = (prefix + "loss_fn.", prefix + "style_losses.")
    for key in [k for k in state_dict if k.startswith(losses)]:
        del state_dict[key]


def run_shifted(
    net: nn.Module,
    images: torch.Tensor,
    border: int,
    shift: tuple[int, int] = (0, 0),
    style: torch.Tensor | None = None,
) -> torch.Tensor:
    """``net(images, border, style)`` with the network's stride-4 grid shifted by ``shift`` = (dy, dx) px.

    The images get ``dy`` rows and ``dx`` columns of reflection above and to the left (more of
    the border's context), run through the network, and the output is cropped back to their
    size: the same photo, seen by the network at another phase of its 4 px grid. (0, 0) is
    exactly ``net(images, border, style)``.
    """
    dy, dx = (int(v) for v in shift)
    if dy == dx == 0:
        return net(images, border) if style is None else net(images, border, style=style)
    x = F.pad(images, (dx, 0, dy, 0), mode="reflect")
    out = net(x, border) if style is None else net(x, border, style=style)
    return out[..., dy:, dx:]


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
        channels_last: run the loss's VGG in channels-last memory layout (faster convolutions with
            oneDNN on CPUs and tensor cores on GPUs; the same numbers), and on a CPU the network too
            (equal up to the convolutions' summation order; :meth:`prepare_for_training` says why
            only there).
        compile: ``torch.compile`` the network and the loss (slow start, faster steps).
        style_warmup: steps over which the style weight rises linearly from 0 to β, so that the
            network first learns to pass the photo through (content loss only) and then to paint it.
        init_from: a fastns model file of the same architecture to start from (fine-tuning from
            another style's network) instead of random weights.
        loss_margin: pixels at each edge of the network's output left out of the loss (training
            and validation), so that the network cannot score by painting the frame of the crop;
            users get the frame cropped away by the stylizer's reflection border anyway.
        loss_jitter: in training, place each photo's loss window (the output less ``loss_margin``
            on each side) at a random offset of up to ``2 * loss_margin`` px instead of the centre,
            drawn per photo and step. With a fixed window the network learns to fit that window
            and VGG's pooling grid, which no user's image has; validation keeps the centred window.
        styles: several styles in one network: one ``style`` config each
            (:func:`fastns.style.resolve_styles`); ``style`` is then not used. With ``init_from``,
            the styles added to that network's.
        train_only: ``"norms"``: train only the γ, β of the styles being trained (the default when
            ``init_from`` and ``styles`` add styles, whose existing styles then stay bit-identical);
            ``"all"`` (the default otherwise): every parameter.
        norms_lr: ``train_only=norms``: the optimiser's learning rate for the γ, β, decayed along a
            cosine to 1e-5 over the run unless ``scheduler`` is given. A few thousand γ, β take a
            10x higher rate than the convolutions, which only pays with the decay (docs/train.md,
            "Adding a style"). ``None``: the optimiser's own rate and schedule.
        seed: seeds the per-step draw of the style (several styles).
        style_sampling: ``"image"``: each photo of the batch gets its own style drawn at random;
            ``"batch"``: each step trains the whole batch on one (several styles).
        border: reflection padding around each photo before the network, cropped off after it
            (``TransformerNet.forward``'s ``border``), in training, validation and previews: with
            the stylizer's border (:data:`~fastns.transformer.DEFAULT_BORDER`) the network is
            trained exactly as users run it. 0 (the paper) trains it on the bare crop, whose
            edges it learns to locate and paint for, which users' images do not have.
        phase_jitter: in training, shift the network's stride-4 grid against each batch's crops
            by a random 0–3 px down and right (:func:`run_shifted`), so that a pattern the
            network lays on its own 4 px grid does not sit at one phase of VGG's pooling grid;
            validation and users' images keep phase 0.
        droplet_weight: weight of the droplet term (:func:`fastns.losses.droplet_loss` over the
            inputs of every normalisation layer of the network), logged as ``droplet``: it
            charges for channels whose variance sits in a few pixels, the spikes that instance
            norms let a network use to dim a channel everywhere and that show as blotches. 0: off.
            In training only (validation's loss leaves it out).
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
        loss_jitter: bool = False,
        styles: list[dict[str, Any]] | None = None,
        train_only: str | None = None,
        norms_lr: float | None = None,
        seed: int = 0,
        style_sampling: str = "image",
        border: int = 0,
        phase_jitter: bool = False,
        droplet_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # plain dicts: stored in checkpoints and shown in TensorBoard
        #: The styles of an ``init_from`` network that this run adds styles to (kept as they are).
        self.prior_styles: list[dict[str, Any]] = []
        if init_from and styles:
            if not Path(init_from).expanduser().is_file():
                raise ModelFileError(f"init_from={init_from}: no such model file")
            prior = read_info(Path(init_from).expanduser())
            self.prior_styles = list(prior.styles) if prior.num_styles > 1 else [dict(prior.style)]
            if prior.num_styles == 1 and not self.prior_styles[0].get("name"):
                self.prior_styles[0]["name"] = "style"
        configs = list(styles) if styles else [style]
        num_styles = len(self.prior_styles) + len(configs)
        if num_styles > 1:
            model = {**model, "num_styles": num_styles}
        self.train_only = train_only or ("norms" if self.prior_styles else "all")
        if self.train_only not in ("all", "norms"):
            raise ConfigError(f"train_only={train_only!r} must be all or norms")
        if self.prior_styles and self.train_only != "norms":
            raise ConfigError(
                "train_only=all with init_from adding styles would change the network's existing styles, "
                "whose style images this run does not train on; use train_only=norms (the default)"
            )
        if droplet_weight < 0:
            raise ConfigError(f"droplet_weight={droplet_weight} must be 0 (off) or positive")
        if style_sampling not in ("batch", "image"):
            raise ConfigError(f"style_sampling={style_sampling!r} must be batch or image")
        self.net = TransformerNet(**model)
        if init_from:
            load_initial_weights(self.net, init_from)
        # All may download (VGG weights, style presets): offline, every failure is reported at once.
        self.loss_fn, *self.styles = gather(
            lambda: PerceptualLoss.from_config(loss), *(lambda c=c: Style.from_config(c) for c in configs)
        )
        self.style = self.styles[0]
        #: The network's index of each trained style (after the ``init_from`` network's own).
        self.trained = [len(self.prior_styles) + i for i in range(len(self.styles))]
        self.style_sizes = [s.longest_side(image_size, reference=image_size) for s in self.styles]
        self.style_size = self.style_sizes[0]
        self.loss_fn.set_style(self.style.tensors(self.style_size), self.style.blend_weights)
        # One loss per further style, sharing the VGG: each caches its own Gram targets, computed once.
        settings = {k: v for k, v in self.loss_fn.config().items() if k != "vgg"}
        self.style_losses = torch.nn.ModuleList()
        for st, size in zip(self.styles[1:], self.style_sizes[1:], strict=True):
            other = PerceptualLoss(**settings, vgg=self.loss_fn.encoder)
            other.set_style(st.tensors(size), st.blend_weights)
            self.style_losses.append(other)
        if self.train_only == "norms":
            self._freeze_all_but_trained_norms()
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

    def style_info(self, i: int = 0) -> dict[str, Any]:
        """The description of the ``i``-th trained style (name, sources, size)."""
        return {
            "name": self.styles[i].name,
            "sources": self.styles[i].sources,
            "size": self.style_sizes[i],
            "blend_weights": self.styles[i].blend_weights,
        }

    @property
    def style_names(self) -> list[str]:
        """The names of the network's styles, in its order."""
        if self.net.num_styles == 1:
            return [self.style.name]
        return [str(s.get("name")) for s in self.prior_styles] + [s.name for s in self.styles]

    def model_info(self) -> ModelInfo:
        """The network's description as a model file, a checkpoint and an export carry it."""
        several = self.net.num_styles > 1
        styles = [*self.prior_styles, *(self.style_info(i) for i in range(len(self.styles)))]
        return ModelInfo(
            model=dict(self.net.config),
            style={"name": ", ".join(self.style_names)} if several else self.style_info(),
            loss=self.loss_fn.config(),
            training=self.training_summary(),
            styles=styles if several else [],
        )

    def training_summary(self) -> dict[str, Any]:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return {
            "steps": int(self.global_step),
            "final_losses": {k: float(v) for k, v in self._last_terms.items()},
            "image_size": self.hparams.image_size,
            "border": self.border,  # the reflection border it was trained with (the stylizer's: 32)
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
        return self.net(images, self.border)

    @property
    def border(self) -> int:
        """The reflection border the network runs with (0 for checkpoints from before it existed)."""
        return int(self.hparams.get("border") or 0)

    def prepare_for_training(self) -> None:
        """Memory layout, Gram precision and compilation; called once the module is on its device."""
        # The VGG runs channels-last. So does the network on a CPU, where oneDNN's channels-last
        # convolutions are the faster ones once the reflection pads stay in bf16
        # (transformer.ReflectionPad2d) and the instance norms keep the layout
        # (transformer.instance_norm_channels_last; benchmarks/bench_train.py). On CUDA the network stays NCHW,
        # where it is the faster layout for inference (benchmarks/README_stylize.md) and training
        # has not been measured in channels-last.
        if self.hparams.channels_last:
            self.loss_fn.encoder.to(memory_format=torch.channels_last)
            if self.device.type == "cpu":
                self.net.to(memory_format=torch.channels_last)
        for loss in (self.loss_fn, *self.style_losses):
            loss.low_precision_terms = True
        if self.hparams.compile and not getattr(self, "_compiled", False):
            if float(self.hparams.get("droplet_weight") or 0.0) > 0:
                # Hooks stay in place from before compiling: torch.compile recompiles whenever a
                # module's hooks change, so the eager path's per-step hooks would retrace every step.
                self._watched_norms: list[torch.Tensor] = []
                watch_norm_inputs(self.net, self._watched_norms, grad_only=True)
            # Plain attributes (not submodules): checkpoints keep the uncompiled names.
            object.__setattr__(self, "_net_step", torch.compile(self.net))
            object.__setattr__(self, "_loss_step", torch.compile(self.loss_fn))
            object.__setattr__(self, "_style_loss_steps", [torch.compile(m) for m in self.style_losses])
            self._compiled = True

    def _freeze_all_but_trained_norms(self) -> None:
        """``train_only=norms``: only the trained styles' γ, β learn; every other row and weight is kept.

        The rows of the other styles get zero gradients (so Adam leaves them exactly as they are)
        and are copied back after every step as well (so no optimiser setting can move them).
        """
        trained = torch.zeros(self.net.num_styles, 1, dtype=torch.bool)
        trained[self.trained] = True
        self._kept: list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]] = []
        for module in self.net.modules():
            for p in module.parameters(recurse=False):
                is_norm = isinstance(module, CondInstanceNorm2d | StyleAffine) or (
                    self.net.num_styles == 1 and isinstance(module, torch.nn.InstanceNorm2d)
                )
                p.requires_grad_(is_norm)
                if is_norm and p.dim() == 2:
                    mask = trained.to(p.dtype)
                    p.register_hook(lambda g, m=mask: g * m.to(g.device, g.dtype))
                    self._kept.append((p, ~trained[:, 0], p.detach()[~trained[:, 0]].clone()))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            for p, rows, values in getattr(self, "_kept", []):
                p[rows.to(p.device)] = values.to(p.device, p.dtype)

    def style_loss_fn(self, k: int) -> PerceptualLoss:
        """The loss of the ``k``-th trained style (its Gram targets)."""
        if k == 0:
            return getattr(self, "_loss_step", self.loss_fn)
        compiled = getattr(self, "_style_loss_steps", None)
        return compiled[k - 1] if compiled else self.style_losses[k - 1]

    def draw_styles(self, batch: int, step: int | None = None) -> list[int]:
        """The trained style of each of the ``batch`` photos of step ``step`` (default: this one):
        uniform, one for the batch or one per photo (``style_sampling``), seeded by (seed, rank,
        step), so that a resumed run draws what the uninterrupted one would; all 0 for one style."""
        if len(self.styles) == 1:
            return [0] * batch
        rng = self._step_rng(step)
        if self.hparams.get("style_sampling", "image") == "image":
            return [int(k) for k in rng.integers(len(self.styles), size=batch)]
        return [int(rng.integers(len(self.styles)))] * batch

    def _step_rng(self, step: int | None, *stream: int) -> np.random.Generator:
        """A generator seeded by (seed, rank, step[, stream]): the same draws for the same step,
        so a resumed run draws what the uninterrupted one would (default step: this one)."""
        step = self.global_step if step is None else step
        key = [int(self.hparams.get("seed") or 0), int(self.global_rank), int(step), *stream]
        return np.random.default_rng(key)

    @contextlib.contextmanager
    def _step_noise(self, device: torch.device) -> Iterator[None]:
        """Within it the global generator draws the step's ``input_noise``, seeded by (seed, rank,
        step) as the other draws are, and is put back after: a resumed run draws the same grain."""
        if not self.net.input_noise:
            yield
            return
        # Only the CPU's and the step's CUDA device's states are saved and put back.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(self._step_rng(None, 4).integers(2**62)))
            yield

    def window_offsets(self, batch: int, step: int | None = None) -> list[tuple[int, int]]:
        """Each photo's (top, left) loss-window offset at step ``step`` (default: this one): the
        centre (``loss_margin``, ``loss_margin``) unless ``loss_jitter`` in training, then uniform
        in [0, 2 * loss_margin] on each axis, seeded by (seed, rank, step) as the styles are."""
        m = int(self.hparams.get("loss_margin") or 0)
        if not (m and self.hparams.get("loss_jitter") and self.training):
            return [(m, m)] * batch
        # A stream of its own (the trailing 1), so the styles drawn are the same with or without jitter.
        rng = self._step_rng(step, 1)
        return [(int(y), int(x)) for y, x in rng.integers(0, 2 * m + 1, size=(batch, 2))]

    def phase_shift(self, step: int | None = None) -> tuple[int, int]:
        """How far (dy, dx) the network's stride-4 grid is moved against the crop at step ``step``
        (default: this one): (0, 0) unless ``phase_jitter`` in training, then uniform in 0-3 on
        each axis, seeded by (seed, rank, step) as the styles are (a stream of its own)."""
        if not (self.training and self.hparams.get("phase_jitter")):
            return (0, 0)
        dy, dx = self._step_rng(step, 2).integers(0, 4, size=2)
        return (int(dy), int(dx))

    def loss_window(self, stylised: torch.Tensor, content: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parts of the stylised and the content images that the loss sees: each less
        ``loss_margin`` px per side, at :meth:`window_offsets`."""
        m = int(self.hparams.get("loss_margin") or 0)
        if not m:
            return stylised, content
        offsets = self.window_offsets(stylised.shape[0])
        h, w = stylised.shape[-2] - 2 * m, stylised.shape[-1] - 2 * m
        if all(o == (m, m) for o in offsets):
            return stylised[..., m : m + h, m : m + w], content[..., m : m + h, m : m + w]

        def pick(images: torch.Tensor) -> torch.Tensor:
            return torch.stack(
                [im[:, y : y + h, x : x + w] for im, (y, x) in zip(images, offsets, strict=True)]
            )

        return pick(stylised), pick(content)

    def one_hot(self, index: int | list[int], batch: int, device: torch.device) -> torch.Tensor:
        """Style weights (B, N) selecting the network's style ``index`` (one, or one per image)."""
        indices = (
            torch.tensor(index, device=device)
            if isinstance(index, list)
            else torch.full((batch,), index, device=device)
        )
        return F.one_hot(indices, self.net.num_styles).float()

    def _loss_per_style(
        self, stylised: torch.Tensor, content: torch.Tensor, styles: list[int]
    ) -> tuple[dict[str, torch.Tensor], dict[int, dict[str, torch.Tensor]]]:
        """The loss terms of a batch whose photos have the trained styles ``styles``, and each
        style's own terms: each style's loss on its photos, weighted by their share of the batch
        (style and TV terms are means over the photos, so these are per-photo means; the normalised
        content term divides by a statistic of each style's photos)."""
        groups: dict[int, list[int]] = {}
        for i, k in enumerate(styles):
            groups.setdefault(k, []).append(i)
        stylised, content = self.loss_window(stylised, content)
        per_style = {}
        for k, rows in groups.items():
            if len(rows) == len(styles):
                per_style[k] = self.style_loss_fn(k)(stylised, content)
            else:
                index = torch.tensor(rows, device=stylised.device)
                per_style[k] = self.style_loss_fn(k)(
                    stylised.index_select(0, index), content.index_select(0, index)
                )
        if len(per_style) == 1:
            return next(iter(per_style.values())), per_style
        share = {k: len(rows) / len(styles) for k, rows in groups.items()}
        names = next(iter(per_style.values())).keys()
        terms = {name: sum(share[k] * t[name] for k, t in per_style.items()) for name in names}
        return terms, per_style

    def stylise_and_loss(
        self, content: torch.Tensor, style: int | list[int] = 0, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The network's stylisation of ``content`` (B, 3, H, W) in [0, 1] and its loss terms.

        ``style``: which trained style (an index into ``styles``; several styles only), for the
        whole batch or a list of one per photo.
        With ``loss.temporal_weight`` > 0 the terms include ``temporal``
        (:func:`fastns.losses.temporal_loss`): each photo is also moved by a random small motion
        (:mod:`fastns.motion`; ``generator`` seeds it), stylised in the same batch, and compared
        with the moved stylisation over the pixels the motion keeps in the frame.
        """
        stylised, terms, _ = self._stylise_and_loss(content, style, generator)
        return stylised, terms

    def _stylise_and_loss(
        self, content: torch.Tensor, style: int | list[int] = 0, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[int, dict[str, torch.Tensor]]]:
        """:meth:`stylise_and_loss`, and each style's own terms."""
        temporal = self.loss_fn.temporal_weight > 0
        batch = content.shape[0]
        styles = list(style) if isinstance(style, (list, tuple)) else [int(style)] * batch
        inputs = content
        if temporal:
            moved, flow, valid = moved_frame(content, self.loss_fn.motion, generator)
            inputs = torch.cat([content, moved])
        net = getattr(self, "_net_step", self.net)
        weights = None
        if self.net.num_styles > 1:
            indices = [self.trained[k] for k in styles] * (2 if temporal else 1)
            weights = self.one_hot(indices, inputs.shape[0], inputs.device)
        droplet_weight = float(self.hparams.get("droplet_weight") or 0.0)
        with self._norm_inputs(droplet_weight > 0) as seen:
            out = run_shifted(net, inputs, self.border, self.phase_shift(), weights)
        stylised = out[:batch] if temporal else out
        terms, per_style = self._loss_per_style(stylised, content, styles)
        if seen:
            d = droplet_weight * droplet_loss(seen)
            seen.clear()  # the graph holds what backward needs; the compiled path's list outlives the step
            terms = {**terms, "droplet": d, "total": terms["total"] + d}
        if temporal:
            # Not detached: both stylisations move toward each other.
            moved_stylised = warp(stylised, flow)
            t = self.loss_fn.temporal_weight * temporal_loss(out[batch:], moved_stylised, valid)
            terms = {**terms, "temporal": t, "total": terms["total"] + t}
        return stylised, terms, per_style

    def _norm_inputs(self, wanted: bool) -> contextlib.AbstractContextManager[list[torch.Tensor] | None]:
        """Where the droplet term finds this forward's norm inputs: None when the term is off.

        A training term only: forwards that record no gradients (validation) leave it out, so
        that the compiled network's hooks, which collect only then, and the eager ones agree.
        """
        if not wanted or not torch.is_grad_enabled():
            return contextlib.nullcontext(None)
        watched = getattr(self, "_watched_norms", None)
        if watched is None:
            return norm_inputs(self.net)
        watched.clear()  # the compiled network's hooks, placed once (prepare_for_training)
        return contextlib.nullcontext(watched)

    def compute_loss(self, content: torch.Tensor, style: int | list[int] = 0) -> dict[str, torch.Tensor]:
        """The loss terms of the network's stylisation of ``content`` (what training minimises)."""
        return self.stylise_and_loss(content, style)[1]

    def on_fit_start(self) -> None:
        self.prepare_for_training()

    def on_train_start(self) -> None:
        self._start_time = time.time()
        if self.global_step == 0 and self.trainer.is_global_zero and self.logger is not None:
            experiment = self.logger.experiment
            if hasattr(experiment, "add_image") and len(self.styles) == 1 and not self.prior_styles:
                for i, img in enumerate(self.style.tensors(self.style_size)):
                    experiment.add_image(f"style/{i}" if len(self.style.images) > 1 else "style", img[0], 0)
            elif hasattr(experiment, "add_image"):
                for st, size in zip(self.styles, self.style_sizes, strict=True):
                    for i, img in enumerate(st.tensors(size)):
                        suffix = f"/{i}" if len(st.images) > 1 else ""
                        experiment.add_image(f"style/{st.name}{suffix}", img[0], 0)

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
        styles = self.draw_styles(content.shape[0])
        motions = None
        if self.loss_fn.temporal_weight > 0:  # the step's motions, seeded as its other draws are
            seed = int(self._step_rng(None, 3).integers(2**62))
            motions = torch.Generator(content.device).manual_seed(seed)
        with self._step_noise(content.device):
            _, terms, per_style = self._stylise_and_loss(content, styles, motions)
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
        if len(self.styles) > 1:  # this step's styles, under their names
            for k, style_terms in per_style.items():
                for name in ("total", "content", "style"):
                    self.log(
                        f"train/loss/per_style/{self.styles[k].name}/{name}",
                        style_terms[name],
                        on_step=True,
                        on_epoch=False,
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
        n_styles = len(self.styles)
        # The same motions at every validation (temporal loss): its numbers compare across steps.
        seeds = [torch.Generator(content.device).manual_seed(1000 * batch_idx + k) for k in range(n_styles)]
        results = [self.stylise_and_loss(content, k, seeds[k]) for k in range(n_styles)]
        # Several styles: each style's terms under its name, and their mean under the usual names.
        terms = {name: sum(r[1][name] for r in results) / n_styles for name in results[0][1]}
        for name, value in terms.items():
            self.log(
                f"val/loss/{name}",
                value,
                on_step=False,
                on_epoch=True,
                sync_dist=True,
                batch_size=content.shape[0],
            )
        if n_styles > 1:
            for st, (_, style_terms) in zip(self.styles, results, strict=True):
                for name in ("total", "content", "style"):
                    self.log(
                        f"val/loss/per_style/{st.name}/{name}",
                        style_terms[name],
                        on_step=False,
                        on_epoch=True,
                        sync_dist=True,
                        batch_size=content.shape[0],
                    )
        # The fixed 4x4 px pattern (cross-hatch) the network can learn: watch it develop
        # (docs/training.md); photos score below ~1.
        self.log(
            "val/grid_pattern",
            sum(grid_pattern(r[0]).mean() for r in results) / n_styles,
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            batch_size=content.shape[0],
        )
        n = self.hparams.max_previews - sum(p.shape[1] for p in self._previews)
        if n > 0:
            rows = [content[:n]]
            if self.net.num_styles == 1:
                rows.append(results[0][0][:n])
            else:  # a row per style of the network, the init_from network's too
                stylised = {self.trained[k]: r[0] for k, r in enumerate(results)}
                for index in range(self.net.num_styles):
                    if index not in stylised:
                        with torch.no_grad():
                            c = content[:n]
                            stylised[index] = self.net(
                                c, self.border, style=self.one_hot(index, c.shape[0], c.device)
                            )
                    rows.append(stylised[index][:n])
            self._previews.append(torch.stack(rows).float().cpu())  # (rows, n, 3, H, W)

    def on_validation_epoch_end(self) -> None:
        previews, self._previews = self._previews, []
        if (
            self.trainer.sanity_checking
            or not previews
            or not self.trainer.is_global_zero
            or self.logger is None
        ):
            return
        rows = torch.cat(previews, dim=1)  # (rows, n, 3, H, W)
        # Top row: the fixed validation photos; below: the network's stylisations, a row per style.
        grid = make_grid(rows.flatten(0, 1), nrow=rows.shape[1], padding=2, pad_value=1.0)
        experiment = self.logger.experiment
        if hasattr(experiment, "add_image"):
            experiment.add_image("preview", grid.clamp(0, 1), self.global_step)

    # -- optimisation -------------------------------------------------------------------------

    @property
    def norms_lr(self) -> float | None:
        """The learning rate of γ, β trained alone (``train_only=norms``) along a cosine; else ``None``."""
        lr = self.hparams.get("norms_lr") if self.train_only == "norms" else None
        return float(lr) if lr else None

    def configure_optimizers(self):
        opt_cfg = self.hparams.optimizer or {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
        params = [p for p in self.net.parameters() if p.requires_grad]  # train_only=norms: γ, β only
        norms_lr = self.norms_lr
        if norms_lr:
            opt_cfg = {**opt_cfg, "lr": norms_lr}
        optimizer = instantiate(opt_cfg)(params=params)
        if self.hparams.scheduler:
            scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer)
        elif norms_lr and self._trainer is not None:
            steps = (
                self.trainer.max_steps
                if self.trainer.max_steps > 0
                else self.trainer.estimated_stepping_batches
            )
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(1, int(steps)), eta_min=1e-5
            )
        else:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
