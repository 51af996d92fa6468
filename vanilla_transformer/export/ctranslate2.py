"""Export to CTranslate2, the C++ inference engine OPUS-MT models are deployed with.

CTranslate2's `TransformerSpec` describes this architecture exactly, so the export is a weight
mapping, not an approximation: post-LN or pre-LN (`norm_first`), sinusoidal or learned positions,
tied or untied embeddings, any activation CTranslate2 implements. Our sinusoids are interleaved
(sin, cos, sin, ...) as the paper writes them while CTranslate2's built-in table is not, so the
model's own table is written into the folder, the same way as a learned one.

Refused, with the reason: `attention_scaling="key_norm_sum"` (CTranslate2's attention always
divides q.k by sqrt(d_k)).

The folder holds CTranslate2's `model.bin`, `config.json` and vocabulary, plus the Hugging Face
tokenizer files, so one folder is all a deployment needs::

    import ctranslate2
    from transformers import AutoTokenizer

    translator = ctranslate2.Translator(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("In the beginning").input_ids)
    best = translator.translate_batch([tokens], beam_size=4)[0].hypotheses[0]
    print(tokenizer.decode(tokenizer.convert_tokens_to_ids(best)))
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..configuration_vanilla_transformer import VanillaTransformerConfig
from ..modeling_vanilla_transformer import sinusoidal_table

QUANTIZATIONS = ("float32", "int8", "int8_float32", "int8_float16", "float16", "bfloat16")
# Our `activation_function` names -> CTranslate2's `Activation` members.
ACTIVATIONS = {
    "relu": "RELU",
    "gelu": "GELU",  # exact (erf) GELU in both
    "gelu_new": "GELUTanh",
    "silu": "SWISH",
    "swish": "SWISH",
    "tanh": "Tanh",
}


def check_ctranslate2_compatible(config: VanillaTransformerConfig) -> None:
    """Raise a `ValueError` naming the field when CTranslate2 cannot express the model."""
    if config.attention_scaling != "sqrt_dk":
        raise ValueError(
            f"attention_scaling={config.attention_scaling!r} cannot be exported to CTranslate2: "
            "its attention always scales q.k by 1/sqrt(d_k), while key_norm_sum divides by the "
            "sum of the visible keys' L2 norms (a per-query scale it has no option for). Only "
            "attention_scaling='sqrt_dk' models can be exported; use the ONNX export instead."
        )
    if config.activation_function not in ACTIVATIONS:
        raise ValueError(
            f"activation_function={config.activation_function!r} has no CTranslate2 "
            f"equivalent; exportable activations: {sorted(ACTIVATIONS)}."
        )


def _array(tensor: torch.Tensor):
    # A copy: `spec.optimize` quantises arrays in place, and `.numpy()` of a float32 CPU tensor
    # shares its memory, which would quantise the PyTorch model's own weights.
    return tensor.detach().to(device="cpu", dtype=torch.float32, copy=True).numpy()


def _set_layer_norm(spec, norm: torch.nn.LayerNorm) -> None:
    spec.gamma = _array(norm.weight)
    spec.beta = _array(norm.bias)


def _set_linear(spec, *linears: torch.nn.Linear) -> None:
    """One CTranslate2 linear from one or more of ours fused along the output dimension (fused
    q/k/v or k/v projections); ours have no bias on attention, a bias on the FFN."""
    spec.weight = _array(torch.cat([linear.weight for linear in linears], dim=0))
    if linears[0].bias is not None:
        spec.bias = _array(torch.cat([linear.bias for linear in linears], dim=0))


def _position_table(embed_positions: torch.nn.Module, config: VanillaTransformerConfig):
    if config.position_encoding == "learned":
        return _array(embed_positions.weight)
    # Recomputed rather than read from the buffer: the buffer is not saved in checkpoints.
    return _array(sinusoidal_table(config.max_position_embeddings, config.d_model))


def _attention_spec(spec, attention, norm, fused_qkv: bool) -> None:
    if fused_qkv:  # self-attention: linear[0] = [q; k; v], linear[1] = out
        _set_linear(spec.linear[0], attention.q_proj, attention.k_proj, attention.v_proj)
        _set_linear(spec.linear[1], attention.out_proj)
    else:  # cross-attention: linear[0] = q, linear[1] = [k; v], linear[2] = out
        _set_linear(spec.linear[0], attention.q_proj)
        _set_linear(spec.linear[1], attention.k_proj, attention.v_proj)
        _set_linear(spec.linear[2], attention.out_proj)
    _set_layer_norm(spec.layer_norm, norm)


def _ffn_spec(spec, layer) -> None:
    _set_linear(spec.linear_0, layer.ffn.fc1)
    _set_linear(spec.linear_1, layer.ffn.fc2)
    _set_layer_norm(spec.layer_norm, layer.final_layer_norm)


def build_ctranslate2_spec(model, tokenizer):
    """A validated `ctranslate2.specs.TransformerSpec` holding `model`'s weights and vocabulary.

    `model`: a `VanillaTransformerForConditionalGeneration`; `tokenizer`: its tokenizer (the
    vocabulary is written in id order, so CTranslate2's ids are ours)."""
    from ctranslate2.specs import common_spec, transformer_spec

    config = model.config
    check_ctranslate2_compatible(config)
    if len(tokenizer) != config.vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
            f"{config.vocab_size}: CTranslate2 needs one token string per embedding row."
        )
    activation = getattr(common_spec.Activation, ACTIVATIONS[config.activation_function])
    spec = transformer_spec.TransformerSpec(
        transformer_spec.TransformerEncoderSpec(
            config.encoder_layers,
            config.encoder_attention_heads,
            pre_norm=config.norm_first,
            activation=activation,
        ),
        transformer_spec.TransformerDecoderSpec(
            config.decoder_layers,
            config.decoder_attention_heads,
            pre_norm=config.norm_first,
            activation=activation,
        ),
    )
    encoder, decoder = model.model.encoder, model.model.decoder
    for stack_spec, stack in ((spec.encoder, encoder), (spec.decoder, decoder)):
        embeddings = stack_spec.embeddings[0] if isinstance(stack_spec.embeddings, list) else None
        (embeddings or stack_spec.embeddings).weight = _array(stack.embed_tokens.weight)
        stack_spec.scale_embeddings = bool(config.scale_embedding)
        stack_spec.position_encodings.encodings = _position_table(stack.embed_positions, config)
        if config.norm_first:
            _set_layer_norm(stack_spec.layer_norm, stack.layer_norm)
    for layer_spec, layer in zip(spec.encoder.layer, encoder.layers, strict=True):
        _attention_spec(
            layer_spec.self_attention, layer.self_attn, layer.self_attn_layer_norm, True
        )
        _ffn_spec(layer_spec.ffn, layer)
    for layer_spec, layer in zip(spec.decoder.layer, decoder.layers, strict=True):
        _attention_spec(
            layer_spec.self_attention, layer.self_attn, layer.self_attn_layer_norm, True
        )
        _attention_spec(
            layer_spec.attention, layer.encoder_attn, layer.encoder_attn_layer_norm, False
        )
        _ffn_spec(layer_spec.ffn, layer)
    spec.decoder.projection.weight = _array(model.lm_head.weight)
    if model.lm_head.bias is not None:
        spec.decoder.projection.bias = _array(model.lm_head.bias)

    tokens = tokenizer.convert_ids_to_tokens(list(range(config.vocab_size)))
    spec.register_source_vocabulary(tokens)
    spec.register_target_vocabulary(tokens)
    spec.config.bos_token = tokens[config.bos_token_id]
    spec.config.eos_token = tokenizer.eos_token
    spec.config.unk_token = tokenizer.unk_token
    spec.config.decoder_start_token = tokens[config.decoder_start_token_id]
    # Our tokenizer appends </s> itself; CTranslate2 must not add a second one.
    source_has_eos = tokenizer("a").input_ids[-1:] == [tokenizer.eos_token_id]
    spec.config.add_source_eos = not source_has_eos
    spec.config.add_source_bos = False
    spec.config.layer_norm_epsilon = encoder.layers[0].final_layer_norm.eps
    spec.validate()
    return spec


def export_ctranslate2(
    model, tokenizer, output_dir: str | os.PathLike, quantization: str = "float32"
) -> Path:
    """Write a CTranslate2 model folder for `model` (weights quantised to `quantization`, one of
    `QUANTIZATIONS`) with `tokenizer` saved beside it. Returns the folder."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization must be one of {list(QUANTIZATIONS)}, got {quantization!r}."
        )
    spec = build_ctranslate2_spec(model, tokenizer)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    spec.optimize(quantization=quantization)
    spec.save(str(output_dir))
    tokenizer.save_pretrained(output_dir)
    model.generation_config.save_pretrained(output_dir)  # the model's decoding settings, recorded
    return output_dir


def tokenize_for_ctranslate2(tokenizer, texts: list[str]) -> list[list[str]]:
    """Source token strings as CTranslate2 takes them (with the tokenizer's own `</s>`)."""
    return [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(texts).input_ids]
