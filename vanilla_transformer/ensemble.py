"""Ensemble decoding: several models sharing one vocabulary decode as one model, through `generate()`.

`EnsembleModel(models)` is a `PreTrainedModel` with `GenerationMixin`, so greedy search, beam search
and sampling, with caches, are transformers' own. Its encoder runs every member's encoder (their
outputs travel concatenated along the feature axis, one tensor, so generate() expands them for beams
like any encoder output); its forward runs each member's decoder with the member's own cache and
returns, as logits, the log of the mean of the members' probabilities,
`logsumexp_m(log p_m) - log M` (fairseq's `EnsembleModel`, Marian's ensembles average in the same
space): the ensemble is a mixture of the members' distributions, a proper distribution whose log is
comparable to one model's scores, and an ensemble of one model (or of one model M times) is that
model exactly. (The mean of log-probabilities, a product of experts, would need renormalising.)
`EnsembleCache` holds one cache per member; beam search reorders it through `_reorder_cache`, which
asks each member to reorder its own.

    ensemble = EnsembleModel.from_pretrained_list(["runs/a/checkpoint-9000", "runs/a/checkpoint-10000"])
    translate_hypotheses(ensemble, tokenizer, lines)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from .errors import UserError
from .modeling_vanilla_transformer import (
    CACHE_OUTPUT_FIELD,
    MAX_OUTPUT_LENGTH_OFFSET,
    VanillaTransformerForConditionalGeneration,
    renamed_cache_kwarg,
)
from .translation import position_limit

__all__ = [
    "EnsembleCache",
    "EnsembleConfig",
    "EnsembleMismatchError",
    "EnsembleModel",
    "check_same_tokenizer",
]

SPECIAL_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")


class EnsembleMismatchError(UserError, ValueError):
    """Models (or tokenizers) that do not share one vocabulary cannot be ensembled."""


@strict
class EnsembleConfig(PreTrainedConfig):
    """What generate() reads of an ensemble: the shared vocabulary and special ids."""

    model_type = "vanilla_transformer_ensemble"

    vocab_size: int = 1
    num_members: int = 1
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    decoder_start_token_id: int | None = 1
    use_cache: bool = True
    is_encoder_decoder: bool = True


def _check_same_vocabulary(configs: Sequence[PreTrainedConfig], names: Sequence[str]) -> None:
    for name in ("vocab_size", *SPECIAL_IDS):
        values = [getattr(c, name, None) for c in configs]
        if any(v != values[0] for v in values):
            listed = ", ".join(f"{n}: {v}" for n, v in zip(names, values, strict=True))
            raise EnsembleMismatchError(
                f"the models do not share one vocabulary ({name} differs: {listed}); an ensemble "
                "needs models trained with the same tokenizer."
            )


def check_same_tokenizer(tokenizers: Sequence, names: Sequence[str]) -> None:
    """An `EnsembleMismatchError` unless every tokenizer has the first one's vocabulary (the same
    token for every id) and special ids."""
    first = tokenizers[0]
    for name, tokenizer in zip(names[1:], tokenizers[1:], strict=True):
        same_ids = all(
            getattr(tokenizer, key, None) == getattr(first, key, None) for key in SPECIAL_IDS[:3]
        )
        if tokenizer.get_vocab() != first.get_vocab() or not same_ids:
            raise EnsembleMismatchError(
                f"the tokenizer of {name} is not the one of {names[0]}: an ensemble needs models "
                "trained with the same tokenizer."
            )


class EnsembleCache(Cache):
    """One `EncoderDecoderCache` per member. `layers` (what generate() inspects) are the members'
    self-attention layers; the operations generate() calls act on every member's cache."""

    def __init__(self, members: list[EncoderDecoderCache]):
        # Not Cache.__init__: `layers` is a view over the members' caches, not a list of its own.
        self.members = members
        self.layer_class_to_replicate = None
        self.offloading = False

    @classmethod
    def for_models(cls, models: Sequence[PreTrainedModel]) -> EnsembleCache:
        return cls(
            [
                EncoderDecoderCache(DynamicCache(config=m.config), DynamicCache(config=m.config))
                for m in models
            ]
        )

    @property
    def layers(self) -> list:
        return [layer for cache in self.members for layer in cache.self_attention_cache.layers]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.members[0].get_seq_length(layer_idx)

    def reorder_cache(self, beam_idx: torch.LongTensor):
        for cache in self.members:
            cache.reorder_cache(beam_idx)

    def crop(self, tokens_to_remove: int) -> None:
        for cache in self.members:
            cache.crop(tokens_to_remove)

    def batch_repeat_interleave(self, repeats: int):
        for cache in self.members:
            cache.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor):
        for cache in self.members:
            cache.batch_select_indices(indices)

    def reset(self):
        for cache in self.members:
            cache.reset()


class EnsembleEncoder(nn.Module):
    """Every member's encoder on the same source; their outputs concatenated on the feature axis."""

    main_input_name = "input_ids"

    def __init__(self, members: nn.ModuleList):
        super().__init__()
        self.members = members  # shared with the EnsembleModel, not a copy

    def forward(self, input_ids=None, attention_mask=None, **kwargs) -> BaseModelOutput:
        states = [
            member.get_encoder()(
                input_ids=input_ids, attention_mask=attention_mask
            ).last_hidden_state
            for member in self.members
        ]  # M x (B, S, d_model_m)
        return BaseModelOutput(last_hidden_state=torch.cat(states, dim=-1))


class EnsembleModel(PreTrainedModel, GenerationMixin):
    """Models sharing a vocabulary, decoding as one (see the module docstring); not trainable or
    savable as one model: save its members."""

    config_class = EnsembleConfig
    main_input_name = "input_ids"
    base_model_prefix = "ensemble"

    def __init__(self, models: Sequence[PreTrainedModel], names: Sequence[str] | None = None):
        models = list(models)
        if not models:
            raise ValueError("an ensemble needs at least one model.")
        names = list(names) if names is not None else [f"model {i}" for i in range(len(models))]
        _check_same_vocabulary([m.config for m in models], names)
        first = models[0].config
        config = EnsembleConfig(
            vocab_size=first.vocab_size,
            num_members=len(models),
            **{name: getattr(first, name) for name in SPECIAL_IDS},
        )
        super().__init__(config)
        self.members = nn.ModuleList(models)
        self.encoder = EnsembleEncoder(self.members)
        self.widths = [m.config.d_model for m in models]
        self.generation_config = copy.deepcopy(models[0].generation_config)
        # Decoding only; the flag alone, so that building an ensemble leaves its members' modes.
        self.training = self.encoder.training = False

    @classmethod
    def from_pretrained_list(cls, folders: Sequence[str], **kwargs) -> EnsembleModel:
        """The ensemble of the models saved in `folders` (`from_pretrained` kwargs apply to each)."""
        models = [
            VanillaTransformerForConditionalGeneration.from_pretrained(f, **kwargs).eval()
            for f in folders
        ]
        return cls(models, names=[str(f) for f in folders]).eval()

    def get_encoder(self, modality: str | None = None):
        return self.encoder

    @renamed_cache_kwarg
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: EnsembleCache | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        """Logits = log of the mean of the members' next-token probabilities, (B, T, vocab_size)."""
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        states = torch.split(encoder_outputs[0], self.widths, dim=-1)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = EnsembleCache.for_models(self.members)
        log_probs = []
        for index, (member, member_states) in enumerate(zip(self.members, states, strict=True)):
            outputs = member(
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                encoder_outputs=(member_states,),
                cache=cache.members[index] if cache is not None else None,
                use_cache=use_cache,
            )
            log_probs.append(outputs.logits.float().log_softmax(-1))
        logits = torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(len(log_probs))
        return Seq2SeqLMOutput(logits=logits, **{CACHE_OUTPUT_FIELD: cache if use_cache else None})

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        """generate()'s cache: one dynamic cache per member, under the model's cache argument."""
        if (
            generation_config.use_cache is not False
            and model_kwargs.get(CACHE_OUTPUT_FIELD) is None
        ):
            model_kwargs[CACHE_OUTPUT_FIELD] = EnsembleCache.for_models(self.members)

    def _reorder_cache(self, cache: EnsembleCache, beam_idx: torch.LongTensor) -> EnsembleCache:
        """Beam search's reordering: each member reorders its own cache its own way."""
        for member, member_cache in zip(self.members, cache.members, strict=True):
            if hasattr(member, "_reorder_cache"):
                member._reorder_cache(member_cache, beam_idx)
            else:  # a model without its own rule: the whole cache follows the beams
                member_cache.reorder_cache(beam_idx)
        return cache

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """`GenerationMixin.generate` with the members' output limit: unless set, the longest source
        in the batch + 50 tokens, capped by the smallest learned position table of a member."""
        config = generation_config if generation_config is not None else self.generation_config
        given = kwargs.get("max_new_tokens", config.max_new_tokens) is not None
        source = inputs if inputs is not None else kwargs.get("input_ids")
        if not given and kwargs.get("max_length") is None and source is not None:
            limit = source.shape[1] + MAX_OUTPUT_LENGTH_OFFSET
            table = position_limit(self)  # the smallest learned table of a member
            kwargs["max_new_tokens"] = limit if table is None else min(limit, table)
        return super().generate(inputs, generation_config=generation_config, **kwargs)
