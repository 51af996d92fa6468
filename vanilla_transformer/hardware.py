"""One description of the hardware a run used, for logs, model cards and study results, and the
CPU features that decide which kernels run fast (read, never assumed: they differ between
machines)."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from pathlib import Path

import torch

__all__ = [
    "cpu_features",
    "cpu_features_line",
    "cpu_flags",
    "cpu_has_native_bf16",
    "cpu_name",
    "hardware_description",
]

# feature: (label, the /proc/cpuinfo flags, x86 names, any of which provides it)
_FEATURES = {
    "avx2": ("AVX2", ("avx2",)),
    "avx512": ("AVX-512", ("avx512f",)),
    "avx512_bf16": ("AVX-512 BF16", ("avx512_bf16",)),
    "vnni": ("VNNI", ("avx512_vnni", "avx_vnni")),
    "amx_bf16": ("AMX-BF16", ("amx_bf16",)),
    "amx_int8": ("AMX-INT8", ("amx_int8",)),
}


def _cpuinfo_field(name: str) -> str | None:
    """The value of the first `name : value` line of /proc/cpuinfo (None where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    return None


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. not Linux)."""
    return frozenset((_cpuinfo_field("flags") or "").split())


def cpu_features(flags: frozenset[str] | None = None) -> dict[str, bool]:
    """AVX2, AVX-512, AVX-512 BF16, VNNI (AVX-512 or AVX) and AMX (bf16 / int8) present or not."""
    flags = cpu_flags() if flags is None else flags
    return {name: any(f in flags for f in names) for name, (_, names) in _FEATURES.items()}


def cpu_features_line(flags: frozenset[str] | None = None) -> str:
    """`"AVX2 yes AVX-512 no ..."`, printed with every benchmark result."""
    present = cpu_features(flags)
    return " ".join(
        f"{label} {'yes' if present[k] else 'no'}" for k, (label, _) in _FEATURES.items()
    )


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX). Without it oneDNN emulates
    bf16 and a bf16 matmul is slower than a float32 one."""
    features = cpu_features(flags)
    return features["avx512_bf16"] or features["amx_bf16"]


def hardware_description(device: str | torch.device = "cpu", processes: int = 1) -> str:
    """`"2 x NVIDIA H200"` on CUDA, `"CPU: <model>, 16 cores, 1 process(es) x 2 threads"` else."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{processes} x {torch.cuda.get_device_name(device)}"
    return (
        f"CPU: {cpu_name()}, {os.cpu_count()} cores, {processes} process(es) x "
        f"{torch.get_num_threads()} threads"
    )
