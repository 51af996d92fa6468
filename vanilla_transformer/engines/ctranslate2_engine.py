"""The CTranslate2 engine: `ctranslate2.Translator.translate_batch` over an export
(`export.ctranslate2.export_ctranslate2`), batched and decoded like the PyTorch engine.

`DecodingOptions` -> `translate_batch`: num_beams -> beam_size, length_penalty -> length_penalty,
num_return_sequences -> num_hypotheses, do_sample / top_k / top_p / temperature ->
sampling_topk (0: the whole vocabulary) / sampling_topp / sampling_temperature, max_new_tokens ->
max_decoding_length (default: the longest source in the batch + 50, Section 6.1, as `generate()`),
target prefixes -> target_prefix; always min_decoding_length=0 (`generate()` may end at the first
step) and max_input_length=0 (no truncation of long inputs). Beam search with sampling
(`do_sample` and `num_beams` > 1) has no CTranslate2 equivalent and is refused.

Scores: CTranslate2 divides a hypothesis' log-probability by its length (the generated tokens and
`</s>`) to the power `length_penalty`, as `generate()`'s `sequences_scores` are; the length penalty
is passed in every mode (it changes no greedy or sampled choice), so `Hypothesis.score` means the
same on every engine (tests/engines: equal to the PyTorch model's within 1e-4).
With a target prefix, `generate()` scores only the tokens after it (the prefix is its prompt):
CTranslate2 sums the same log-probabilities but divides by the whole length, which the engine
corrects.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..translation import DecodingOptions, Hypothesis
from .base import Translator, unsupported

CONFIG_FILE = "vanilla_transformer_config.json"  # our config, beside CTranslate2's config.json


def tokens_of(tokenizer, ids_rows: list[list[int]]) -> list[list[str]]:
    return [tokenizer.convert_ids_to_tokens(ids) for ids in ids_rows]


def translate_batch_arguments(
    options: DecodingOptions, longest_source: int, position_limit: int | None = None
) -> dict:
    """`translate_batch`'s keyword arguments for `options` (a batch whose longest source has
    `longest_source` tokens); the default output limit is capped at `position_limit` decoder
    positions where the export has a position table."""
    default_limit = longest_source + 50
    if position_limit is not None:
        default_limit = min(default_limit, position_limit)
    if options.do_sample and options.num_beams > 1:
        raise unsupported("beam search with sampling (--do_sample with --num_beams > 1)",
                          "ctranslate2", ["torch", "onnxruntime"])  # fmt: skip
    arguments = {
        "beam_size": options.num_beams,
        "num_hypotheses": options.num_return_sequences,
        "max_decoding_length": options.max_new_tokens or default_limit,
        "min_decoding_length": 0,
        "max_input_length": 0,
        "return_scores": True,
        # Scores every hypothesis, greedy and sampled ones too (CTranslate2's default is 1).
        "length_penalty": options.length_penalty,
    }
    if options.do_sample:
        arguments["sampling_topk"] = options.top_k or 0
        arguments["sampling_topp"] = options.top_p if options.top_p is not None else 1.0
        arguments["sampling_temperature"] = options.temperature
    return arguments


class CTranslate2Translator(Translator):
    """Text in, text out over a CTranslate2 export folder:
    `CTranslate2Translator(folder).translate(lines, options)`; `compute_type` and the other
    keyword arguments go to `ctranslate2.Translator` (e.g. `intra_threads`)."""

    engine = "ctranslate2"

    def __init__(
        self,
        folder: str | os.PathLike,
        compute_type: str = "default",
        device: str = "cpu",
        config=None,
        **kwargs,
    ):
        import ctranslate2
        from transformers import AutoTokenizer

        folder = Path(folder)
        if config is None and (folder / CONFIG_FILE).is_file():
            from ..configuration_vanilla_transformer import VanillaTransformerConfig

            config = VanillaTransformerConfig.from_json_file(str(folder / CONFIG_FILE))
        super().__init__(config, AutoTokenizer.from_pretrained(str(folder)))
        self.folder = folder
        self.translator = ctranslate2.Translator(
            str(folder), device=device, compute_type=compute_type, **kwargs
        )

    @property
    def position_limit(self) -> int | None:
        """The export's position table (`max_position_embeddings` rows, sinusoidal or learned):
        CTranslate2 encodes no position past it."""
        return self.config.max_position_embeddings if self.config is not None else None

    position_table = "the CTranslate2 export's position table"

    def _decode(self, lines, options, prefixes, progress, scores):
        def decode(sources, targets):
            longest = max(len(s) for s in sources)
            arguments = translate_batch_arguments(options, longest, self.position_limit)
            if targets is not None:
                arguments["target_prefix"] = tokens_of(self.tokenizer, targets)
            results = self.translator.translate_batch(
                tokens_of(self.tokenizer, sources), **arguments
            )
            prefix_lengths = [0] * len(sources) if targets is None else [len(t) for t in targets]
            return [
                self._hypotheses(result, prefix_length, options.length_penalty)
                for result, prefix_length in zip(results, prefix_lengths, strict=True)
            ]

        return self._batched(lines, options, prefixes, progress, decode)

    def _hypotheses(self, result, prefix_length: int, length_penalty: float) -> list[Hypothesis]:
        hypotheses = []
        for tokens, score in zip(result.hypotheses, result.scores, strict=True):
            text = self.tokenizer.decode(
                self.tokenizer.convert_tokens_to_ids(tokens), skip_special_tokens=True
            ).strip()
            if prefix_length:  # CTranslate2 divides by the whole length, prefix included
                length = len(tokens) + 1  # </s> counted
                score *= (length / (length - prefix_length)) ** length_penalty
            hypotheses.append(Hypothesis(text, float(score)))
        return hypotheses
