"""A `translation` pipeline for encoder-decoder models.

transformers v5 removed its built-in `translation` task (`transformers.pipelines.REMOVED_TASKS`).
This file restores it for our checkpoints: it is saved beside the weights and named in `config.json`
under `custom_pipelines`, so `pipeline("translation", model=folder_or_repo, trust_remote_code=True)`
finds it (custom tasks are looked up before the removal check). With the package installed,
`vanilla_transformer.translation_pipeline(model)` builds the same pipeline without remote code.

Remote-code rule: this file imports only torch and transformers.
"""

import torch
from transformers import LogitsProcessor, LogitsProcessorList, Pipeline


class TranslationPipeline(Pipeline):
    """`pipe("text")` or `pipe(["a", "b"])` -> `[{"translation_text": ...}]` per input (a list of
    such lists with `num_return_sequences` > 1). Keyword arguments other than `truncation` and
    `clean_up_tokenization_spaces` go to `model.generate` (e.g. `num_beams`, `max_new_tokens`).
    With `output_scores=True, return_dict_in_generate=True` each record also has a `"score"`
    (`sequence_scores`: the length-penalised log-probability, beam search's `sequences_scores`).
    `prefix=`: one target prefix per input (a string for a single input), forced as the first
    tokens of its translations (`PrefixForcingLogitsProcessor`)."""

    _pipeline_calls_generate = True
    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def _sanitize_parameters(
        self, truncation=None, clean_up_tokenization_spaces=None, **generate_kwargs
    ):
        preprocess_params = {} if truncation is None else {"truncation": truncation}
        postprocess_params = {}
        if clean_up_tokenization_spaces is not None:
            postprocess_params["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        return preprocess_params, {"generate_kwargs": generate_kwargs}, postprocess_params

    def __call__(self, inputs, prefix=None, **kwargs):
        if isinstance(inputs, str):
            _check_unicode(inputs, "the input")
            prefix = [prefix] if isinstance(prefix, str) else prefix
            # One string -> [{"translation_text": ...}], the shape of the pre-v5 pipeline.
            outputs = self.__call__([inputs], prefix=prefix, **kwargs)
            return outputs[0] if isinstance(outputs[0], list) else outputs
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(
                "The translation pipeline takes a string or a list of strings, got "
                f"{type(inputs).__name__}."
            )
        for index, item in enumerate(inputs):
            if not isinstance(item, str):
                raise ValueError(
                    f"The translation pipeline takes a list of strings: inputs[{index}] is "
                    f"{type(item).__name__} ({item!r})."
                )
            _check_unicode(item, f"inputs[{index}]")
        if not inputs:
            return []  # nothing to translate (the base Pipeline would index an empty batch)
        if prefix is not None:
            inputs = [
                {"text": t, "prefix": p}
                for t, p in zip(inputs, _prefixes(prefix, inputs), strict=True)
            ]
        return super().__call__(list(inputs), **kwargs)

    def preprocess(self, text, truncation=False):
        if isinstance(text, dict):  # {"text", "prefix"}: the prefix travels as padded ids + mask
            prefix = self.tokenizer(text["prefix"], add_special_tokens=False, return_tensors="pt")
            encoded = self.tokenizer(text["text"], return_tensors="pt", truncation=truncation)
            encoded["prefix_ids"] = prefix["input_ids"]
            encoded["prefix_mask"] = torch.ones_like(prefix["input_ids"])
            return encoded
        return self.tokenizer(text, return_tensors="pt", truncation=truncation)

    def _forward(self, model_inputs, generate_kwargs):
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        batch_size = model_inputs["input_ids"].shape[0]
        if "prefix_ids" in model_inputs:
            ids, mask = model_inputs.pop("prefix_ids"), model_inputs.pop("prefix_mask")
            prefixes = [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
            processors = LogitsProcessorList(generate_kwargs.get("logits_processor") or [])
            processors.append(PrefixForcingLogitsProcessor(prefixes))
            generate_kwargs = {**generate_kwargs, "logits_processor": processors}
        with torch.inference_mode():
            generated = self.model.generate(**model_inputs, **generate_kwargs)  # (B * n, T)
        scores = None
        if isinstance(generated, torch.Tensor):
            output_ids = generated
        else:  # return_dict_in_generate=True: a ModelOutput
            output_ids = generated.sequences
            penalty = generate_kwargs.get(
                "length_penalty", self.model.generation_config.length_penalty
            )
            scores = sequence_scores(self.model, generated, penalty)  # (B * n,) or None
        # generate() returns the n hypotheses of each input one after the other. The Pipeline
        # splits a batch along dim 0, so that dim must be the input: (B, n, T), never (B * n, T),
        # or with batch_size > 1 input i would receive another input's hypotheses.
        output_ids = output_ids.reshape(batch_size, -1, output_ids.shape[-1])  # (B, n, T)
        outputs = {"output_ids": output_ids}
        if scores is not None:
            outputs["scores"] = scores.reshape(batch_size, -1)  # (B, n)
        return outputs

    def postprocess(self, model_outputs, clean_up_tokenization_spaces=False):
        output_ids = model_outputs["output_ids"][0]  # (n, T): this input's hypotheses
        # False: the clean-up step is WordPiece's; on byte-level BPE it strips real spaces.
        texts = self.tokenizer.batch_decode(
            output_ids,
            skip_special_tokens=True,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
        )
        records = [{"translation_text": text.strip()} for text in texts]
        if "scores" in model_outputs:
            for record, score in zip(records, model_outputs["scores"][0].tolist(), strict=True):
                record["score"] = score
        return records if len(records) > 1 else records[0]


def _check_unicode(text: str, where: str) -> None:
    """A ValueError for a string that is not valid Unicode text (a lone surrogate, e.g. from
    `surrogateescape` decoding), which the tokenizer would refuse with a bare TypeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"The translation pipeline takes text: {where} holds a lone surrogate "
            f"{text[err.start]!r} at character {err.start}, not valid Unicode. Decode the input "
            "as UTF-8 with errors='replace' or remove it."
        ) from None


def _prefixes(prefix, inputs) -> list[str]:
    """One prefix string per input, or a ValueError saying what does not match."""
    if isinstance(prefix, str) or not isinstance(prefix, (list, tuple)):
        raise ValueError(
            f"prefix must be a list of strings, one per input ({len(inputs)}), got "
            f"{type(prefix).__name__}."
        )
    if len(prefix) != len(inputs):
        raise ValueError(f"{len(prefix)} prefixes for {len(inputs)} inputs: pass one per input.")
    for index, item in enumerate(prefix):
        if not isinstance(item, str):
            raise ValueError(f"prefix[{index}] must be a str, got {type(item).__name__}.")
        _check_unicode(item, f"prefix[{index}]")
    return list(prefix)


class PrefixForcingLogitsProcessor(LogitsProcessor):
    """Forces each input's target prefix (token ids, one list per input) as the first generated
    tokens of all its rows (beams or samples): at a step inside the prefix every other token's score
    becomes -inf and the forced token keeps its own, so beam search follows the prefix, then
    continues from it, and the prefix's log-probability counts in the sequence's score. Rows are
    generate()'s, `num_beams` (or `num_return_sequences`) consecutive rows per input; an empty prefix
    leaves its rows free. Works with batches whose prefixes differ in length."""

    def __init__(self, prefixes: list[list[int]], start_length: int = 1):
        longest = max((len(p) for p in prefixes), default=0)
        self.ids = torch.zeros((len(prefixes), longest), dtype=torch.long)  # (B, P)
        for row, prefix in enumerate(prefixes):
            self.ids[row, : len(prefix)] = torch.tensor(prefix, dtype=torch.long)
        self.lengths = torch.tensor([len(p) for p in prefixes], dtype=torch.long)  # (B,)
        self.start_length = start_length  # the decoder's start token

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.start_length
        if step >= self.ids.shape[1]:
            return scores
        rows_per_input = scores.shape[0] // self.ids.shape[0]
        lengths = self.lengths.to(scores.device).repeat_interleave(rows_per_input)  # (rows,)
        forced = self.ids[:, step].to(scores.device).repeat_interleave(rows_per_input)  # (rows,)
        inside = lengths > step  # rows still inside their prefix
        kept = scores.gather(1, forced[:, None])  # (rows, 1)
        masked = torch.full_like(scores, float("-inf")).scatter(1, forced[:, None], kept)
        return torch.where(inside[:, None], masked, scores)


def sequence_scores(model, generated, length_penalty: float) -> torch.Tensor | None:
    """One score per returned sequence, the same on every decoding mode: its log-probability (the
    sum of its tokens' log-probabilities, `</s>` included) divided by its length in tokens to the
    power `length_penalty`. Beam search's `sequences_scores` are exactly that; for greedy search and
    sampling it is computed from the raw logits (`output_logits=True`; else the processed
    `output_scores`), so a sampled sequence is scored by the model, not by the warped distribution
    it was sampled from. None when generate kept no scores."""
    if getattr(generated, "sequences_scores", None) is not None:
        return generated.sequences_scores
    logits = getattr(generated, "logits", None) or getattr(generated, "scores", None)
    if logits is None:
        return None
    transition = model.compute_transition_scores(
        generated.sequences, logits, normalize_logits=True
    )  # (B * n, T - 1): the tokens after the start token
    generated_tokens = generated.sequences[:, -transition.shape[-1] :]
    padding = generated_tokens == model.config.pad_token_id  # after a finished sequence's </s>
    total = transition.masked_fill(padding | torch.isinf(transition), 0.0).sum(-1)
    length = (~padding).sum(-1).clamp(min=1).to(total.dtype)
    return total / length**length_penalty
