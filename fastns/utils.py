"""Small helpers below every other module: device choice and bf16 capability, memory layout, atomic file writes,
list coercion."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` picks cuda > mps > cpu; an explicit device that is not available is an error."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA GPU is available; use device=cpu or device=auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ConfigError(f"device={name} but MPS is not available on this machine")
    return device


#: CPU units that compute bfloat16 natively, and torch's probe for each (private: it may move).
_CPU_BF16_PROBES = (("amx", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))


def cpu_bf16_units() -> str | None:
    """This CPU's native bfloat16 units: ``"amx"`` (Intel Sapphire Rapids and later),
    ``"avx512_bf16"`` (AMD Zen 4 and later, Intel Cooper Lake and later), or None.

    oneDNN runs bf16 convolutions on either faster than fp32 (benchmarks/README_stylize.md); on
    other CPUs bf16 is emulated and slower than fp32.
    """
    for name, probe in _CPU_BF16_PROBES:
        try:
            if getattr(torch.cpu, probe)():
                return name
        except Exception:  # the private probe moved or is missing in this torch build: assume not
            continue
    return None


def bf16_is_native(device_type: str, cpu_units: str | None, cuda_bf16: bool) -> bool:
    """The rule behind every ``precision=auto``: bfloat16 where the device computes it natively.

    Args:
        device_type: ``"cuda"``, ``"cpu"``, ``"mps"``...
        cpu_units: :func:`cpu_bf16_units` of the CPU (AMX or AVX-512 BF16), or None.
        cuda_bf16: whether the GPU has native bf16 (compute capability 8.0 and newer).
    """
    if device_type == "cuda":
        return cuda_bf16
    return device_type == "cpu" and cpu_units is not None


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (CUDA compute capability 8.0+, CPUs with AMX or AVX-512 BF16)."""
    cuda = (
        device.type == "cuda"
        and torch.cuda.is_available()
        and torch.cuda.is_bf16_supported(including_emulation=False)
    )
    return bf16_is_native(device.type, cpu_bf16_units() if device.type == "cpu" else None, cuda)


def memory_layout(x: torch.Tensor) -> torch.memory_format:
    """``x``'s layout, for a new tensor that should share it: ``channels_last`` for a dense
    channels-last 4-D tensor that is not also contiguous (one channel, or 1x1 maps, are both), else
    ``contiguous_format``. Pass the whole tensor: a slice of a channels-last one is neither."""
    channels_last = (
        x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    )
    return torch.channels_last if channels_last else torch.contiguous_format


def as_list(value: Any) -> list:
    """``None`` -> ``[]``, a scalar/string -> ``[value]``, a sequence (incl. ListConfig) -> list."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, int, float, os.PathLike)):
        return [value]
    return list(value)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

    Readers (and an interrupted run) never see a half-written file under the final name: on any
    error or interruption the temporary file is removed and an existing ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it becomes ``path``, all or nothing.

    ``path`` must be new or an empty folder (else a one-line :class:`ConfigError` naming it and
    ``what`` is written there, e.g. ``format=hub``). On any error or interruption the temporary
    folder is removed and nothing appears under ``path``.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"output={path} exists and is not an empty folder; choose a new folder for {what}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; e.g. a web server's user must read it
        if path.exists():
            path.rmdir()  # empty, checked above
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cpu_name() -> str:
    """The CPU's model name (every speed figure depends on it): /proc/cpuinfo's, else the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
