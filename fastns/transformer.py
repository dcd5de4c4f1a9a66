"""The image transformation network of Johnson, Alahi & Fei-Fei (2016).

Layers, in the paper's notation (supplementary material, Table 1):

    c9s1-32, d64, d128, R128 x 5, u64, u32, c9s1-3

``c9s1-k``: 9x9 convolution, stride 1, k filters; ``dk``: 3x3 convolution, stride 2; ``R128``: a
residual block of two 3x3 convolutions; ``uk``: x2 upsampling followed by a 3x3 convolution. Every
convolution but the last is followed by a normalisation layer and a ReLU.

Departures from the paper, each for a reason:

- **Instance normalisation** (Ulyanov et al. 2016) instead of batch normalisation by default: it
  gives visibly better stylisations and makes the output independent of the other images in the
  batch. ``norm="batch"`` restores the paper.
- **Upsampling by nearest-neighbour x2 then a 3x3 convolution** by default instead of the paper's
  stride-1/2 (transposed) convolutions, which leave checkerboard artifacts (Odena et al. 2016).
  ``upsample="transpose"`` restores the paper; ``upsample="bilinear"`` smooths the upsampled maps
  before the convolution (docs/training.md compares it with nearest).
- **Reflection padding** in every convolution instead of the paper's unpadded residual blocks on a
  40-px reflection-padded input: same purpose (no border artifacts), and the output size equals
  the input size for any input.
- **Output in [0, 1] through a sigmoid**; the paper's scaled tanh, ``255 * (tanh(x) + 1) / 2``,
  is the same function up to the input's scale.
- **Any input size** (from 8 px): inputs whose sides are not multiples of 4 are reflection-padded
  up to one and the output is cropped back, so odd sizes work.

The paper's own layout is available too, for networks imported from jcjohnson/fast-neural-style
(``fastns.importers``): ``padding="reflect-start"`` (one 40-px reflection padding of the input,
zero-padded encoder and decoder convolutions, unpadded residual convolutions whose identity is
cropped by 2 px, as ``nn.ShaveImage`` does), ``pixels="caffe"`` (the network sees and outputs BGR
0-255 pixels minus the VGG mean) and ``output="tanh"`` (``150 * tanh``).

**Several styles in one network** (``num_styles=N > 1``; Dumoulin, Shlens & Kudlur 2017, "A Learned
Representation for Artistic Style"): every instance norm keeps a scale and shift (γ, β) per style
(:class:`CondInstanceNorm2d`, (N, C) each) and the convolutions are shared. ``forward`` takes style
weights (B, N) or (N,): a one-hot row selects a style, a mixture blends the styles by mixing their γ, β.
``num_styles=1`` is the single-style network, unchanged: same modules, state-dict keys, outputs.

The output is computed in one place, :meth:`TransformerNet.forward` (optionally with a reflection
``border`` around the image, which is how the stylizer and the exports run it); tiled inference
calls the same pieces (:func:`pad_image`, ``encoder``, ``residuals``, ``decoder``,
:meth:`TransformerNet.head`) stage by stage.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .utils import memory_layout

NORMS = ("instance", "batch")
#: How the residual blocks and the decoder keep their activations in scale: ``instance`` (instance
#: norm, as the encoder) or ``demod`` (no statistics of the activations: each filter scaled to unit
#: norm, StyleGAN2's weight demodulation, then a per-channel γ, β). :class:`DemodConv2d` says why.
BODY_NORMS = ("instance", "demod")
UPSAMPLES = ("nearest", "bilinear", "transpose")
#: How raw decoder scores become [0, 1] images: ``sigmoid`` (fastns), ``clamp`` (networks imported
#: from pytorch/examples, whose output is clamped; ``fastns.importers`` folds their 0-255 scale in)
#: or ``tanh`` (``tanh_scale * tanh``, jcjohnson/fast-neural-style's ``nn.Tanh`` + ``nn.MulConstant``,
#: then clamped).
OUTPUTS = ("sigmoid", "clamp", "tanh")
#: Where the image is padded: ``reflect`` (fastns: every convolution) or ``reflect-start``
#: (jcjohnson/fast-neural-style's ``-padding_type reflect-start``: the input only, by
#: :data:`START_PAD_PER_BLOCK` px per residual block; the encoder and decoder convolutions are
#: zero-padded and the residual convolutions unpadded, their identity cropped to match).
PADDINGS = ("reflect", "reflect-start")
#: The pixels the network sees and outputs: ``rgb`` (RGB in [0, 1]) or ``caffe`` (BGR in 0-255 minus
#: :data:`CAFFE_MEAN_BGR`, jcjohnson/fast-neural-style's ``preprocess.vgg``); converted at its edges.
PIXELS = ("rgb", "caffe")
#: The mean pixel of Caffe's VGG models, BGR in 0-255, subtracted by ``pixels="caffe"`` networks.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: ``padding="reflect-start"``: input padding per residual block, px. Each block's two unpadded 3x3
#: convolutions remove 2 px per side at 1/4 resolution, i.e. 8 px of the input: 40 px for 5 blocks.
START_PAD_PER_BLOCK = 8
#: Reflection padding around an image at inference, px (``fastns.stylize`` explains why). A multiple
#: of 4, so the network's two stride-2 stages see the image on the same grid as without it.
DEFAULT_BORDER = 32


def instance_norm_channels_last(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """Instance norm of a channels-last ``x`` (B, C, H, W) that stays channels-last, forward and backward.

    ``F.instance_norm`` computes a batch norm of the (1, B·C, H, W) view, which only exists in NCHW:
    on a channels-last activation it copies it out to NCHW, returns NCHW, and the next convolution
    copies it back (and the gradients take the same two copies the other way, plus additions of
    tensors in two layouts). A batch norm of each image alone, ``(1, C, H, W)``, normalises over
    the same pixels, and ATen's batch norm runs channels-last tensors in their own layout; the
    per-image results are concatenated, which costs one pass forward and one backward.
    ``weight``, ``bias``: (C,), or (B, C) for each image its own (:class:`CondInstanceNorm2d`).
    """
    out: list[torch.Tensor] = []
    for i, xi in enumerate(x.split(1)):
        w = weight[i] if weight.dim() == 2 else weight
        b = bias[i] if bias.dim() == 2 else bias
        out.append(F.batch_norm(xi, None, None, w, b, True, 0.0, eps))
    return out[0] if len(out) == 1 else torch.cat(out)


class _LayoutCheck:
    """``_is_channels_last(x)``, hidden from TorchScript, for the norms that keep channels-last inputs so."""

    # TorchScript reads an unused method's signature from its annotations, which postponed
    # evaluation (``from __future__ import annotations``) leaves as strings it cannot resolve.
    @torch.jit.unused
    def _is_channels_last(self, x):  # noqa: ANN001, ANN202
        return memory_layout(x) == torch.channels_last


class InstanceNorm2d(_LayoutCheck, nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (same parameters, same function) that keeps a channels-last input so.

    Training runs the network channels-last on a CPU (``fastns.module``), where oneDNN's
    convolutions are fastest; :func:`instance_norm_channels_last` says what the plain layer costs
    there. NCHW inputs take ``F.instance_norm`` as before, and so does TorchScript, which compiles
    only that path (exports run NCHW).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            not torch.jit.is_scripting()
            and self.affine
            and not self.track_running_stats
            and self._is_channels_last(x)
        ):
            return self._channels_last(x)
        return self._apply_instance_norm(x)

    @torch.jit.unused
    def _channels_last(self, x):  # noqa: ANN001, ANN202 (_LayoutCheck says why)
        return instance_norm_channels_last(x, self.weight, self.bias, self.eps)


class CondInstanceNorm2d(_LayoutCheck, nn.Module):
    """Conditional instance normalisation (Dumoulin et al. 2017): one (γ, β) per style.

    ``forward(x, style)``: ``x`` (B, C, H, W) normalised per image and channel, then scaled and
    shifted by ``style @ weight`` and ``style @ bias``, where ``style`` is (B, N) style weights (a
    one-hot row selects a style's γ, β; a mixture mixes them). The parameters keep the names of
    ``nn.InstanceNorm2d``'s, ``weight`` and ``bias``, with a leading style dimension: (N, C).

    Args:
        channels: C.
        num_styles: N.
        eps: added to the variance, as ``nn.InstanceNorm2d``.
    """

    def __init__(self, channels: int, num_styles: int, eps: float = 1e-5) -> None:
        super().__init__()
        #: Marks the layers of a :class:`StyleSequential` that take the style weights (an instance
        #: attribute, which TorchScript sees, so that it compiles only the call that applies).
        self.takes_style = True
        self.num_features = int(channels)
        self.num_styles = int(num_styles)
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(num_styles, channels))
        self.bias = nn.Parameter(torch.zeros(num_styles, channels))

    def affine(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (γ, β) of style weights (B, N): each (B, C), in the weights' dtype (fp32 under autocast)."""
        w = style.to(self.weight.dtype)
        return w @ self.weight, w @ self.bias

    def forward(self, x: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        assert style is not None, "a network of several styles needs style weights"
        gamma, beta = self.affine(style)  # (B, C) each
        if not torch.jit.is_scripting() and self._is_channels_last(x):
            return self._channels_last(x, gamma, beta)
        # What F.instance_norm computes (a batch norm of the (1, B*C, H, W) view, its weight
        # repeated per image), with each image's own γ, β: one-hot weights give bit for bit the
        # output of nn.InstanceNorm2d holding that style's γ, β.
        y = F.batch_norm(
            x.contiguous().view(1, -1, x.shape[-2], x.shape[-1]),
            None,
            None,
            gamma.reshape(-1),
            beta.reshape(-1),
            True,
            0.0,
            self.eps,
        )
        return y.view(x.shape)

    @torch.jit.unused
    def _channels_last(self, x, gamma, beta):  # noqa: ANN001, ANN202 (_LayoutCheck says why)
        return instance_norm_channels_last(x, gamma, beta, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_styles={self.num_styles}, eps={self.eps}"


class DemodConv2d(nn.Conv2d):
    """A convolution whose filters are scaled to unit L2 norm, times ``gain`` (Karras et al. 2020, StyleGAN2).

    It keeps the scale that an instance norm after the convolution would, without the instance norm's
    statistics of the whole image. Those statistics invite what StyleGAN2 calls droplets: the network
    learns to put a strong, localised spike in a few channels, which then dominates their variance and
    so scales them down everywhere else; the spike itself shows as a blotch (in fastns's CPU networks:
    starry_night's pale moons and dark holes, docs/training.md). A filter of unit norm maps inputs of
    unit variance to outputs of about unit variance, whatever the image; ``gain=sqrt(2)`` makes up for
    the ReLU after it.

    The weights start at unit scale (``init_std``, StyleGAN2's equalised learning rate) because Adam's
    steps are a fixed size per weight: at PyTorch's default initial scale (~0.02 for 128 channels)
    each step turned the filters by several percent, they lined up with the inputs' correlations
    (which the unit-norm argument assumes away), each residual block multiplied the activations by
    5-9 and the output saturated within 40 steps. At unit scale the filters turn ~50x more slowly and
    the activations stay near the instance-norm network's (docs/training.md, "Droplets").
    """

    def __init__(self, *args: Any, gain: float = 1.0, init_std: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gain = float(gain)
        nn.init.normal_(self.weight, 0.0, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = w * (self.gain * torch.rsqrt(w.float().square().sum((1, 2, 3), keepdim=True) + 1e-8)).to(w.dtype)
        return self._conv_forward(x, w, self.bias)


class StyleAffine(nn.Module):
    """Per-channel γ, β with no normalisation: the affine part of :class:`CondInstanceNorm2d`.

    ``weight`` and ``bias`` are (N, C): one row per style, mixed by the style weights (B, N); a
    single-style network (``style=None``) uses its one row.
    """

    def __init__(self, channels: int, num_styles: int = 1) -> None:
        super().__init__()
        self.takes_style = True
        self.num_features = int(channels)
        self.num_styles = int(num_styles)
        self.weight = nn.Parameter(torch.ones(num_styles, channels))
        self.bias = nn.Parameter(torch.zeros(num_styles, channels))

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        if style is None:
            gamma, beta = self.weight[:1], self.bias[:1]  # (1, C)
        else:
            w = style.to(self.weight.dtype)
            gamma, beta = w @ self.weight, w @ self.bias  # (B, C)
        return x * gamma.to(x.dtype)[..., None, None] + beta.to(x.dtype)[..., None, None]

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_styles={self.num_styles}"


class StyleSequential(nn.Sequential):
    """``nn.Sequential`` that hands the style weights to the layers that take them (``takes_style``).

    The same state-dict keys as ``nn.Sequential``; with ``style=None`` it is ``nn.Sequential``.
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__(*layers)
        self.takes_style = True

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            if hasattr(layer, "takes_style"):
                x = layer(x, style)
            else:
                x = layer(x)
        return x


def _norm(kind: str, channels: int, num_styles: int = 1) -> nn.Module:
    if kind == "demod":  # the convolution before it is a DemodConv2d
        return StyleAffine(channels, num_styles)
    if kind == "instance":
        if num_styles > 1:
            return CondInstanceNorm2d(channels, num_styles)
        return InstanceNorm2d(channels, affine=True)
    return nn.BatchNorm2d(channels)


#: Every normalisation layer a network can hold (:func:`_norm`); :func:`last_norm` looks for them.
NORM_LAYERS = (nn.InstanceNorm2d, nn.BatchNorm2d, CondInstanceNorm2d, StyleAffine)


def last_norm(net: nn.Module) -> nn.Module | None:
    """The last normalisation layer of ``net`` in its forward order (the decoder's), or None.

    Its input is where droplets show (``fastns.metrics.spike_share``). For the training form of
    the network: ``fastns.stylize.inference.prepare`` replaces the instance norms.
    """
    norms = [m for m in net.modules() if isinstance(m, NORM_LAYERS)]
    return norms[-1] if norms else None


def watch_norm_inputs(net: nn.Module, seen: list[torch.Tensor], grad_only: bool = False) -> list[Any]:
    """Forward pre-hooks on ``net``'s normalisation layers that append each one's input to ``seen``.

    In forward order, one tensor per norm and per forward, attached to the graph (the droplet term,
    :func:`fastns.losses.droplet_loss`, trains through them). ``grad_only``: only in forwards that
    record gradients (training's), so that hooks left in place collect nothing in validation or
    stylizing. Returns the hooks' handles: ``handle.remove()`` takes each one off.
    """

    def keep(_module: nn.Module, args: tuple[Any, ...]) -> None:
        if not grad_only or torch.is_grad_enabled():
            seen.append(args[0])

    return [m.register_forward_pre_hook(keep) for m in net.modules() if isinstance(m, NORM_LAYERS)]


@contextmanager
def norm_inputs(net: nn.Module) -> Iterator[list[torch.Tensor]]:
    """The inputs of ``net``'s normalisation layers, in forward order, for the forwards run inside.

    ``with norm_inputs(net) as seen: net(x)``: see :func:`watch_norm_inputs`. The hooks go when the
    block ends, so no copy or export of ``net`` carries them.
    """
    seen: list[torch.Tensor] = []
    handles = watch_norm_inputs(net, seen)
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


class ReflectionPad2d(nn.ReflectionPad2d):
    """``nn.ReflectionPad2d`` that pads in its input's dtype under CPU autocast.

    CPU autocast runs reflection padding in float32, so in a ``bf16-mixed`` training step every pad
    turned the previous layer's bf16 output into float32 and the next convolution cast it back: two
    more passes over each map, forward and backward, the largest maps of the network included.
    Padding only copies values, so padding in bf16 gives the convolution its input bit for bit. Its
    backward (which adds the gradients of mirrored pixels onto theirs) is :func:`fold_reflection`,
    in bf16 as the convolutions' own gradients: aten's bf16 kernel for it is several times slower
    than a copy. Elsewhere (float32, GPUs, TorchScript) this is ``nn.ReflectionPad2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return F.pad(x, self.padding, "reflect")
        return self._pad_eager(x)

    @torch.jit.unused
    def _pad_eager(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype != torch.float32 and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return _ReflectionPad.apply(x, tuple(self.padding))
        return F.pad(x, self.padding, "reflect")


class _ReflectionPad(torch.autograd.Function):
    """``F.pad(x, padding, "reflect")`` with :func:`fold_reflection` as its backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
        ctx.padding = padding
        return F.pad(x, padding, "reflect")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return fold_reflection(grad, ctx.padding), None


def fold_reflection(grad: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    """The gradient of a reflection padding by ``padding`` (left, right, top, bottom): ``grad``
    (B, C, H + top + bottom, W + left + right) with each padded row and column added onto the
    row or column it mirrors."""
    left, right, top, bottom = padding
    h, w = grad.shape[-2] - top - bottom, grad.shape[-1] - left - right
    # A slice of a channels-last gradient is not dense, so a plain clone would turn it NCHW.
    layout = memory_layout(grad)
    rows = grad[..., top : top + h, :].clone(memory_format=layout)
    if top:
        rows[..., 1 : top + 1, :] += grad[..., :top, :].flip(-2)
    if bottom:
        rows[..., h - bottom - 1 : h - 1, :] += grad[..., top + h :, :].flip(-2)
    out = rows[..., left : left + w].clone(memory_format=layout)
    if left:
        out[..., 1 : left + 1] += rows[..., :left].flip(-1)
    if right:
        out[..., w - right - 1 : w - 1] += rows[..., left + w :].flip(-1)
    return out


class ConvLayer(StyleSequential):
    """Reflection pad + convolution (+ normalisation + ReLU).

    ``pad="zero"`` pads with zeros instead (in the convolution), ``pad="none"`` not at all; the
    padding module is then an ``nn.Identity``, so that parameter names do not depend on the padding.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int = 1,
        norm: str | None = "instance",
        relu: bool = True,
        pad: str = "reflect",
        num_styles: int = 1,
    ):
        zeros = kernel // 2 if pad == "zero" else 0
        if norm == "demod":
            conv: nn.Module = DemodConv2d(
                c_in, c_out, kernel, stride=stride, padding=zeros, bias=False, gain=2**0.5 if relu else 1.0
            )
        else:  # a norm cancels a bias
            conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=zeros, bias=norm is None)
        layers: list[nn.Module] = [
            ReflectionPad2d(kernel // 2) if pad == "reflect" else nn.Identity(),
            conv,
        ]
        if norm is not None:
            layers.append(_norm(norm, c_out, num_styles))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """R128: x + norm(conv(relu(norm(conv(x))))) with 3x3 convolutions (He et al. 2016, as in the paper).

    ``crop=2``: the paper's block, unpadded convolutions (the map loses 2 px per side) and the
    identity cropped by as much (jcjohnson/fast-neural-style's ``nn.ShaveImage(2)``).
    """

    def __init__(self, channels: int, norm: str, crop: int = 0, num_styles: int = 1):
        super().__init__()
        self.takes_style = True
        pad = "none" if crop else "reflect"
        self.crop = int(crop)
        self.body = StyleSequential(
            ConvLayer(channels, channels, 3, norm=norm, pad=pad, num_styles=num_styles),
            ConvLayer(channels, channels, 3, norm=norm, relu=False, pad=pad, num_styles=num_styles),
        )

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        y = self.body(x, style)
        if self.crop:
            c = self.crop
            x = x[..., c:-c, c:-c]
        return x + y


class UpsampleLayer(StyleSequential):
    """uk: x2 upsampling and a 3x3 convolution (+ norm + ReLU)."""

    def __init__(self, c_in: int, c_out: int, norm: str, mode: str, num_styles: int = 1):
        if mode in ("nearest", "bilinear"):
            conv = DemodConv2d(c_in, c_out, 3, bias=False, gain=2**0.5) if norm == "demod" else None
            layers: list[nn.Module] = [
                nn.Upsample(scale_factor=2, mode=mode),
                ReflectionPad2d(1),
                conv or nn.Conv2d(c_in, c_out, 3, bias=False),
            ]
        else:
            # The paper's fractionally-strided convolution; padding chosen so the output is exactly x2.
            layers = [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=False)]
        layers += [_norm(norm, c_out, num_styles), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class TransformerNet(nn.Module):
    """Johnson et al.'s feed-forward style network; images (B, 3, H, W) in [0, 1] -> same shape in [0, 1].

    Args:
        width: channel multiplier: 1.0 is the paper (32-64-128 channels), 0.5 the half-width
            networks of the fast-neural-style release (about 4x fewer FLOPs).
        num_residual: number of residual blocks (5 in the paper).
        norm: ``"instance"`` (default, Ulyanov et al.) or ``"batch"`` (the paper).
        upsample: ``"nearest"`` (x2 nearest + conv, no checkerboard; default), ``"bilinear"``
            (x2 bilinear + conv) or ``"transpose"`` (the paper's transposed convolutions).
        output: ``"sigmoid"`` (default), ``"clamp"`` to [0, 1] (imported pytorch/examples
            networks) or ``"tanh"`` (``tanh_scale * tanh``, then clamped; imported
            jcjohnson/fast-neural-style networks) (:data:`OUTPUTS`).
        stem_norm: normalise the first convolution's output (the paper). An instance norm there
            removes, exactly, the photo's overall brightness, contrast and colour cast (a
            convolution turns them into per-channel offsets and scales, which the norm subtracts
            and divides out), so such a network gives a snowfield and a night scene the same
            light. ``False`` keeps them visible to the rest of the network (the conv then has a bias).
        padding: ``"reflect"`` (default) or ``"reflect-start"``, the paper's layout as
            jcjohnson/fast-neural-style builds it (:data:`PADDINGS`). Such a network pads the input
            by its own 40-px border (:data:`START_PAD_PER_BLOCK` per residual block) and does not
            use ``forward``'s ``border``; its output is cropped to the input's size.
        pixels: ``"rgb"`` (default) or ``"caffe"``: the pixels inside the network (:data:`PIXELS`).
            Inputs and outputs are RGB in [0, 1] either way.
        tanh_scale: the output scale of ``output="tanh"`` (jcjohnson's ``-tanh_constant``).
        num_styles: N, the styles the network holds (conditional instance norm, module docstring);
            1 (default) is the single-style network. Needs ``norm="instance"``.
        body_norm: the residual blocks' and the decoder's normalisation (:data:`BODY_NORMS`):
            ``"instance"`` (default: ``norm``, as the paper) or ``"demod"`` (:class:`DemodConv2d` and
            :class:`StyleAffine`: no instance statistics, so no droplets; the encoder keeps ``norm``).
        input_noise: standard deviation of Gaussian noise added to the input (0: none, the paper).
            A convolutional network turns an area that is flat for more than its receptive field
            (a white sky at 512 px) into a flat area of one colour; the noise gives it something to
            paint strokes from there, as Ulyanov et al.'s texture networks (2016) feed it noise. In
            training fresh noise each forward; otherwise a fixed tile (:func:`noise_tile`) indexed
            by pixel position, so that an image always gives the same output and video frames
            share one grain.

    The constructor arguments are the network's whole description: ``TransformerNet(**net.config)``
    rebuilds it, and model files store exactly this dict.
    """

    def __init__(
        self,
        width: float = 1.0,
        num_residual: int = 5,
        norm: str = "instance",
        upsample: str = "nearest",
        output: str = "sigmoid",
        stem_norm: bool = True,
        padding: str = "reflect",
        pixels: str = "rgb",
        tanh_scale: float = 150.0,
        num_styles: int = 1,
        body_norm: str = "instance",
        input_noise: float = 0.0,
    ) -> None:
        super().__init__()
        num_styles = int(num_styles)
        if not 0 <= float(input_noise) <= 1:
            raise ConfigError(f"model.input_noise={input_noise} must be in [0, 1]")
        if body_norm not in BODY_NORMS:
            raise ConfigError(f"model.body_norm={body_norm!r} must be one of {BODY_NORMS}")
        if body_norm == "demod" and (norm != "instance" or upsample == "transpose" or padding != "reflect"):
            raise ConfigError(
                "model.body_norm=demod needs norm=instance, upsample=nearest|bilinear, padding=reflect"
            )
        if num_styles < 1:
            raise ConfigError(f"model.num_styles={num_styles} must be >= 1")
        if num_styles > 1 and norm != "instance":
            raise ConfigError(f"model.norm={norm!r}: a network of several styles needs norm=instance")
        if norm not in NORMS:
            raise ConfigError(f"model.norm={norm!r} must be one of {NORMS}")
        if upsample not in UPSAMPLES:
            raise ConfigError(f"model.upsample={upsample!r} must be one of {UPSAMPLES}")
        if output not in OUTPUTS:
            raise ConfigError(f"model.output={output!r} must be one of {OUTPUTS}")
        if padding not in PADDINGS:
            raise ConfigError(f"model.padding={padding!r} must be one of {PADDINGS}")
        if pixels not in PIXELS:
            raise ConfigError(f"model.pixels={pixels!r} must be one of {PIXELS}")
        if output == "tanh" and not float(tanh_scale) > 0:
            raise ConfigError(f"model.tanh_scale={tanh_scale} must be > 0")
        if not 0 < width <= 4:
            raise ConfigError(f"model.width={width} must be in (0, 4]")
        if num_residual < 0:
            raise ConfigError(f"model.num_residual={num_residual} must be >= 0")
        self.config: dict[str, Any] = {
            "width": float(width),
            "num_residual": int(num_residual),
            "norm": norm,
            "upsample": upsample,
        }
        if output != "sigmoid":  # model files of fastns's own networks stay as they were
            self.config["output"] = output
        if not stem_norm:
            self.config["stem_norm"] = False
        if output == "tanh":
            self.config["tanh_scale"] = float(tanh_scale)
        if padding != "reflect":
            self.config["padding"] = padding
        if pixels != "rgb":
            self.config["pixels"] = pixels
        if num_styles > 1:  # single-style model files stay as they were
            self.config["num_styles"] = num_styles
        if body_norm != "instance":
            self.config["body_norm"] = body_norm
        self.num_styles = num_styles
        self.output = output
        self.tanh_scale = float(tanh_scale)
        self.caffe = pixels == "caffe"
        #: reflect-start: the input's reflection padding, px (0: padded per convolution instead).
        self.start_pad = START_PAD_PER_BLOCK * int(num_residual) if padding == "reflect-start" else 0
        pad = "zero" if padding == "reflect-start" else "reflect"
        crop = 2 if padding == "reflect-start" else 0
        # (1, 3, 1, 1) BGR; a constant, so not in the state dict or model files (persistent=False).
        self.register_buffer("caffe_mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1), persistent=False)
        self.set_input_noise(input_noise)
        c1, c2, c3 = (max(1, round(c * width)) for c in (32, 64, 128))
        n = num_styles
        self.encoder = StyleSequential(
            ConvLayer(3, c1, 9, norm=norm if stem_norm else None, pad=pad, num_styles=n),  # c9s1-32
            ConvLayer(c1, c2, 3, stride=2, norm=norm, pad=pad, num_styles=n),  # d64
            ConvLayer(c2, c3, 3, stride=2, norm=norm, pad=pad, num_styles=n),  # d128
        )
        body = "demod" if body_norm == "demod" else norm
        self.residuals = StyleSequential(
            *(ResidualBlock(c3, body, crop, num_styles=n) for _ in range(num_residual))
        )  # R128 x 5
        self.decoder = StyleSequential(
            UpsampleLayer(c3, c2, body, upsample, num_styles=n),  # u64
            UpsampleLayer(c2, c1, body, upsample, num_styles=n),  # u32
            ConvLayer(c1, 3, 9, norm=None, relu=False, pad=pad),  # c9s1-3
        )

    def style_weights(self, style: torch.Tensor | None, images: torch.Tensor) -> torch.Tensor | None:
        """Style weights as (B, N) for ``images`` (B, ...): ``None`` -> the first style, (N,) -> the
        same weights for every image; ``None`` for a single-style network."""
        if self.num_styles == 1:
            return None
        if style is None:
            style = torch.eye(self.num_styles, device=images.device)[0]
        if style.dim() == 1:
            style = style.unsqueeze(0).expand(images.shape[0], -1)
        return style

    def forward(
        self, images: torch.Tensor, border: int = 0, style: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Stylise ``images`` (B, 3, H, W) in [0, 1]; returns the same shape in [0, 1].

        Args:
            images: the content images.
            border: reflection padding added around the image before the network and cropped off
                after it (0 in training; :data:`DEFAULT_BORDER` at inference). Not used with
                ``padding="reflect-start"``, whose own start padding is the original's border.
            style: ``num_styles > 1``: style weights (B, N) or (N,) (one-hot: a style; a mixture:
                a blend of their γ, β); ``None``: the first style. Not used by single-style networks.
        """
        h, w = images.shape[-2], images.shape[-1]
        s = self.style_weights(style, images)
        images = self.with_grain(images)
        if self.caffe:
            images = images.flip(1) * 255 - self.caffe_mean  # BGR, 0-255, mean pixel 0
        if self.start_pad:
            # The paper's layout: its own reflection border and exact sizes (ceil(side / 4) * 4 out,
            # as the original network computes them), cropped to the input's size.
            x = reflect_pad(images, self.start_pad)
            y = self.decoder(self.residuals(self.encoder(x, s), s), s)  # raw scores, (B, 3, >= H, >= W)
            return self.head(y[..., :h, :w])
        x, b = pad_image(images, border)
        y = self.decoder(self.residuals(self.encoder(x, s), s), s)  # raw scores, (B, 3, H', W')
        return self.head(y[..., b : b + h, b : b + w])

    def set_input_noise(self, std: float) -> None:
        """Set ``input_noise`` (the constructor's argument); also for a network already built or loaded."""
        if not 0 <= float(std) <= 1:
            raise ConfigError(
                f"input_noise={std} must be in [0, 1] (a standard deviation; pixels are in [0, 1])"
            )
        self.input_noise = float(std)
        self.config.pop("input_noise", None)
        if self.input_noise:  # model files of networks without it stay as they were
            self.config["input_noise"] = self.input_noise
        device = self.caffe_mean.device
        # Made again from its seed at each construction: not in the state dict or model files.
        tile = noise_tile().to(device) if self.input_noise else torch.zeros(0, device=device)
        self.register_buffer("noise", tile, persistent=False)

    def with_grain(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` plus ``input_noise`` times unit noise: fresh in training, else the fixed tile."""
        if not self.input_noise:
            return images
        if self.training:
            return images + self.input_noise * torch.randn_like(images)
        t = self.noise.shape[-1]
        # Gathered by position modulo the tile (no sizes baked in: exported graphs stay dynamic).
        rows = torch.arange(images.shape[-2], device=images.device) % t
        cols = torch.arange(images.shape[-1], device=images.device) % t
        grain = self.noise.to(images.device).index_select(2, rows).index_select(3, cols)
        return images + self.input_noise * grain.to(images.dtype)

    def head(self, scores: torch.Tensor) -> torch.Tensor:
        """The output nonlinearity: raw decoder scores -> images in [0, 1]."""
        if self.output == "sigmoid" and not self.caffe:
            return torch.sigmoid(scores)
        y = scores.float()
        if self.output == "tanh":
            y = torch.tanh(y) * self.tanh_scale
        elif self.output == "sigmoid":
            y = torch.sigmoid(y)
        if self.caffe:  # BGR 0-255 minus the mean -> RGB [0, 1]
            y = (y + self.caffe_mean.float()).flip(1) / 255
        return y.clamp(0, 1).to(scores.dtype)


#: Side of :func:`noise_tile`, px: a pattern that repeats this far apart does not read as one.
NOISE_TILE = 256


def noise_tile(seed: int = 0) -> torch.Tensor:
    """The fixed unit Gaussian noise (1, 3, NOISE_TILE, NOISE_TILE) of ``input_noise`` at inference.

    Drawn from a seeded CPU generator, so every machine makes the same tile from nothing stored.
    """
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, NOISE_TILE, NOISE_TILE, generator=g)


def reflect_pad(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflection padding by ``pad`` px on every side, in steps for images of ``pad`` px or less
    (one reflection needs padding < size; the image is then mirrored again, as a tiling would)."""
    x = images
    left = pad
    while left > 0:
        step = min(left, min(x.shape[-2], x.shape[-1]) - 1)
        x = F.pad(x, (step, step, step, step), mode="reflect")
        left -= step
    return x


def padding(h: int, w: int, border: int) -> tuple[int, int, int]:
    """Reflection padding for an h x w image: the border on every side (reduced for tiny images, since
    reflection needs padding < size) and the extra bottom/right padding up to a multiple of 4."""
    b = max(0, min(border, h - 1, w - 1))
    return b, (-(h + 2 * b)) % 4, (-(w + 2 * b)) % 4


def kept_region(features: torch.Tensor, size: Sequence[int], border: int, net: nn.Module) -> torch.Tensor:
    """The part of a feature map ``(B, C, h', w')`` of ``net`` that maps to its output of ``size``.

    The map covers the padded input (the border on every side, then bottom/right up to a multiple
    of 4: :func:`fastns.transformer.padding`), at its own stride; networks of the paper's layout
    (``start_pad``) pad inside and keep the top-left corner.
    """
    h, w = int(size[0]), int(size[1])
    if getattr(net, "start_pad", 0):
        top, full_w = 0, w
    else:
        b, _ph, pw = padding(h, w, border)
        top, full_w = b, w + 2 * b + pw
    scale = features.shape[-1] / full_w
    t, kh, kw = round(top * scale), max(1, round(h * scale)), max(1, round(w * scale))
    return features[..., t : t + kh, t : t + kw]


def pad_image(images: torch.Tensor, border: int) -> tuple[torch.Tensor, int]:
    """Reflection-pad by the border, then bottom/right up to a multiple of 4; returns the image and the border.

    The network's two stride-2 stages need sides that are multiples of 4 for the output to be
    exactly the input size. Two steps (not one pad): InstanceNorm statistics include the padding,
    so inference with a border gives exactly ``net(F.pad(x, border, mode="reflect"))`` cropped.
    No branch on the sizes, so that exported graphs keep dynamic sizes.
    """
    b, ph, pw = padding(images.shape[-2], images.shape[-1], border)
    x = F.pad(images, (b, b, b, b), mode="reflect")
    return F.pad(x, (0, pw, 0, ph), mode="reflect"), b


class PaddedNet(nn.Module):
    """A network with its inference border built in: ``forward(images, style) == net(images, border, style)``.

    What the stylizer runs and what ``fastns.export`` writes to TorchScript and ONNX, whose graphs
    take the images (and, for a network of several styles, the style weights (N,)).

    Args:
        net: a :class:`TransformerNet` (or its inference copy, see ``fastns.stylize.inference``).
        border: reflection padding in px; reduced to ``min(H, W) - 1`` for tiny inputs.
    """

    def __init__(self, net: TransformerNet, border: int = DEFAULT_BORDER) -> None:
        super().__init__()
        self.net = net
        self.border = int(border)

    def forward(self, images: torch.Tensor, style_weights: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(images, self.border, style_weights)
