"""The network prepared for inference: norms folded, precision chosen, nothing else changed.

:func:`prepare` turns a trained :class:`~fastns.transformer.TransformerNet` into a copy that
computes the same function faster under ``torch.inference_mode``: InstanceNorm + ReLU pairs become
one per-channel affine applied in place (:class:`InstanceNormAct`, statistics computed once; for a
network of several styles, with the γ, β mixed for the style weights of the call),
BatchNorm is folded into the convolution before it, and the weights are moved to the device,
dtype and memory layout chosen. The copy's ``forward`` is still ``TransformerNet.forward``, so the
stylizer, tiling and the exports share the one definition of the network's output.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ConfigError
from ..transformer import CondInstanceNorm2d, TransformerNet
from ..utils import native_bf16

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

#: Rows (pixels) per fp32 slice in :func:`channels_last_stats`: 16k x C floats stay in cache.
_STATS_ROWS = 16384


def channels_last_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(image, channel) mean and variance, fp32 (B, C), of a channels-last CPU tensor.

    E[x^2] is the diagonal of X^T X, one oneDNN matrix product instead of ``var_mean``'s Welford
    loop (several times faster on the CPU). A bf16 product would round E[x^2] to 8 bits, so bf16
    activations are converted to fp32 in slices that stay in cache (faster than converting the
    whole tensor at 1024^2). fp32 and O(1) activations: E[x^2] - E[x]^2 cancels harmlessly.
    """
    b, c, h, w = x.shape
    n = h * w
    v = x.permute(0, 2, 3, 1).reshape(b, n, c)  # a view: channels-last is (B, H, W, C)
    if x.dtype == torch.float32:
        mean = v.mean(1)
        sq = torch.diagonal(torch.bmm(v.transpose(1, 2), v), dim1=1, dim2=2) / n
    else:
        total = torch.zeros(b, c)
        gram = torch.zeros(b, c, c)
        for start in range(0, n, _STATS_ROWS):
            part = v[:, start : start + _STATS_ROWS].float()
            total += part.sum(1)
            gram.baddbmm_(part.transpose(1, 2), part)
        mean = total / n
        sq = torch.diagonal(gram, dim1=1, dim2=2) / n
    return mean, (sq - mean * mean).clamp_min(0)


class InstanceNormAct(nn.Module):
    """InstanceNorm2d (affine), optionally followed by ReLU, for inference only.

    Numerically the same as ``relu(InstanceNorm2d(x))`` but cheaper: the per-(image, channel)
    statistics are turned into one scale and shift, applied in place together with the ReLU. A
    :class:`~fastns.transformer.CondInstanceNorm2d` (several styles) folds the same way, its γ, β
    first mixed for the call's style weights (B, N), so the folded network takes them too. On
    the CPU with channels-last tensors the statistics come from :func:`channels_last_stats`;
    elsewhere ``var_mean`` is fast.
    The output is written over the input: only valid under ``torch.inference_mode``.
    """

    def __init__(self, norm: nn.InstanceNorm2d | CondInstanceNorm2d, relu: bool) -> None:
        super().__init__()
        if isinstance(norm, CondInstanceNorm2d):
            self.takes_style = True  # StyleSequential hands it the style weights
        self.weight = norm.weight  # (C,), or (N, C) for several styles
        self.bias = norm.bias
        self.eps = norm.eps
        self.relu = relu
        #: Fixed (mean, var), each (B, C), used instead of the input's own: set while tiling.
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        weight, bias = self.weight.float(), self.bias.float()  # (C,) or, mixed below, (B, C)
        if weight.dim() == 2:
            if style is None:
                raise ValueError("a network of several styles needs style weights")
            w = style.float()
            weight, bias = w @ weight, w @ bias
        if self.stats is not None:
            mean, var = self.stats
        elif (
            x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.bfloat16)
            and x.is_contiguous(memory_format=torch.channels_last)
            and not torch.compiler.is_compiling()
        ):
            mean, var = channels_last_stats(x)
        else:
            var, mean = torch.var_mean(x, dim=(2, 3), correction=0)  # (B, C); accumulates in fp32
        scale = (var.float() + self.eps).rsqrt_().mul_(weight)  # (B, C)
        shift = torch.addcmul(bias, mean.float(), scale, value=-1)  # bias - mean * scale
        # One in-place pass (x is this layer's own conv output); the ReLU is a second.
        x = torch.addcmul(shift.to(x.dtype)[..., None, None], x, scale.to(x.dtype)[..., None, None], out=x)
        return x.relu_() if self.relu else x


def fold_norms(module: nn.Module) -> None:
    """Replace norm (+ ReLU) pairs in every ``nn.Sequential`` of ``module`` by their inference form."""
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i, layer in enumerate(list(seq)):
            relu_next = i + 1 < len(seq) and isinstance(seq[i + 1], nn.ReLU)
            if isinstance(layer, CondInstanceNorm2d) or (
                isinstance(layer, nn.InstanceNorm2d) and layer.affine and not layer.track_running_stats
            ):
                seq[i] = InstanceNormAct(layer, relu=relu_next)
                if relu_next:
                    seq[i + 1] = nn.Identity()
            elif (
                isinstance(layer, nn.BatchNorm2d)
                and i > 0
                and isinstance(seq[i - 1], nn.Conv2d | nn.ConvTranspose2d)
            ):
                # Eval-mode BatchNorm is an affine map: fold it into the convolution before it.
                conv = seq[i - 1]
                seq[i - 1] = torch.nn.utils.fusion.fuse_conv_bn_eval(
                    conv, layer, transpose=isinstance(conv, nn.ConvTranspose2d)
                )
                seq[i] = nn.Identity()


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The network's dtype for ``precision`` (:data:`PRECISIONS`) on ``device``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} must be one of {PRECISIONS}")
    if precision == "auto":
        # fp16 keeps ~11 bits (well under one 8-bit level after the sigmoid) and runs on tensor
        # cores. On CPUs with native bf16 (AMX or AVX-512 BF16, fastns.utils.cpu_bf16_units) bf16
        # convolutions are about twice as fast as fp32 (benchmarks/README_stylize.md) for a mean
        # error under 1/255 on trained models (docs/stylize.md), the trade OpenVINO makes by
        # default on these CPUs. Elsewhere bf16 is emulated and slower, so other CPUs and MPS
        # stay fp32.
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and native_bf16(device) else torch.float32
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError(
            "precision=fp16 is for GPUs; on the CPU use fp32 (exact) or bf16 (faster with AMX or AVX-512 BF16)"
        )
    return _DTYPES[precision]


def prepare(
    net: TransformerNet, device: torch.device, dtype: torch.dtype, channels_last: bool
) -> TransformerNet:
    """A frozen inference copy of ``net`` (norms folded) on ``device`` in ``dtype``; ``net`` is not changed."""
    inference_net = copy.deepcopy(net).eval()
    fold_norms(inference_net)
    inference_net = inference_net.to(device, dtype)
    if channels_last:
        inference_net = inference_net.to(memory_format=torch.channels_last)
    for p in inference_net.parameters():
        p.requires_grad_(False)
    return inference_net
