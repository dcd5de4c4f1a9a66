"""The real-time stylizer: a trained network applied to images, folders, video and webcam frames.

Library API (needs only the model file: no VGG, Hydra or Lightning at run time)::

    from fastns import Stylizer
    stylizer = Stylizer.load("runs/starry/model.safetensors")  # device auto: cuda > mps > cpu
    out = stylizer(Image.open("photo.jpg"), strength=0.8)      # PIL in -> PIL out
    out = stylizer(images)                                     # (B, 3, H, W) in [0, 1] -> same

The task functions behind ``scripts/stylize.py`` are :func:`stylize_image`, :func:`stylize_folder`,
:func:`stylize_video`, :func:`run_webcam` and the config-driven :func:`run`.

How an image is stylised (every input kind goes through :meth:`Stylizer.stylize`):

1. **Size**: the network is fully convolutional, so it runs at the input's own size, or at
   ``max_size`` (longest side, downscaling only).
2. **Border**: the image is reflection-padded by ``border`` pixels (32 by default) before the
   network and the output cropped back. The network's own convolutions are reflection-padded too,
   but that pads *feature maps*, whose mirror image is not the features of the mirrored photo; the
   outermost pixels then show bright/dark seams and stride-phase artifacts. Padding the photo, as
   Johnson et al. do (40 px, valid convolutions), gives the pixels near the edge real-looking context.
   32 px costs 6 % more compute at 1024 px (26 % at 256 px) and keeps the stride-4 grid aligned.
3. **Tiles** (``tile=N``): huge images run as tiles of at most N x N pixels (plus 16 px of
   context), with every InstanceNorm given the statistics of the *whole* image, so the result
   equals the untiled one and shows no seams; only one tile's activations live on the device and
   the output is assembled on the CPU. See :meth:`Stylizer._stylize_tiled`.
4. **Controls**: ``preserve_color`` keeps the content's chrominance (stylised luminance only,
   :func:`fastns.color.preserve_color`), then ``strength`` blends linearly with the content
   (0 = the content, 1 = fully stylised). Both are applied on the device, per tile when tiling.

Speed (see ``benchmarks/README_stylize.md``): inference mode; a copy of the network with
InstanceNorm + ReLU replaced by one per-channel affine (statistics computed once, applied in place)
and BatchNorm folded into the convolutions; channels-last memory layout on the CPU; fp16 on CUDA and
bf16 on CPUs with AMX by default (``precision``); optional ``torch.compile``; batches of equal-sized
images for folders; video decoding and encoding in background threads, overlapped with the network, with the frames'
colour conversion done on the device.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import itertools
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .color import preserve_color as _preserve_color
from .errors import ConfigError, FastnsError, ImageError, ModelFileError
from .image import (
    IMAGE_EXTENSIONS,
    check_output_path,
    fit_longest,
    image_format,
    open_image,
    pil_to_tensor,
    resize_longest,
    save_image,
    tensor_to_pil,
    to_rgb,
)
from .modelfile import ModelInfo, load_model
from .transformer import TransformerNet
from .utils import atomic_write, cpu_has_amx, resolve_device

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

#: Reflection padding around the image, px (module docstring, point 2). A multiple of 4 so the
#: network's two stride-2 stages see the image on the same grid as without it.
DEFAULT_BORDER = 32
#: Context around each tile, px at full resolution: more than the receptive-field radius of the
#: encoder (about 11 px) and of the decoder (about 7 px), so tiles are exact (``Stylizer._stylize_tiled``).
TILE_CONTEXT = 16
#: Smallest tile, px: smaller tiles would spend most of their time on the context.
MIN_TILE = 128

#: Files that ``input=`` treats as video (anything else is read as an image).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
# Output container per extension: FFmpeg's muxer name, video encoders to try in order, and the
# audio codecs it can take as they are (others are re-encoded to the first listed).
_CONTAINERS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    ".mp4": ("mp4", ("libx264", "h264", "mpeg4"), ("aac", "mp3", "ac3", "eac3", "alac", "opus", "flac")),
    ".m4v": ("mp4", ("libx264", "h264", "mpeg4"), ("aac", "mp3", "ac3", "eac3", "alac")),
    ".mov": ("mov", ("libx264", "h264", "mpeg4"), ("aac", "mp3", "ac3", "alac", "pcm_s16le", "pcm_s24le")),
    ".mkv": (
        "matroska",
        ("libx264", "h264", "mpeg4"),
        ("aac", "mp3", "ac3", "opus", "vorbis", "flac", "pcm_s16le", "mp2"),
    ),
    ".webm": ("webm", ("libvpx-vp9", "libvpx"), ("opus", "vorbis")),
    ".avi": ("avi", ("libx264", "h264", "mpeg4"), ("mp3", "mp2", "ac3", "pcm_s16le", "aac")),
}


class SkippedFilesError(FastnsError):
    """Some files of a folder could not be read or written (the others were processed)."""


class VideoError(FastnsError):
    """A video file cannot be read, or written with the codecs available."""


# --------------------------------------------------------------------------------------------------
# The network, prepared for inference
# --------------------------------------------------------------------------------------------------


#: Rows (pixels) per fp32 slice in :func:`_channels_last_stats`: 16k x C floats stay in cache.
_STATS_ROWS = 16384


def _channels_last_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(image, channel) mean and variance, fp32 (B, C), of a channels-last CPU tensor.

    E[x^2] is the diagonal of X^T X, one oneDNN matrix product instead of ``var_mean``'s Welford
    loop (3-5x faster, measured on 2 AMX cores). A bf16 product would round E[x^2] to 8 bits, so bf16
    activations are converted to fp32 in slices that stay in cache (2x faster than converting the
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


class _InstanceNormAct(nn.Module):
    """InstanceNorm2d (affine), optionally followed by ReLU, for inference only.

    Numerically the same as ``relu(InstanceNorm2d(x))`` but cheaper: the per-(image, channel)
    statistics are turned into one scale and shift, applied in place together with the ReLU. On
    the CPU with channels-last tensors the statistics come from :func:`_channels_last_stats`;
    elsewhere ``var_mean`` is fast.
    The output is written over the input: only valid under ``torch.inference_mode``.
    """

    def __init__(self, norm: nn.InstanceNorm2d, relu: bool) -> None:
        super().__init__()
        self.weight = norm.weight
        self.bias = norm.bias
        self.eps = norm.eps
        self.relu = relu
        #: Fixed (mean, var), each (B, C), used instead of the input's own: set while tiling.
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.stats is not None:
            mean, var = self.stats
        elif (
            x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.bfloat16)
            and x.is_contiguous(memory_format=torch.channels_last)
            and not torch.compiler.is_compiling()
        ):
            mean, var = _channels_last_stats(x)
        else:
            var, mean = torch.var_mean(x, dim=(2, 3), correction=0)  # (B, C); accumulates in fp32
        scale = (var.float() + self.eps).rsqrt_().mul_(self.weight.float())  # (B, C)
        shift = torch.addcmul(self.bias.float(), mean.float(), scale, value=-1)  # bias - mean * scale
        # One in-place pass (x is this layer's own conv output); the ReLU is a second.
        x = torch.addcmul(shift.to(x.dtype)[..., None, None], x, scale.to(x.dtype)[..., None, None], out=x)
        return x.relu_() if self.relu else x


def _fold_norms(module: nn.Module) -> None:
    """Replace norm (+ ReLU) pairs in every ``nn.Sequential`` of ``module`` by their inference form."""
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i, layer in enumerate(list(seq)):
            relu_next = i + 1 < len(seq) and isinstance(seq[i + 1], nn.ReLU)
            if isinstance(layer, nn.InstanceNorm2d) and layer.affine and not layer.track_running_stats:
                seq[i] = _InstanceNormAct(layer, relu=relu_next)
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


def padding(h: int, w: int, border: int) -> tuple[int, int, int]:
    """Reflection padding for an h x w image: the border on every side (reduced for tiny images, since
    reflection needs padding < size) and the extra bottom/right padding up to a multiple of 4."""
    b = max(0, min(border, h - 1, w - 1))
    return b, (-(h + 2 * b)) % 4, (-(w + 2 * b)) % 4


def pad_image(images: torch.Tensor, border: int) -> tuple[torch.Tensor, int]:
    """Reflection-pad by the border, then bottom/right up to a multiple of 4; returns the image and the border.

    Two steps, as ``net(F.pad(x, border, mode="reflect"))`` does (the network pads the padded image
    itself): InstanceNorm statistics include the padding, so this keeps the result identical to it.
    """
    b, ph, pw = padding(images.shape[-2], images.shape[-1], border)
    x = F.pad(images, (b, b, b, b), mode="reflect")
    return F.pad(x, (0, pw, 0, ph), mode="reflect"), b


class PaddedNet(nn.Module):
    """The network with the border: reflection-pad, run, crop, sigmoid. Images (B, 3, H, W) in [0, 1].

    :func:`pad_image` adds the border and rounds the size up to a multiple of 4 (the network's two
    stride-2 stages), as :class:`TransformerNet` does, whose stages this calls directly. This is the function
    that the stylizer runs and that ``fastns.export`` writes to TorchScript and ONNX.

    Args:
        net: a :class:`TransformerNet` (or its inference copy).
        border: reflection padding in px; reduced to ``min(H, W) - 1`` for tiny inputs.
    """

    def __init__(self, net: TransformerNet, border: int = DEFAULT_BORDER) -> None:
        super().__init__()
        self.net = net
        self.border = int(border)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2], images.shape[-1]
        x, b = pad_image(images, self.border)
        y = self.net.decoder(self.net.residuals(self.net.encoder(x)))  # raw scores, (B, 3, H', W')
        return torch.sigmoid(y[..., b : b + h, b : b + w])  # (B, 3, H, W) in [0, 1]


def _resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} must be one of {PRECISIONS}")
    if precision == "auto":
        # fp16 keeps ~11 bits (well under one 8-bit level after the sigmoid) and runs on tensor
        # cores. On CPUs with AMX (Intel Sapphire Rapids and later) bf16 convolutions are ~2x
        # fp32 (benchmarks/README_stylize.md) for a mean error under 1/255 (a trained model at
        # 1024 px: mean 0.2-0.5/255, 0.3% of pixels beyond 8/255, none visible side by side), the
        # trade OpenVINO makes by default on these CPUs. Elsewhere bf16 is emulated and slower,
        # so other CPUs and MPS stay fp32.
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_amx() else torch.float32
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision=fp16 is for GPUs; on the CPU use fp32 (exact) or bf16 (faster with AMX)")
    return _DTYPES[precision]


# --------------------------------------------------------------------------------------------------
# Stylizer: the library API
# --------------------------------------------------------------------------------------------------


class Stylizer:
    """A trained style network ready for fast inference.

    Args:
        net: the :class:`TransformerNet` (it is copied; the original is not changed).
        info: the model file's description (style name etc.), if any.
        device: ``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
        precision: ``"auto"`` (fp16 on CUDA, bf16 on CPUs with AMX, fp32 elsewhere), ``"fp32"``
            (exact), ``"bf16"`` or ``"fp16"`` (GPU only). Half precision changes outputs by a few
            8-bit levels on average (fp16 < 1/255; bf16 0.2-0.5/255 mean, rare pixels up to ~25/255).
        compile: ``torch.compile`` the network (``True``, or a mode name such as
            ``"max-autotune"``). The first call at each new size takes seconds to minutes.
        channels_last: channels-last memory layout; ``None`` (default): on the CPU only, where
            oneDNN's convolutions are ~1.5x faster in it. On CUDA the reflection padding and
            normalisation kernels are slower in it than cuDNN gains (H100, 1080p fp16: 30 ms vs 14 ms).
        border: reflection padding around every image, px (module docstring, point 2).
    """

    def __init__(
        self,
        net: TransformerNet,
        *,
        info: ModelInfo | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        compile: bool | str = False,
        channels_last: bool | None = None,
        border: int = DEFAULT_BORDER,
    ) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.dtype = _resolve_dtype(str(precision), self.device)
        if int(border) < 0:
            raise ConfigError(f"border={border} must be >= 0")
        self.info = info
        self.border = int(border)
        self.channels_last = self.device.type == "cpu" if channels_last is None else bool(channels_last)
        inference_net = copy.deepcopy(net).eval()
        _fold_norms(inference_net)
        inference_net = inference_net.to(self.device, self.dtype)
        if self.channels_last:
            inference_net = inference_net.to(memory_format=torch.channels_last)
        for p in inference_net.parameters():
            p.requires_grad_(False)
        self.module = PaddedNet(inference_net, self.border)
        # Tiles are cut from the already padded image: the same weights without the border.
        self._bare = PaddedNet(inference_net, 0)
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self.module
        self._forward_bare: Callable[[torch.Tensor], torch.Tensor] = self._bare
        if compile:
            mode = compile if isinstance(compile, str) else None
            # dynamic=None: the first new size recompiles with symbolic sizes, later sizes reuse it.
            self._forward = torch.compile(self.module, mode=mode)
            self._forward_bare = torch.compile(self._bare, mode=mode)
        self._staging: torch.Tensor | None = None  # page-locked frame buffer (stylize_frames, CUDA)
        if self.device.type == "cuda":
            # Videos and folders repeat a few sizes: let cuDNN pick the fastest kernels per size.
            torch.backends.cudnn.benchmark = True

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> Stylizer:
        """A stylizer for the model file ``path`` (``model.safetensors``); ``kwargs`` as for the class.

        Raises:
            ModelFileError: the file is missing or not a fastns model file.
        """
        path = Path(path)
        if path.suffix == ".ckpt":
            raise ModelFileError(
                f"{path}: a training checkpoint, not a model file; turn it into one with "
                f"python scripts/export.py model={path}"
            )
        net, info = load_model(path, "cpu")
        return cls(net, info=info, **kwargs)

    @property
    def name(self) -> str:
        """The style's name from the model file, or ``"style"``."""
        return str((self.info.style if self.info else {}).get("name") or "style")

    def __repr__(self) -> str:
        return (
            f"Stylizer({self.name!r}, width={self.module.net.config['width']}, device={self.device}, "
            f"dtype={str(self.dtype).removeprefix('torch.')})"
        )

    # -- public entry points -----------------------------------------------------------------------

    def __call__(
        self,
        image: Image.Image | torch.Tensor,
        *,
        strength: float = 1.0,
        preserve_color: bool = False,
        max_size: int | None = None,
        tile: int | None = None,
    ) -> Image.Image | torch.Tensor:
        """Stylise a Pillow image or a tensor; returns the same kind.

        Args:
            image: a Pillow image (any mode; returned as RGB), or a float tensor ``(B, 3, H, W)``
                or ``(3, H, W)`` in [0, 1] on any device (returned on that device, same shape).
            strength: 0 returns the content, 1 the fully stylised image; in between, a linear blend.
            preserve_color: keep the content's colours (stylised luminance, content chrominance).
            max_size: if the longest side is larger, downscale to it first (the output has that size).
            tile: run the network on tiles of at most ``tile`` x ``tile`` px, so that huge
                images fit in memory; the result equals the untiled one (no seams).
        """
        controls = dict(strength=strength, preserve_color=preserve_color, tile=tile)
        if isinstance(image, Image.Image):
            im = to_rgb(image)  # any mode; transparency on white, as for files
            if max_size is not None and max(im.size) > int(max_size):
                # Lanczos on the 8-bit image, as fastns.image.load_image does.
                im = im.resize(
                    fit_longest(*im.size, int(max_size)), Image.Resampling.LANCZOS, reducing_gap=3.0
                )
            return tensor_to_pil(self.stylize(pil_to_tensor(im), **controls))
        if isinstance(image, torch.Tensor):
            single = image.dim() == 3
            batch = image.unsqueeze(0) if single else image
            out = self.stylize(batch, max_size=max_size, **controls).to(image.dtype)
            return out[0] if single else out
        raise TypeError(f"expected a PIL image or a torch.Tensor, got {type(image).__name__}")

    @torch.inference_mode()
    def stylize(
        self,
        images: torch.Tensor,
        *,
        strength: float = 1.0,
        preserve_color: bool = False,
        max_size: int | None = None,
        tile: int | None = None,
    ) -> torch.Tensor:
        """Stylise a batch ``(B, 3, H, W)`` in [0, 1]; returns float32 ``(B, 3, H', W')`` on the input's device.

        ``H', W'`` is the input size, or the ``max_size`` fit. Arguments as for :meth:`__call__`.
        """
        _check_controls(strength, max_size, tile)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}")
        if min(images.shape[-2:]) < 8:
            raise ImageError(f"image of {images.shape[-1]}x{images.shape[-2]} px is too small (8 px minimum)")
        out_device = images.device
        images = images.float()
        if max_size is not None and max(images.shape[-2:]) > max_size:
            images = resize_longest(images, int(max_size))
        if strength == 0:
            return images.clone()  # the content itself: no need to run the network
        h, w = images.shape[-2:]
        b = padding(h, w, self.border)[0]
        if tile is not None and max(h, w) + 2 * b > tile:
            out = self._stylize_tiled(images.cpu(), int(tile), strength, preserve_color)
        else:
            out = self._stylize_on_device(images.to(self.device), strength, preserve_color)
        return out.to(out_device)

    @torch.inference_mode()
    def stylize_frames(
        self,
        frames: np.ndarray | list[np.ndarray] | torch.Tensor,
        *,
        strength: float = 1.0,
        preserve_color: bool = False,
        yuv420p: bool = False,
    ) -> np.ndarray:
        """Stylise 8-bit RGB frames ``(B, H, W, 3)`` (or a list of ``(H, W, 3)``), as decoders give them.

        Returns the stylised frames as a uint8 array of the same shape.

        The conversion to and from [0, 1] floats happens on the device (one small upload and
        download of bytes per frame), which matters at video rates. With ``yuv420p=True`` the
        result is ``(B, H * 3 // 2, W)`` FFmpeg yuv420p planes instead (:func:`rgb_to_yuv420p`),
        converted on the device, which spares the encoder thread FFmpeg's single-threaded
        conversion (85 fps at 1080p: below the network's speed on a GPU).
        """
        _check_controls(strength, None, None)
        x = self._upload(frames)
        # (B, H, W, 3) -> (B, 3, H, W): a permuted view, i.e. already channels-last in memory.
        content = x.permute(0, 3, 1, 2).float().div_(255.0)
        out = content if strength == 0 else self._stylize_on_device(content, strength, preserve_color)
        if yuv420p:
            return rgb_to_yuv420p(out).cpu().numpy()
        out = out.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return out.contiguous().cpu().numpy()

    # -- internals ---------------------------------------------------------------------------------

    def _upload(self, frames: np.ndarray | list[np.ndarray] | torch.Tensor) -> torch.Tensor:
        """Frames ``(B, H, W, 3)`` (or a list of ``(H, W, 3)``) as a uint8 tensor on the device.

        For CUDA they are stacked straight into a page-locked staging buffer kept between calls
        (allocating page-locked memory per call cost more than the network at 1080p) and copied
        asynchronously; the buffer is reused only after the previous call's results came back to
        the CPU, which waits for that copy.
        """
        if isinstance(frames, torch.Tensor):
            return frames.to(self.device)
        if self.device.type != "cuda":
            return torch.from_numpy(np.stack(frames) if isinstance(frames, list) else frames).to(self.device)
        shape = (len(frames), *frames[0].shape)
        if self._staging is None or tuple(self._staging.shape) != shape:
            self._staging = torch.empty(shape, dtype=torch.uint8).pin_memory()
        np.stack(frames, out=self._staging.numpy())
        return self._staging.to(self.device, non_blocking=True)

    def _stylize_on_device(
        self, content: torch.Tensor, strength: float, preserve_color: bool, border: bool = True
    ) -> torch.Tensor:
        """Network and controls on a device batch (B, 3, H, W) in [0, 1]; float32 on the device."""
        # Frames arrive as permuted (B, H, W, 3) bytes, i.e. channels-last: set the layout either way.
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        x = content.to(self.dtype).contiguous(memory_format=layout)
        out = (self._forward if border else self._forward_bare)(x).float()
        return _apply_controls(content, out, strength, preserve_color)

    def _stylize_tiled(
        self, images: torch.Tensor, tile: int, strength: float, preserve_color: bool
    ) -> torch.Tensor:
        """Tiled inference, equal to the untiled result (up to float rounding). ``images`` on the CPU.

        Cutting the image into independent tiles would give every tile its own InstanceNorm
        statistics: each tile is then normalised differently and the result shows seams and a
        shifted tone per tile (with random weights, 8-16/255 mean difference even with a
        128-px feathered overlap). Instead the network runs in its three stages:

        1. **encoder** (full to 1/4 resolution) over tiles of ``tile`` px plus ``TILE_CONTEXT``
           px of context, with each InstanceNorm given the statistics of the *whole* image
           (:func:`_whole_map_norm_stats`); the tile cores are written into the 1/4-resolution map;
        2. **residual blocks** on that whole map at once: 1/16 of the pixels (at most 128 channels),
           so their InstanceNorms see the whole map as they do untiled;
        3. **decoder** (1/4 to full resolution) over tiles of that map, again with whole-map
           statistics; each core is cropped to the image, given the controls, and copied into the
           output on the CPU.

        Tiles are cut from the same border-padded image as the untiled path, at multiples of 4
        px, and their context exceeds the stages' receptive-field radius (about 11 and 7 px),
        so every core pixel sees exactly what it sees untiled: no feathering is needed and there
        are no seams. Cost: the statistics take one extra pass per InstanceNorm of a stage, up to
        that norm (about 1.6x the untiled compute with the default network). Memory: one tile's
        activations on the device, plus the 1/4-resolution map (128 channels at 1/16 of the
        pixels: 0.8 GB in fp16 for 8000x6000), plus input and output images on the CPU.
        """
        net = self.module.net
        bsz, _, h, w = images.shape
        padded, border = pad_image(images, self.border)  # as PaddedNet
        hp, wp = padded.shape[-2:]
        tile = max(MIN_TILE, tile - tile % 4)

        def to_device(x: torch.Tensor) -> torch.Tensor:
            x = x.to(self.device, self.dtype)
            return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

        # 1. Encoder: full-resolution tiles -> the 1/4-resolution map.
        enc_tiles = _tiles(hp, wp, tile, TILE_CONTEXT, align=4)
        quarter: torch.Tensor | None = None
        with _whole_map_norm_stats(net.encoder, enc_tiles, lambda t: to_device(t.cut(padded))):
            for t in enc_tiles:
                y = net.encoder(to_device(t.cut(padded)))  # (B, C, box/4)
                if quarter is None:
                    quarter = y.new_empty((bsz, y.shape[1], hp // 4, wp // 4))
                    if self.channels_last:
                        quarter = quarter.contiguous(memory_format=torch.channels_last)
                t.paste(quarter, y, scale=Fraction(1, 4))
        assert quarter is not None
        # 2. Residual blocks on the whole 1/4-resolution map.
        quarter = net.residuals(quarter)
        # 3. Decoder: 1/4-resolution tiles -> full resolution, cropped to the image.
        out = torch.empty(bsz, 3, h, w)
        dec_tiles = _tiles(hp // 4, wp // 4, tile // 4, TILE_CONTEXT // 4, align=1)
        with _whole_map_norm_stats(net.decoder, dec_tiles, lambda t: t.cut(quarter)):
            for t in dec_tiles:
                y = torch.sigmoid(net.decoder(t.cut(quarter)).float())  # (B, 3, 4 * box)
                (cy0, cy1, cx0, cx1), (by0, _, bx0, _) = (4 * v for v in t.core), (4 * v for v in t.box)
                y0, y1, x0, x1 = (
                    max(cy0, border),
                    min(cy1, border + h),
                    max(cx0, border),
                    min(cx1, border + w),
                )
                if y0 >= y1 or x0 >= x1:
                    continue  # a core entirely in the border
                piece = y[..., y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
                region = (..., slice(y0 - border, y1 - border), slice(x0 - border, x1 - border))
                content = images[region].to(self.device)
                out[region] = _apply_controls(content, piece, strength, preserve_color).cpu()
        return out


def rgb_to_yuv420p(images: torch.Tensor) -> torch.Tensor:
    """RGB ``(B, 3, H, W)`` in [0, 1], H and W even -> ``(B, H * 3 // 2, W)`` uint8 yuv420p planes.

    The layout ``av.VideoFrame.from_ndarray(..., format="yuv420p")`` takes: the Y plane, then U and
    V at half resolution (2x2 averages), each plane's bytes in order. BT.601 limited range, as
    FFmpeg's swscale converts untagged rgb24 to yuv420p, so the colours are what the CPU path gives.
    """
    b, _, h, w = images.shape
    r, g, bl = images.unbind(1)
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * bl
    r, g, bl = F.avg_pool2d(images, 2).unbind(1)  # chroma is linear in RGB: average first
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * bl
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * bl
    planes = [p.round().clamp_(0, 255).to(torch.uint8).flatten(1) for p in (y, u, v)]
    return torch.cat(planes, 1).view(b, h * 3 // 2, w)


def _apply_controls(
    content: torch.Tensor, stylised: torch.Tensor, strength: float, preserve_color: bool
) -> torch.Tensor:
    """Colour preservation, then the strength blend; both (B, 3, H, W) in [0, 1] on one device."""
    if preserve_color:
        stylised = _preserve_color(content, stylised)
    if strength < 1:
        stylised = torch.lerp(content, stylised, float(strength))
    return stylised


def _check_controls(strength: float, max_size: int | None, tile: int | None) -> None:
    if not 0 <= float(strength) <= 1:
        raise ConfigError(f"strength={strength} must be between 0 (the content) and 1 (fully stylised)")
    if max_size is not None and int(max_size) < 8:
        raise ConfigError(f"max_size={max_size} must be at least 8 px")
    if tile is not None and int(tile) < MIN_TILE:
        raise ConfigError(f"tile={tile} must be at least {MIN_TILE} px (or null for no tiling)")


@dataclass(frozen=True)
class _Tile:
    """A tile of a map: ``core`` (the pixels it produces) inside ``box`` (core + context), as y0, y1, x0, x1."""

    core: tuple[int, int, int, int]
    box: tuple[int, int, int, int]

    def cut(self, x: torch.Tensor) -> torch.Tensor:
        y0, y1, x0, x1 = self.box
        return x[..., y0:y1, x0:x1]

    def core_of(self, y: torch.Tensor) -> torch.Tensor:
        """The core part of ``y``, something computed from this box at any resolution (a multiple of 1/4)."""
        scale = Fraction(y.shape[-2], self.box[1] - self.box[0])
        origin = (self.box[0], self.box[0], self.box[2], self.box[2])
        y0, y1, x0, x1 = (int((v - o) * scale) for v, o in zip(self.core, origin, strict=True))
        return y[..., y0:y1, x0:x1]

    def paste(self, target: torch.Tensor, y: torch.Tensor, scale: Fraction) -> None:
        """Copy the core of ``y`` into ``target``, a map at ``scale`` x this tile's map resolution."""
        y0, y1, x0, x1 = (int(v * scale) for v in self.core)
        target[..., y0:y1, x0:x1] = self.core_of(y)


def _splits(length: int, size: int, align: int) -> list[int]:
    """Boundaries (multiples of ``align``) of near-equal parts of at most ``size`` covering ``length``."""
    n = math.ceil(length / size)
    return [min(length, round(i * length / n / align) * align) for i in range(n)] + [length]


def _tiles(height: int, width: int, size: int, context: int, align: int) -> list[_Tile]:
    """Cores of at most ``size`` px partitioning a map, each with ``context`` px around it (clipped to the map)."""
    ys, xs = _splits(height, size, align), _splits(width, size, align)
    tiles = []
    for y0, y1 in itertools.pairwise(ys):
        for x0, x1 in itertools.pairwise(xs):
            box = (
                max(0, y0 - context),
                min(height, y1 + context),
                max(0, x0 - context),
                min(width, x1 + context),
            )
            tiles.append(_Tile((y0, y1, x0, x1), box))
    return tiles


class _StopForward(Exception):
    """Ends a statistics pass at the InstanceNorm being measured."""


@contextlib.contextmanager
def _whole_map_norm_stats(
    stage: nn.Module, tiles: list[_Tile], tile_input: Callable[[_Tile], torch.Tensor]
) -> Iterator[None]:
    """Give each InstanceNorm of ``stage`` the statistics of the whole map, measured over ``tiles``.

    A norm's statistics depend on its input over the whole map, which depends on the earlier
    norms' statistics: so one pass over the tiles per norm, each running the stage up to that
    norm (the earlier ones already fixed) and measuring its input over the tile *cores* only,
    which partition the map. Per-core means and variances are merged in float64 with Chan et
    al.'s parallel formula (stable, unlike summing squares). The statistics are cleared on exit.
    """
    norms = [m for m in stage.modules() if isinstance(m, _InstanceNormAct)]
    current: list[_Tile] = []
    try:
        for norm in norms:
            count, mean, m2 = 0, torch.zeros(()), torch.zeros(())

            def measure(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                nonlocal count, mean, m2
                core = current[0].core_of(args[0])
                var_t, mean_t = torch.var_mean(core.float(), dim=(2, 3), correction=0)
                n_t = core.shape[-2] * core.shape[-1]
                mean_t, m2_t = mean_t.double().cpu(), var_t.double().cpu() * n_t
                delta, total = mean_t - mean, count + n_t
                mean = mean + delta * (n_t / total)
                m2 = m2 + m2_t + delta**2 * (count * n_t / total)
                count = total
                raise _StopForward

            handle = norm.register_forward_pre_hook(measure)
            try:
                for t in tiles:
                    current[:] = [t]
                    with contextlib.suppress(_StopForward):
                        stage(tile_input(t))
            finally:
                handle.remove()
            device = norm.weight.device
            norm.stats = (mean.float().to(device), (m2 / count).float().to(device))
        yield
    finally:
        for norm in norms:
            norm.stats = None


# --------------------------------------------------------------------------------------------------
# Background I/O
# --------------------------------------------------------------------------------------------------


_DONE = object()


class _Background:
    """Run ``produce(put)`` in a daemon thread; iterate over what it puts (bounded queue).

    Exceptions in the thread re-raise in the consumer. ``close()`` (also on leaving a ``with``)
    asks the producer to stop at its next ``put`` and waits for it.
    """

    def __init__(self, produce: Callable[[Callable[[Any], None]], None], maxsize: int = 8, name: str = "io"):
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._produce = produce
        self._thread = threading.Thread(target=self._main, name=f"fastns-{name}", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _main(self) -> None:
        try:
            self._produce(self._put)
        except _Stopped:
            return
        except BaseException as e:  # noqa: BLE001 (handed to the consumer)
            self._error = e
        with contextlib.suppress(_Stopped):
            self._put(_DONE)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> _Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Stopped(Exception):
    """Raised inside a producer thread to unwind it when the consumer has stopped."""


class _Writer:
    """A single worker thread that runs submitted jobs in order; ``finish()`` waits and re-raises."""

    def __init__(self, maxsize: int = 8, name: str = "writer") -> None:
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"fastns-{name}", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while True:
            job = self._queue.get()
            if job is _DONE:
                return
            if self._error is None:
                try:
                    job()
                except BaseException as e:  # noqa: BLE001 (re-raised by submit/finish)
                    self._error = e

    def submit(self, job: Callable[[], None]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(job)

    def finish(self) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop after the jobs in the queue, without raising (used while unwinding an error)."""
        self._error = self._error or _Stopped()  # the worker now skips the queued jobs...
        with contextlib.suppress(queue.Full):
            self._queue.put(_DONE, timeout=10)  # ...so there is room for this soon
        self._thread.join(timeout=10)


# --------------------------------------------------------------------------------------------------
# Images and folders
# --------------------------------------------------------------------------------------------------


def _load(path: Path, max_size: int | None) -> torch.Tensor:
    """An image file as (1, 3, H, W) in [0, 1], downscaled (Lanczos) to ``max_size`` if larger."""
    im = open_image(path, max_side=max_size)
    if max_size is not None and max(im.size) > max_size:
        im = im.resize(fit_longest(*im.size, max_size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return pil_to_tensor(im)


def stylize_image(
    stylizer: Stylizer,
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    max_size: int | None = None,
    **controls: Any,
) -> Path:
    """Stylise one image file into ``output`` (atomic; the format follows its extension).

    Args:
        stylizer: the network.
        input: any image file Pillow reads (EXIF orientation applied).
        output: the result; never one of the inputs.
        max_size: downscale so that the longest side is at most this, px.
        controls: ``strength``, ``preserve_color``, ``tile`` (see :meth:`Stylizer.__call__`).
    """
    output = check_output_path(output, [input])
    start = time.perf_counter()
    out = stylizer.stylize(_load(Path(input), max_size), **controls)
    save_image(out, output)
    log.info("wrote %s (%dx%d, %.2fs)", output, out.shape[-1], out.shape[-2], time.perf_counter() - start)
    return output


@dataclass
class FolderReport:
    """What :func:`stylize_folder` did."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (input, one-line reason)
    seconds: float = 0.0


def _is_glob(pattern: str) -> bool:
    return glob.has_magic(pattern)


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard (where relative paths start)."""
    parts = Path(pattern).parts
    first_magic = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return Path(*parts[:first_magic]) if first_magic else Path(".")


def find_images(input: str | os.PathLike, exclude: Path | None = None) -> tuple[Path, list[Path]]:
    """The image files of a folder (recursively) or a glob pattern, sorted, and the folder they are relative to.

    Files under ``exclude`` (the output folder, when it lies inside the input folder) and hidden
    files (temporary ``.name.part`` files of an interrupted run) are left out.
    """
    pattern = str(input)
    if Path(pattern).is_dir():
        base = Path(pattern)
        candidates: Iterable[Path] = base.rglob("*")
    elif _is_glob(pattern):
        base = _glob_base(pattern)
        candidates = (Path(p) for p in glob.glob(pattern, recursive=True))
    else:
        raise ImageError(f"{input}: no such file or folder")
    exclude_resolved = exclude.resolve() if exclude is not None else None
    files = []
    for p in candidates:
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS or p.name.startswith("."):
            continue
        if exclude_resolved is not None and exclude_resolved in p.resolve().parents:
            continue
        files.append(p)
    return base, sorted(files)


def stylize_folder(
    stylizer: Stylizer,
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    max_size: int | None = None,
    batch_size: int = 1,
    format: str | None = None,
    progress: bool = False,
    **controls: Any,
) -> FolderReport:
    """Stylise every image of a folder (recursively) or glob pattern into ``output``, keeping the layout.

    Images of equal size (after ``max_size``) are stylised together in batches of ``batch_size``;
    loading runs in a background thread and saving in another, overlapped with the network.
    A file that cannot be read or written is skipped with a warning and listed in the report;
    the others are still processed. The caller decides what a skip means (``run`` exits non-zero).

    Args:
        stylizer: the network.
        input: a folder, or a glob pattern such as ``"shots/**/*.jpg"`` (relative paths start
            at the pattern's folder part).
        output: the output folder. It may lie inside the input folder: it is not scanned.
        max_size: downscale so that the longest side is at most this, px.
        batch_size: images per network call (same-size images only).
        format: an extension (``"png"``, ``"jpg"``...) to convert every output to; default: each
            image keeps its own format.
        progress: show a progress bar.
        controls: ``strength``, ``preserve_color``, ``tile``.
    """
    from tqdm.auto import tqdm

    _check_controls(controls.get("strength", 1.0), max_size, controls.get("tile"))
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output={output} is a file; a folder input needs an output folder")
    folder = Path(input) if Path(input).is_dir() else _glob_base(str(input))
    if output.resolve() == folder.resolve():
        raise ConfigError(f"output={output} is the input folder; refusing to overwrite the input images")
    base, files = find_images(input, exclude=output)
    if not files:
        raise ImageError(f"{input}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    suffix = None
    if format:
        suffix = "." + str(format).lower().lstrip(".")
        image_format(f"x{suffix}")  # an unknown format fails now, not after the first image
    targets = {}
    inputs = {p.resolve() for p in files}
    for p in files:
        rel = p.relative_to(base)
        target = output / (rel.with_suffix(suffix) if suffix else rel)
        if target.resolve() in inputs:
            raise ConfigError(f"output={output} would overwrite the input {p}; choose another output folder")
        targets[p] = target

    report = FolderReport()
    start = time.perf_counter()
    bar = tqdm(total=len(files), desc="stylise", unit="img", disable=not progress)

    def skip(path: Path, reason: str) -> None:
        log.warning("skipped %s", reason)
        report.skipped.append((path, reason))
        bar.update(1)

    def produce(put: Callable[[Any], None]) -> None:
        for p in files:
            try:
                put((p, _load(p, max_size)))
            except ImageError as e:
                put((p, e))

    def save(p: Path, image: torch.Tensor) -> None:
        try:
            save_image(image, targets[p])
            report.written.append(targets[p])
        except ImageError as e:
            report.skipped.append((p, str(e)))
            log.warning("skipped %s", e)
        bar.update(1)

    writer = _Writer(name="save")
    buckets: dict[tuple[int, int], list[tuple[Path, torch.Tensor]]] = {}

    def flush(key: tuple[int, int]) -> None:
        paths, images = zip(*buckets.pop(key), strict=True)
        out = stylizer.stylize(torch.cat(images), **controls).cpu()
        for p, image in zip(paths, out, strict=True):
            writer.submit(lambda p=p, image=image: save(p, image))

    try:
        with _Background(produce, maxsize=2 * int(batch_size) + 2, name="load") as loaded:
            for p, item in loaded:
                if isinstance(item, ImageError):
                    skip(p, str(item))
                    continue
                key = tuple(item.shape[-2:])
                buckets.setdefault(key, []).append((p, item))
                if len(buckets[key]) >= batch_size:
                    flush(key)
            for key in list(buckets):
                flush(key)
        writer.finish()
    except BaseException:
        writer.abandon()
        raise
    finally:
        bar.close()
    report.seconds = time.perf_counter() - start
    return report


# --------------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------------


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise ConfigError("video needs PyAV: pip install av") from None
    return av


def _video_encoder(av: Any, candidates: tuple[str, ...], requested: str | None, path: Path) -> str:
    for name in [requested] if requested else list(candidates):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 (PyAV raises various errors for unknown codecs)
            continue
    raise VideoError(
        f"{path}: no video encoder available for {path.suffix} (tried {', '.join([requested] if requested else candidates)})"
    )


_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def _audio_encoder(av: Any, sink: Any, codec: str, template: Any) -> Any:
    """An output audio stream that re-encodes ``template``'s audio as ``codec`` (PyAV resamples frames)."""
    cc = template.codec_context
    rates = av.codec.Codec(codec, "w").audio_rates
    rate = cc.sample_rate if not rates or cc.sample_rate in rates else max(rates)  # e.g. Opus: 48 kHz only
    stream = sink.add_stream(codec, rate=rate)
    # Some decoders report an unordered layout ("1 channels") that encoders refuse.
    stream.layout = _LAYOUTS.get(cc.layout.nb_channels, cc.layout.name)
    return stream


def _even_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """Output frame size: the ``max_size`` fit, rounded down to even sides (yuv420p needs them)."""
    if max_size is not None and max(width, height) > max_size:
        width, height = fit_longest(width, height, max_size)
    return max(2, width - width % 2), max(2, height - height % 2)


@dataclass
class VideoReport:
    """What :func:`stylize_video` did."""

    output: Path
    frames: int
    seconds: float
    fps: float
    size: tuple[int, int]
    audio_streams: int


def stylize_video(
    stylizer: Stylizer,
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    max_size: int | None = None,
    batch_size: int = 1,
    codec: str | None = None,
    crf: int = 18,
    preset: str = "veryfast",
    progress: bool = False,
    **controls: Any,
) -> VideoReport:
    """Stylise a video file with PyAV (FFmpeg): same frame rate and timestamps, audio copied.

    Decoding runs in one background thread and encoding + muxing in another, so both overlap
    with the network. Audio streams are copied packet for packet when the output container takes
    their codec, otherwise re-encoded (e.g. PCM into .mp4 becomes AAC). The result is written to
    a temporary file beside ``output`` and renamed at the end: an error or Ctrl-C leaves no file
    under the final name.

    Args:
        stylizer: the network.
        input: a video file FFmpeg reads.
        output: ``.mp4``/``.m4v``/``.mov``/``.mkv``/``.avi`` (H.264 via libx264 when available,
            else MPEG-4 part 2) or ``.webm`` (VP9).
        max_size: downscale frames so that the longest side is at most this, px.
        batch_size: frames per network call.
        codec: an FFmpeg video encoder name to use instead of the default.
        crf: x264/VP9 constant-quality factor: lower is better and larger (18 is visually lossless).
        preset: x264 speed/size trade-off (``ultrafast`` ... ``veryslow``). ``veryfast`` encodes
            1080p at ~140 fps on 16 cores (``medium``: ~45 fps), for larger files at equal quality.
        progress: show a progress bar.
        controls: ``strength`` and ``preserve_color`` (tiling is for still images).
    """
    from tqdm.auto import tqdm

    av = _import_av()
    input, output = Path(input), Path(output)
    if output.suffix.lower() not in _CONTAINERS:
        raise ConfigError(f"output={output}: a video needs a video file name ({', '.join(_CONTAINERS)})")
    if output.resolve() == input.resolve():
        raise ConfigError(f"output={output} is the input file; refusing to overwrite an input")
    _check_controls(controls.get("strength", 1.0), max_size, None)
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    mux_format, encoders, copyable_audio = _CONTAINERS[output.suffix.lower()]
    encoder = _video_encoder(av, encoders, codec, output)
    if not input.is_file():
        raise VideoError(f"{input}: no such file")
    try:
        source = av.open(str(input))
    except Exception as e:  # noqa: BLE001 (FFmpeg errors come in several types)
        raise VideoError(f"{input}: not a readable video ({_first_line(e)})") from None
    start = time.perf_counter()
    try:
        if not source.streams.video:
            raise VideoError(f"{input}: has no video stream")
        vin = source.streams.video[0]
        vin.thread_type = "AUTO"  # FFmpeg's frame + slice threads
        audio_in = list(source.streams.audio)
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        width, height = _even_size(vin.codec_context.width, vin.codec_context.height, max_size)
        total = vin.frames or None
        report = VideoReport(output, 0, 0.0, 0.0, (width, height), len(audio_in))

        with atomic_write(output) as tmp:
            sink = av.open(str(tmp), mode="w", format=mux_format)
            try:
                vout = sink.add_stream(encoder, rate=rate)
                vout.width, vout.height = width, height
                vout.pix_fmt = "yuv420p"
                vout.thread_type = "FRAME"  # x264 frame threads: 3x the throughput of slice threads
                # Timestamps in units of one frame: exact for constant-rate sources even when their
                # container rounded them (Matroska's milliseconds), the nearest frame slot otherwise.
                vout.time_base = vout.codec_context.time_base = 1 / Fraction(rate)
                if encoder in ("libx264", "libvpx-vp9", "libvpx"):
                    vout.options = {"crf": str(int(crf))} | (
                        {"preset": str(preset)} if encoder == "libx264" else {"b:v": "0"}
                    )
                else:
                    vout.bit_rate = max(1_000_000, width * height * 8)  # mpeg4: no CRF; ~8 bits/px/s
                audio_map = {}
                for a in audio_in:
                    if a.codec_context.name in copyable_audio:
                        audio_map[a.index] = (sink.add_stream_from_template(a), None)
                    else:
                        audio_map[a.index] = (_audio_encoder(av, sink, copyable_audio[0], a), a)
                        log.info(
                            "audio stream %d: %s re-encoded as %s for %s",
                            a.index,
                            a.codec_context.name,
                            copyable_audio[0],
                            output.suffix,
                        )
                try:
                    report.frames = _video_pipeline(
                        av,
                        source,
                        vin,
                        audio_in,
                        sink,
                        vout,
                        audio_map,
                        stylizer,
                        (width, height),
                        int(batch_size),
                        controls,
                        tqdm(total=total, desc="stylise", unit="frame", disable=not progress),
                    )
                except av.error.FFmpegError as e:
                    raise VideoError(f"{output}: cannot encode or write ({_first_line(e)})") from None
            finally:
                sink.close()
    finally:
        source.close()
    report.seconds = time.perf_counter() - start
    report.fps = report.frames / max(report.seconds, 1e-9)
    return report


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _video_pipeline(
    av: Any,
    source: Any,
    vin: Any,
    audio_in: list,
    sink: Any,
    vout: Any,
    audio_map: dict,
    stylizer: Stylizer,
    size: tuple[int, int],
    batch_size: int,
    controls: dict,
    bar: Any,
) -> int:
    """Decode (thread) -> stylise (this thread) -> encode and mux (thread). Returns the frame count.

    Audio packets travel through the same queues as the video frames, so the one writer thread
    is the only one touching the output container, and packets reach the muxer in decoding order
    (FFmpeg's interleaving muxer buffers what needs reordering).
    """
    width, height = size

    def decode(put: Callable[[Any], None]) -> None:
        try:
            for packet in source.demux(vin, *audio_in):
                if packet.stream.type == "video":
                    for frame in packet.decode():
                        rgb = frame.to_ndarray(format="rgb24", width=width, height=height)  # swscale, here
                        put(("video", rgb, frame.pts, frame.time_base))
                else:  # audio, including the final empty packet that flushes a re-encoder
                    put(("audio", packet, None, None))
        except av.error.FFmpegError as e:
            raise VideoError(f"{source.name}: cannot decode ({_first_line(e)})") from None

    def write_audio(packet: Any) -> None:
        out_stream, decode_from = audio_map[packet.stream.index]
        if decode_from is None:
            if packet.dts is not None:  # the empty end-of-stream packet has nothing to copy
                packet.stream = out_stream
                sink.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None  # let the encoder number the samples
            for out_packet in out_stream.encode(frame):
                sink.mux(out_packet)

    last_pts = [-1]

    def write_video(frames: np.ndarray, stamps: list) -> None:
        for planes, (pts, time_base) in zip(frames, stamps, strict=True):
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            # Source time -> output frame slots, strictly increasing (a muxer requirement).
            slot = round(pts * time_base / vout.time_base) if pts is not None else last_pts[0] + 1
            frame.pts, frame.time_base = max(slot, last_pts[0] + 1), vout.time_base
            last_pts[0] = frame.pts
            for packet in vout.encode(frame):
                sink.mux(packet)

    def finish() -> None:
        for packet in vout.encode(None):
            sink.mux(packet)
        for out_stream, decode_from in audio_map.values():
            if decode_from is not None:
                for packet in out_stream.encode(None):
                    sink.mux(packet)

    writer = _Writer(maxsize=4, name="encode")
    frames: list[np.ndarray] = []
    stamps: list[tuple[Any, Any]] = []
    count = 0

    def run_batch() -> None:
        nonlocal count
        if not frames:
            return
        out = stylizer.stylize_frames(frames, yuv420p=True, **controls)
        batch_stamps = list(stamps)
        writer.submit(lambda: write_video(out, batch_stamps))
        count += len(frames)
        bar.update(len(frames))
        frames.clear()
        stamps.clear()

    try:
        with _Background(decode, maxsize=2 * batch_size + 4, name="decode") as decoded:
            for kind, item, pts, time_base in decoded:
                if kind == "audio":
                    run_batch()  # keep audio behind the video frames decoded before it
                    writer.submit(lambda item=item: write_audio(item))
                    continue
                frames.append(item)
                stamps.append((pts, time_base))
                if len(frames) >= batch_size:
                    run_batch()
            run_batch()
        writer.submit(finish)
        writer.finish()
    except BaseException:
        writer.abandon()
        raise
    finally:
        bar.close()
    if count == 0:
        raise VideoError(f"{source.name}: no frames could be decoded")
    return count


# --------------------------------------------------------------------------------------------------
# Webcam
# --------------------------------------------------------------------------------------------------


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise ConfigError(
            "input=webcam needs OpenCV with a GUI: pip install 'fastns[webcam]' (opencv-python)"
        ) from None
    return cv2


def _camera_source(camera: int | str) -> int | str:
    """An OpenCV camera index (``0``, ``"1"``) as an int; a path or URL unchanged."""
    text = str(camera).strip()
    return int(text) if text.lstrip("-").isdigit() else text


def run_webcam(
    stylizer: Stylizer,
    camera: int | str = 0,
    *,
    max_size: int | None = 720,
    mirror: bool = True,
    max_frames: int | None = None,
    **controls: Any,
) -> int:
    """Show the stylised camera stream in a window with the frame rate; q or Esc quits.

    Frames are grabbed in a background thread that keeps only the newest one, so the display
    lags the camera by one network call at most. Returns the number of frames shown.

    Args:
        stylizer: the network.
        camera: OpenCV camera index (0 = the default camera), or anything else OpenCV opens as a
            stream: a device path (``/dev/video2``), a network camera URL (``rtsp://...``), a file.
        max_size: downscale camera frames so that the longest side is at most this, px.
        mirror: flip horizontally, like a mirror (what people expect of a front camera).
        max_frames: stop after this many frames (None: until q/Esc or the window is closed).
        controls: ``strength`` and ``preserve_color``.
    """
    cv2 = _import_cv2()
    _check_controls(controls.get("strength", 1.0), max_size, None)
    source = _camera_source(camera)
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise ConfigError(f"camera={camera}: the camera could not be opened (is it connected, and free?)")
    # A camera or stream delivers frames at its own pace; a video file would be read as fast as
    # the disk allows, so it is played at its frame rate, like a camera (frames are dropped, not queued).
    is_file = isinstance(source, str) and Path(source).is_file()
    file_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0) if is_file else 0.0
    period = (1.0 / file_fps if file_fps > 0 else 1.0 / 30) if is_file else 0.0
    title = f"fastns: {stylizer.name} (q to quit)"
    try:
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)
    except cv2.error:
        capture.release()
        raise ConfigError(
            "this OpenCV build has no GUI (opencv-python-headless?); pip install opencv-python"
        ) from None

    latest: list[Any] = [None]
    have_frame = threading.Condition()
    stop = threading.Event()

    def grab() -> None:
        due = time.perf_counter()
        while not stop.is_set():
            ok, frame = capture.read()
            if not ok:
                break
            if period:
                due += period
                time.sleep(max(0.0, due - time.perf_counter()))
            with have_frame:
                latest[0] = frame
                have_frame.notify()
        with have_frame:
            stop.set()
            have_frame.notify()

    grabber = threading.Thread(target=grab, name="fastns-camera", daemon=True)
    grabber.start()
    shown, fps, last = 0, 0.0, time.perf_counter()
    try:
        while max_frames is None or shown < max_frames:
            with have_frame:
                while latest[0] is None and not stop.is_set():
                    have_frame.wait(timeout=1.0)
                frame, latest[0] = latest[0], None
            if frame is None:
                break
            if mirror:
                frame = cv2.flip(frame, 1)
            h, w = frame.shape[:2]
            if max_size is not None and max(h, w) > max_size:
                frame = cv2.resize(frame, fit_longest(w, h, max_size), interpolation=cv2.INTER_AREA)
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            out = cv2.cvtColor(stylizer.stylize_frames(rgb[None], **controls)[0], cv2.COLOR_RGB2BGR)
            now = time.perf_counter()
            fps = 0.9 * fps + 0.1 / max(now - last, 1e-6) if shown else 1 / max(now - last, 1e-6)
            last = now
            cv2.putText(out, f"{fps:.1f} fps", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
            cv2.imshow(title, out)
            shown += 1
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27) or cv2.getWindowProperty(title, cv2.WND_PROP_VISIBLE) < 1:
                break
    finally:
        stop.set()
        grabber.join(timeout=2)
        capture.release()
        cv2.destroyAllWindows()
    log.info("webcam: %d frames, %.1f fps at the end", shown, fps)
    return shown


# --------------------------------------------------------------------------------------------------
# The config-driven task behind scripts/stylize.py
# --------------------------------------------------------------------------------------------------


def default_output(input: str | os.PathLike) -> Path:
    """Where ``output=null`` writes: ``photo_stylised.jpg``, ``clip_stylised.mp4``, ``holiday_stylised/``."""
    text = str(input)
    path = Path(text)
    if path.is_dir() or _is_glob(text):
        folder = path if path.is_dir() else _glob_base(text)
        folder = folder.resolve()
        return folder.with_name(f"{folder.name}_stylised")
    return path.with_name(f"{path.stem}_stylised{path.suffix}")


def _kind(input: str) -> str:
    if input.lower() == "webcam":
        return "webcam"
    path = Path(input)
    if path.is_dir() or (not path.exists() and _is_glob(input)):
        return "folder"
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return "video"
    return "image"


def run(cfg: DictConfig) -> Any:
    """Stylise ``cfg.input`` (image, folder, glob, video or ``webcam``) with ``cfg.model``.

    See ``configs/tools/stylize.yaml`` for the keys. Returns the output path (image), the
    :class:`FolderReport`, the :class:`VideoReport`, or the number of webcam frames shown.

    Raises:
        SkippedFilesError: after a folder run in which some files could not be read or written
            (all the others were written); the script prints it and exits with status 2.
    """
    if cfg.input is None:
        raise ConfigError("missing required setting input: pass input=photo.jpg, a folder, a video or webcam")
    input = str(cfg.input)
    kind = _kind(input)
    if kind == "image" and not Path(input).exists():
        raise ImageError(f"{input}: no such file")
    output = Path(cfg.output) if cfg.output else None
    if kind != "webcam" and output is None:
        output = default_output(input)
    controls = {"strength": float(cfg.strength), "preserve_color": bool(cfg.preserve_color)}
    max_size = int(cfg.max_size) if cfg.max_size else None
    tile = int(cfg.tile) if cfg.tile else None
    _check_controls(controls["strength"], max_size, tile)
    if kind in ("video", "webcam") and tile is not None:
        raise ConfigError("tile= is for still images; for video use max_size= to bound the frame size")
    if kind == "image" and output is not None:
        check_output_path(output, [input])
    if kind == "webcam":
        _import_cv2()  # before the model loads: a missing OpenCV should fail at once
    stylizer = Stylizer.load(
        cfg.model,
        device=str(cfg.device),
        precision=str(cfg.precision),
        compile=cfg.compile,
        channels_last=None if cfg.channels_last is None else bool(cfg.channels_last),
        border=int(cfg.border),
    )
    log.info("%r, input %s (%s)", stylizer, input, kind)
    batch_size = int(cfg.batch_size) if cfg.batch_size else (4 if stylizer.device.type == "cuda" else 1)
    progress = bool(cfg.progress)

    if kind == "webcam":
        return run_webcam(stylizer, cfg.camera, max_size=max_size or 720, mirror=bool(cfg.mirror), **controls)
    if kind == "video":
        report = stylize_video(
            stylizer,
            input,
            output,
            max_size=max_size,
            batch_size=batch_size,
            codec=cfg.video.codec,
            crf=int(cfg.video.crf),
            preset=str(cfg.video.preset),
            progress=progress,
            **controls,
        )
        log.info(
            "wrote %s: %d frames of %dx%d in %.1fs (%.1f fps end to end), %d audio stream(s)",
            report.output,
            report.frames,
            *report.size,
            report.seconds,
            report.fps,
            report.audio_streams,
        )
        return report
    if kind == "folder":
        report = stylize_folder(
            stylizer,
            input,
            output,
            max_size=max_size,
            batch_size=batch_size,
            format=cfg.format,
            progress=progress,
            tile=tile,
            **controls,
        )
        log.info("wrote %d image(s) to %s in %.1fs", len(report.written), output, report.seconds)
        if report.skipped:
            first, reason = report.skipped[0]
            raise SkippedFilesError(
                f"{len(report.skipped)} of {len(report.skipped) + len(report.written)} file(s) skipped "
                f"(first: {reason}); the others were written to {output}"
            )
        return report
    return stylize_image(stylizer, input, output, max_size=max_size, tile=tile, **controls)
