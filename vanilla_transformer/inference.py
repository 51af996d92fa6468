"""Opt-in fast CPU decoding: a compiled decode step on a static cache, weights in int8, bf16 or fp32.

Decoding on a CPU reads every decoder weight once per generated token, so at small batch sizes a
step is bound by memory bandwidth plus the per-step work around the matrix products (see
docs/performance.md). This module cuts both, and leaves the API alone:

    from vanilla_transformer.inference import optimize_for_cpu_inference

    fast = optimize_for_cpu_inference(model, mode="int8")  # a copy, in eval mode
    fast.generate(**batch)                                 # plain generate(): greedy, beam, ...

What `optimize_for_cpu_inference` changes:

- **Weights.** `"int8"`: every `nn.Linear` becomes an `Int8Linear`: int8 weights with one scale
  per output row, activations quantised per token on the fly, one int8 x int8 product per call
  (`torch._int_mm`, oneDNN's VNNI / AMX-INT8 kernels where the CPU has them): four times fewer
  weight bytes per step. Only on CPUs with those instructions (VNNI or AMX-INT8 flags): without
  them `_int_mm` is slower than float32, and the mode is refused with the engine to use instead
  (CTranslate2 int8). The swap goes through torchao's `quantize_` and its quantisation
  primitives, the route torch 2.13 names as the replacement of the deprecated
  `torch.ao.quantization.quantize_dynamic` (optional dependency:
  `pip install vanilla-transformer[cpu-inference]`). `"bf16"`: every weight in bfloat16, only where
  the CPU multiplies bf16 natively (AVX-512 BF16 or AMX, read from /proc/cpuinfo); elsewhere it is
  refused, never emulated. `"fp32"`: the weights as they are.
- **The decode step.** `generate()` keeps the decoder's keys and values in a static (preallocated)
  cache, and every decoding step after the first runs one `torch.compile`d graph (fullgraph: the
  decode path has no Python branch on tensor values, see tests/test_modeling_export.py): no
  per-step mask building, cache bookkeeping or Python dispatch through the layers. The first
  call for a new shape pays the compilation (about a minute on 2 cores); a second shape compiles
  a graph with dynamic sizes that serves the later ones. The first compiled step logs one line
  (`COMPILE_NOTICE`) so that the wait is not silent.

In fp32 the tokens are those of the plain model (tests/test_inference.py). The result is for
inference only: it cannot be trained, it cannot be saved with `save_pretrained` (keep the
original for that), and its weights and settings must not be changed afterwards (the compiled
step does not re-check them).

Kept apart from the modeling file (which is saved beside checkpoints as remote code) because it
transforms a loaded model rather than defining one, and is never needed to load weights.
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import types

import torch
from torch import nn

from vanilla_transformer.errors import UserError
from vanilla_transformer.hardware import cpu_features, cpu_flags, cpu_has_native_bf16

__all__ = [
    "CpuModeRefused",
    "Int8Linear",
    "cpu_features",
    "cpu_flags",
    "cpu_has_fast_int8",
    "cpu_has_native_bf16",
    "optimize_for_cpu_inference",
]

MODES = ("int8", "bf16", "fp32")
COMPILE_NOTICE = "compiling the fast CPU path (about 2 minutes, once per model and shape; later calls reuse it)..."
logger = logging.getLogger(__name__)
_compiled_models = itertools.count()


def optimize_for_cpu_inference(
    model: nn.Module, mode: str = "int8", compile: bool = True, inplace: bool = False
) -> nn.Module:
    """A copy of `model` (the model itself with `inplace=True`) in eval mode, prepared for fast CPU
    decoding through its ordinary `generate()`.

    Args:
        model: a `VanillaTransformerForConditionalGeneration`.
        mode: `"int8"` (int8 weights and dynamic int8 activations, `Int8Linear`), `"bf16"` (bfloat16
            weights; only on CPUs with native bf16, see `cpu_has_native_bf16`) or `"fp32"`.
        compile: compile the decode step (fullgraph) and decode on a static cache (every mode).
            `False` keeps the eager forward and the default cache
            (the quantised or cast weights only).
        inplace: modify `model` instead of a deep copy.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}.")
    _refuse_modes_slower_than_fp32_here(mode)
    target = model if inplace else copy.deepcopy(model)
    target.eval().requires_grad_(False)
    # int8: every Linear, the tied output projection included, becomes an Int8Linear holding its own
    # int8 copy of the weights; the embedding lookups keep the float32 matrix.
    if mode == "int8":
        _quantize_linear_int8(target)
    elif mode == "bf16":
        target.to(torch.bfloat16)
    if compile:
        _compile_decoding(target)
    return target


def cpu_has_fast_int8() -> bool:
    """Whether the CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX-INT8).
    Without them oneDNN's `torch._int_mm` is slower than float32: on an AVX2-only AMD Zen 3, beam 4
    at batch 8 took 8.3x as long as the default path (docs/performance.md)."""
    features = cpu_features()
    return features["vnni"] or features["amx_int8"]


class CpuModeRefused(UserError, ValueError):
    """A fast mode this CPU would run slower than the default path: a ValueError for library
    callers, a user error (one line, no traceback) in the tools' `--fast_cpu`."""


def _refuse_modes_slower_than_fp32_here(mode: str) -> None:
    """A fast mode is refused, with the reason and what to use instead, on a CPU (its flags read
    from /proc/cpuinfo) where it would be slower than the default path."""
    if mode == "int8" and not cpu_has_fast_int8():
        raise CpuModeRefused(
            "mode='int8' needs a CPU with int8 dot-product instructions (VNNI or AMX-INT8 flags in "
            "/proc/cpuinfo); without them torch's int8 matrix product is slower than float32 "
            "(beam search 8x slower on an AVX2-only CPU). Use mode='fp32' here, or CTranslate2 "
            "int8, which is fast on AVX2: vanilla-transformer-export MODEL OUT --format "
            "ctranslate2 --quantization int8 (vanilla_transformer.export.ctranslate2)."
        )
    if mode == "bf16" and not cpu_has_native_bf16():
        raise CpuModeRefused(
            "mode='bf16' needs a CPU that multiplies bf16 natively (AVX-512 BF16 or AMX flags in "
            "/proc/cpuinfo); this one would emulate it, slower than float32. Use mode='fp32', or "
            "mode='int8' where the CPU has VNNI."
        )


class Int8Linear(nn.Module):
    """`y = x W^T + b` with W stored in int8 and x quantised to int8 on the fly, one int8 x int8
    matrix product (`torch._int_mm`, oneDNN: VNNI / AMX-INT8 where the CPU has them) per call.

    Weights: symmetric, one scale per output row (torchao's `choose_qparams_affine` /
    `quantize_affine`), computed once. Activations: symmetric, one scale per row (token) of x,
    computed at every call: the scheme of the deprecated `quantize_dynamic` route. Everything is a
    plain tensor and an ordinary op, so the module runs eagerly without tensor-subclass dispatch and
    compiles to the same arithmetic (`tests/test_inference.py` checks compiled against eager).
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        from torchao.quantization.quant_primitives import (
            MappingType,
            choose_qparams_affine,
            quantize_affine,
        )

        weight = linear.weight.detach().float()  # (out, in)
        block = (1, weight.shape[1])  # one scale per output row
        scale, zero_point = choose_qparams_affine(
            weight, MappingType.SYMMETRIC, block, torch.int8, quant_min=-127, quant_max=127
        )
        qweight = quantize_affine(weight, block, scale, zero_point, torch.int8, -127, 127)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("qweight", qweight)  # (out, in) int8
        self.register_buffer("weight_scale", scale.reshape(1, -1).float())  # (1, out)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()  # (M, in)
        x_scale = rows.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / 127  # (M, 1)
        x_int8 = torch.round(rows / x_scale).to(torch.int8)
        y = torch._int_mm(x_int8, self.qweight.t())  # (M, out) int32, exact
        y = y.float() * (x_scale * self.weight_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def _quantize_linear_int8(model: nn.Module) -> None:
    """Swap every `nn.Linear` for an `Int8Linear`, through torchao's `quantize_` (the replacement
    torch 2.13 names for the deprecated `torch.ao.quantization.quantize_dynamic`)."""
    try:
        from torchao.quantization import quantize_
    except ImportError as error:
        raise ImportError(
            "mode='int8' quantises with torchao: pip install 'vanilla-transformer[cpu-inference]' "
            "(or pip install torchao)."
        ) from error
    config = _int8_decode_config()
    quantize_(model, config, filter_fn=lambda module, _name: isinstance(module, nn.Linear))


@functools.cache
def _int8_decode_config():
    """torchao's extension point: a config class and the handler `quantize_` calls per module.
    Defined on first use, because torchao is an optional dependency."""
    import dataclasses

    from torchao.core.config import AOBaseConfig
    from torchao.quantization import register_quantize_module_handler

    @dataclasses.dataclass
    class Int8DecodeConfig(AOBaseConfig):
        """int8 weights (per output row) and int8 activations (per token), as `Int8Linear`."""

    @register_quantize_module_handler(Int8DecodeConfig)
    def _to_int8_linear(module: nn.Linear, config: Int8DecodeConfig) -> Int8Linear:
        return Int8Linear(module)

    return Int8DecodeConfig()


def _compile_decoding(model: nn.Module) -> None:
    """Static cache + compiled decode step, the way transformers compiles its own decoding loop
    (the first step eager, every later one compiled) but for beam search too, which calls the
    model directly. The first step fills the cross-attention cache and runs once per call: eager.
    Every later step is one compiled graph, reused for every position; a new batch size or source
    length compiles once more, with those sizes dynamic from then on."""
    model.generation_config.cache_implementation = "static"
    eager_forward = model.forward

    def decode_step(*args, **kwargs):
        return eager_forward(*args, **kwargs)

    # Dynamo files compiled graphs, and its limit of 8 recompilations, under the code object of
    # the function it compiles: shared by every model, one function would let a few fast models
    # exhaust the limit for all. Each model gets its own copy of the code instead.
    code = decode_step.__code__.replace(co_name=f"decode_step_{next(_compiled_models)}")
    decode_step = types.FunctionType(code, decode_step.__globals__, closure=decode_step.__closure__)
    # `freezing` lets inductor treat the weights as constants: it prepacks the fp32 and bf16 ones
    # for oneDNN / MKL. (Not `max_autotune`: with it, torch 2.13 fetched a compiled graph holding
    # another model's prepacked weights from its on-disk cache, see docs/performance.md.)
    # Guards on the model's own attributes are dropped: evaluated at every step, they would only
    # guard weights and settings that this inference-only copy never changes (with torchao's int8
    # tensor subclass they cost about a millisecond per step). Guards on the inputs (shapes, the
    # cache) remain.
    options = {
        "freezing": True,
        "guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe,
    }
    compiled_step = torch.compile(decode_step, fullgraph=True, options=options)
    compiled_once = []  # says the notice once per model

    @functools.wraps(eager_forward)  # generate() reads the forward's signature
    def forward(*args, **kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        # `is_updated` is plain Python state: True once the cross-attention keys are cached.
        if getattr(cache, "is_updated", {}).get(0, False):
            if not compiled_once:  # the first compiled step compiles silently for minutes
                logger.warning(COMPILE_NOTICE)
                compiled_once.append(True)
            return compiled_step(*args, **kwargs)
        return eager_forward(*args, **kwargs)

    model.forward = forward
