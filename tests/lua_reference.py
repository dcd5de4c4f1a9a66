"""jcjohnson/fast-neural-style networks for the tests: a Torch7 writer and the Lua graph in plain torch.

:func:`build_model` follows ``fast_neural_style/models.lua`` (``build_model``) and ``train.lua``
layer by layer: the same nn classes, fields and order, each with a forward written from the Lua
module's definition (zero-padded ``SpatialConvolution``, ``SpatialFullConvolution`` with an
adjustment, ``ShaveImage``, ``InstanceNormalization`` as a per-image batch norm, eval-mode
``SpatialBatchNormalization``...), independently of fastns. :class:`T7Writer` writes any such
value as Lua Torch's ``torch.save`` does (binary, 64-bit little-endian), with its index memo, so
that the reader is tested on the real layout: shared storages, back-references, float and double
tensors, and what it must refuse (Lua functions).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

#: Caffe VGG mean, BGR, 0-255 (fast_neural_style/preprocess.lua).
VGG_MEAN_BGR = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)


# -- Torch7 writer --------------------------------------------------------------------------------


class Storage:
    """A torch storage to write: a flat tensor whose dtype picks Float or Double."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data.reshape(-1).contiguous()


class View:
    """A tensor as a view of a :class:`Storage` (sizes, strides, 0-based offset), as Lua Torch keeps
    parameters after ``getParameters()``."""

    def __init__(self, storage: Storage, size: tuple[int, ...], offset: int) -> None:
        self.storage, self.size, self.offset = storage, tuple(size), offset
        self.stride = tuple(int(torch.tensor(size[i + 1 :]).prod()) for i in range(len(size)))


class LuaObject:
    """An instance of a Torch class (``nn.SpatialConvolution``...): written as its fields' table."""

    def __init__(self, typename: str, fields: dict[str, Any]) -> None:
        self.typename, self.fields = typename, fields


class LuaFunction:
    """A Lua function (bytecode + upvalues), to check that it is refused."""

    def __init__(self, bytecode: bytes = b"\x1bLuaJ\x01fake bytecode") -> None:
        self.bytecode = bytecode


_TYPES = {torch.float32: "Float", torch.float64: "Double", torch.int64: "Long"}


class T7Writer:
    """``torch.save`` in binary mode: type tags, the index memo of tables and torch objects."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.memo: dict[int, int] = {}  # id(object) -> index
        self.keep: list[Any] = []  # objects whose ids are in the memo

    def write(self, path: Path, value: Any) -> Path:
        self.value(value)
        Path(path).write_bytes(bytes(self.out))
        return Path(path)

    def int(self, v: int) -> None:
        self.out += struct.pack("<i", v)

    def long(self, v: int) -> None:
        self.out += struct.pack("<q", v)

    def string(self, s: str | bytes) -> None:
        raw = s.encode() if isinstance(s, str) else s
        self.int(len(raw))
        self.out += raw

    def indexed(self, tag: int, obj: Any) -> bool:
        """Tag and index; True if the object was already written (only the index, a reference)."""
        self.int(tag)
        if id(obj) in self.memo:
            self.int(self.memo[id(obj)])
            return True
        self.memo[id(obj)] = len(self.memo) + 1
        self.keep.append(obj)
        self.int(self.memo[id(obj)])
        return False

    def torch_class(self, name: str) -> None:
        self.string("V 1")
        self.string(name)

    def value(self, v: Any) -> None:
        if v is None:
            self.int(0)
        elif isinstance(v, bool):
            self.int(5)
            self.int(int(v))
        elif isinstance(v, (int, float)):
            self.int(1)
            self.out += struct.pack("<d", float(v))
        elif isinstance(v, str):
            self.int(2)
            self.string(v)
        elif isinstance(v, (dict, list)):
            if not self.indexed(3, v):
                items = v.items() if isinstance(v, dict) else ((i + 1, x) for i, x in enumerate(v))
                items = list(items)
                self.int(len(items))
                for key, x in items:
                    self.value(key)
                    self.value(x)
        elif isinstance(v, LuaFunction):
            if not self.indexed(8, v):
                self.string(v.bytecode)
                self.value({})  # upvalues
        elif isinstance(v, LuaObject):
            if not self.indexed(4, v):
                self.torch_class(v.typename)
                self.value(dict(v.fields))  # a new table, as File.lua writes it
        elif isinstance(v, Storage):
            if not self.indexed(4, v):
                self.torch_class(f"torch.{_TYPES[v.data.dtype]}Storage")
                self.long(v.data.numel())
                self.out += v.data.numpy().astype(v.data.numpy().dtype.newbyteorder("<")).tobytes()
        elif isinstance(v, torch.Tensor):
            if not self.indexed(4, v):
                self.torch_class(f"torch.{_TYPES[v.dtype]}Tensor")
                if v.numel() == 0:  # an empty tensor: no dimensions, no storage
                    self.int(0)
                    self.long(1)
                    self.value(None)
                    return
                self.tensor_header(v.shape, [int(s) for s in v.contiguous().stride()], 0)
                self.value(Storage(v))
        elif isinstance(v, View):
            if not self.indexed(4, v):
                self.torch_class(f"torch.{_TYPES[v.storage.data.dtype]}Tensor")
                self.tensor_header(v.size, v.stride, v.offset)
                self.value(v.storage)
        else:
            raise TypeError(type(v))

    def tensor_header(self, size, stride, offset: int) -> None:
        self.int(len(size))
        for s in size:
            self.long(int(s))
        for s in stride:
            self.long(int(s))
        self.long(offset + 1)  # 1-based


# -- the Lua network in plain torch ----------------------------------------------------------------


class Module:
    """An nn module: its Torch class, its fields (as written) and its forward."""

    typename = "nn.Module"

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {"train": False, "output": torch.zeros(0), "gradInput": torch.zeros(0)}

    def params(self) -> dict[str, torch.Tensor]:
        return {}

    def forward(self, x):
        raise NotImplementedError


class Sequential(Module):
    typename = "nn.Sequential"

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        self.fields["modules"] = list(modules)

    @property
    def modules(self) -> list[Module]:
        return self.fields["modules"]

    def add(self, m: Module) -> Sequential:
        self.modules.append(m)
        return self

    def forward(self, x):
        for m in self.modules:
            x = m.forward(x)
        return x


class ConcatTable(Sequential):
    typename = "nn.ConcatTable"

    def forward(self, x):
        return [m.forward(x) for m in self.modules]


class CAddTable(Module):
    typename = "nn.CAddTable"

    def forward(self, xs):
        return xs[0] + xs[1]


class Identity(Module):
    typename = "nn.Identity"

    def forward(self, x):
        return x


class ShaveImage(Module):
    """fast_neural_style/ShaveImage.lua: crop ``size`` px from every side."""

    typename = "nn.ShaveImage"

    def __init__(self, size: int) -> None:
        super().__init__()
        self.fields["size"] = size

    def forward(self, x):
        s = self.fields["size"]
        return x[..., s : x.shape[-2] - s, s : x.shape[-1] - s]


class SpatialReflectionPadding(Module):
    typename = "nn.SpatialReflectionPadding"

    def __init__(self, left: int, right: int, top: int, bottom: int) -> None:
        super().__init__()
        self.fields.update(pad_l=left, pad_r=right, pad_t=top, pad_b=bottom)

    def forward(self, x):
        f = self.fields
        return F.pad(x, (f["pad_l"], f["pad_r"], f["pad_t"], f["pad_b"]), mode="reflect")


class SpatialConvolution(Module):
    """Zero-padded convolution: weight (nOut, nIn, kH, kW), bias (nOut)."""

    typename = "nn.SpatialConvolution"

    def __init__(self, n_in: int, n_out: int, k: int, s: int, p: int, gain: float = 1.0) -> None:
        super().__init__()
        self.fields.update(nInputPlane=n_in, nOutputPlane=n_out, kW=k, kH=k, dW=s, dH=s, padW=p, padH=p)
        self.fields["weight"] = (
            torch.randn(n_out, n_in, k, k, dtype=torch.float64) * gain / (n_in * k * k) ** 0.5
        )
        self.fields["bias"] = torch.randn(n_out, dtype=torch.float64) * 0.1
        self.fields["gradWeight"] = torch.zeros(0)
        self.fields["gradBias"] = torch.zeros(0)
        self.fields["finput"] = torch.zeros(0)

    def params(self):
        return {"weight": self.fields["weight"], "bias": self.fields["bias"]}

    def forward(self, x):
        f = self.fields
        return F.conv2d(x, f["weight"], f["bias"], stride=f["dW"], padding=f["padW"])


class SpatialFullConvolution(SpatialConvolution):
    """Transposed convolution: weight (nIn, nOut, kH, kW); output (in - 1) * s - 2p + k + adj."""

    typename = "nn.SpatialFullConvolution"

    def __init__(self, n_in: int, n_out: int, k: int, s: int, p: int, adj: int) -> None:
        super().__init__(n_in, n_out, k, s, p)
        self.fields.update(adjW=adj, adjH=adj)
        self.fields["weight"] = (
            torch.randn(n_in, n_out, k, k, dtype=torch.float64) / (n_in * k * k / 4) ** 0.5
        )

    def forward(self, x):
        f = self.fields
        return F.conv_transpose2d(
            x, f["weight"], f["bias"], stride=f["dW"], padding=f["padW"], output_padding=f["adjW"]
        )


class SpatialBatchNormalization(Module):
    """Eval mode: the running statistics. ``legacy``: nn before 2016, ``running_std`` = 1/sqrt(var + eps)."""

    typename = "nn.SpatialBatchNormalization"

    def __init__(self, n: int, eps: float = 1e-5, legacy: bool = False) -> None:
        super().__init__()
        var = torch.rand(n, dtype=torch.float64) * 2 + 0.5
        self.fields.update(eps=eps, momentum=0.1, affine=True)
        self.fields["weight"] = 1 + 0.2 * torch.randn(n, dtype=torch.float64)
        self.fields["bias"] = 0.2 * torch.randn(n, dtype=torch.float64)
        self.fields["running_mean"] = 0.3 * torch.randn(n, dtype=torch.float64)
        if legacy:
            self.fields["running_std"] = (var + eps).rsqrt()
        else:
            self.fields["running_var"] = var

    def params(self):
        keys = ("weight", "bias", "running_mean", "running_var", "running_std")
        return {k: self.fields[k] for k in keys if k in self.fields}

    #: Set by :func:`calibrate`: the next forward sets the running statistics from its input.
    calibrating = False

    def forward(self, x):
        f = self.fields
        if self.calibrating:  # statistics like a trained network's: near the batch's own
            var, mean = torch.var_mean(x, dim=(0, 2, 3))
            f["running_mean"] = mean + 0.1 * var.sqrt() * torch.randn_like(mean)
            var = var * (0.8 + 0.4 * torch.rand_like(var))
            if "running_std" in f:
                f["running_std"] = (var + f["eps"]).rsqrt()
            else:
                f["running_var"] = var
        inv = f["running_std"] if "running_std" in f else (f["running_var"] + f["eps"]).rsqrt()
        shape = (1, -1, 1, 1)
        return (x - f["running_mean"].view(shape)) * (inv * f["weight"]).view(shape) + f["bias"].view(shape)


class InstanceNormalization(Module):
    """fast_neural_style/InstanceNormalization.lua: a training-mode batch norm over each image's channels."""

    typename = "nn.InstanceNormalization"

    def __init__(self, n: int) -> None:
        super().__init__()
        self.fields.update(eps=1e-5, nOutput=n, prev_N=-1)
        self.fields["weight"] = 1 + 0.3 * torch.randn(n, dtype=torch.float64)
        self.fields["bias"] = 0.3 * torch.randn(n, dtype=torch.float64)
        self.fields["gradWeight"] = torch.zeros(0)
        self.fields["gradBias"] = torch.zeros(0)

    def params(self):
        return {"weight": self.fields["weight"], "bias": self.fields["bias"]}

    def forward(self, x):
        f = self.fields
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)  # biased, as batch norm in training
        shape = (1, -1, 1, 1)
        return (x - mean) / (var + f["eps"]).sqrt() * f["weight"].view(shape) + f["bias"].view(shape)


class ReLU(Module):
    typename = "nn.ReLU"

    def __init__(self) -> None:
        super().__init__()
        self.fields.update(threshold=0, val=0, inplace=True)

    def forward(self, x):
        return x.clamp_min(0)


class Tanh(Module):
    typename = "nn.Tanh"

    def forward(self, x):
        return torch.tanh(x)


class MulConstant(Module):
    typename = "nn.MulConstant"

    def __init__(self, c: float) -> None:
        super().__init__()
        self.fields.update(constant_scalar=c, inplace=False)

    def forward(self, x):
        return x * self.fields["constant_scalar"]


class TotalVariation(Module):
    """A training loss: identity forward."""

    typename = "nn.TotalVariation"

    def __init__(self, strength: float) -> None:
        super().__init__()
        self.fields.update(strength=strength, x_diff=torch.zeros(0), y_diff=torch.zeros(0))

    def forward(self, x):
        return x


def _norm(n: int, instance: bool, **bn: Any) -> Module:
    return InstanceNormalization(n) if instance else SpatialBatchNormalization(n, **bn)


def build_model(arch: str, instance_norm: bool, tanh_constant: float = 150.0, **bn: Any) -> Sequential:
    """models.lua's ``build_model`` with ``padding_type = 'reflect-start'``, plus the 40-px
    reflection padding that train.lua inserts at the start; ``bn``: batch-norm options."""
    model = Sequential()
    prev = 3
    specs = arch.split(",")
    blocks = 0
    for i, v in enumerate(specs):
        last = i == len(specs) - 1
        needs_norm = needs_relu = True
        if v[0] == "c":  # c9s1-32: zero-padded convolution
            f, s, nxt = int(v[1]), int(v[3]), int(v[5:])
            layer = SpatialConvolution(prev, nxt, f, s, (f - 1) // 2, gain=0.3 if last else 1.0)
        elif v[0] == "d":  # d64: 3x3 stride-2 convolution, padding 1
            nxt = int(v[1:])
            layer = SpatialConvolution(prev, nxt, 3, 2, 1)
        elif v[0] == "u":  # u32: learned x2 upsampling
            nxt = int(v[1:])
            layer = SpatialFullConvolution(prev, nxt, 3, 2, 1, 1)
        elif v[0] == "R":  # residual block: unpadded convolutions, identity shaved by 2 px
            nxt = int(v[1:])
            body = Sequential(
                SpatialConvolution(nxt, nxt, 3, 1, 0),
                _norm(nxt, instance_norm, **bn),
                ReLU(),
                SpatialConvolution(nxt, nxt, 3, 1, 0),
                _norm(nxt, instance_norm, **bn),
            )
            layer = Sequential(ConcatTable(body, ShaveImage(2)), CAddTable())
            needs_norm = needs_relu = False
            blocks += 1
        else:
            raise ValueError(v)
        model.add(layer)
        if last:
            needs_norm = needs_relu = False
        if needs_norm:
            model.add(_norm(nxt, instance_norm, **bn))
        if needs_relu:
            model.add(ReLU())
        prev = nxt
    model.add(Tanh()).add(MulConstant(tanh_constant)).add(TotalVariation(1e-6))
    pad = 8 * blocks  # train.lua: inserted so that the output has the input's size
    model.modules.insert(0, SpatialReflectionPadding(pad, pad, pad, pad))
    return model


#: The two released families (README: models/instance_norm and models/eccv16).
INSTANCE_NORM_ARCH = "c9s1-16,d32,d64,R64,R64,R64,R64,R64,u32,u16,c9s1-3"
ECCV16_ARCH = "c9s1-32,d64,d128,R128,R128,R128,R128,R128,u64,u32,c9s1-3"


def stylize(model: Sequential, images: torch.Tensor) -> torch.Tensor:
    """fast_neural_style.lua on RGB [0, 1] images: preprocess.vgg, the network, deprocess, clamp
    (as image.save does). The output has the network's own size (the input's, rounded up to 4)."""
    x = images.double().flip(1) * 255 - VGG_MEAN_BGR.double()
    y = model.forward(x)
    return ((y + VGG_MEAN_BGR.double()).flip(1) / 255).clamp(0, 1)


def modules(model: Module) -> list[Module]:
    """``model`` and all modules inside it, in forward order."""
    found = [model]
    for child in model.fields.get("modules", []):
        found += modules(child)
    return found


def calibrate(model: Module, images: torch.Tensor) -> Module:
    """Give the batch norms running statistics near those of ``images`` (B, 3, H, W) in [0, 1], as
    training would: random ones would blow the activations up or flatten them."""
    SpatialBatchNormalization.calibrating = True
    try:
        stylize(model, images)
    finally:
        SpatialBatchNormalization.calibrating = False
    return model


def round_to(model: Module, dtype: torch.dtype) -> Module:
    """Round the parameters to ``dtype`` (what the file will hold), kept in float64 for the forward."""
    for m in modules(model):
        for key, value in m.params().items():
            m.fields[key] = value.to(dtype).double()
    return model


def to_lua(model: Module, dtype: torch.dtype, shared: bool = False) -> LuaObject:
    """The network as Lua values with tensors of ``dtype``. ``shared``: every parameter a view of
    one storage, as after Lua's ``model:getParameters()`` (so the storage is written once and
    referenced by index from then on)."""
    views: dict[int, View] = {}
    if shared:
        params = [v for m in modules(model) for v in m.params().values()]
        storage = Storage(torch.cat([v.reshape(-1) for v in params]).to(dtype))
        offset = 0
        for v in params:
            views[id(v)] = View(storage, tuple(v.shape), offset)
            offset += v.numel()

    def convert(v: Any) -> Any:
        if isinstance(v, Module):
            return LuaObject(v.typename, {k: convert(x) for k, x in v.fields.items()})
        if isinstance(v, list):
            return [convert(x) for x in v]
        if isinstance(v, torch.Tensor):
            return views.get(id(v)) or v.to(dtype)
        return v

    return convert(model)


def checkpoint(model: LuaObject, opt: dict[str, Any]) -> dict[str, Any]:
    """What train.lua saves: the model, its options and loss histories (the options twice: a
    back-reference)."""
    return {
        "model": model,
        "opt": opt,
        "train_loss_history": [float(i) for i in range(20)],
        "options_again": opt,
    }
