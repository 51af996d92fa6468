"""One description of the hardware a run used, for logs, model cards and study results."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

__all__ = ["cpu_name", "hardware_description"]


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return name


def hardware_description(device: str | torch.device = "cpu", processes: int = 1) -> str:
    """`"2 x NVIDIA H200"` on CUDA, `"CPU: <model>, 16 cores, 1 process(es) x 2 threads"` else."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{processes} x {torch.cuda.get_device_name(device)}"
    return (
        f"CPU: {cpu_name()}, {os.cpu_count()} cores, {processes} process(es) x "
        f"{torch.get_num_threads()} threads"
    )
