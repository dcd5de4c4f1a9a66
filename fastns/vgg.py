"""Frozen VGG16/VGG19 feature extractor with layers addressed by their paper names.

``VGGFeatures(["relu2_2", "relu4_3"], arch="vgg16")(images)`` returns
``{"relu2_2": ..., "relu4_3": ...}``. Inputs are ``(B, 3, H, W)`` RGB in [0, 1]; the module does
the ImageNet mean/std normalisation that torchvision's weights expect, and only runs as deep as
the deepest requested layer. Its weights are frozen and it stays in eval mode.

Weight sources (``weights=``):

- ``"imagenet"``: torchvision's ``IMAGENET1K_V1`` weights, downloaded once through torchvision's
  weights API into torch's hub cache (``$TORCH_HOME``). The default for users.
- ``"random"``: torchvision's VGG initialisation, seeded by ``seed``. For tests only: it shows
  *some* stylisation but says nothing about quality.
- a path to a ``.pth``/``.pt``/``.safetensors`` state dict in torchvision's key layout, either of
  the whole model (``features.0.weight`` ..., the classifier is ignored) or of ``features`` only
  (``0.weight`` ...). Use this offline.

Errors name the setting as configs and model files spell it, ``loss.vgg.weights``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torchvision.models import VGG16_Weights, VGG19_Weights
from torchvision.models.vgg import cfgs as _vgg_cfgs

from .errors import ConfigError, DownloadError, FastnsError, first_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's layer configurations: "D" is VGG16, "E" is VGG19.
_ARCHS = {
    "vgg16": (_vgg_cfgs["D"], VGG16_Weights.IMAGENET1K_V1),
    "vgg19": (_vgg_cfgs["E"], VGG19_Weights.IMAGENET1K_V1),
}


def layer_names(arch: str) -> list[str]:
    """Paper names of the modules of torchvision's ``vgg.features``, in order.

    ``["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", "conv2_1", ...]``
    """
    cfg, _ = _arch(arch)
    names, block, idx = [], 1, 0
    for v in cfg:
        if v == "M":
            names.append(f"pool{block}")
            block, idx = block + 1, 0
        else:
            idx += 1
            names += [f"conv{block}_{idx}", f"relu{block}_{idx}"]
    return names


def _arch(arch: str):
    try:
        return _ARCHS[arch]
    except KeyError:
        raise ConfigError(f"loss.vgg.arch={arch!r} is not supported; use one of {sorted(_ARCHS)}") from None


def _build_features(arch: str, depth: int, pooling: str) -> nn.Sequential:
    """The first ``depth`` modules of torchvision's VGG ``features`` (conv, relu, pool)."""
    cfg, _ = _arch(arch)
    if pooling not in ("max", "avg"):
        raise ConfigError(f"loss.vgg.pooling={pooling!r} must be 'max' or 'avg'")
    layers: list[nn.Module] = []
    in_ch = 3
    for v in cfg:
        if v == "M":
            # Gatys et al. (2016) report slightly smoother results with average pooling.
            layers.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = v
    return nn.Sequential(*layers[:depth])


def _init_random(features: nn.Sequential, seed: int) -> None:
    """torchvision's VGG initialisation (kaiming normal, fan_out), reproducible from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    for m in features:
        if isinstance(m, nn.Conv2d):
            std = (2.0 / (m.out_channels * m.kernel_size[0] * m.kernel_size[1])) ** 0.5
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                m.bias.zero_()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise FastnsError(f"loss.vgg.weights={path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file: pickle error, zip error, foreign format
        raise FastnsError(
            f"loss.vgg.weights={path}: not a readable PyTorch state dict ({type(e).__name__}: {first_line(e)})"
        ) from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise FastnsError(f"loss.vgg.weights={path}: not a state dict of tensors")
    out = {}
    for k, v in sd.items():
        if k.startswith("classifier."):
            continue
        k = k.removeprefix("module.").removeprefix("features.")
        out[k] = v
    return out


def _guess_arch(sd: dict[str, torch.Tensor]) -> str | None:
    convs = sorted(int(k.split(".")[0]) for k in sd if k.split(".")[0].isdigit() and k.endswith(".weight"))
    return {28: "vgg16", 34: "vgg19"}.get(convs[-1]) if convs else None


def _load_weights(features: nn.Sequential, arch: str, weights: str, seed: int) -> None:
    if weights == "random":
        _init_random(features, seed)
        return
    if weights == "imagenet":
        _, enum = _arch(arch)
        try:
            sd = enum.get_state_dict(progress=True, check_hash=True)
        except Exception as e:  # offline, proxy, HTTP error, corrupt cache, hash mismatch
            raise DownloadError(
                f"could not download torchvision's ImageNet {arch.upper()} weights ({first_line(e)}); "
                f"pass a local state dict with loss.vgg.weights=/path/to/{arch}.pth"
            ) from None
        sd = {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")}
    else:
        path = Path(os.path.expanduser(weights))
        sd = _read_state_dict(path)
    own = features.state_dict()
    missing = [k for k in own if k not in sd]
    wrong = [k for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or wrong:
        found = _guess_arch(sd)
        hint = f" (it looks like {found}: set loss.vgg.arch={found})" if found and found != arch else ""
        what = (
            f"missing features.{missing[0]}"
            if missing
            else f"features.{wrong[0]} has shape {tuple(sd[wrong[0]].shape)}"
        )
        raise FastnsError(f"loss.vgg.weights={weights}: not a torchvision {arch} state dict, {what}{hint}")
    features.load_state_dict({k: sd[k].float() for k in own})


class VGGFeatures(nn.Module):
    """Frozen VGG feature extractor returning named activations.

    Args:
        layers: names to return, e.g. ``["relu1_2", "relu2_2"]`` (``convN_M``, ``reluN_M``, ``poolN``).
        arch: ``"vgg16"`` or ``"vgg19"``.
        weights: ``"imagenet"``, ``"random"`` or a path to a state dict (see module docstring).
        pooling: ``"max"`` (torchvision) or ``"avg"`` (Gatys et al. 2016's suggestion).
        seed: seed for ``weights="random"``.
    """

    def __init__(
        self,
        layers: Iterable[str],
        arch: str = "vgg19",
        weights: str = "imagenet",
        pooling: str = "max",
        seed: int = 0,
    ) -> None:
        super().__init__()
        names = layer_names(arch)
        self.arch, self.weights_source, self.pooling = arch, str(weights), pooling
        self.layers = list(dict.fromkeys(layers))
        if not self.layers:
            raise ConfigError("VGGFeatures needs at least one layer")
        for name in self.layers:
            if name not in names:
                valid = "relu1_1 ... relu5_4" if arch == "vgg19" else "relu1_1 ... relu5_3"
                raise ConfigError(
                    f"unknown {arch} layer {name!r}; use names such as {valid}, conv4_2 or pool3"
                )
        depth = max(names.index(name) for name in self.layers) + 1
        # Any layer up to the deepest configured one can be asked for at call time.
        self._index = {name: i for i, name in enumerate(names[:depth])}
        self.features = _build_features(arch, depth, pooling)
        _load_weights(self.features, arch, str(weights), seed)
        # An in-place ReLU would overwrite a requested conv output; keep those out of place.
        for name in self.layers:
            i = self._index[name]
            if name.startswith("conv") and i + 1 < depth:
                self.features[i + 1] = nn.ReLU(inplace=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        # Always in eval mode: it is a fixed measuring instrument, never trained.
        return super().train(False)

    def forward(self, images: torch.Tensor, layers: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Activations of ``layers`` (default: all configured layers) for images in [0, 1].

        Only runs as deep as the deepest of the layers asked for, so asking for ``relu2_2``
        alone costs a fraction of a full pass.
        """
        wanted = self.layers if layers is None else list(layers)
        index = {}
        for name in wanted:
            if name not in self._index:
                raise KeyError(
                    f"layer {name!r} is deeper than this extractor, which stops at {list(self._index)[-1]}"
                )
            index[self._index[name]] = name
        last = max(index)
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        out: dict[str, torch.Tensor] = {}
        for i, module in enumerate(self.features):
            x = module(x)
            if i in index:
                out[index[i]] = x
            if i == last:
                break
        return {name: out[name] for name in wanted}

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch}, weights={self.weights_source}, pooling={self.pooling}, layers={self.layers}"
        )
