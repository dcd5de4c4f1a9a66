"""Gatys per-image optimisation: neural style transfer and texture synthesis.

Gatys, Ecker & Bethge, "A Neural Algorithm of Artistic Style" (2015) / "Image Style Transfer
Using Convolutional Neural Networks" (CVPR 2016), and "Texture Synthesis Using Convolutional
Neural Networks" (NIPS 2015): optimise the pixels of an image so that its VGG features match the
content image's and its Gram matrices match the style image's. Texture synthesis is the same
optimisation with no content term, started from white noise.

This is plain PyTorch (no Lightning): :func:`optimize_image` is the loop, :func:`run` is the
config-driven task behind ``scripts/optimize.py``. Both use the shared :class:`PerceptualLoss`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from .color import preserve_color as _preserve_color
from .errors import ConfigError, ImageError, first_line, gather
from .image import MIN_SIDE, check_output_path, fit_longest, load_image, open_image, resize, save_image
from .losses import PerceptualLoss
from .style import Style
from .utils import as_list, native_bf16, resolve_device

log = logging.getLogger(__name__)

#: Per-optimiser learning rates. L-BFGS takes full quasi-Newton steps (lr 1, no line search,
#: as in neural-style); Adam's step is in pixel units of [0, 1] images.
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}
_MAX_LINE_SEARCH_EVALS = 25


@dataclass
class OptimizeResult:
    """The optimised image and the loss trajectory.

    ``losses[i]`` holds the loss terms (floats) of the image after ``i`` iterations, for
    ``i = 0 .. iterations`` (``losses[0]`` is the initial image).
    """

    image: torch.Tensor
    losses: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    evaluations: int = 0


def white_noise(
    size: tuple[int, int], seed: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """Seeded uniform white noise ``(1, 3, H, W)`` in [0, 1] (Gatys' texture-synthesis start)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand((1, 3, *size), generator=gen).to(device)


def _floats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items()}


def optimize_image(
    loss_fn: PerceptualLoss,
    init: torch.Tensor,
    iterations: int = 500,
    optimizer: str | Callable[[list[torch.Tensor]], torch.optim.Optimizer] = "lbfgs",
    lr: float | None = None,
    history_size: int = 100,
    line_search: str | None = "strong_wolfe",
    callback: Callable[[int, torch.Tensor, dict[str, float]], None] | None = None,
    progress: bool = True,
    desc: str = "gatys",
    compute_dtype: torch.dtype = torch.float32,
) -> OptimizeResult:
    """Optimise the pixels of ``init`` to minimise ``loss_fn(image)["total"]``.

    The style (and, for style transfer, the content) must already be set on ``loss_fn``.

    Args:
        loss_fn: a :class:`PerceptualLoss` with its targets set.
        init: the starting image ``(1, 3, H, W)``; it is copied, not modified.
        iterations: number of optimiser iterations (one loss evaluation each).
        optimizer: ``"lbfgs"`` (Gatys; default) or ``"adam"``, or a factory that builds a torch
            optimiser for a list of parameters (e.g. ``functools.partial(torch.optim.LBFGS,
            lr=1)``, what a Hydra ``_partial_`` config instantiates to); ``lr``, ``history_size``
            and ``line_search`` then come from the factory.
        lr: step size of a named optimiser; default from :data:`DEFAULT_LR`.
        history_size: L-BFGS memory (neural-style uses 100).
        line_search: L-BFGS line search, ``"strong_wolfe"`` or ``None`` (plain unit steps).
        callback: called after every iteration as ``callback(i, image, terms)`` with the
            iteration count ``i`` (1-based), the current image (do not modify) and the loss
            terms evaluated during that iteration.
        progress: show a progress bar with the loss terms.
        compute_dtype: the VGG's compute precision: ``torch.bfloat16`` runs it under autocast (the
            pixels, the Gram matrices and the loss sums stay float32), which is faster where
            bfloat16 is native; float32 otherwise (exact).

    Returns:
        :class:`OptimizeResult` with the final image clamped to [0, 1]. The pixels are optimised
        unconstrained (as in neural-style) and only clamped for output; a first-order optimiser's
        (Adam's) iterates are projected to [0, 1] after each step, which is harmless for it.
    """
    if iterations < 0:
        raise ConfigError(f"iterations={iterations} must be >= 0")
    image = init.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
    if isinstance(optimizer, str):
        name = optimizer.lower()
        if name not in DEFAULT_LR:
            raise ConfigError(f"optimizer={optimizer!r} is not supported; use lbfgs or adam")
        step = DEFAULT_LR[name] if lr is None else float(lr)
        if name == "lbfgs":
            opt: torch.optim.Optimizer = torch.optim.LBFGS(
                [image], lr=step, history_size=history_size, line_search_fn=line_search
            )
        else:
            opt = torch.optim.Adam([image], lr=step)
    else:
        opt = optimizer([image])
    is_lbfgs = isinstance(opt, torch.optim.LBFGS)
    if is_lbfgs:
        # One step() call per iteration, so that we can report progress, save images and stop
        # cleanly between iterations. L-BFGS keeps its curvature history in the optimiser state
        # across calls, so this is the same algorithm as one long call. max_eval must leave the
        # line search its budget: torch's default (max_iter * 5 // 4 = 1) would disable it.
        # tolerance 0: always run the requested iterations (an early stop at a tiny gradient
        # depends on the arbitrary scale of the loss weights). LBFGS.step reads these from its
        # param group, so they can be set on an optimiser built by any factory.
        opt.param_groups[0].update(
            max_iter=1, max_eval=1 + _MAX_LINE_SEARCH_EVALS, tolerance_grad=0.0, tolerance_change=0.0
        )
    caches_trial = is_lbfgs and opt.param_groups[0]["line_search_fn"] is not None
    autocast = torch.autocast(init.device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32)

    # step() starts by evaluating the loss at the current image, which the line search of the
    # previous step has usually just evaluated (the accepted trial point is computed by the same
    # arithmetic, so it is bitwise equal): reuse that evaluation instead of paying for it twice.
    cache: dict[str, object] = {}
    step_terms: list[dict[str, torch.Tensor]] = []  # the terms of each evaluation in the current step
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        if "x" in cache and torch.equal(cache["x"], image.detach()):
            image.grad = cache["grad"].clone()
            step_terms.append(cache["terms"])
            return cache["terms"]["total"]
        evaluations += 1
        opt.zero_grad(set_to_none=True)
        with autocast:
            terms = loss_fn(image)
        if torch.isfinite(terms["total"]):
            terms["total"].backward()
        else:
            # An overflowing trial point of the line search (its extrapolation grows the step
            # 10x per trial). Report +inf with no gradient: the search then brackets and
            # bisects back instead of propagating NaN into the image.
            terms["total"] = torch.full_like(terms["total"], math.inf)
            image.grad = torch.zeros_like(image)
        detached = {k: v.detach() for k, v in terms.items()}
        step_terms.append(detached)
        if caches_trial:
            cache.update(x=image.detach().clone(), grad=image.grad.detach().clone(), terms=detached)
        return terms["total"]

    losses: list[dict[str, float]] = []
    good = image.detach().clone()  # the last image whose loss was seen to be finite
    start = time.perf_counter()
    bar = tqdm(total=iterations, desc=desc, disable=not progress, dynamic_ncols=True, leave=True)
    try:
        for i in range(1, iterations + 1):
            before = image.detach().clone()
            step_terms.clear()
            opt.step(closure)  # evaluates the current image first, then (line search) trial points
            terms = _floats(step_terms[0])  # the loss of `before`, the image this iteration started from
            if not math.isfinite(terms["total"]):
                log.warning(
                    "loss became %s at iteration %d; stopping with the last finite image",
                    terms["total"],
                    i - 1,
                )
                with torch.no_grad():
                    image.copy_(good)
                break
            good = before
            losses.append(terms)
            if not is_lbfgs:  # a first-order method (Adam): project onto the valid pixels
                with torch.no_grad():
                    image.clamp_(0, 1)
            bar.update(1)
            bar.set_postfix(
                {k: f"{terms[k]:.3g}" for k in ("total", "content", "style", "tv")}, refresh=False
            )
            if callback is not None:
                callback(i, image.detach(), terms)
        with torch.no_grad(), autocast:
            final = _floats(loss_fn(image))
        if math.isfinite(final["total"]):
            losses.append(final)  # the loss of the final image
        else:
            with torch.no_grad():
                image.copy_(good)
    finally:
        bar.close()
    return OptimizeResult(
        image=image.detach().clamp(0, 1),
        losses=losses,
        seconds=time.perf_counter() - start,
        evaluations=evaluations,
    )


# -- config-driven task ---------------------------------------------------------------------


def build_optimizer(cfg_optimizer: DictConfig) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    """The optimiser factory an ``optimizer`` config (``fastns/configs/optimizer/*.yaml``, ``_partial_``) names."""
    target = cfg_optimizer.get("_target_")
    try:
        factory = instantiate(cfg_optimizer)
    except Exception as e:  # Hydra wraps import and argument errors in several exception types
        raise ConfigError(
            f"optimizer._target_={target}: cannot build the optimiser ({first_line(e)})"
        ) from None
    if not callable(factory):
        raise ConfigError(
            f"optimizer._target_={target}: not an optimiser class (set optimizer._partial_=true)"
        )
    return factory


#: ``precision=`` values of the Gatys task.
PRECISIONS = ("auto", "fp32", "bf16")


def _compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 where the device computes it natively (utils.bf16_is_native), else float32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} must be one of {PRECISIONS}")
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return torch.float32


def _schedule(cfg: DictConfig) -> tuple[list[int], list[int]]:
    """Output sizes (longest side) of the coarse-to-fine stages and iterations for each."""
    size = int(cfg.image_size)
    if size <= 0:
        raise ConfigError(f"image_size={size} must be a positive number of pixels")
    extra = [int(s) for s in as_list(cfg.get("scales"))]
    if any(s <= 0 for s in extra):
        raise ConfigError(f"scales={extra} must be positive sizes in pixels")
    scales = sorted({s for s in extra if s < size}) + [size]
    its = [int(n) for n in as_list(cfg.iterations)]
    if len(its) == 1:
        its = its * len(scales)
    if len(its) != len(scales):
        raise ConfigError(
            f"iterations has {len(its)} values for {len(scales)} scales {scales}; give one or one per scale"
        )
    return scales, its


def _init_image(cfg: DictConfig, content: torch.Tensor | None, size: tuple[int, int], device) -> torch.Tensor:
    init = str(cfg.init)
    if init == "noise" or (init == "content" and content is None):
        return white_noise(size, seed=int(cfg.seed), device=device)
    if init == "content":
        return resize(content, size)
    return resize(load_image(init, device=device), size)  # a path: any image, resized to fit


def run(cfg: DictConfig) -> Path:
    """Run Gatys style transfer (or texture synthesis when ``content`` is null) from a config.

    See ``fastns/configs/optimize.yaml`` for the keys. Returns the path of the written image.
    """
    device = resolve_device(cfg.device)
    torch.manual_seed(int(cfg.seed))
    content_path = cfg.content
    init_is_path = str(cfg.init) not in ("content", "noise")
    output = check_output_path(
        cfg.output, [content_path, *as_list(cfg.style.image), cfg.init if init_is_path else None]
    )
    scales, iterations = _schedule(cfg)
    save_every = int(cfg.save_every or 0)
    if cfg.preserve_color and content_path is None:
        raise ConfigError("preserve_color=true needs a content image (it keeps the content's colours)")
    optimizer = build_optimizer(cfg.optimizer)
    compute_dtype = _compute_dtype(str(cfg.precision), device)

    # Load everything before the long part, so a bad file fails in the first second.
    if content_path is not None:
        w, h = open_image(content_path).size  # the photo's own size: a tiny one would be upscaled to mush
        if min(w, h) < MIN_SIDE:
            raise ImageError(f"{content_path}: {w}x{h} px is too small to stylise ({MIN_SIDE} px minimum)")
    content = load_image(content_path, size=scales[-1], device=device) if content_path is not None else None
    if init_is_path:
        load_image(cfg.init)  # validate the init file early
    loss_cfg = OmegaConf.to_container(cfg.loss, resolve=True)
    style, loss_fn = gather(
        lambda: Style.from_config(cfg.style), lambda: PerceptualLoss.from_config(loss_cfg, device)
    )
    log.info(
        "%s: style %s, %s (weights: %s), device %s, VGG in %s",
        "style transfer" if content is not None else "texture synthesis",
        style.name,
        loss_fn.encoder.arch,
        loss_fn.encoder.weights_source,
        device,
        str(compute_dtype).removeprefix("torch."),
    )

    image = None
    for stage, (longest, n_iter) in enumerate(zip(scales, iterations, strict=True)):
        if content is not None:
            h, w = content.shape[-2:]
            w, h = fit_longest(w, h, longest)
        else:
            h = w = longest
        loss_fn.set_style(
            style.tensors(style.longest_side(longest, reference=scales[-1]), device), style.blend_weights
        )
        loss_fn.set_content(resize(content, (h, w)) if content is not None else None)
        init = _init_image(cfg, content, (h, w), device) if image is None else resize(image, (h, w))

        def save_intermediate(i: int, img: torch.Tensor, terms: dict, longest=longest) -> None:
            if save_every and i % save_every == 0:
                tag = f"_{longest}px" if len(scales) > 1 else ""
                save_image(img.clamp(0, 1), output.with_name(f"{output.stem}{tag}_{i:04d}{output.suffix}"))

        result = optimize_image(
            loss_fn,
            init,
            iterations=n_iter,
            optimizer=optimizer,
            callback=save_intermediate,
            progress=bool(cfg.progress),
            desc=f"{longest}px" if len(scales) > 1 else "gatys",
            compute_dtype=compute_dtype,
        )
        image = result.image
        final = result.losses[-1]
        log.info(
            "stage %d/%d: %dx%d, %d iterations (%d evaluations) in %.1fs, loss %s",
            stage + 1,
            len(scales),
            w,
            h,
            n_iter,
            result.evaluations,
            result.seconds,
            ", ".join(f"{k}={final[k]:.4g}" for k in ("total", "content", "style", "tv")),
        )

    if cfg.preserve_color:
        image = _preserve_color(content, image)
    save_image(image, output)
    log.info("wrote %s", output)
    return output
