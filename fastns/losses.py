"""The perceptual loss of Gatys et al. (2016) as used by Johnson et al. (2016).

One implementation serves Gatys per-image optimisation, feed-forward training and evaluation.

Normalisation, and where it departs from the papers (the same choices as jcjohnson/neural-style,
jcjohnson/fast-neural-style and pytorch/examples, so published loss weights carry over):

- **Gram matrix** ``G = F Fᵀ / (C·H·W)`` for features ``F`` of shape ``(C, H·W)``, as in Johnson
  et al. Gatys et al. use the unnormalised ``F Fᵀ``; normalising makes the style loss independent
  of the image size, so a style weight works at 256 px and at 1024 px alike.
- **Content loss** is the *mean* squared error of the features (Johnson's ``1/(CHW) ||·||²``);
  Gatys et al. use ``½ Σ (F − P)²``, whose scale grows with the image size.
- **Style loss** of a layer is the mean squared error between Gram matrices, i.e.
  ``1/C² Σ (G − A)²``. With the normalised Gram above this equals ``4/C²`` times Gatys' per-layer
  ``E_l = 1/(4 N_l² M_l²) Σ (Ĝ − Â)²``, so deep (512-channel) layers weigh relatively less than in
  Gatys' paper at equal layer weights; the layer weights ``w_l`` can compensate.
- **Total variation** is the squared-difference TV (β = 2 of Mahendran & Vedaldi 2015, as in
  neural-style), *averaged* over pixels rather than summed, so ``tv_weight`` is size independent.

Every term is returned already multiplied by its weights (``α·w_l`` for content, ``β·w_l`` for
style), so the terms add up to ``total`` and each logged number is its share of the objective.

**Normalised mode** (``normalize=True``, a fastns option, off in the paper presets): each layer's
term is divided by the mean square of its target (``mean(A_l²)`` for style, ``mean(P_l²)`` for
content), i.e. it becomes a *relative* squared error. VGG weight sources differ wildly in
activation scale — the style distance of relu1_2 and relu4_3 differs by 8 orders of magnitude with
an HED-fine-tuned VGG16 and by 3-4 with ImageNet or random weights — so with the papers'
normalisation the layer and loss weights have to be re-tuned for every VGG. Relative errors are
O(1) on every layer and for every VGG, so one set of weights is a sound start for any of them (how
strongly a VGG's features express a style still differs: random weights stylise far less).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .metrics import GRID_PERIOD, SPIKE_TOP, grid_fold, spike_parts
from .motion import MotionSettings
from .utils import memory_layout
from .vgg import VGGFeatures


def gram_matrix(features: torch.Tensor, low_precision: bool = False) -> torch.Tensor:
    """Gram matrix of ``(B, C, H, W)`` features, normalised by ``C·H·W``: returns float32 ``(B, C, C)``.

    By default computed in float32 even under autocast, for L-BFGS (Gatys optimisation): its line
    search compares losses closely enough that bf16 rounding makes it reject steps.
    ``low_precision=True`` (training) multiplies the features in their own dtype (bf16 under
    autocast): the matrix product accumulates in float32 on CPUs and GPUs alike and only its
    (C, C) result is rounded, a relative error near 2⁻⁹, far below the differences from the style
    targets that training reduces, and several times faster than a float32 product.
    """
    b, c, h, w = features.shape
    if low_precision:
        f = features.reshape(b, c, h * w)
        return _SelfProduct.apply(f).float() / (c * h * w)
    with torch.autocast(device_type=features.device.type, enabled=False):
        f = features.reshape(b, c, h * w).float()
        return _SelfProduct.apply(f) / (c * h * w)


class _SelfProduct(torch.autograd.Function):
    """``F Fᵀ`` for batched ``F`` ``(B, C, N)``, with the gradient ``(dG + dGᵀ) F`` as one product.

    Autograd of ``bmm(F, Fᵀ)`` sees two uses of ``F`` and computes ``dG F`` and ``dGᵀ F`` apart,
    then adds two ``(B, C, N)`` tensors: for relu1_2 that is the largest tensor of the loss.
    Summing the small ``(C, C)`` matrices first costs one product and no addition of features, and
    in bf16 it rounds once instead of twice. The gradient keeps ``F``'s memory layout (the VGG's
    features are channels-last), so nothing downstream copies it.
    """

    @staticmethod
    def forward(ctx, f: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(f)
        return torch.bmm(f, f.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (f,) = ctx.saved_tensors
        sym = (grad + grad.transpose(1, 2)).to(f.dtype)
        if f.stride(1) == 1 and f.shape[1] > 1:  # (B, C, N) viewed from channels-last (B, N, C)
            return torch.bmm(f.transpose(1, 2), sym).transpose(1, 2)
        return torch.bmm(sym, f)


def content_loss(features: torch.Tensor, target: torch.Tensor, low_precision: bool = False) -> torch.Tensor:
    """Mean squared error between feature maps (target broadcast over the batch), in float32.

    ``low_precision=True`` (training) takes the difference of bf16 features in bf16
    (:class:`_LowPrecisionSquaredDistance`); by default it is exact, as :func:`gram_matrix`'s, for
    L-BFGS's line search. fp16 features keep the exact path: the gradient's scale 2/N, rounded
    to fp16 before it multiplies, could fall below fp16's range (bf16 has float32's).
    """
    if low_precision and features.dtype == torch.bfloat16:
        return _LowPrecisionSquaredDistance.apply(features, target)
    return F.mse_loss(features.float(), target.float().expand_as(features))


class _LowPrecisionSquaredDistance(torch.autograd.Function):
    """``mean((f - t)²)`` of bf16 ``f`` as float32, its gradient ``2 (f - t) / N`` in ``f``'s dtype and layout.

    Written as ``F.mse_loss(f.float(), t.float())``, a bf16 feature map (training under autocast)
    is copied to float32 twice, the gradient is made in float32 and cast back, with a zero fill:
    six passes over relu2_2's map, the loss's largest after relu1_2. Here the difference is taken
    once in bf16 (each element rounds to 8 bits, unbiased, which the mean over ~10⁶ elements
    averages out), squared and summed in float32, and kept for the backward's one pass. ``t``
    gets no gradient (a target).
    """

    @staticmethod
    def forward(ctx, f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        d = torch.sub(f, t.to(f.dtype))  # t broadcasts; the result keeps f's memory layout
        ctx.save_for_backward(d)
        wide = torch.promote_types(d.dtype, torch.float32)  # float64 too, for gradcheck
        return torch.linalg.vector_norm(d, dtype=wide).square() / d.numel()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (d,) = ctx.saved_tensors
        return d * (grad * (2.0 / d.numel())).to(d.dtype), None


def style_loss(gram: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Mean squared error between Gram matrices (target broadcast over the batch)."""
    return F.mse_loss(gram, target_gram.expand_as(gram))


def tv_loss(images: torch.Tensor) -> torch.Tensor:
    """Squared-difference total variation of ``(B, 3, H, W)`` images, averaged over pixels."""
    images = images.float()
    dh = images[..., 1:, :] - images[..., :-1, :]
    dw = images[..., :, 1:] - images[..., :, :-1]
    return dh.pow(2).mean() + dw.pow(2).mean()


def grid_loss(images: torch.Tensor, period: int = GRID_PERIOD) -> torch.Tensor:
    """Mean square of the fixed ``period`` x ``period`` pixel pattern in ``(B, 3, H, W)`` images.

    The differentiable counterpart of :func:`fastns.metrics.grid_pattern`, per colour channel: the
    mean square of :func:`fastns.metrics.grid_fold` (each channel minus its moving average, folded
    onto a ``period`` x ``period`` grid, about its mean). Detail that belongs to the image averages
    out of the fold; a texture repeated on the pixel grid, such as the cross-hatch the network's two
    x2 stages make cheaply (docs/training.md), does not. The Gram-matrix style loss cannot see the difference
    between the two (it is blind to where features are), which is why it needs its own term.
    """
    return grid_fold(images.float(), period).square().mean()


#: :func:`droplet_loss`'s free share: above a Gaussian channel's 0.05, at the 0.07-0.11 of the
#: encoders' channels and of networks without blotches; 0.2 left the blotches (docs/training.md).
DROPLET_FREE = 0.1

#: :func:`droplet_loss` reads every ``DROPLET_STRIDE``-th row and column: a droplet is a blob many
#: pixels wide, so the sparser grid still holds it, and the term costs a quarter of the memory
#: traffic of reading every pixel (benchmarks/bench_train.py ``--droplet-weight``).
DROPLET_STRIDE = 2


def droplet_loss(
    norm_inputs: Sequence[torch.Tensor],
    free: float = DROPLET_FREE,
    top: float = SPIKE_TOP,
    stride: int = DROPLET_STRIDE,
) -> torch.Tensor:
    """Mean over layers and channels of how far each channel's spike share exceeds ``free``.

    ``norm_inputs``: the inputs of a network's normalisation layers
    (:func:`fastns.transformer.norm_inputs`), each ``(B, C, H, W)``. An instance norm divides each
    channel by its spread over the whole image, so a network can turn a channel down everywhere
    by putting one strong local spike in it, which shows as a blotch: the droplets of Karras et al.
    (2020, StyleGAN2). :func:`fastns.metrics.spike_share` finds them (the share of a channel's
    variance in its top 0.5 % of pixels); this term charges for each channel's share above
    ``free`` and nothing below it, so ordinary features, whose variance is spread, cost nothing.
    ``top``: the share of pixels counted as the spike (a Gaussian channel scores higher with more).
    ``stride``: the spike share is measured on every ``stride``-th row and column only.
    """
    if not norm_inputs:
        raise ValueError("droplet_loss needs the inputs of at least one normalisation layer")
    if stride < 1:
        raise ValueError(f"droplet_loss stride must be 1 or more, not {stride}")
    shares = [_SparseSpikeShare.apply(x, top, stride) for x in norm_inputs]
    return torch.stack([(share - free).clamp_min(0.0).mean() for share in shares]).mean()


class _SparseSpikeShare(torch.autograd.Function):
    """:func:`~fastns.metrics.spike_share` of ``x[..., ::stride, ::stride]`` with a closed-form backward.

    Autograd's backward of the same expression runs through the top-k's scatter, the dtype cast and
    one zero-filled tensor per sliced axis, each a pass over a network activation, at every norm of
    every step. The gradient of ``share = Σ_top d / Σ d``, ``d = (x - mean)²``, is
    ``2 / Σ d · ((1[top] - share) · (x - mean) - Σ_top (x - mean) / N)``, written once into a
    zero tensor of ``x``'s dtype and memory layout.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, top: float, stride: int) -> torch.Tensor:  # type: ignore[override]
        sparse = x[..., ::stride, ::stride]
        flat = torch.empty(sparse.shape, dtype=torch.float32, device=x.device)
        flat.copy_(sparse)  # one strided gather and cast, to (B, C, h, w) contiguous
        share, centred, indices, total = spike_parts(flat.flatten(2), top)
        ctx.save_for_backward(centred, indices, total, share)
        ctx.stride, ctx.sparse_shape = stride, sparse.shape
        ctx.x_shape, ctx.x_dtype, ctx.x_device = x.shape, x.dtype, x.device
        ctx.x_layout = memory_layout(x)
        return share

    @staticmethod
    def backward(ctx, grad_share: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        centred, indices, total, share = ctx.saved_tensors
        top_centred = centred.gather(2, indices)
        grad = centred * share.neg().unsqueeze(2)
        grad.scatter_add_(2, indices, top_centred)
        grad.sub_(top_centred.sum(2, keepdim=True) / centred.shape[2])
        # A constant channel's share is 1 by definition and moves with nothing.
        scale = torch.where(total > 0, 2 * grad_share / total.clamp_min(torch.finfo(torch.float32).tiny), 0)
        grad.mul_(scale.unsqueeze(2))
        # In x's memory layout, so that adding it to the norm's own gradient of x costs no transpose.
        grad_x = torch.empty(ctx.x_shape, dtype=ctx.x_dtype, device=ctx.x_device, memory_format=ctx.x_layout)
        grad_x.zero_()[..., :: ctx.stride, :: ctx.stride] = grad.view(ctx.sparse_shape)
        return grad_x, None, None


def temporal_loss(
    moved_stylised: torch.Tensor, stylised_moved: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Mean squared difference, over the ``valid`` pixels (B, 1, H, W), of two stylisations that a
    stable network makes equal: ``net(warp(x))`` and ``warp(net(x))`` (:mod:`fastns.motion`).

    Averaged over valid pixels and channels, so its scale does not depend on the image size or on
    how much of the frame the motion left valid.
    """
    diff = (moved_stylised.float() - stylised_moved.float()).square() * valid.float()
    return diff.sum() / (valid.float().sum() * moved_stylised.shape[1]).clamp_min(1.0)


def _layer_weights(name: str, layers: Mapping[str, float] | Sequence[str] | None) -> dict[str, float]:
    if layers is None:
        return {}
    if isinstance(layers, Mapping):
        out = {str(k): float(v) for k, v in layers.items()}
    else:
        out = {str(k): 1.0 for k in layers}
    for k, v in out.items():
        if v < 0:
            raise ConfigError(f"loss.{name}.{k}={v}: layer weights must be >= 0")
    return out


class PerceptualLoss(nn.Module):
    """Content + style + total-variation loss on VGG features (Gatys et al.; Johnson et al.).

    Set the style once with :meth:`set_style`; its Gram matrices are computed then and cached.
    Then call the module as often as needed::

        loss = PerceptualLoss({"relu2_2": 1.0}, {"relu1_2": 1, "relu2_2": 1, "relu3_3": 1, "relu4_3": 1},
                              content_weight=1e5, style_weight=1e10, tv_weight=0, vgg={"arch": "vgg16"})
        loss.set_style(style_image)                    # (1, 3, H, W) in [0, 1]
        terms = loss(stylised_batch, content_batch)    # training: content changes every batch
        terms["total"].backward()

    For per-image optimisation the content target can also be fixed with :meth:`set_content`.
    With no content at all (texture synthesis) the content terms are left out.

    Args:
        content_layers: ``{layer: w_l}`` of the content loss (a list means weight 1 each).
        style_layers: ``{layer: w_l}`` of the style loss.
        content_weight: α, multiplies every content term.
        style_weight: β, multiplies every style term.
        tv_weight: weight of the total-variation regulariser (0 disables it).
        grid_weight: weight of :func:`grid_loss`, a penalty on any fixed 4 x 4 px pattern in the
            images (0 disables it; training's remedy for the cross-hatch).
        vgg: a :class:`VGGFeatures` that provides all the layers above, or keyword arguments to
            build one (``arch``, ``weights``, ``pooling``, ``seed``).
        normalize: divide each layer's term by its target's mean square (see the module docstring).
        temporal_weight: weight of :func:`temporal_loss`, which training adds for a temporally
            stable network (0 = off); :meth:`forward` never computes it, so Gatys optimisation and
            evaluation are the same with any value.
        temporal: the random motion of that term (:class:`fastns.motion.MotionSettings` keys).

    Returns (from ``forward``): a dict of scalar tensors ``content/<layer>``, ``style/<layer>``,
    ``tv``, and the sums ``content``, ``style`` and ``total``.
    """

    def __init__(
        self,
        content_layers: Mapping[str, float] | Sequence[str] | None,
        style_layers: Mapping[str, float] | Sequence[str] | None,
        content_weight: float = 1.0,
        style_weight: float = 1.0,
        tv_weight: float = 0.0,
        grid_weight: float = 0.0,
        vgg: VGGFeatures | Mapping | None = None,
        normalize: bool = False,
        temporal_weight: float = 0.0,
        temporal: Mapping | None = None,
    ) -> None:
        super().__init__()
        self.normalize = bool(normalize)
        #: Style Grams and the content term's difference in the features' dtype under autocast
        #: (:func:`gram_matrix`, :func:`content_loss`); training sets it, Gatys optimisation and the
        #: evaluation keep float32. Not a loss setting: the same values, rounded differently.
        self.low_precision_terms = False
        self.temporal_weight = float(temporal_weight)
        if not math.isfinite(self.temporal_weight) or self.temporal_weight < 0:
            raise ConfigError(f"loss.temporal_weight={temporal_weight!r} must be a finite number >= 0")
        self.motion = MotionSettings.from_config(temporal)
        self.content_layers = _layer_weights("content_layers", content_layers)
        self.style_layers = _layer_weights("style_layers", style_layers)
        self.content_weight, self.style_weight, self.tv_weight, self.grid_weight = (
            float(content_weight),
            float(style_weight),
            float(tv_weight),
            float(grid_weight),
        )
        needed = list(dict.fromkeys([*self.content_layers, *self.style_layers]))
        if not needed:
            raise ConfigError("the loss needs at least one content or style layer")
        if isinstance(vgg, VGGFeatures):
            missing = [n for n in needed if n not in vgg.layers]
            if missing:
                raise ConfigError(f"the VGG extractor does not provide layers {missing}")
            self.encoder = vgg
        else:
            self.encoder = VGGFeatures(needed, **dict(vgg or {}))
        self._style_targets: dict[str, torch.Tensor] = {}
        self._style_scales: dict[str, torch.Tensor] = {}
        self._content_targets: dict[str, torch.Tensor] = {}

    #: The keys of a loss config (``fastns/configs/loss/*.yaml``) and of its ``vgg`` entry.
    CONFIG_KEYS = (
        "content_layers",
        "style_layers",
        "content_weight",
        "style_weight",
        "tv_weight",
        "grid_weight",
        "vgg",
        "normalize",
        "temporal_weight",
        "temporal",
    )
    VGG_KEYS = ("arch", "weights", "pooling", "seed")

    @classmethod
    def from_config(cls, cfg: Mapping, device: torch.device | str | None = None) -> PerceptualLoss:
        """The loss a config describes (``fastns/configs/loss/*.yaml``, or :meth:`config` of another loss).

        Unknown keys are errors that name the key, so a typo never silently keeps a default.
        """
        data = dict(cfg)
        unknown = set(data) - set(cls.CONFIG_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown key loss.{sorted(unknown)[0]}; the loss takes {sorted(cls.CONFIG_KEYS)}"
            )
        vgg = dict(data.pop("vgg", None) or {})
        unknown = set(vgg) - set(cls.VGG_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown key loss.vgg.{sorted(unknown)[0]}; loss.vgg takes {sorted(cls.VGG_KEYS)}"
            )
        return cls(**data, vgg=vgg).to(device)

    # -- targets ---------------------------------------------------------------------------

    @torch.no_grad()
    def style_grams(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gram matrices ``{layer: (B, C, C)}`` of the style layers for images in [0, 1]."""
        feats = self.encoder(image, self.style_layers)
        return {name: gram_matrix(f) for name, f in feats.items()}

    @torch.no_grad()
    def set_style(
        self, styles: torch.Tensor | Sequence[torch.Tensor], blend_weights: Sequence[float] | None = None
    ) -> None:
        """Compute and cache the style targets.

        Args:
            styles: one image ``(1, 3, H, W)`` or several (a list; sizes may differ).
            blend_weights: one weight per style image. The targets are the weighted sum of the
                images' Gram matrices with the weights normalised to sum to 1, as in
                jcjohnson/neural-style. Default: equal weights.
        """
        if isinstance(styles, torch.Tensor):
            styles = list(styles.split(1)) if styles.dim() == 4 else [styles.unsqueeze(0)]
        styles = list(styles)
        if not styles:
            raise ConfigError("set_style needs at least one style image")
        weights = [1.0] * len(styles) if blend_weights is None else [float(w) for w in blend_weights]
        if len(weights) != len(styles):
            raise ConfigError(f"style.blend_weights has {len(weights)} values for {len(styles)} style images")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"style.blend_weights={weights} must be >= 0 and not all zero")
        total = sum(weights)
        targets: dict[str, torch.Tensor] = {}
        for img, w in zip(styles, weights, strict=True):
            for name, g in self.style_grams(img).items():
                targets[name] = targets.get(name, 0) + g * (w / total)
        self._style_targets = targets
        # mean(A_l^2) per layer, the denominators of the normalised mode (clamped away from 0).
        self._style_scales = {k: v.pow(2).mean().clamp_min(1e-30) for k, v in targets.items()}

    @property
    def style_targets(self) -> dict[str, torch.Tensor]:
        """The cached style targets ``{layer: (1, C, C)}`` (blended Gram matrices) set by :meth:`set_style`."""
        return dict(self._style_targets)

    @torch.no_grad()
    def set_content(self, content: torch.Tensor | None) -> None:
        """Fix the content target (per-image optimisation); ``None`` clears it (texture synthesis)."""
        if content is None or not self.content_layers:
            self._content_targets = {}
        else:
            self._content_targets = {
                k: v.detach() for k, v in self.encoder(content, self.content_layers).items()
            }

    def _apply(self, fn, recurse=True):
        # Move the cached targets along with the module (.to(device), .half(), ...). Not buffers,
        # the public way: DDP broadcasts every buffer of the model at every step, and the Gram
        # targets (up to 512x512 per layer) would then cross the network for nothing.
        super()._apply(fn, recurse)
        self._style_targets = {k: fn(v) for k, v in self._style_targets.items()}
        self._style_scales = {k: fn(v) for k, v in self._style_scales.items()}
        self._content_targets = {k: fn(v) for k, v in self._content_targets.items()}
        return self

    # -- loss ------------------------------------------------------------------------------

    def forward(self, images: torch.Tensor, content: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Loss terms for ``images`` ``(B, 3, H, W)`` in [0, 1].

        Args:
            images: the images being optimised or produced by the network.
            content: the content images ``(B, 3, H, W)`` (training); if omitted, the target
                fixed by :meth:`set_content` is used, and without one the content terms are
                left out (texture synthesis).
        """
        use_style = bool(self.style_layers) and self.style_weight != 0
        if use_style and not self._style_targets:
            raise RuntimeError("PerceptualLoss: call set_style() before computing the loss")
        if content is not None:
            with torch.no_grad():
                content_targets = self.encoder(content, self.content_layers) if self.content_layers else {}
        else:
            content_targets = self._content_targets
        wanted = [
            *(content_targets if self.content_weight != 0 else []),
            *(self.style_layers if use_style else []),
        ]
        feats = self.encoder(images, list(dict.fromkeys(wanted))) if wanted else {}

        terms: dict[str, torch.Tensor] = {}
        zero = images.new_zeros((), dtype=torch.float32)
        content_sum, style_sum = zero, zero
        if self.content_weight != 0:
            for name, target in content_targets.items():
                t = (
                    self.content_weight
                    * self.content_layers[name]
                    * content_loss(feats[name], target, self.low_precision_terms)
                )
                if self.normalize:
                    t = t / target.float().pow(2).mean().clamp_min(1e-30)
                terms[f"content/{name}"] = t
                content_sum = content_sum + t
        if use_style:
            for name, w in self.style_layers.items():
                t = (
                    self.style_weight
                    * w
                    * style_loss(
                        gram_matrix(feats[name], self.low_precision_terms), self._style_targets[name]
                    )
                )
                if self.normalize:
                    t = t / self._style_scales[name]
                terms[f"style/{name}"] = t
                style_sum = style_sum + t
        tv = self.tv_weight * tv_loss(images) if self.tv_weight != 0 else zero
        terms["tv"] = tv
        total = content_sum + style_sum + tv
        if self.grid_weight != 0:
            terms["grid"] = self.grid_weight * grid_loss(images)
            total = total + terms["grid"]
        terms["content"] = content_sum
        terms["style"] = style_sum
        terms["total"] = total
        return terms

    def config(self) -> dict:
        """The constructor arguments as plain data (stored in model files and reports)."""
        return {
            "content_layers": dict(self.content_layers),
            "style_layers": dict(self.style_layers),
            "content_weight": self.content_weight,
            "style_weight": self.style_weight,
            "tv_weight": self.tv_weight,
            "grid_weight": self.grid_weight,
            "normalize": self.normalize,
            "temporal_weight": self.temporal_weight,
            "temporal": self.motion.as_dict(),
            "vgg": {
                "arch": self.encoder.arch,
                "weights": self.encoder.weights_source,
                "pooling": self.encoder.pooling,
            },
        }
