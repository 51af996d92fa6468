"""Silence the known, harmless lines that optional extras log while transformers imports them, and
nothing else.

transformers imports torchao at import time when it is installed (the `test`, `cpu-inference` and
`benchmark` extras install it: `transformers.quantizers.quantizer_torchao` calls
`is_torchao_available()`, which imports it). torchao 0.18 then logs, through Python logging:

- `Failed to load .../torchao/_C_mxfp8.cpython-310-....so` and `.../_C_cutlass_90a.abi3.so`: CUDA
  kernels built for another Python or GPU, which this package never uses (its int8 path is
  `torch._int_mm`);
- through torch's `torch.utils._pytree` logger, `<enum 'KernelPreference'> is an Enum subclass and is
  now natively supported by torch.compile ...` (and `ScaleCalculationMode`): a deprecation in
  torchao's own registration code, not in ours.

Each filter drops exactly those messages; every other line of those loggers still shows.
"""

from __future__ import annotations

import logging
import re

__all__ = ["KNOWN_IMPORT_NOISE", "silence_known_import_noise"]

# logger name: the messages dropped from it
KNOWN_IMPORT_NOISE = {
    "torchao": re.compile(r"^Failed to load \S*/torchao/_C\S*\.so: "),
    "torch.utils._pytree": re.compile(
        r"^<enum '\w+'> is an Enum subclass and is now natively supported by torch\.compile"
    ),
}


class _DropKnownNoise(logging.Filter):
    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def silence_known_import_noise() -> None:
    """Install the filters (once; run on import, before transformers is imported)."""
    for name, pattern in KNOWN_IMPORT_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownNoise) for f in logger.filters):
            logger.addFilter(_DropKnownNoise(pattern))


silence_known_import_noise()
