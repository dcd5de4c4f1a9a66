"""Torch7 ``.t7`` files, read without Lua: the binary format of Lua Torch's ``torch.save``.

What a ``.t7`` file holds is one Lua value, written recursively. Every value starts with a 4-byte
type tag (little-endian integers, 8-byte longs and doubles, as Torch wrote them on 64-bit Linux):

- ``0`` nil, ``1`` number (a double), ``2`` string (int length + bytes), ``5`` boolean (an int);
- ``3`` table: an int *index*, then, the first time that index appears, an int count and that many
  key/value pairs; a later value with the same index is a reference to the same table (shared and
  even cyclic references are written once);
- ``4`` torch object: an index as for tables, then the class version (``"V 1"``; absent in old
  files) and class name as strings, then the object's payload: for tensors the number of dimensions,
  sizes, strides, 1-based storage offset (longs) and the storage (a torch object); for storages the
  element count and the raw elements; for every other class (``nn.SpatialConvolution``, ...) its
  fields as one table;
- ``6``, ``7``, ``8``: Lua functions (bytecode). Never loaded: a file that contains one is refused.

:func:`read_t7` returns the value as plain Python data: ``None``, ``float``, ``str``, ``bool``,
``dict`` (Lua tables, keys as read: ``1.0`` for the array part), :class:`torch.Tensor` (tensors and
storages of Double/Float/Cuda/Long/Int/Short/Char/Byte types; CUDA tensors were saved as their CPU
bytes) and :class:`TorchObject` (other classes: the class name and its fields). Anything else —
a function, an unknown storage type, a class whose payload is not a table, inconsistent sizes, a
truncated file — is a one-line :class:`~fastns.errors.ModelFileError` naming the file and the byte
offset. Nothing in the file is executed.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ModelFileError

NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN = 0, 1, 2, 3, 4, 5
#: Lua function tags: plain, legacy recursive and recursive function (bytecode + upvalues).
FUNCTIONS = (6, 7, 8)
#: Storage element types by the class name between ``torch.`` and ``Storage``/``Tensor``.
ELEMENT_TYPES: dict[str, np.dtype] = {
    "Double": np.dtype("<f8"),
    "Float": np.dtype("<f4"),
    "Cuda": np.dtype("<f4"),  # torch.CudaTensor: float32, written as CPU bytes
    "CudaDouble": np.dtype("<f8"),
    "Long": np.dtype("<i8"),
    "Int": np.dtype("<i4"),
    "Short": np.dtype("<i2"),
    "Char": np.dtype("i1"),
    "Byte": np.dtype("u1"),
}
#: More dimensions than any tensor of a network has: a larger count is a damaged file.
_MAX_DIMS = 16
#: Nesting deeper than this is not a network (and would exhaust Python's stack).
_MAX_DEPTH = 200


@dataclass
class TorchObject:
    """An instance of a Torch class other than tensors and storages: its name and its fields."""

    typename: str
    fields: dict[Any, Any] = field(default_factory=dict)
    version: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def __repr__(self) -> str:  # the fields may be large or cyclic
        return f"TorchObject({self.typename!r}, fields={sorted(map(str, self.fields))})"


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype.newbyteorder("="))).dtype


class _Reader:
    """One pass over the bytes of a file, with the index -> object memo of shared references."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.path = path
        self.memo: dict[int, Any] = {}
        self.depth = 0

    def fail(self, what: str, at: int | None = None) -> ModelFileError:
        return ModelFileError(
            f"{self.path}: not a readable Torch7 file ({what} at byte {self.pos if at is None else at})"
        )

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated: {n} more bytes expected, the file ends")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        return struct.unpack("<i", self.take(4))[0]

    def long(self) -> int:
        return struct.unpack("<q", self.take(8))[0]

    def string(self) -> str:
        at = self.pos
        n = self.int()
        if n < 0:
            raise self.fail(f"a string of negative length {n}", at)
        raw = bytes(self.take(n))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def value(self) -> Any:
        at = self.pos
        tag = self.int()
        if tag == NIL:
            return None
        if tag == NUMBER:
            return struct.unpack("<d", self.take(8))[0]
        if tag == STRING:
            return self.string()
        if tag == BOOLEAN:
            return self.int() != 0
        if tag in FUNCTIONS:
            raise ModelFileError(
                f"{self.path}: contains a Lua function (byte {at}); fastns reads tensors and plain data only, "
                "never code"
            )
        if tag not in (TABLE, TORCH):
            raise self.fail(f"unknown type tag {tag}", at)
        index = self.int()
        if index in self.memo:
            return self.memo[index]  # a reference to a value already read
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail(f"values nested more than {_MAX_DEPTH} deep", at)
        try:
            return self.table(index) if tag == TABLE else self.torch_object(index, at)
        finally:
            self.depth -= 1

    def table(self, index: int) -> dict[Any, Any]:
        table: dict[Any, Any] = {}
        self.memo[index] = table  # before the contents: a table may contain itself
        at = self.pos
        n = self.int()
        if n < 0:
            raise self.fail(f"a table of negative size {n}", at)
        for _ in range(n):
            key_at = self.pos
            key = self.value()
            if isinstance(key, (dict, TorchObject, torch.Tensor)) or key is None:
                raise self.fail(
                    f"a table key of type {type(key).__name__}, not a number, string or boolean", key_at
                )
            table[key] = self.value()
        return table

    def torch_object(self, index: int, at: int) -> Any:
        version_or_name = self.string()
        version = 0
        if version_or_name.startswith("V "):
            try:
                version = int(version_or_name[2:])
            except ValueError:
                raise self.fail(f"a class version {version_or_name!r}", at) from None
            name = self.string()
        else:
            name = version_or_name  # files written before classes had versions
        for suffix in ("Tensor", "Storage"):
            if name.startswith("torch.") and name.endswith(suffix):
                kind = name[len("torch.") : -len(suffix)]
                if kind not in ELEMENT_TYPES:
                    raise self.fail(f"an unsupported tensor type {name}", at)
                if suffix == "Storage":
                    storage = self.storage(ELEMENT_TYPES[kind])
                    self.memo[index] = storage
                    return storage
                tensor = self.tensor(name, ELEMENT_TYPES[kind])
                self.memo[index] = tensor
                return tensor
        obj = TorchObject(name, version=version)
        self.memo[index] = obj
        payload_at = self.pos
        fields = self.value()
        if not isinstance(fields, dict):
            raise self.fail(f"{name} whose payload is not a table of fields (unsupported class)", payload_at)
        obj.fields = fields
        return obj

    def storage(self, dtype: np.dtype) -> torch.Tensor:
        at = self.pos
        n = self.long()
        if n < 0 or n * dtype.itemsize > len(self.data) - self.pos:
            raise self.fail(f"a storage of {n} elements, more than the rest of the file holds", at)
        raw = self.take(n * dtype.itemsize)
        return torch.from_numpy(np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=True))

    def tensor(self, name: str, dtype: np.dtype) -> torch.Tensor:
        at = self.pos
        ndim = self.int()
        if not 0 <= ndim <= _MAX_DIMS:
            raise self.fail(f"a {name} of {ndim} dimensions", at)
        sizes = [self.long() for _ in range(ndim)]
        strides = [self.long() for _ in range(ndim)]
        offset = self.long() - 1  # Lua counts from 1
        storage_at = self.pos
        storage = self.value()
        if min(sizes, default=0) < 0 or min(strides, default=0) < 0 or offset < 0:
            raise self.fail(f"a {name} with negative sizes, strides or offset", at)
        if ndim == 0 or 0 in sizes:  # an empty tensor (Lua writes no storage for those)
            return torch.zeros(sizes if ndim else [0], dtype=_torch_dtype(dtype))
        if storage is None:
            raise self.fail(f"a {name} of size {tuple(sizes)} without a storage", at)
        if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
            raise self.fail(f"a {name} whose storage is not a storage", storage_at)
        if storage.dtype != _torch_dtype(dtype):
            raise self.fail(f"a {name} on a storage of another type ({storage.dtype})", storage_at)
        last = offset + sum((s - 1) * st for s, st in zip(sizes, strides, strict=True))
        if last >= storage.numel():
            raise self.fail(
                f"a {name} of size {tuple(sizes)} reaching element {last + 1} of a storage of {storage.numel()}",
                at,
            )
        if math.prod(sizes) > storage.numel():  # only repeated (stride-0) views could be: not a network's
            raise self.fail(
                f"a {name} of size {tuple(sizes)} larger than its storage of {storage.numel()}", at
            )
        return torch.as_strided(storage, sizes, strides, offset).clone()


def read_t7(path: str | os.PathLike) -> Any:
    """The Lua value in the Torch7 binary file ``path``, as plain Python data (module docstring).

    Raises:
        ModelFileError: missing, truncated, damaged, or holding anything but data (a Lua function).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"{path}: cannot be read ({e.strerror or e})") from None
    reader = _Reader(data, path)
    value = reader.value()
    if reader.pos != len(data):
        raise reader.fail(f"{len(data) - reader.pos} bytes after the end of the saved value")
    return value
