"""The ONNX Runtime engine: transformers' own `generate()` over the exported graphs.

`OnnxSeq2SeqLM` is a `PreTrainedModel` + `GenerationMixin` facade over the three ONNX Runtime
sessions of an `export.onnx.export_onnx` folder (encoder, decoder, decoder with past), as optimum's
`ORTModelForSeq2SeqLM` is (optimum-onnx itself requires transformers < 4.58 and cannot load this v5
model). `generate()` therefore decodes as it does for the PyTorch model, with every strategy it has
(beam search with length penalty, greedy, sampling, n-best, prefixes): its `forward` runs
`decoder.onnx` on the first step and `decoder_with_past.onnx` after it, keeping the keys and values
in the `EncoderDecoderCache` the installed transformers creates and passes (`cache`, the name since
5.24; `past_key_values` before), so beam search reorders them itself (`_reorder_cache`: the
self-attention part only, the cross-attention keys are equal across a sentence's beams).

`OnnxTranslator` is the engine: a `GenerateTranslator` over the facade and the tokenizer, decoding
through `translation.translate_lines` exactly like the PyTorch engine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from .. import translation
from ..configuration_vanilla_transformer import VanillaTransformerConfig
from ..export.onnx import GRAPHS, past_names
from ..modeling_vanilla_transformer import CACHE_OUTPUT_FIELD, MAX_OUTPUT_LENGTH_OFFSET
from .torch_engine import GenerateTranslator


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy())


class OnnxEncoder(nn.Module):
    """`encoder.onnx` as the encoder `generate()` calls (`get_encoder()`)."""

    main_input_name = "input_ids"

    def __init__(self, session):
        super().__init__()
        self.session = session

    def forward(self, input_ids, attention_mask=None, **kwargs) -> BaseModelOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        (hidden,) = self.session.run(
            None, {"input_ids": _numpy(input_ids), "attention_mask": _numpy(attention_mask)}
        )
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))


class OnnxSeq2SeqLM(PreTrainedModel, GenerationMixin):
    """The exported model as a generating model: `generate()` as on the PyTorch model, including
    its default output limit (the longest source in the batch + 50 tokens, Section 6.1)."""

    config_class = VanillaTransformerConfig
    main_input_name = "input_ids"
    base_model_prefix = "onnx"

    def __init__(self, config: VanillaTransformerConfig, sessions: dict, generation_config=None):
        super().__init__(config)
        self.sessions = sessions
        self.encoder = OnnxEncoder(sessions["encoder"])
        self.layers = config.decoder_layers
        # The model's device and dtype for code that reads them from its parameters
        # (`generate()`, `translation.translate_lines`): CPU, float32. It holds no weights.
        self.device_marker = nn.Parameter(torch.empty(0), requires_grad=False)
        if generation_config is not None:
            self.generation_config = generation_config

    def get_encoder(self, modality: str | None = None):
        return self.encoder

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        decoder_input_ids=None,
        encoder_outputs=None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        cache = cache if cache is not None else past_key_values
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        hidden = encoder_outputs[0]  # (B, S, d_model)
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long)
        if cache is None:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        if cache.get_seq_length() == 0:
            logits = self._first_step(decoder_input_ids, hidden, attention_mask, cache)
        else:
            logits = self._next_step(decoder_input_ids, attention_mask, cache)
        return Seq2SeqLMOutput(
            logits=logits, encoder_last_hidden_state=hidden, **{CACHE_OUTPUT_FIELD: cache}
        )

    def _first_step(self, decoder_input_ids, hidden, attention_mask, cache) -> torch.Tensor:
        logits, *present = self.sessions["decoder"].run(
            None,
            {
                "decoder_input_ids": _numpy(decoder_input_ids),
                "encoder_hidden_states": _numpy(hidden),
                "encoder_attention_mask": _numpy(attention_mask),
            },
        )
        present = [torch.from_numpy(p) for p in present]
        for i in range(self.layers):
            cache.self_attention_cache.update(present[4 * i], present[4 * i + 1], i)
            cache.cross_attention_cache.update(present[4 * i + 2], present[4 * i + 3], i)
        return torch.from_numpy(logits)

    def _next_step(self, decoder_input_ids, attention_mask, cache) -> torch.Tensor:
        feed = {
            "decoder_input_ids": _numpy(decoder_input_ids[:, -1:]),
            "encoder_attention_mask": _numpy(attention_mask),
        }
        past = []
        for i in range(self.layers):
            own, cross = cache.self_attention_cache.layers[i], cache.cross_attention_cache.layers[i]
            past += [own.keys, own.values, cross.keys, cross.values]
        feed.update(zip(past_names(self.layers, "past"), map(_numpy, past), strict=True))
        logits, *present = self.sessions["decoder_with_past"].run(None, feed)
        for i in range(self.layers):  # the grown self-attention keys/values replace the old ones
            layer = cache.self_attention_cache.layers[i]
            layer.keys = torch.from_numpy(present[2 * i])
            layer.values = torch.from_numpy(present[2 * i + 1])
        return torch.from_numpy(logits)

    def _reorder_cache(self, cache: Cache, beam_idx: torch.LongTensor) -> Cache:
        """Beam search follows its surviving beams: only the self-attention cache moves (the
        cross-attention keys are the same for every beam of a sentence)."""
        cache.self_attention_cache.reorder_cache(beam_idx)
        return cache

    def generate(self, inputs=None, generation_config=None, **kwargs):
        """`GenerationMixin.generate`, with the PyTorch model's default output limit: unless a
        limit is given, the longest source in the batch + 50 new tokens (capped at a learned
        position table)."""
        config = generation_config or self.generation_config
        limits = (kwargs.get("max_new_tokens"), kwargs.get("max_length"), config.max_new_tokens)
        if (
            all(limit is None for limit in limits)
            and config.max_length == GenerationConfig().max_length
        ):
            source = inputs if inputs is not None else kwargs.get("input_ids")
            if source is not None:
                default = source.shape[1] + MAX_OUTPUT_LENGTH_OFFSET
                table = translation.position_limit(self.config)
                kwargs["max_new_tokens"] = default if table is None else min(default, table)
        return super().generate(inputs, generation_config=generation_config, **kwargs)


def onnx_sessions(folder: Path, intra_op_num_threads: int = 0, providers=None) -> dict:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_num_threads
    providers = providers or ["CPUExecutionProvider"]
    return {
        name: onnxruntime.InferenceSession(
            str(folder / f"{name}.onnx"), options, providers=providers
        )
        for name in GRAPHS
    }


class OnnxTranslator(GenerateTranslator):
    """An `export_onnx` folder on ONNX Runtime: `OnnxTranslator(folder).translate(lines, options)`;
    the graphs hold the whole model (no PyTorch weights are loaded). `model` is the generating
    facade (`OnnxSeq2SeqLM`), `model.sessions` the three ONNX Runtime sessions."""

    engine = "onnxruntime"

    def __init__(self, folder: str | os.PathLike, intra_op_num_threads: int = 0, providers=None):
        from transformers import AutoTokenizer

        folder = Path(folder)
        config = VanillaTransformerConfig.from_pretrained(str(folder))
        generation_config = None
        if (folder / "generation_config.json").is_file():
            generation_config = GenerationConfig.from_pretrained(str(folder))
        sessions = onnx_sessions(folder, intra_op_num_threads, providers)
        model = OnnxSeq2SeqLM(config, sessions, generation_config).eval()
        super().__init__(model, AutoTokenizer.from_pretrained(str(folder)))
        self.folder = folder
