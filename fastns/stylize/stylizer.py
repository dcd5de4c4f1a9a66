"""The stylizer: a trained network ready for fast inference on tensors, Pillow images and video frames.

Library API (needs only the model file: no VGG, Hydra or Lightning at run time)::

    from fastns import Stylizer
    stylizer = Stylizer.load("runs/starry/model.safetensors")  # device auto: cuda > mps > cpu
    out = stylizer(Image.open("photo.jpg"), strength=0.8)      # PIL in -> PIL out
    out = stylizer(images)                                     # (B, 3, H, W) in [0, 1] -> same

How an image is stylised (every input kind goes through :meth:`Stylizer.stylize`):

1. **Size**: the network is fully convolutional, so it runs at the input's own size, or at
   ``max_size`` (longest side, downscaling only).
2. **Border**: the image is reflection-padded by ``border`` pixels (32 by default) before the
   network and the output cropped back. The network's own convolutions are reflection-padded too,
   but that pads *feature maps*, whose mirror image is not the features of the mirrored photo; the
   outermost pixels then show bright/dark seams and stride-phase artifacts. Padding the photo, as
   Johnson et al. do (40 px, valid convolutions), gives the pixels near the edge real-looking context.
   32 px adds ``(1 + 64 / side)^2 - 1`` of compute (13 % at 1024 px) and keeps the stride-4 grid aligned.
3. **Tiles** (``tile=N``): huge images run as tiles of at most N x N pixels (plus 16 px of
   context), with every InstanceNorm given the statistics of the *whole* image, so the result
   equals the untiled one and shows no seams (:mod:`fastns.stylize.tiling`).
4. **Style** (networks of several styles): ``style`` names one of the network's styles
   (``"candy"``) or blends them (``{"candy": 0.7, "mosaic": 0.3}``: their γ, β mixed by the weights,
   normalised to sum to 1; :meth:`Stylizer.style_weights`). Single-style networks need none.
5. **Controls**: ``preserve_color`` keeps the content's chrominance (stylised luminance only,
   :func:`fastns.color.preserve_color`), then ``strength`` blends linearly with the content
   (0 = the content, 1 = fully stylised). Both are applied on the device, per tile when tiling.

Speed (benchmarks/README_stylize.md measures it): inference mode; the inference copy of the network
(:mod:`fastns.stylize.inference`); channels-last memory layout on the CPU; fp16 on CUDA and bf16
on CPUs with AMX or AVX-512 BF16 by default (``precision``); on CUDA the forward replayed from a
CUDA graph per input shape (:mod:`fastns.stylize.graphs`); optional ``torch.compile``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..color import preserve_color as _preserve_color
from ..color import rgb_to_yuv420p
from ..errors import ConfigError, ImageError, ModelFileError
from ..image import MIN_SIDE, load_image, pil_to_tensor, resize_longest, resize_pil, tensor_to_pil, to_rgb
from ..importers import load_network
from ..modelfile import ModelInfo
from ..sources import resolve_model
from ..transformer import DEFAULT_BORDER, PaddedNet, TransformerNet, padding
from ..utils import resolve_device
from .graphs import GraphedForward
from .inference import prepare, resolve_dtype
from .tiling import MIN_TILE, stylize_tiled


def load_content(path: str | os.PathLike, max_size: int | None = None) -> torch.Tensor:
    """An image file as ``(1, 3, H, W)`` for the network (``max_size``: downscale only); too small: an error naming it."""
    image = load_image(path, max_size=max_size)
    if min(image.shape[-2:]) < MIN_SIDE:
        raise ImageError(
            f"{path}: {image.shape[-1]}x{image.shape[-2]} px is too small to stylise ({MIN_SIDE} px minimum)"
        )
    return image


#: What ``style=`` takes: a style's name, ``{name: weight}``, N weights, or None.
StyleSpec = str | Mapping[str, float] | Sequence[float] | torch.Tensor | None


class Stylizer:
    """A trained style network ready for fast inference.

    Args:
        net: the :class:`TransformerNet` (it is copied; the original is not changed).
        info: the model file's description (style name etc.), if any.
        device: ``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
        precision: ``"auto"`` (fp16 on CUDA, bf16 on CPUs with AMX or AVX-512 BF16, fp32
            elsewhere), ``"fp32"`` (exact), ``"bf16"`` or ``"fp16"`` (GPU only). Half precision
            changes outputs by under one 8-bit level on average, rare pixels by more
            (benchmarks/README_stylize.md measures trained networks).
        compile: ``torch.compile`` the network (``True``, or a mode name such as
            ``"max-autotune"``). The first call at each new size takes seconds to minutes.
        channels_last: channels-last memory layout; ``None`` (default): on the CPU only, where
            oneDNN's convolutions are faster in it. On CUDA the reflection padding and
            normalisation kernels lose more in it than cuDNN gains (benchmarks/README_stylize.md).
        border: reflection padding around every image, px (module docstring, point 2). Networks
            imported from jcjohnson/fast-neural-style pad by their own 40 px instead.
        input_noise: the standard deviation of the fixed grain added to every input
            (``TransformerNet``'s ``input_noise``), for any network, its own or imported; ``None``
            (default): the network's own (0 unless it was trained with it). A flat area wider
            than the network's reach (a white sky) otherwise comes out as one flat colour.
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
        cuda_graphs: bool | None = None,
        input_noise: float | None = None,
    ) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        if input_noise is not None and float(input_noise) != net.input_noise:
            net = copy.deepcopy(net)  # the caller's network keeps its own setting
            net.set_input_noise(float(input_noise))
        self.dtype = resolve_dtype(str(precision), self.device)
        if int(border) < 0:
            raise ConfigError(f"border={border} must be >= 0")
        self.info = info
        self.border = int(border)
        self.channels_last = self.device.type == "cpu" if channels_last is None else bool(channels_last)
        self.net = prepare(net, self.device, self.dtype, self.channels_last)
        self.module = PaddedNet(self.net, self.border)
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self.module
        graphs = self.device.type == "cuda" if cuda_graphs is None else bool(cuda_graphs)
        if compile:
            mode = compile if isinstance(compile, str) else None
            # dynamic=None: the first new size recompiles with symbolic sizes, later sizes reuse it.
            self._forward = torch.compile(self.module, mode=mode)
        elif graphs:
            self._forward = GraphedForward(self.module)
        self._staging: torch.Tensor | None = None  # page-locked frame buffer (stylize_frames, CUDA)

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> Stylizer:
        """A stylizer for the model file ``path`` (``model.safetensors``); ``kwargs`` as for the class.

        Also another project's network (``fastns.importers.load_network``), ``zoo:<name>``, a
        published network fetched by name (``fastns.zoo``), or ``hf:<repo>`` (``fastns.hfhub``).

        Raises:
            ModelFileError: the file is missing or not a fastns model file.
            DownloadError: a zoo network could not be downloaded.
        """
        path = resolve_model(path)
        if path.suffix == ".ckpt":
            raise ModelFileError(
                f"{path}: a training checkpoint, not a model file; turn it into one with "
                f"python scripts/export.py model={path}"
            )
        net, info = load_network(path)  # a model file, or another project's network (.pth, .t7)
        return cls(net, info=info, **kwargs)

    @property
    def name(self) -> str:
        """The style's name from the model file, or ``"style"`` (several styles: their names, joined)."""
        return str((self.info.style if self.info else {}).get("name") or "style")

    @property
    def num_styles(self) -> int:
        """N, the styles the network holds."""
        return self.net.num_styles

    @property
    def styles(self) -> list[str]:
        """The names of the network's styles, in its order."""
        if self.info is not None and self.info.num_styles == self.num_styles:
            return self.info.style_names
        return [self.name] if self.num_styles == 1 else [f"style{i + 1}" for i in range(self.num_styles)]

    def style_weights(self, style: StyleSpec) -> torch.Tensor | None:
        """The network's style weights (N,) on the device for ``style``; None for a single-style network.

        ``style``: a style's name; ``{name: weight, ...}`` (a blend; weights >= 0, normalised to sum
        to 1); N weights; or None (the first style). A single-style network takes None or its own name.

        Raises:
            ConfigError: an unknown style name or bad weights (one line, listing the network's styles).
        """
        names = self.styles
        listed = f"the network's styles: {', '.join(names)}"
        if isinstance(style, str):
            style = {style: 1.0}
        if style is None:
            weights = [1.0] + [0.0] * (len(names) - 1)
        elif isinstance(style, Mapping):
            weights = [0.0] * len(names)
            for key, value in style.items():
                if str(key) not in names:
                    raise ConfigError(f"style={key}: no such style in this network; {listed}")
                try:
                    weights[names.index(str(key))] += float(value)
                except (TypeError, ValueError):
                    raise ConfigError(f"style: the weight of {key} ({value!r}) is not a number") from None
        else:
            weights = [float(v) for v in (style.tolist() if isinstance(style, torch.Tensor) else style)]
            if len(weights) != len(names):
                raise ConfigError(f"style: {len(weights)} weights for {len(names)} styles; {listed}")
        if any(not w >= 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"style: weights must be >= 0 and not all 0 (got {weights}); {listed}")
        if self.num_styles == 1:
            return None
        w = torch.tensor(weights, dtype=torch.float32)
        return (w / w.sum()).to(self.device)

    def __repr__(self) -> str:
        return (
            f"Stylizer({self.name!r}, width={self.net.config['width']}, device={self.device}, "
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
        style: StyleSpec = None,
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
            style: networks of several styles: a style's name, ``{name: weight}`` (a blend), or
                None (the first style); see :meth:`style_weights`.
        """
        controls = dict(strength=strength, preserve_color=preserve_color, tile=tile, style=style)
        if isinstance(image, Image.Image):
            im = to_rgb(image)  # any mode; transparency on white, as for files
            if max_size is not None and max(im.size) > int(max_size):
                im = resize_pil(im, int(max_size))  # Lanczos on the 8-bit image, as load_image does
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
        style: StyleSpec = None,
    ) -> torch.Tensor:
        """Stylise a batch ``(B, 3, H, W)`` in [0, 1]; returns float32 ``(B, 3, H', W')`` on the input's device.

        ``H', W'`` is the input size, or the ``max_size`` fit. Arguments as for :meth:`__call__`.
        """
        check_controls(strength, max_size, tile)
        weights = self.style_weights(style)
        if tile is not None and self.net.start_pad:
            raise ConfigError(
                "tile= is not available for networks imported from jcjohnson/fast-neural-style "
                "(padding=reflect-start); use max_size= to bound the image size"
            )
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}")
        if min(images.shape[-2:]) < MIN_SIDE:
            raise ImageError(
                f"image of {images.shape[-1]}x{images.shape[-2]} px is too small ({MIN_SIDE} px minimum)"
            )
        out_device = images.device
        images = images.float()
        if max_size is not None and max(images.shape[-2:]) > max_size:
            images = resize_longest(images, int(max_size))
        if strength == 0:
            return images.clone()  # the content itself: no need to run the network
        h, w = images.shape[-2:]
        b = padding(h, w, self.border)[0]
        if tile is not None and max(h, w) + 2 * b > tile:
            out = self._stylize_tiled(images.cpu(), int(tile), strength, preserve_color, weights)
        else:
            out = self._stylize_on_device(images.to(self.device), strength, preserve_color, weights)
        return out.to(out_device)

    @torch.inference_mode()
    def stylize_frames(
        self,
        frames: np.ndarray | list[np.ndarray] | torch.Tensor,
        *,
        strength: float = 1.0,
        preserve_color: bool = False,
        yuv420p: bool = False,
        temporal: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        style: StyleSpec = None,
    ) -> np.ndarray:
        """Stylise 8-bit RGB frames ``(B, H, W, 3)`` (or a list of ``(H, W, 3)``), as decoders give them.

        Returns the stylised frames as a uint8 array of the same shape.

        The conversion to and from [0, 1] floats happens on the device (one small upload and
        download of bytes per frame), which matters at video rates. With ``yuv420p=True`` the
        result is ``(B, H * 3 // 2, W)`` FFmpeg yuv420p planes instead (:func:`rgb_to_yuv420p`),
        converted on the device, which spares the encoder thread FFmpeg's single-threaded
        conversion (slower than the network on a GPU at 1080p).

        ``temporal`` (``temporal=flow``: a :class:`~fastns.stylize.temporal.FlowBlend`) takes the
        content and output frames ``(B, 3, H, W)`` in [0, 1] on the device, in order, and returns the
        frames to keep; ``None`` stylises each frame on its own. ``style``: as for :meth:`__call__`.
        """
        check_controls(strength, None, None)
        weights = self.style_weights(style)
        x = self._upload(frames)
        # (B, H, W, 3) -> (B, 3, H, W): a permuted view, i.e. already channels-last in memory.
        content = x.permute(0, 3, 1, 2).float().div_(255.0)
        out = (
            content if strength == 0 else self._stylize_on_device(content, strength, preserve_color, weights)
        )
        if temporal is not None:
            out = temporal(content, out)
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

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the network's device, in its dtype and memory layout."""
        # Frames arrive as permuted (B, H, W, 3) bytes, i.e. channels-last: set the layout either way.
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.to(self.device, self.dtype).contiguous(memory_format=layout)

    def _stylize_on_device(
        self, content: torch.Tensor, strength: float, preserve_color: bool, style: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Network and controls on a device batch (B, 3, H, W) in [0, 1]; float32 on the device.

        ``style``: the style weights (N,) of a network of several styles (:meth:`style_weights`).
        """
        x = self._to_device(content)
        out = (self._forward(x) if style is None else self._forward(x, style)).float()
        return apply_controls(content, out, strength, preserve_color)

    def _stylize_tiled(
        self,
        images: torch.Tensor,
        tile: int,
        strength: float,
        preserve_color: bool,
        style: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:func:`~fastns.stylize.tiling.stylize_tiled` with the controls; ``images`` and the result on the CPU."""

        def finish(content: torch.Tensor, stylised: torch.Tensor) -> torch.Tensor:
            return apply_controls(content.to(self.device), stylised, strength, preserve_color).cpu()

        return stylize_tiled(
            self.net, images, tile, self.border, self._to_device, finish, self.channels_last, style=style
        )


def apply_controls(
    content: torch.Tensor, stylised: torch.Tensor, strength: float, preserve_color: bool
) -> torch.Tensor:
    """Colour preservation, then the strength blend; both (B, 3, H, W) in [0, 1] on one device."""
    if preserve_color:
        stylised = _preserve_color(content, stylised)
    if strength < 1:
        stylised = torch.lerp(content, stylised, float(strength))
    return stylised


def check_controls(strength: float, max_size: int | None, tile: int | None) -> None:
    """Refuse a strength outside [0, 1], a ``max_size`` under 8 px or a tile under :data:`MIN_TILE` px."""
    if not 0 <= float(strength) <= 1:
        raise ConfigError(f"strength={strength} must be between 0 (the content) and 1 (fully stylised)")
    if max_size is not None and int(max_size) < 8:
        raise ConfigError(f"max_size={max_size} must be at least 8 px")
    if tile is not None and int(tile) < MIN_TILE:
        raise ConfigError(f"tile={tile} must be at least {MIN_TILE} px (or null for no tiling)")
