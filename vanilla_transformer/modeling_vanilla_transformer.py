"""The original Transformer (Vaswani et al., 2017, "Attention Is All You Need") for transformers v5.

Read top to bottom, the file follows Figure 1 of the paper: positional encoding (Section 3.5),
multi-head attention (3.2), the position-wise feed-forward network (3.3), encoder and decoder layers
and stacks (3.1), then the pretrained base, the bare model and the model with its language-modelling
head (3.4). Shapes use B = batch, T = target length, S = source length, h = heads, d_k = d_model / h.

Attention dispatches through transformers' `ALL_ATTENTION_FUNCTIONS`, so `attn_implementation`
"eager", "sdpa", "flash_attention_2" and "flex_attention" all run the same module. Ideas adapted from
transformers' Marian/BART modeling files (cache handling, mask helpers), credited here instead of
`# Copied from` markers.

This file is also saved beside checkpoints as remote code: it imports only torch, transformers and
its sibling configuration file.
"""

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention.flex_attention import BlockMask, create_mask
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_vanilla_transformer import VanillaTransformerConfig

# Imported so that transformers' remote-code machinery copies the pipeline file beside every saved
# checkpoint (it copies the model file's relative imports); config.json names it in
# `custom_pipelines`.
from .pipeline_vanilla_transformer import TranslationPipeline  # noqa: F401

# transformers 5.24 renamed `past_key_values` to `cache`: in forward arguments (the old name is
# accepted, with a notice, until 5.40), in output fields and in `create_causal_mask`. Older 5.x
# releases use the old names. Read once from the installed release, so this file (also saved as
# remote code) builds outputs and masks with the names the running `generate()` reads.
CACHE_OUTPUT_FIELD = (
    "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"
)
# (`create_causal_mask` is wrapped by the deprecation helper there: look at the wrapped function.)
_create_causal_mask_code = getattr(create_causal_mask, "__wrapped__", create_causal_mask).__code__
CAUSAL_MASK_CACHE_ARG = (
    "cache" if "cache" in _create_causal_mask_code.co_varnames else "past_key_values"
)
renamed_cache_kwarg = deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")

# Section 6.1: "We set the maximum output length during inference to input length + 50".
MAX_OUTPUT_LENGTH_OFFSET = 50
# Section 6.1: "beam search with a beam size of 4 and length penalty alpha = 0.6", stopping a beam
# once it is finished ("terminate early when possible"). transformers divides a hypothesis' log
# probability by length^alpha, not by GNMT's ((5 + length) / 6)^alpha that the paper used.
PAPER_GENERATION_DEFAULTS = {"num_beams": 4, "length_penalty": 0.6, "early_stopping": True}
# Written into config.json on save, so that both Auto classes find the code saved beside the weights.
AUTO_MAP = {
    "AutoConfig": "configuration_vanilla_transformer.VanillaTransformerConfig",
    "AutoModel": "modeling_vanilla_transformer.VanillaTransformerModel",
    "AutoModelForSeq2SeqLM": "modeling_vanilla_transformer.VanillaTransformerForConditionalGeneration",
}


def check_token_ids(ids: torch.Tensor, vocab_size: int, name: str, allow: int | None = None):
    """Refuse ids an embedding lookup would fail on (or, on GPU, abort the process for), with the
    offending values. Skipped under torch.compile, where it would break the graph."""
    if ids.dim() != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(
            f"{name} must be a non-empty (batch, length) tensor, got shape {tuple(ids.shape)}."
        )
    if ids.dtype not in (torch.long, torch.int32):
        # uint8 / bool ids would be read as a mask by indexing, floats are not ids at all.
        raise ValueError(
            f"{name} must hold token ids as torch.long (or torch.int32), got {ids.dtype}. "
            "Convert with .long()."
        )
    if torch.compiler.is_compiling():
        return
    checked = ids if allow is None else ids[ids != allow]
    if checked.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(checked))  # one reduction, one host sync
    if low < 0 or high >= vocab_size:
        allowed = f" or {allow}" if allow is not None else ""
        raise ValueError(
            f"{name} holds ids in [{low}, {high}], outside the "
            f"vocabulary [0, {vocab_size}){allowed}. Was the input tokenized with this model's "
            "tokenizer?"
        )


def check_mask(mask: torch.Tensor | None, expected: tuple[int, int], name: str):
    """A padding mask is (batch, length) like the ids it masks; a prepared 4D attention mask
    (batch, 1, queries, keys) passes through to transformers' mask utilities."""
    if mask is None:
        return
    if mask.dim() == 4:
        if torch.compiler.is_compiling():
            return
        # bool: True = attend; float: additive (0 = attend, the dtype's minimum = masked).
        if mask.dtype == torch.bool:
            visible = mask
        elif mask.is_floating_point():
            visible = mask > torch.finfo(mask.dtype).min / 2
        else:
            visible = mask != 0
        hidden = ~visible.flatten(1).any(dim=1)  # (B,): no query may attend any key
        if bool(hidden.any()):
            rows = hidden.nonzero().flatten().tolist()
            raise ValueError(
                f"{name} is a 4-D mask (batch, 1, queries, keys) that hides every key from every "
                f"query of batch row(s) {rows}: attention over nothing is undefined (NaN). True "
                "(or 0.0 in an additive mask) marks the keys a query may attend."
            )
        return
    if mask.dim() != 2 or tuple(mask.shape) != expected:
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)} but the ids it masks need {expected}."
        )


def check_cache_batch(cache: EncoderDecoderCache, batch_size: int):
    """A filled dynamic cache belongs to the batch it was built with: reused for another batch
    size, its keys would fail to concatenate deep inside attention (or, broadcast, mix rows).
    Skipped under torch.compile / torch.export, like the other input checks."""
    if torch.compiler.is_compiling():
        return
    for part in (cache.self_attention_cache, cache.cross_attention_cache):
        layers = getattr(part, "layers", None) or []
        keys = getattr(layers[0], "keys", None) if layers else None
        if isinstance(keys, torch.Tensor) and keys.dim() == 4 and keys.shape[0] != batch_size:
            raise ValueError(
                f"cache holds keys for a batch of {keys.shape[0]} but the decoder input has "
                f"batch size {batch_size}: a cache belongs to the batch it was built with. Pass "
                "cache=None (or a new cache) for another batch."
            )


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int):
    """Decoder inputs from labels: prepend the start token, drop the last label, and turn the
    loss-ignore index -100 into padding. (B, T) -> (B, T)"""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill_(shifted == -100, pad_token_id)


# --------------------------------------------------------------------------------------------------
# Section 3.5: positional encoding
# --------------------------------------------------------------------------------------------------


def sinusoid_frequencies(d_model: int, device=None) -> torch.Tensor:
    """1 / 10000^(2i/d_model) for i = 0 .. ceil(d_model / 2) - 1, float32."""
    return torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32, device=device)
        * (-math.log(10000.0) / d_model)
    )


def sinusoidal_encoding(
    positions: torch.Tensor, d_model: int, inv_freq: torch.Tensor | None = None
) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)),
    interleaved exactly as the paper writes it. positions (L,) integer -> (L, d_model) float32.

    Computed from the positions themselves rather than sliced from a stored table: sinusoids extend
    to any length, and a position tensor (which may come from a static cache under torch.compile)
    needs no Python decision on its value."""
    if inv_freq is None:
        inv_freq = sinusoid_frequencies(d_model, positions.device)
    angles = positions.to(torch.float32)[:, None] * inv_freq  # (L, ceil(d_model / 2))
    # stack + flatten interleaves sin and cos: [sin_0, cos_0, sin_1, cos_1, ...]
    table = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1).flatten(-2)
    return table[:, :d_model]  # an odd d_model ends on a sine


def sinusoidal_table(num_positions: int, d_model: int, device=None) -> torch.Tensor:
    """The encodings of positions 0 .. num_positions - 1: (num_positions, d_model), float32. (For
    exporters that need the table, e.g. CTranslate2.)"""
    return sinusoidal_encoding(torch.arange(num_positions, device=device), d_model)


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed encodings (Section 3.5). No parameters and no position table (no length limit); only
    the d_model/2 frequencies are kept, so a decoding step does not recompute them."""

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model
        # Not persistent: derived from the config, never stored in checkpoints (and rebuilt in
        # `_init_weights`, because from_pretrained leaves non-persistent buffers uninitialised).
        self.register_buffer("inv_freq", sinusoid_frequencies(d_model), persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """positions (L,) -> (L, d_model)"""
        return sinusoidal_encoding(positions, self.d_model, self.inv_freq).to(dtype)


class LearnedPositionalEmbedding(nn.Embedding):
    """Learned positions (Table 3, row E). Unlike sinusoids they end at `max_position_embeddings`;
    `generate()` caps its length up front so decoding never runs past the table."""

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """positions (L,) -> (L, d_model)"""
        if not torch.compiler.is_compiling() and int(positions[-1]) >= self.num_embeddings:
            raise ValueError(
                f"Sequence of {int(positions[-1]) + 1} positions exceeds max_position_embeddings="
                f"{self.num_embeddings}, the size of the learned position table "
                "(position_encoding='learned'). Shorten the input, or use position_encoding="
                "'sinusoidal', which extends to any length."
            )
        return super().forward(positions).to(dtype)


def build_position_encoding(config: VanillaTransformerConfig) -> nn.Module:
    if config.position_encoding == "learned":
        return LearnedPositionalEmbedding(config.max_position_embeddings, config.d_model)
    return SinusoidalPositionalEncoding(config.d_model)


# --------------------------------------------------------------------------------------------------
# Section 3.2: attention
# --------------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    """Equation 1, softmax(Q K^T * scaling) V, the reference every other implementation must match.
    query (B, h, T, d_k), key/value (B, h, S, d_k), additive mask broadcastable to (B, h, T, S)."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, h, T, S)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            attn_weights = attn_weights.masked_fill(
                ~attention_mask, torch.finfo(attn_weights.dtype).min
            )
        else:
            attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (B, T, h, d_k)
    return attn_output, attn_weights


def visible_keys(
    attention_mask, is_causal: bool, query_length: int, key_length: int, device: torch.device
) -> torch.Tensor | None:
    """Which keys each query may attend to, read from the mask the attention kernel receives: bool,
    broadcastable to (B, 1, T, S), True where attending is allowed; None when every key is visible.
    The mask is whatever transformers' mask helpers built for the attention implementation: a 4D
    bool (SDPA) or additive (eager) mask, a `BlockMask` (flex attention), a 2D key padding mask
    (flash attention), or None (no padding; a causal module then relies on the kernel's causal
    flag)."""
    if isinstance(attention_mask, BlockMask):
        B, _, T, S = attention_mask.shape
        return create_mask(attention_mask.mask_mod, B, 1, T, S, attention_mask.kv_indices.device)
    if attention_mask is not None and attention_mask.dim() == 4:
        if attention_mask.dtype == torch.bool:
            return attention_mask
        return attention_mask > torch.finfo(attention_mask.dtype).min / 2  # additive: 0 = attend
    if attention_mask is None and not is_causal:
        return None
    visible = torch.ones(1, 1, 1, key_length, dtype=torch.bool, device=device)
    if attention_mask is not None:  # 2D key padding (B, S)
        visible = attention_mask.bool()[:, None, None, :]
    if is_causal:
        # The T queries are the last T of the S keys: query i sees keys j <= S - T + i. (A static
        # cache's 2D mask under flash attention spans the whole buffer: exact for one query, the
        # decoding step, while a longer prompt's queries would see each other's keys.)
        key_pos = torch.arange(key_length, device=device)
        query_pos = torch.arange(query_length, device=device) + (key_length - query_length)
        visible = visible & (key_pos[None, :] <= query_pos[:, None])  # (B or 1, 1, T, S)
    return visible


def key_norm_sum_denominator(key: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Bernhard (2023): the scale of q.k_j is 1 / sum_j ||k_j||_2, the sum running over the keys that
    query may attend to. key (B, h, S, d_k); key_mask bool, broadcastable to (B, 1, T, S), True where
    attending is allowed (None: all keys). Returns (B, h, T or 1, 1)."""
    norms = key.float().norm(dim=-1).unsqueeze(-1)  # (B, h, S, 1)
    if key_mask is None:  # every key: one (1, S) row of ones, the same reduction as with a mask
        key_mask = norms.new_ones((1, 1, 1, norms.shape[-2]))
    denominator = torch.matmul(key_mask.to(norms.dtype), norms)  # (B, h, T or 1, 1)
    # A query with no visible key would divide by zero (0/0 after the mask): keep it finite. The
    # encoder refuses all-padding sources, so this only guards internal corner cases.
    return torch.where(denominator > 0, denominator, torch.ones_like(denominator))


class VanillaTransformerAttention(nn.Module):
    """Multi-head attention (Section 3.2.2): h heads of d_k = d_model / h, projections without bias
    as in the paper's matrices W^Q, W^K, W^V, W^O."""

    def __init__(
        self,
        config: VanillaTransformerConfig,
        num_heads: int,
        is_causal: bool = False,
        layer_idx: int | None = None,
    ):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = config.d_model // num_heads
        self.dropout = config.attention_dropout
        # transformers' SDPA wrapper reads `is_causal` from the module and defaults to True: every
        # attention module states it, or encoder/cross-attention would silently turn causal.
        self.is_causal = is_causal
        self.layer_idx = layer_idx
        self.key_norm_sum = config.attention_scaling == "key_norm_sum"
        # With key_norm_sum the queries are divided by the key-norm sum before the kernel runs, so
        # the kernel itself must not scale: that is what lets eager, SDPA and flash all run it.
        self.scaling = 1.0 if self.key_norm_sum else self.head_dim**-0.5

        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.k_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.v_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.out_proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, L, d_k)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, T, d_model); key_value_states (B, S, d_model) for cross-attention.
        `cache` is the decoder's EncoderDecoderCache: this layer's self- or cross-attention part is
        read and updated."""
        B, T, _ = hidden_states.shape
        is_cross_attention = key_value_states is not None
        query = self._split_heads(self.q_proj(hidden_states))  # (B, h, T, d_k)

        layer_cache = None
        if cache is not None:
            layer_cache = (
                cache.cross_attention_cache if is_cross_attention else cache.self_attention_cache
            )
        if is_cross_attention and cache is not None and cache.is_updated.get(self.layer_idx, False):
            # Cross-attention keys/values depend only on the encoder output: computed once.
            key = layer_cache.layers[self.layer_idx].keys
            value = layer_cache.layers[self.layer_idx].values
        else:
            source = key_value_states if is_cross_attention else hidden_states
            key = self._split_heads(self.k_proj(source))  # (B, h, S, d_k)
            value = self._split_heads(self.v_proj(source))
            if layer_cache is not None:
                # Self-attention: returns past + new keys, so the key-norm sum below stays exact.
                key, value = layer_cache.update(key, value, self.layer_idx)
                if is_cross_attention:
                    cache.is_updated[self.layer_idx] = True

        if self.key_norm_sum:
            # The keys each query may attend to are those its attention mask leaves visible.
            visible = visible_keys(attention_mask, self.is_causal, T, key.shape[-2], key.device)
            query = query / key_norm_sum_denominator(key, visible).to(query.dtype)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(B, T, -1).contiguous()  # concat heads: (B, T, d_model)
        return self.out_proj(attn_output), attn_weights


# --------------------------------------------------------------------------------------------------
# Section 3.3: position-wise feed-forward network
# --------------------------------------------------------------------------------------------------


class VanillaTransformerFeedForward(nn.Module):
    """FFN(x) = max(0, x W1 + b1) W2 + b2 (Equation 2), inner size d_ff."""

    def __init__(self, config: VanillaTransformerConfig, d_ff: int):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, config.d_model)
        self.activation_fn = ACT2FN[config.activation_function]
        self.activation_dropout = config.activation_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation_fn(self.fc1(x))  # (B, L, d_ff)
        x = F.dropout(x, p=self.activation_dropout, training=self.training)
        return self.fc2(x)  # (B, L, d_model)


# --------------------------------------------------------------------------------------------------
# Section 3.1: encoder and decoder layers
# --------------------------------------------------------------------------------------------------


class SublayerConnection(nn.Module):
    """The residual connection around each sub-layer, with its LayerNorm and dropout (Section 3.1 and
    5.4). Post-LN (the paper): LayerNorm(x + Dropout(Sublayer(x))). Pre-LN (`norm_first`):
    x + Dropout(Sublayer(LayerNorm(x)))."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__()
        self.norm_first = config.norm_first
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, norm: nn.LayerNorm, sublayer: Callable) -> torch.Tensor:
        if self.norm_first:
            return x + F.dropout(sublayer(norm(x)), p=self.dropout, training=self.training)
        return norm(x + F.dropout(sublayer(x), p=self.dropout, training=self.training))


class VanillaTransformerEncoderLayer(GradientCheckpointingLayer):
    """Self-attention then feed-forward, each wrapped in a residual connection and LayerNorm."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__()
        self.self_attn = VanillaTransformerAttention(config, config.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.ffn = VanillaTransformerFeedForward(config, config.encoder_ffn_dim)
        self.final_layer_norm = nn.LayerNorm(config.d_model)
        self.residual = SublayerConnection(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        hidden_states = self.residual(
            hidden_states,
            self.self_attn_layer_norm,
            lambda x: self.self_attn(x, attention_mask=attention_mask, **kwargs)[0],
        )
        return self.residual(hidden_states, self.final_layer_norm, self.ffn)


class VanillaTransformerDecoderLayer(GradientCheckpointingLayer):
    """Masked self-attention, attention over the encoder output, then feed-forward (Section 3.1)."""

    def __init__(self, config: VanillaTransformerConfig, layer_idx: int):
        super().__init__()
        heads = config.decoder_attention_heads
        self.self_attn = VanillaTransformerAttention(
            config, heads, is_causal=True, layer_idx=layer_idx
        )
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.encoder_attn = VanillaTransformerAttention(config, heads, layer_idx=layer_idx)
        self.encoder_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.ffn = VanillaTransformerFeedForward(config, config.decoder_ffn_dim)
        self.final_layer_norm = nn.LayerNorm(config.d_model)
        self.residual = SublayerConnection(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        hidden_states = self.residual(
            hidden_states,
            self.self_attn_layer_norm,
            lambda x: self.self_attn(x, attention_mask=attention_mask, cache=cache, **kwargs)[0],
        )
        hidden_states = self.residual(
            hidden_states,
            self.encoder_attn_layer_norm,
            lambda x: self.encoder_attn(
                x,
                key_value_states=encoder_hidden_states,
                attention_mask=encoder_attention_mask,
                cache=cache,
                **kwargs,
            )[0],
        )
        return self.residual(hidden_states, self.final_layer_norm, self.ffn)


# --------------------------------------------------------------------------------------------------
# Pretrained base: initialisation and the class attributes transformers reads
# --------------------------------------------------------------------------------------------------


class VanillaTransformerPreTrainedModel(PreTrainedModel):
    config: VanillaTransformerConfig
    config_class = VanillaTransformerConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["VanillaTransformerEncoderLayer", "VanillaTransformerDecoderLayer"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True
    # The loss is normalised by `num_items_in_batch` when Trainer passes it (see
    # `VanillaTransformerForConditionalGeneration.forward`), so gradient accumulation stays exact.
    accepts_loss_kwargs = True

    def save_pretrained(self, save_directory, *args, **kwargs):
        # `register_for_auto_class` records only the saved class; name every entry point.
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            if std is None:
                init.xavier_uniform_(module.weight)  # tensor2tensor's default for projections
            else:
                init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            # N(0, d_model^-0.5): after the sqrt(d_model) scaling of Section 3.4 the embeddings
            # have unit variance, the same scale as the sinusoids they are added to.
            init.normal_(module.weight, mean=0.0, std=std or self.config.d_model**-0.5)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, SinusoidalPositionalEncoding):
            init.copy_(module.inv_freq, sinusoid_frequencies(module.d_model))


# --------------------------------------------------------------------------------------------------
# Section 3.1: encoder and decoder stacks
# --------------------------------------------------------------------------------------------------


class VanillaTransformerEncoder(VanillaTransformerPreTrainedModel):
    """N identical layers over scaled token embeddings plus positional encodings."""

    _can_record_outputs = {
        "hidden_states": VanillaTransformerEncoderLayer,
        "attentions": VanillaTransformerAttention,
    }

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_positions = build_position_encoding(config)
        self.layers = nn.ModuleList(
            [VanillaTransformerEncoderLayer(config) for _ in range(config.encoder_layers)]
        )
        # Pre-LN leaves the residual stream unnormalised: normalise the stack's output once.
        self.layer_norm = nn.LayerNorm(config.d_model) if config.norm_first else None
        self.gradient_checkpointing = False
        self.post_init()

    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds to the encoder.")
        if inputs_embeds is None:
            check_token_ids(input_ids, self.config.vocab_size, "input_ids")
            inputs_embeds = self.embed_tokens(input_ids)
        inputs_embeds = inputs_embeds * self.embed_scale  # (B, S, d_model)
        B, S, _ = inputs_embeds.shape
        check_mask(attention_mask, (B, S), "attention_mask")
        if attention_mask is not None and attention_mask.dim() == 2:
            # Positions count from the first column, so a source must start there: refuse
            # all-padding and left-padded rows rather than encode them wrongly. (First column
            # unmasked in every row covers both with one check.)
            if not torch.compiler.is_compiling() and not attention_mask[:, 0].bool().all():
                rows = (~attention_mask[:, 0].bool()).nonzero().flatten().tolist()
                empty = [r for r in rows if not attention_mask[r].any()]
                raise ValueError(
                    f"attention_mask rows {rows} do not start with a real token: "
                    + (
                        f"rows {empty} are all padding (an empty source cannot be encoded; a "
                        "tokenized empty string still holds </s>). "
                        if empty
                        else ""
                    )
                    + "Sources must be right-padded (tokenizer.padding_side='right')."
                )
        positions = self.embed_positions(
            torch.arange(S, device=inputs_embeds.device), inputs_embeds.dtype
        )  # (S, d_model)
        hidden_states = F.dropout(
            inputs_embeds + positions, p=self.config.dropout, training=self.training
        )

        attention_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask
        )
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, **kwargs)
        if self.layer_norm is not None:
            hidden_states = self.layer_norm(hidden_states)
        return BaseModelOutput(last_hidden_state=hidden_states)


class VanillaTransformerDecoder(VanillaTransformerPreTrainedModel):
    """N identical layers; self-attention is masked so position i sees only positions <= i."""

    _can_record_outputs = {
        "hidden_states": VanillaTransformerDecoderLayer,
        "attentions": OutputRecorder(VanillaTransformerAttention, index=1, layer_name="self_attn"),
        "cross_attentions": OutputRecorder(
            VanillaTransformerAttention, index=1, layer_name="encoder_attn"
        ),
    }

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_positions = build_position_encoding(config)
        self.layers = nn.ModuleList(
            [VanillaTransformerDecoderLayer(config, i) for i in range(config.decoder_layers)]
        )
        self.layer_norm = nn.LayerNorm(config.d_model) if config.norm_first else None
        self.gradient_checkpointing = False
        self.post_init()

    @capture_outputs
    @renamed_cache_kwarg
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        """input_ids (B, T) or inputs_embeds (B, T, d_model); encoder_hidden_states (B, S, d_model).
        `cache` holds the self-attention keys/values of earlier positions and the cross-attention
        keys/values of the source; dynamic (grows) or static (preallocated, for torch.compile)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of decoder_input_ids or decoder_inputs_embeds.")
        if encoder_hidden_states is None:
            # Every decoder layer attends over the encoder output (Section 3.1); without it the
            # cross-attention would silently attend over the decoder's own states instead.
            raise ValueError(
                "VanillaTransformerDecoder needs encoder_hidden_states (B, S, d_model): every layer "
                "attends over the encoder output. Run the encoder first, or call the full model."
            )
        cache = self._prepare_cache(cache, use_cache)
        # An int for a dynamic cache; a 0-d tensor for a static one, used only in tensor arithmetic
        # below, so the decode step has no Python branch on it (torch.compile / torch.export).
        past_length = cache.get_seq_length() if cache is not None else 0
        is_static = cache is not None and cache.self_attention_cache.is_compileable
        B, T = (input_ids if inputs_embeds is None else inputs_embeds).shape[:2]
        if cache is not None and not is_static:
            check_cache_batch(cache, B)
        # A decode step feeds one token after the start token: the id is the model's own prediction
        # (or the configured start token), so it is not re-checked; the check ends in a host sync
        # that would stall GPU decoding each step.
        if inputs_embeds is None:
            if not (T == 1 and cache is not None):
                check_token_ids(input_ids, self.config.vocab_size, "decoder_input_ids")
            inputs_embeds = self.embed_tokens(input_ids)
        inputs_embeds = inputs_embeds * self.embed_scale  # (B, T, d_model)
        if not is_static:
            check_mask(attention_mask, (B, past_length + T), "decoder_attention_mask")

        query_positions = torch.arange(T, device=inputs_embeds.device) + past_length  # (T,)
        positions = self.embed_positions(query_positions, inputs_embeds.dtype)  # (T, d_model)
        hidden_states = F.dropout(
            inputs_embeds + positions, p=self.config.dropout, training=self.training
        )

        causal_mask = self._causal_mask(attention_mask, inputs_embeds, cache, past_length)
        # A prepared 4D mask (what generate() passes after its first step, see
        # `_update_model_kwargs_for_generation`) is returned as it is, without rebuilding it.
        encoder_attention_mask = create_bidirectional_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=encoder_attention_mask,
            encoder_hidden_states=encoder_hidden_states,
        )
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                causal_mask,
                encoder_hidden_states,  # positional, as gradient checkpointing requires
                encoder_attention_mask=encoder_attention_mask,
                cache=cache,
                **kwargs,
            )
        if self.layer_norm is not None:
            hidden_states = self.layer_norm(hidden_states)
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden_states, **{CACHE_OUTPUT_FIELD: cache}
        )

    def _prepare_cache(
        self, cache: EncoderDecoderCache | None, use_cache: bool | None
    ) -> EncoderDecoderCache | None:
        """The cache this call reads and fills: the caller's, or a new dynamic one."""
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = EncoderDecoderCache(
                DynamicCache(config=self.config), DynamicCache(config=self.config)
            )
        if cache is not None and not isinstance(cache, EncoderDecoderCache):
            raise TypeError(
                f"cache must be an EncoderDecoderCache (self- and cross-attention), got "
                f"{type(cache).__name__}."
            )
        return cache

    def _causal_mask(self, attention_mask, inputs_embeds, cache, past_length):
        """The self-attention mask: position i sees positions <= i, minus padded ones."""
        B, T = inputs_embeds.shape[:2]
        self_attn_cache = cache.self_attention_cache if cache is not None else None
        is_static = self_attn_cache is not None and self_attn_cache.is_compileable
        if attention_mask is None and T == 1 and not is_static:
            # An incremental decoding step without decoder padding: its one query may see every
            # cached key, so there is nothing to mask (and no attention kernel treats a single
            # query as causal). Skipping the mask helpers saves their per-token Python work. A
            # static cache still needs its mask, which hides the unwritten slots.
            return None
        if attention_mask is None and not is_static:
            attention_mask = torch.ones(B, past_length + T, device=inputs_embeds.device)
        return create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            **{CAUSAL_MASK_CACHE_ARG: self_attn_cache},
        )


# --------------------------------------------------------------------------------------------------
# The bare encoder-decoder and the translation model (Section 3.4: shared embeddings)
# --------------------------------------------------------------------------------------------------


class VanillaTransformerModel(VanillaTransformerPreTrainedModel):
    """The encoder-decoder returning the decoder's last hidden states (no output projection)."""

    # Section 3.4: "we share the same weight matrix between the two embedding layers and the
    # pre-softmax linear transformation" (applied only when config.tie_word_embeddings).
    _tied_weights_keys = {
        "encoder.embed_tokens.weight": "shared.weight",
        "decoder.embed_tokens.weight": "shared.weight",
    }

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.encoder = VanillaTransformerEncoder(config)
        self.decoder = VanillaTransformerDecoder(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.shared

    def set_input_embeddings(self, value):
        self.shared = value
        if self.config.tie_word_embeddings:
            self.encoder.embed_tokens = value
            self.decoder.embed_tokens = value

    @can_return_tuple
    @renamed_cache_kwarg
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: EncoderDecoderCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> Seq2SeqModelOutput:
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                inputs_embeds=inputs_embeds,
                **kwargs,
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            cache=cache,
            inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            **{CACHE_OUTPUT_FIELD: getattr(decoder_outputs, CACHE_OUTPUT_FIELD)},
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )


class VanillaTransformerForConditionalGeneration(
    VanillaTransformerPreTrainedModel, GenerationMixin
):
    """The translation model: the encoder-decoder, the pre-softmax projection tied to the shared
    embeddings, the cross-entropy loss from `labels`, and `generate()`."""

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.model = VanillaTransformerModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()
        self.generation_config.update(**PAPER_GENERATION_DEFAULTS)

    def _init_weights(self, module):
        if module is self.lm_head:  # untied head: same scale as the embeddings it would share
            init.normal_(
                module.weight, mean=0.0, std=self.config.init_std or self.config.d_model**-0.5
            )
        else:
            super()._init_weights(module)

    def get_encoder(self, modality: str | None = None):
        """The text encoder (`modality` is for multimodal models; transformers' export passes it)."""
        return self.model.encoder if modality is None else super().get_encoder(modality=modality)

    def get_decoder(self):
        return self.model.decoder

    @can_return_tuple
    @renamed_cache_kwarg
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: EncoderDecoderCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        r"""
        labels (`torch.LongTensor` of shape `(B, T)`): target ids, -100 where the loss ignores a
            position (padding). Without `decoder_input_ids`, the decoder inputs are the labels
            shifted right behind `decoder_start_token_id`.
        num_items_in_batch: the number of non-ignored label tokens in the whole (accumulated)
            batch, passed by `Trainer`; the loss is then summed and divided by it, which keeps
            gradient accumulation exact. Without it the loss is the mean over this batch's tokens.
        """
        if labels is not None:
            check_token_ids(labels, self.config.vocab_size, "labels", allow=-100)
            use_cache = False
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)

        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=cache,
            inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        logits = self.lm_head(outputs.last_hidden_state)  # (B, T, vocab_size)

        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]),
                labels.to(logits.device).view(-1),
                ignore_index=-100,
                reduction="sum",
            )
            if num_items_in_batch is None:
                num_items_in_batch = (labels != -100).sum()
            # A batch whose labels are all -100 carries no tokens: its loss is 0 (a sum over
            # nothing), not 0 / 0 = NaN. The Trainer can legitimately pass one.
            if isinstance(num_items_in_batch, torch.Tensor):
                num_items_in_batch = num_items_in_batch.clamp(min=1)
            else:
                num_items_in_batch = max(num_items_in_batch, 1)
            loss = loss / num_items_in_batch

        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            **{CACHE_OUTPUT_FIELD: getattr(outputs, CACHE_OUTPUT_FIELD)},
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
        )

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Called by `DataCollatorForSeq2Seq` to build `decoder_input_ids`."""
        return shift_tokens_right(
            labels, self.config.pad_token_id, self.config.decoder_start_token_id
        )

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, *args, **kwargs):
        """generate()'s hook after each step. The cross-attention mask depends only on the source
        padding, which generate() passes unchanged at every step (as `attention_mask`): it is built
        here once per generate() call, after the first step, and handed to the later steps as the
        prepared mask the decoder passes through, instead of being rebuilt per token (the mask
        helper ends in a host sync, and with padding it builds a (B, 1, 1, S) mask)."""
        model_kwargs = super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, *args, **kwargs
        )
        source_padding = model_kwargs.get("attention_mask")
        encoder_outputs = model_kwargs.get("encoder_outputs")
        if isinstance(source_padding, torch.Tensor) and source_padding.dim() == 2:
            encoder_hidden_states = encoder_outputs[0]  # (B, S, d_model)
            # One decoder query per step: only the batch size, dtype and device are read.
            step = encoder_hidden_states.new_empty((encoder_hidden_states.shape[0], 1, 0))
            model_kwargs["attention_mask"] = create_bidirectional_mask(
                config=self.config,
                inputs_embeds=step,
                attention_mask=source_padding,
                encoder_hidden_states=encoder_hidden_states,
            )
        return model_kwargs

    def _reorder_cache(self, cache: Cache, beam_idx: torch.LongTensor) -> Cache:
        """Called by beam search after every step to follow the surviving beams. Only the
        self-attention cache is reordered: the cross-attention keys/values are projections of the
        encoder output, which `generate` repeats identically for the beams of a sentence, and beams
        are only reordered within their sentence, so reordering them would copy every layer's
        (B * beams, h, S, d_k) tensors per token for nothing (about a quarter of beam-4 decoding
        time at base dims on CPU, see docs/performance.md)."""
        if isinstance(cache, EncoderDecoderCache):
            cache.self_attention_cache.reorder_cache(beam_idx)
        else:
            cache.reorder_cache(beam_idx)
        return cache

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """`GenerationMixin.generate` with the paper's output limit: unless the call or the
        generation config sets `max_length` / `max_new_tokens`, generation stops at the longest
        source in the batch + 50 tokens (Section 6.1; transformers only has absolute limits, so the
        limit is per batch, not per sentence). With learned positions that default is capped at the
        position table, and an explicit limit beyond it is refused before decoding starts."""
        config = generation_config if generation_config is not None else self.generation_config
        for name in ("num_beams", "num_return_sequences"):
            value = kwargs.get(name, getattr(config, name, 1))
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        max_new_tokens = kwargs.get("max_new_tokens", config.max_new_tokens)
        max_length = kwargs.get("max_length")
        if max_length is None and config.max_length != GenerationConfig().max_length:
            max_length = (
                config.max_length
            )  # differs from transformers' default (20): set on purpose
        # The decoder reads positions 0 .. n - 1 to produce n new tokens (the last is never fed).
        table = (
            self.config.max_position_embeddings
            if self.config.position_encoding == "learned"
            else None
        )
        if max_new_tokens is None and max_length is None:
            source = inputs if inputs is not None else kwargs.get("input_ids")
            if source is None:
                source = kwargs.get("inputs_embeds")  # (B, S, d_model)
            if source is not None and source.dim() in (2, 3):
                default = source.shape[1] + MAX_OUTPUT_LENGTH_OFFSET
                kwargs["max_new_tokens"] = default if table is None else min(default, table)
        elif table is not None:
            requested = max_new_tokens if max_new_tokens is not None else max_length - 1
            if requested > table:
                raise ValueError(
                    f"Generating up to {requested} tokens needs {requested} decoder positions, but "
                    f"the learned position table has max_position_embeddings={table}. Pass "
                    f"max_new_tokens <= {table}."
                )
        return super().generate(inputs, generation_config=generation_config, **kwargs)


__all__ = [
    "VanillaTransformerPreTrainedModel",
    "VanillaTransformerModel",
    "VanillaTransformerForConditionalGeneration",
]
