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

The output is computed in one place, :meth:`TransformerNet.forward` (optionally with a reflection
``border`` around the image, which is how the stylizer and the exports run it); tiled inference
calls the same pieces (:func:`pad_image`, ``encoder``, ``residuals``, ``decoder``,
:meth:`TransformerNet.head`) stage by stage.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

NORMS = ("instance", "batch")
UPSAMPLES = ("nearest", "bilinear", "transpose")
#: How raw decoder scores become [0, 1] images: ``sigmoid`` (fastns) or ``clamp`` (networks imported
#: from pytorch/examples, whose output is clamped; ``fastns.importers`` folds their 0-255 scale in).
OUTPUTS = ("sigmoid", "clamp")
#: Reflection padding around an image at inference, px (``fastns.stylize`` explains why). A multiple
#: of 4, so the network's two stride-2 stages see the image on the same grid as without it.
DEFAULT_BORDER = 32


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.BatchNorm2d(channels)


class ConvLayer(nn.Sequential):
    """Reflection pad + convolution (+ normalisation + ReLU)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int = 1,
        norm: str | None = "instance",
        relu: bool = True,
    ):
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(kernel // 2),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, bias=norm is None),  # a norm cancels a bias
        ]
        if norm is not None:
            layers.append(_norm(norm, c_out))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """R128: x + norm(conv(relu(norm(conv(x))))) with 3x3 convolutions (He et al. 2016, as in the paper)."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            ConvLayer(channels, channels, 3, norm=norm),
            ConvLayer(channels, channels, 3, norm=norm, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleLayer(nn.Sequential):
    """uk: x2 upsampling and a 3x3 convolution (+ norm + ReLU)."""

    def __init__(self, c_in: int, c_out: int, norm: str, mode: str):
        if mode in ("nearest", "bilinear"):
            layers: list[nn.Module] = [
                nn.Upsample(scale_factor=2, mode=mode),
                nn.ReflectionPad2d(1),
                nn.Conv2d(c_in, c_out, 3, bias=False),
            ]
        else:
            # The paper's fractionally-strided convolution; padding chosen so the output is exactly x2.
            layers = [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=False)]
        layers += [_norm(norm, c_out), nn.ReLU(inplace=True)]
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
        output: ``"sigmoid"`` (default) or ``"clamp"`` to [0, 1], the output of imported
            pytorch/examples networks (:data:`OUTPUTS`).
        stem_norm: normalise the first convolution's output (the paper). An instance norm there
            removes, exactly, the photo's overall brightness, contrast and colour cast (a
            convolution turns them into per-channel offsets and scales, which the norm subtracts
            and divides out), so such a network gives a snowfield and a night scene the same
            light. ``False`` keeps them visible to the rest of the network (the conv then has a bias).

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
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"model.norm={norm!r} must be one of {NORMS}")
        if upsample not in UPSAMPLES:
            raise ConfigError(f"model.upsample={upsample!r} must be one of {UPSAMPLES}")
        if output not in OUTPUTS:
            raise ConfigError(f"model.output={output!r} must be one of {OUTPUTS}")
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
        self.output = output
        c1, c2, c3 = (max(1, round(c * width)) for c in (32, 64, 128))
        self.encoder = nn.Sequential(
            ConvLayer(3, c1, 9, norm=norm if stem_norm else None),  # c9s1-32
            ConvLayer(c1, c2, 3, stride=2, norm=norm),  # d64
            ConvLayer(c2, c3, 3, stride=2, norm=norm),  # d128
        )
        self.residuals = nn.Sequential(*(ResidualBlock(c3, norm) for _ in range(num_residual)))  # R128 x 5
        self.decoder = nn.Sequential(
            UpsampleLayer(c3, c2, norm, upsample),  # u64
            UpsampleLayer(c2, c1, norm, upsample),  # u32
            ConvLayer(c1, 3, 9, norm=None, relu=False),  # c9s1-3
        )

    def forward(self, images: torch.Tensor, border: int = 0) -> torch.Tensor:
        """Stylise ``images`` (B, 3, H, W) in [0, 1]; returns the same shape in [0, 1].

        Args:
            images: the content images.
            border: reflection padding added around the image before the network and cropped off
                after it (0 in training; :data:`DEFAULT_BORDER` at inference).
        """
        h, w = images.shape[-2], images.shape[-1]
        x, b = pad_image(images, border)
        y = self.decoder(self.residuals(self.encoder(x)))  # raw scores, (B, 3, H', W')
        return self.head(y[..., b : b + h, b : b + w])

    def head(self, scores: torch.Tensor) -> torch.Tensor:
        """The output nonlinearity: raw decoder scores -> images in [0, 1]."""
        if self.output == "clamp":
            return scores.clamp(0, 1)
        return torch.sigmoid(scores)


def padding(h: int, w: int, border: int) -> tuple[int, int, int]:
    """Reflection padding for an h x w image: the border on every side (reduced for tiny images, since
    reflection needs padding < size) and the extra bottom/right padding up to a multiple of 4."""
    b = max(0, min(border, h - 1, w - 1))
    return b, (-(h + 2 * b)) % 4, (-(w + 2 * b)) % 4


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
    """A network with its inference border built in: ``forward(images) == net(images, border)``.

    What the stylizer runs and what ``fastns.export`` writes to TorchScript and ONNX, whose graphs
    take one input.

    Args:
        net: a :class:`TransformerNet` (or its inference copy, see ``fastns.stylize.inference``).
        border: reflection padding in px; reduced to ``min(H, W) - 1`` for tiny inputs.
    """

    def __init__(self, net: TransformerNet, border: int = DEFAULT_BORDER) -> None:
        super().__init__()
        self.net = net
        self.border = int(border)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images, self.border)
