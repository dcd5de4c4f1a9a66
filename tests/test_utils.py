"""Small helpers: the bfloat16 rule behind every precision=auto, device names."""

from __future__ import annotations

import pytest
import torch

from fastns.errors import ConfigError
from fastns.utils import bf16_is_native, cpu_bf16_units, resolve_device


@pytest.mark.parametrize(
    "device, cpu_units, cuda_bf16, native",
    [
        ("cpu", "amx", False, True),  # Intel Sapphire Rapids and later
        ("cpu", "avx512_bf16", False, True),  # AMD Zen 4 and later, Intel Cooper Lake
        ("cpu", None, False, False),  # bf16 emulated: slower than fp32
        ("cuda", None, True, True),  # compute capability 8.0 and newer
        ("cuda", "amx", False, False),  # an older GPU: the CPU's units do not matter
        ("mps", "amx", True, False),
    ],
)
def test_bf16_only_where_the_device_computes_it_natively(device, cpu_units, cuda_bf16, native):
    assert bf16_is_native(device, cpu_units, cuda_bf16) is native


def test_cpu_units_follow_torchs_probes(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert cpu_bf16_units() == "avx512_bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert cpu_bf16_units() == "amx"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # a torch build without the probe
    assert cpu_bf16_units() is None


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device='toaster' is not a device"):
        resolve_device("toaster")
