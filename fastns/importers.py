"""Networks from other projects' files, as fastns networks: pytorch/examples ``fast_neural_style``
and jcjohnson/fast-neural-style (Lua Torch, the paper's code).

:func:`load_network` opens any network file a user may pass as ``model=``: a fastns model file
(``.safetensors``), a training checkpoint (``.ckpt``), a pytorch/examples checkpoint (``.pth``,
``.pt``, ``.model``: its four released styles and everything people trained with that example), or
a jcjohnson/fast-neural-style Torch7 file (``.t7``, :func:`load_jcjohnson`).

pytorch/examples
----------------

pytorch/examples' network is Johnson et al.'s with instance normalisation and nearest x2 upsampling
followed by a convolution: the same layers as :class:`~fastns.transformer.TransformerNet`. What
differs, and how it is mapped exactly:

- it takes 0-255 images: the first convolution's weights are multiplied by 255;
- its output is in 0-255 units, clamped when saved: the last convolution's weights and bias are
  divided by 255 and the network's ``output`` is ``"clamp"`` (to [0, 1]);
- every convolution has a bias; before an instance norm a per-channel bias is subtracted again
  with the channel mean, so those biases are dropped without changing the output;
- files written by old PyTorch versions carry ``running_mean``/``running_var`` of the instance
  norms, which the network never used: dropped.

Files are read with ``torch.load(weights_only=True)``: tensors and plain data only, never code.

jcjohnson/fast-neural-style
---------------------------
Its two released families: ``models/eccv16/*.t7``, the paper's networks (``c9s1-32, d64, d128,
R128 x 5, u64, u32, c9s1-3`` with batch normalisation), and ``models/instance_norm/*.t7``, the
same layers at half width (16-32-64) with instance normalisation; and what its ``train.lua`` writes
with its defaults (``-padding_type reflect-start``, ``-preprocessing vgg``). Their layout is
expressed by :class:`~fastns.transformer.TransformerNet` options and the weights mapped exactly:

- ``padding="reflect-start"``: the 40-px ``nn.SpatialReflectionPadding`` at the start, zero-padded
  encoder and decoder convolutions, unpadded residual convolutions with ``nn.ShaveImage(2)`` on the
  identity; ``upsample="transpose"``: ``nn.SpatialFullConvolution`` (3x3, stride 2, adjustment 1);
- ``pixels="caffe"``: the network sees BGR 0-255 images minus the VGG mean and its output is
  deprocessed likewise (``preprocess.vgg``); ``output="tanh"``: ``nn.Tanh`` + ``nn.MulConstant(150)``;
  the result is clamped to [0, 1], as saving an image does;
- every convolution has a bias: before an instance norm it cancels and is dropped; before a batch
  norm (eval mode: its running statistics) it is folded into the running mean, and the file's
  ``eps`` into the running variance (``running_std`` of old ``nn`` versions, 1/sqrt(var + eps), too);
- ``nn.TotalVariation`` is a training loss with an identity forward: dropped.

The fast_neural_style.lua script's optional median filter (``-median_filter``) is not part of the
network and is not applied. Files are read by :mod:`fastns.torch7`: data only, never Lua code.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ModelFileError, first_line
from .modelfile import ModelInfo, load_checkpoint, load_model
from .torch7 import TorchObject, read_t7
from .transformer import START_PAD_PER_BLOCK, TransformerNet

#: File name endings read as pytorch/examples checkpoints.
EXAMPLES_SUFFIXES = (".pth", ".pt", ".model")
#: File name endings read as jcjohnson/fast-neural-style Torch7 networks.
TORCH7_SUFFIXES = (".t7",)
#: Every other project's file that ``scripts/export.py`` turns into a model file.
IMPORTED_SUFFIXES = (*EXAMPLES_SUFFIXES, *TORCH7_SUFFIXES)
#: pytorch/examples' layer name -> fastns's, per parameter; ``{i}`` a residual block.
_EXAMPLES_LAYERS = {
    "conv1.conv2d": "encoder.0.1",
    "in1": "encoder.0.2",
    "conv2.conv2d": "encoder.1.1",
    "in2": "encoder.1.2",
    "conv3.conv2d": "encoder.2.1",
    "in3": "encoder.2.2",
    "res{i}.conv1.conv2d": "residuals.{j}.body.0.1",
    "res{i}.in1": "residuals.{j}.body.0.2",
    "res{i}.conv2.conv2d": "residuals.{j}.body.1.1",
    "res{i}.in2": "residuals.{j}.body.1.2",
    "deconv1.conv2d": "decoder.0.2",
    "in4": "decoder.0.3",
    "deconv2.conv2d": "decoder.1.2",
    "in5": "decoder.1.3",
    "deconv3.conv2d": "decoder.2.1",
}
#: 0-255 pixels in and out of pytorch/examples' network.
_PIXEL_SCALE = 255.0


def load_network(path: str | os.PathLike) -> tuple[TransformerNet, ModelInfo]:
    """The network in ``path`` (eval mode, CPU) and its description, whatever supported file it is."""
    path = Path(path)
    if path.suffix == ".ckpt":
        return load_checkpoint(path)
    if path.suffix.lower() in EXAMPLES_SUFFIXES:
        return load_pytorch_examples(path)
    if path.suffix.lower() in TORCH7_SUFFIXES:
        return load_jcjohnson(path)
    return load_model(path)


def load_pytorch_examples(path: str | os.PathLike) -> tuple[TransformerNet, ModelInfo]:
    """A pytorch/examples ``fast_neural_style`` checkpoint as a fastns network (module docstring).

    Raises:
        ModelFileError: missing, unreadable, needing code to unpickle, or another network's weights.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code, a zip that is not a checkpoint, a foreign format
        raise ModelFileError(
            f"{path}: not a readable PyTorch checkpoint of tensors ({type(e).__name__}: {first_line(e)})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "conv1.conv2d.weight" not in state:
        raise ModelFileError(
            f"{path}: not a pytorch/examples fast_neural_style network (no conv1.conv2d.weight); "
            "fastns reads its own model files (.safetensors), training checkpoints (.ckpt) and those"
        )
    residuals = sorted({int(m.group(1)) for k in state if (m := re.match(r"res(\d+)\.", k))})
    width = state["conv1.conv2d.weight"].shape[0] / 32
    net = TransformerNet(width=width, num_residual=len(residuals), output="clamp")
    own = net.state_dict()
    weights = {}
    for theirs, ours in _EXAMPLES_LAYERS.items():
        blocks = enumerate(residuals) if "{i}" in theirs else [(0, 0)]
        for j, i in blocks:
            for param in ("weight", "bias"):
                key = f"{theirs.format(i=i)}.{param}"
                target = f"{ours.format(j=j)}.{param}"
                if target in own and key in state:
                    weights[target] = state[key].float()
    weights["encoder.0.1.weight"] = weights["encoder.0.1.weight"] * _PIXEL_SCALE
    weights["decoder.2.1.weight"] = weights["decoder.2.1.weight"] / _PIXEL_SCALE
    weights["decoder.2.1.bias"] = weights["decoder.2.1.bias"] / _PIXEL_SCALE
    missing = sorted(own.keys() - weights.keys())
    if missing:
        raise ModelFileError(
            f"{path}: a pytorch/examples network with unexpected layers (no weights for {missing[0]})"
        )
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise ModelFileError(f"{path}: the weights do not fit ({str(e).splitlines()[-1].strip()})") from None
    info = ModelInfo(
        model=dict(net.config),
        style={"name": path.stem},
        training={"imported_from": "pytorch/examples fast_neural_style", "file": path.name},
    )
    return net.eval(), info


# -- jcjohnson/fast-neural-style (Torch7) ---------------------------------------------------------

#: The nn classes of jcjohnson/fast-neural-style's networks (also under ``cudnn.``); any other is refused.
_T7_CLASSES = {
    "Sequential",
    "ConcatTable",
    "CAddTable",
    "Identity",
    "ShaveImage",
    "SpatialReflectionPadding",
    "SpatialConvolution",
    "SpatialConvolutionMM",
    "SpatialFullConvolution",
    "SpatialBatchNormalization",
    "InstanceNormalization",
    "ReLU",
    "Tanh",
    "MulConstant",
    "TotalVariation",
}
_T7_NORMS = {"InstanceNormalization": "instance", "SpatialBatchNormalization": "batch"}
_T7_CONVS = ("SpatialConvolution", "SpatialConvolutionMM")
#: The layers expected, in the paper's notation, for error messages.
_T7_ARCH = "pad40, c9s1-32, d64, d128, R128 x 5, u64, u32, c9s1-3, tanh (or at another width)"


@dataclass
class _T7Layer:
    """One layer of a Torch7 network: its class (no ``nn.`` prefix), fields and place in the file."""

    kind: str
    obj: TorchObject
    where: str
    body: list[_T7Layer] = field(default_factory=list)  # a residual block's convolution branch
    shave: int = 0  # a residual block's identity crop (nn.ShaveImage), px


def _t7_kind(path: Path, obj: Any, where: str) -> str:
    name = obj.typename if isinstance(obj, TorchObject) else type(obj).__name__
    for prefix in ("nn.", "cudnn."):
        if name.startswith(prefix) and name[len(prefix) :] in _T7_CLASSES:
            return name[len(prefix) :]
    raise ModelFileError(
        f"{path}: layer {where} is a {name}, which a jcjohnson/fast-neural-style network does not have; "
        "fastns imports those networks only"
    )


def _t7_children(path: Path, obj: TorchObject, where: str) -> list[tuple[Any, str]]:
    modules = obj.get("modules")
    if not isinstance(modules, dict) or set(modules) != {float(i) for i in range(1, len(modules) + 1)}:
        raise ModelFileError(f"{path}: layer {where} ({obj.typename}) has no list of modules")
    return [(modules[float(i)], f"{where}.modules[{i}]") for i in range(1, len(modules) + 1)]


def _t7_layers(path: Path, obj: Any, where: str) -> list[_T7Layer]:
    """The layers of ``obj`` in forward order: nested ``nn.Sequential`` flattened, and each
    ``ConcatTable{branch, ShaveImage|Identity}`` + ``CAddTable`` pair as one residual block."""
    kind = _t7_kind(path, obj, where)
    if kind != "Sequential":
        if kind in ("ConcatTable", "CAddTable"):
            raise ModelFileError(f"{path}: layer {where} ({obj.typename}) is not part of a residual block")
        return [_T7Layer(kind, obj, where)]
    children = _t7_children(path, obj, where)
    layers: list[_T7Layer] = []
    i = 0
    while i < len(children):
        child, at = children[i]
        if _t7_kind(path, child, at) != "ConcatTable":
            layers += _t7_layers(path, child, at)
            i += 1
            continue
        branches = _t7_children(path, child, at)
        kinds = [_t7_kind(path, b, w) for b, w in branches]
        ends = i + 1 < len(children) and _t7_kind(path, *children[i + 1]) == "CAddTable"
        identity = [j for j, k in enumerate(kinds) if k in ("ShaveImage", "Identity")]
        if len(branches) != 2 or len(identity) != 1 or not ends:
            raise ModelFileError(
                f"{path}: layer {at} is a ConcatTable that is not a residual block "
                "(a branch and ShaveImage or Identity, then CAddTable)"
            )
        shortcut, _ = branches[identity[0]]
        branch, branch_at = branches[1 - identity[0]]
        shave = _t7_int(path, shortcut, "size", at) if kinds[identity[0]] == "ShaveImage" else 0
        layers.append(_T7Layer("Residual", child, at, _t7_layers(path, branch, branch_at), shave))
        i += 2
    return layers


def _t7_int(path: Path, obj: TorchObject, key: str, where: str, default: int | None = None) -> int:
    value = obj.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != int(value):
        raise ModelFileError(f"{path}: layer {where} ({obj.typename}) has no integer {key} ({value!r})")
    return int(value)


def _t7_tensor(
    path: Path, obj: TorchObject, key: str, where: str, required: bool = True
) -> torch.Tensor | None:
    value = obj.get(key)
    if isinstance(value, torch.Tensor) and value.numel() > 0:
        return value.double()
    if required:
        raise ModelFileError(f"{path}: layer {where} ({obj.typename}) has no {key} tensor")
    return None


class _T7Network:
    """A Torch7 network checked, layer by layer, against the layout fastns can express.

    ``convs`` and ``norms`` collect the layers in forward order: the same order as the
    convolutions and norms of the :class:`TransformerNet` built from ``config``.
    """

    def __init__(self, path: Path, layers: list[_T7Layer]) -> None:
        self.path = path
        self.layers = layers
        self.i = 0
        self.convs: list[_T7Layer] = []
        self.norms: list[_T7Layer] = []
        self.norm_kind: str | None = None

    def fail(self, expected: str) -> ModelFileError:
        if self.i >= len(self.layers):
            found = "the network ends"
        else:
            layer = self.layers[self.i]
            found = f"layer {layer.where} is a {layer.obj.typename}"
        return ModelFileError(
            f"{self.path}: {found} where {expected} was expected; fastns imports jcjohnson/fast-neural-style "
            f"networks with -padding_type reflect-start ({_T7_ARCH})"
        )

    def peek(self) -> str | None:
        return self.layers[self.i].kind if self.i < len(self.layers) else None

    def take(self, kinds: tuple[str, ...], expected: str) -> _T7Layer:
        if self.peek() not in kinds:
            raise self.fail(expected)
        self.i += 1
        return self.layers[self.i - 1]

    def conv(self, kinds: tuple[str, ...], k: int, s: int, p: int, name: str, adj: int | None = None) -> None:
        layer = self.take(kinds, name)
        o, w = layer.obj, layer.where
        pad = (
            _t7_int(self.path, o, "padW", w, o.get("padding", 0)),
            _t7_int(self.path, o, "padH", w, o.get("padding", 0)),
        )
        got = [_t7_int(self.path, o, key, w) for key in ("kW", "kH", "dW", "dH")] + list(pad)
        want = [k, k, s, s, p, p]
        if adj is not None:
            got += [_t7_int(self.path, o, "adjW", w, 0), _t7_int(self.path, o, "adjH", w, 0)]
            want += [adj, adj]
        if got != want:
            raise ModelFileError(
                f"{self.path}: layer {w} ({o.typename}, {name}) has kernel, stride, padding{', adjustment' if adj else ''} "
                f"{got}, expected {want}"
            )
        self.convs.append(layer)

    def norm(self) -> None:
        layer = self.take(
            tuple(_T7_NORMS), "a normalisation (InstanceNormalization or SpatialBatchNormalization)"
        )
        kind = _T7_NORMS[layer.kind]
        if self.norm_kind not in (None, kind):
            raise ModelFileError(f"{self.path}: layer {layer.where} mixes batch and instance normalisation")
        self.norm_kind = kind
        self.norms.append(layer)

    def relu(self) -> None:
        layer = self.take(("ReLU",), "a ReLU")
        for key in ("threshold", "val"):
            if layer.obj.get(key, 0) != 0:
                raise ModelFileError(
                    f"{self.path}: layer {layer.where} is a ReLU with {key}={layer.obj.get(key)}"
                )

    def read(self) -> dict[str, Any]:
        """Walk the whole network; returns the :class:`TransformerNet` configuration it is."""
        start = self.take(
            ("SpatialReflectionPadding",), "the input's SpatialReflectionPadding (reflect-start)"
        )
        pads = {_t7_int(self.path, start.obj, k, start.where) for k in ("pad_l", "pad_r", "pad_t", "pad_b")}
        self.conv(_T7_CONVS, 9, 1, 4, "c9s1")
        self.norm()
        self.relu()
        for _ in range(2):
            self.conv(_T7_CONVS, 3, 2, 1, "d (3x3 stride-2 convolution)")
            self.norm()
            self.relu()
        blocks = 0
        while self.peek() == "Residual":
            block = self.layers[self.i]
            if block.shave != 2:
                raise ModelFileError(
                    f"{self.path}: layer {block.where} is a residual block whose identity is cropped by "
                    f"{block.shave} px, not 2 (only -padding_type reflect-start networks are supported)"
                )
            outer, self.layers, self.i = (self.layers, self.i), block.body, 0
            self.conv(_T7_CONVS, 3, 1, 0, "an unpadded 3x3 convolution")
            self.norm()
            self.relu()
            self.conv(_T7_CONVS, 3, 1, 0, "an unpadded 3x3 convolution")
            self.norm()
            if self.peek() is not None:
                raise self.fail("the end of the residual block")
            self.layers, self.i = outer[0], outer[1] + 1
            blocks += 1
        for _ in range(2):
            self.conv(("SpatialFullConvolution",), 3, 2, 1, "u (3x3 stride-2 full convolution)", adj=1)
            self.norm()
            self.relu()
        self.conv(_T7_CONVS, 9, 1, 4, "c9s1-3")
        self.take(("Tanh",), "the output's Tanh")
        scale = self.take(("MulConstant",), "the output's MulConstant").obj.get("constant_scalar")
        if self.peek() == "TotalVariation":  # a training loss, identity forward
            self.i += 1
        if self.peek() is not None:
            raise self.fail("the end of the network")
        if pads != {START_PAD_PER_BLOCK * blocks}:
            raise ModelFileError(
                f"{self.path}: the input is padded by {sorted(pads)} px, but {blocks} residual blocks "
                f"need {START_PAD_PER_BLOCK * blocks} px on every side"
            )
        if not isinstance(scale, float) or not scale > 0:
            raise ModelFileError(
                f"{self.path}: the output's MulConstant has no positive constant ({scale!r})"
            )
        channels = self.convs[0].obj.get("nOutputPlane")
        if not isinstance(channels, float) or channels < 1:
            raise ModelFileError(f"{self.path}: the first convolution has no nOutputPlane ({channels!r})")
        return {
            "width": channels / 32,
            "num_residual": blocks,
            "norm": self.norm_kind,
            "upsample": "transpose",
            "output": "tanh",
            "tanh_scale": scale,
            "padding": "reflect-start",
            "pixels": "caffe",
        }


def _t7_conv_weight(path: Path, layer: _T7Layer, shape: torch.Size) -> torch.Tensor:
    """A convolution's weight in PyTorch's layout (SpatialConvolutionMM stores it as a matrix)."""
    weight = _t7_tensor(path, layer.obj, "weight", layer.where)
    assert weight is not None
    if weight.shape != shape and weight.numel() == shape.numel() and layer.kind == "SpatialConvolutionMM":
        weight = weight.reshape(shape)
    if weight.shape != shape:
        raise ModelFileError(
            f"{path}: layer {layer.where} ({layer.obj.typename}) has weights of shape {tuple(weight.shape)}, "
            f"expected {tuple(shape)} for a network of this width"
        )
    return weight


def _t7_norm_params(
    path: Path, layer: _T7Layer, bias: torch.Tensor | None, target: nn.Module
) -> dict[str, torch.Tensor]:
    """The parameters (and running statistics) of ``target`` for the norm ``layer`` after a conv with ``bias``."""
    o, w = layer.obj, layer.where
    c = target.num_features
    eps = o.get("eps", 1e-5)
    if not isinstance(eps, float) or not eps >= 0:
        raise ModelFileError(f"{path}: layer {w} ({o.typename}) has no valid eps ({eps!r})")
    weight = _t7_tensor(path, o, "weight", w, required=False)
    beta = _t7_tensor(path, o, "bias", w, required=False)
    params = {
        "weight": torch.ones(c, dtype=torch.float64) if weight is None else weight,
        "bias": torch.zeros(c, dtype=torch.float64) if beta is None else beta,
    }
    if layer.kind == "InstanceNormalization":
        # The conv's bias is a per-channel constant, which the norm subtracts with the mean: dropped.
        if abs(eps - target.eps) > 1e-12:
            raise ModelFileError(
                f"{path}: layer {w} is an InstanceNormalization with eps={eps}, fastns's has {target.eps}"
            )
        return params
    mean = _t7_tensor(path, o, "running_mean", w)
    var = _t7_tensor(path, o, "running_var", w, required=False)
    if var is None:  # nn before 2016 stored running_std = 1 / sqrt(var + eps)
        std = _t7_tensor(path, o, "running_std", w)
        assert std is not None
        var = std.pow(-2) - eps
    assert mean is not None
    if bias is not None:
        mean = mean - bias  # norm(x + b) with mean m == norm(x) with mean m - b
    var = var + (eps - target.eps)  # the same var + eps with fastns's eps
    if not bool((var + target.eps > 0).all()):
        raise ModelFileError(f"{path}: layer {w} ({o.typename}) has a negative running variance")
    return {**params, "running_mean": mean, "running_var": var}


def load_jcjohnson(path: str | os.PathLike) -> tuple[TransformerNet, ModelInfo]:
    """A jcjohnson/fast-neural-style ``.t7`` network as a fastns network (module docstring).

    The file is a checkpoint of its ``train.lua`` (a table with ``model`` and ``opt``) or a bare
    network (``scripts/convert_network.lua``).

    Raises:
        ModelFileError: missing, truncated, not a Torch7 file, holding code, another network, or
            trained with ``-preprocessing resnet``; one line naming the file.
    """
    path = Path(path)
    value = read_t7(path)
    opt: dict[Any, Any] = {}
    if isinstance(value, dict) and isinstance(value.get("model"), TorchObject):
        model, opt = value["model"], value.get("opt") if isinstance(value.get("opt"), dict) else {}
    elif isinstance(value, TorchObject):
        model = value
    else:
        raise ModelFileError(
            f"{path}: a Torch7 file, but not a jcjohnson/fast-neural-style network (no model in it)"
        )
    preprocessing = opt.get("preprocessing", "vgg")
    if preprocessing != "vgg":
        raise ModelFileError(
            f"{path}: trained with -preprocessing {preprocessing}; fastns imports -preprocessing vgg networks"
        )
    walk = _T7Network(path, _t7_layers(path, model, "model"))
    try:
        net = TransformerNet(**walk.read())
    except ModelFileError:
        raise
    except Exception as e:  # a width the network cannot be built at
        raise ModelFileError(f"{path}: its layers do not make a fastns network ({first_line(e)})") from None
    ours = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    our_norms = [m for m in net.modules() if isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d))]
    assert len(ours) == len(walk.convs) and len(our_norms) == len(walk.norms)
    with torch.no_grad():
        for i, (layer, conv) in enumerate(zip(walk.convs, ours, strict=True)):
            conv.weight.copy_(_t7_conv_weight(path, layer, conv.weight.shape))
            bias = _t7_tensor(path, layer.obj, "bias", layer.where, required=False)
            if bias is not None and bias.shape != (
                conv.weight.shape[1 if isinstance(conv, nn.ConvTranspose2d) else 0],
            ):
                raise ModelFileError(f"{path}: layer {layer.where} has a bias of shape {tuple(bias.shape)}")
            if i < len(walk.norms):  # followed by its norm
                params = _t7_norm_params(path, walk.norms[i], bias, our_norms[i])
                for key, value in params.items():
                    target = getattr(our_norms[i], key)
                    if value.shape != target.shape:
                        raise ModelFileError(
                            f"{path}: layer {walk.norms[i].where} has {key} of shape {tuple(value.shape)}, "
                            f"expected {tuple(target.shape)}"
                        )
                    target.copy_(value)
            elif conv.bias is not None:
                conv.bias.copy_(bias if bias is not None else torch.zeros_like(conv.bias))
    scalars = {
        str(k): (int(v) if isinstance(v, float) and v.is_integer() else v)
        for k, v in opt.items()
        if isinstance(v, (str, float, bool))
    }
    info = ModelInfo(
        model=dict(net.config),
        style={"name": path.stem},
        training={"imported_from": "jcjohnson/fast-neural-style", "file": path.name, "opt": scalars},
    )
    return net.eval(), info
