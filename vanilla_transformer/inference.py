"""Opt-in fast CPU inference: int8 dynamic quantisation or bfloat16 weights.

Decoding on a CPU reads every decoder weight once per generated token, so at small batch sizes it
is bound by memory bandwidth, not arithmetic (see docs/performance.md). Storing the linear layers'
weights in int8 reads four times fewer bytes; bfloat16 reads half as many, but is only fast where
the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX; elsewhere oneDNN emulates it and
it is slower than float32).

Usage::

    from vanilla_transformer.inference import optimize_for_cpu_inference

    model = optimize_for_cpu_inference(model, mode="int8")  # a quantised copy, in eval mode
    model.generate(**batch)

Kept apart from the modeling file (which is saved beside checkpoints as remote code) because it
transforms a loaded model rather than defining one, and is never needed to load weights.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

MODES = ("int8", "fp32", "bf16")


def cpu_supports_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def optimize_for_cpu_inference(
    model: nn.Module, mode: str = "int8", inplace: bool = False
) -> nn.Module:
    """A copy of `model` (or the model itself with `inplace=True`) in eval mode, prepared for fast
    CPU decoding.

    Args:
        model: a `VanillaTransformerForConditionalGeneration` (any torch module works).
        mode: `"int8"`: `torch.ao.quantization.quantize_dynamic` on every `nn.Linear`, weights
            stored as int8 with one scale per output channel, activations quantised on the fly
            (fbgemm's AVX2 / AVX-512 VNNI kernels). The embeddings stay float32; the tied output
            projection gets its own int8 copy of them.
            `"fp32"`: float32 weights, same values, stored column-major (see below).
            `"bf16"`: all weights cast to bfloat16 (worth it only where `cpu_supports_bf16()`).
        inplace: modify `model` instead of a deep copy.

    The result is for inference only: it cannot be trained, and `save_pretrained` of an int8 model
    does not produce a checkpoint this package can load (keep the float32 one).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    if mode == "fp32":
        return _column_major_linear_weights(target)
    if mode == "bf16":
        if not cpu_supports_bf16():
            warnings.warn(
                "This CPU has no native bf16 matrix instructions (AVX-512 BF16 / AMX): bf16 "
                "matmuls are emulated and slower than float32. Use mode='int8'.",
                stacklevel=2,
            )
        return target.to(torch.bfloat16)
    with warnings.catch_warnings():
        # torch deprecates the quantised tensor types in favour of torchao; the kernels still ship.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.backends.quantized.engine = _quantized_engine()
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        return torch.ao.quantization.quantize_dynamic(
            target, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True
        )


def _quantized_engine() -> str:
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm", "onednn", "qnnpack"):
        if engine in engines:
            return engine
    return torch.backends.quantized.engine


def _column_major_linear_weights(model: nn.Module) -> nn.Module:
    """Store every `nn.Linear` weight (out, in) column-major, i.e. as the transposed matrix.

    Why it pays: at batch 1 a decoding step multiplies one row vector by each weight. With the
    usual row-major (out, in) storage MKL computes x W^T as one dot product per output (a GEMV
    that streamed weights at about 10 GB/s on our 2-core EPYC); with (in, out) storage it adds
    scaled rows of W^T, a pure stream that reached the machine's read bandwidth, about 16 GB/s.
    Values are unchanged. The tied output projection gets its own copy, so that the embedding
    lookups keep reading contiguous rows (+ vocab x d_model floats). Such a model cannot be saved
    with `save_pretrained` (safetensors wants contiguous tensors): keep the original for that.
    """
    head = getattr(model, "lm_head", None)
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if head is not None and embeddings is not None and head.weight is embeddings.weight:
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            weight = module.weight.detach().t().contiguous().t()  # (out, in), strides (1, out)
            module.weight = nn.Parameter(weight, requires_grad=False)
    return model
