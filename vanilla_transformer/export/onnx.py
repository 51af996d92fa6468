"""Export to ONNX (encoder, decoder, decoder with past), run by the ONNX Runtime engine.

Three graphs, the layout of Hugging Face optimum's seq2seq exports:

- `encoder.onnx`: (input_ids, attention_mask) -> encoder_hidden_states
- `decoder.onnx`: the first decoding step(s): (decoder_input_ids, encoder_hidden_states,
  encoder_attention_mask) -> logits and, per layer, the self-attention keys/values
  (`present.{i}.self.key` ...) and the cross-attention keys/values (`present.{i}.cross.key` ...)
- `decoder_with_past.onnx`: one token at a time: (decoder_input_ids, encoder_attention_mask,
  `past.{i}.self.key` / `.value`, `past.{i}.cross.key` / `.value`) -> logits and the grown
  self-attention keys/values; the cross-attention ones are computed once, by `decoder.onnx`.

Key/value tensors are (batch, heads, length, d_k). Export uses torch's `torch.export`-based ONNX
exporter (`torch.onnx.export(..., dynamo=True)`, the default and recommended route since torch
2.9; it needs `onnxscript`). The wrappers below call the model's submodules with keyword arguments
and build the key/value cache object themselves, so the graphs' inputs and outputs are plain
tensors. Every config exports, `attention_scaling="key_norm_sum"` included.
`quantize_onnx_int8(folder)` turns an export's matrix products into int8 (ONNX Runtime's dynamic
quantization), what the engine's `quantization="int8"` runs.

Usage::

    export_onnx(model, tokenizer, "onnx-model")  # three graphs, config and tokenizer
    # to translate, vanilla_transformer.engines.load_translator(model_folder, engine="onnxruntime")
    # exports on first use and drives the graphs with generate() (beam search included)
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

GRAPHS = ("encoder", "decoder", "decoder_with_past")
OPSET = 18


def _cache_keyword(decoder: nn.Module) -> str:
    """The decoder's cache argument: `cache` from transformers 5.24 on, `past_key_values` before."""
    parameters = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _flatten(cache: EncoderDecoderCache, num_layers: int, cross: bool) -> list[torch.Tensor]:
    tensors = []
    for i in range(num_layers):
        self_layer = cache.self_attention_cache.layers[i]
        tensors += [self_layer.keys, self_layer.values]
        if cross:
            cross_layer = cache.cross_attention_cache.layers[i]
            tensors += [cross_layer.keys, cross_layer.values]
    return tensors


class EncoderForOnnx(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class DecoderForOnnx(nn.Module):
    """First step: no past; returns logits, then self and cross keys/values of every layer."""

    def __init__(self, model):
        super().__init__()
        self.decoder = model.get_decoder()
        self.lm_head = model.lm_head
        self.num_layers = model.config.decoder_layers
        self.cache_keyword = _cache_keyword(self.decoder)

    def forward(self, decoder_input_ids, encoder_hidden_states, encoder_attention_mask):
        config = self.decoder.config
        cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
        return self.step(
            decoder_input_ids, encoder_hidden_states, encoder_attention_mask, cache, cross=True
        )

    def step(self, decoder_input_ids, encoder_hidden_states, encoder_attention_mask, cache, cross):
        """The logits of one decoder call through `cache`, then the cache's keys and values
        flattened (the cross-attention ones too if `cross`)."""
        hidden = self.decoder(
            input_ids=decoder_input_ids,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            use_cache=True,
            **{self.cache_keyword: cache},
        ).last_hidden_state
        return (self.lm_head(hidden), *_flatten(cache, self.num_layers, cross=cross))


class DecoderWithPastForOnnx(DecoderForOnnx):
    """Later steps: past self keys/values and the cross ones in; logits and the grown self
    keys/values out."""

    def forward(self, decoder_input_ids, encoder_attention_mask, *past):
        self_data = [(past[4 * i], past[4 * i + 1]) for i in range(self.num_layers)]
        cross_data = [(past[4 * i + 2], past[4 * i + 3]) for i in range(self.num_layers)]
        cache = EncoderDecoderCache(DynamicCache(self_data), DynamicCache(cross_data))
        # The encoder output itself is not needed once its keys/values are cached; the attention
        # mask helper reads only its batch size and length, which this zero-width view provides.
        B, S = encoder_attention_mask.shape
        encoder_shape = past[2].new_zeros(B, S, 0)
        return self.step(
            decoder_input_ids, encoder_shape, encoder_attention_mask, cache, cross=False
        )


def past_names(num_layers: int, prefix: str, cross: bool = True) -> list[str]:
    kinds = ("self", "cross") if cross else ("self",)
    return [
        f"{prefix}.{i}.{kind}.{tensor}"
        for i in range(num_layers)
        for kind in kinds
        for tensor in ("key", "value")
    ]


logger = logging.getLogger(__name__)

# Loggers whose INFO/WARNING notes flood an export (onnxscript's optimizer prints one line per
# rewrite, ~230 for a small model; torch's registration notes "torchvision is not installed").
# Raised to ERROR while exporting: real errors still show, and raise.
_NOISY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx._internal.exporter._registration")


@contextlib.contextmanager
def _quiet_exporter():
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notices from traced library code
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def _export(module, args, path, input_names, output_names, dynamic_shapes):
    logger.info("exporting %s", Path(path).name)
    with _quiet_exporter():
        program = torch.onnx.export(
            module,
            args,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    program.save(str(path))


def export_onnx(model, tokenizer, output_dir: str | os.PathLike) -> Path:
    """Write `encoder.onnx`, `decoder.onnx`, `decoder_with_past.onnx`, the model's
    `config.json`/`generation_config.json` and the tokenizer to `output_dir`. Returns it."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    config = model.config
    layers = config.decoder_layers
    batch, source = torch.export.Dim("batch"), torch.export.Dim("source")
    dyn = torch.export.Dim.DYNAMIC
    input_ids = torch.tensor([[5, 6, 7, 2], [8, 9, 2, config.pad_token_id]])
    attention_mask = (input_ids != config.pad_token_id).long()
    with torch.no_grad():
        _export(
            EncoderForOnnx(model),
            (input_ids, attention_mask),
            output_dir / "encoder.onnx",
            ["input_ids", "attention_mask"],
            ["encoder_hidden_states"],
            ({0: batch, 1: source}, {0: batch, 1: source}),
        )
        encoder_hidden_states = model.get_encoder()(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        # Two target positions: with one, torch.export would fix the length at 1 (it specialises
        # sizes 0 and 1) and take the single-query path that needs no causal mask.
        prefix = torch.tensor([[config.decoder_start_token_id, 5]] * 2)
        decoder = DecoderForOnnx(model)
        _export(
            decoder,
            (prefix, encoder_hidden_states, attention_mask),
            output_dir / "decoder.onnx",
            ["decoder_input_ids", "encoder_hidden_states", "encoder_attention_mask"],
            ["logits", *past_names(layers, "present")],
            ({0: batch, 1: dyn}, {0: batch, 1: source}, {0: batch, 1: source}),
        )
        logits, *present = decoder(prefix, encoder_hidden_states, attention_mask)
        next_ids = logits[:, -1:].argmax(-1)
        past_shapes = tuple({0: batch, 2: dyn if i % 4 < 2 else source} for i in range(4 * layers))
        _export(
            DecoderWithPastForOnnx(model),
            (next_ids, attention_mask, *present),
            output_dir / "decoder_with_past.onnx",
            ["decoder_input_ids", "encoder_attention_mask", *past_names(layers, "past")],
            ["logits", *past_names(layers, "present", cross=False)],
            ({0: batch}, {0: batch, 1: source}, past_shapes),  # *past: one nested entry
        )
    config.save_pretrained(output_dir)
    model.generation_config.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def quantize_onnx_int8(folder: Path) -> None:
    """Each graph's matrix products in int8 (ONNX Runtime's dynamic quantization: int8 weights
    with one scale per output channel, activations quantised per call), in place."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()  # quantize_dynamic advises a pre-processing pass, once per graph
    advice = _DropMessage("consider to run pre-processing before quantization")
    root.addFilter(advice)
    try:
        for graph in GRAPHS:
            _quantize_graph(folder, graph, quantize_dynamic, QuantType)
    finally:
        root.removeFilter(advice)


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _quantize_graph(folder: Path, graph: str, quantize_dynamic, QuantType) -> None:
    path, quantized = folder / f"{graph}.onnx", folder / f"{graph}.int8.onnx"
    quantize_dynamic(
        path,
        quantized,
        weight_type=QuantType.QInt8,
        per_channel=True,
        # 7-bit weights: without VNNI (AVX2 only) ONNX Runtime's u8s8 kernel adds pairs of products
        # in int16 (vpmaddubsw), which saturates with 8-bit weights. An export is used on whatever
        # CPU it is copied to, so always: on an AMD EPYC Zen 3 the toy model's greedy outputs equal
        # to float32 went from 17/24 to 22/24 (docs/deployment.md).
        reduce_range=True,
        op_types_to_quantize=["MatMul"],
    )
    os.replace(quantized, path)
