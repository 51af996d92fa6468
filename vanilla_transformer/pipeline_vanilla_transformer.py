"""A `translation` pipeline for encoder-decoder models.

transformers v5 removed its built-in `translation` task (`transformers.pipelines.REMOVED_TASKS`).
This file restores it for our checkpoints: it is saved beside the weights and named in `config.json`
under `custom_pipelines`, so `pipeline("translation", model=folder_or_repo, trust_remote_code=True)`
finds it (custom tasks are looked up before the removal check). With the package installed,
`vanilla_transformer.translation_pipeline(model)` builds the same pipeline without remote code.

Remote-code rule: this file imports only torch and transformers.
"""

import torch
from transformers import Pipeline


class TranslationPipeline(Pipeline):
    """`pipe("text")` or `pipe(["a", "b"])` -> `[{"translation_text": ...}]` per input (a list of
    such lists with `num_return_sequences` > 1). Keyword arguments other than `truncation` and
    `clean_up_tokenization_spaces` go to `model.generate` (e.g. `num_beams`, `max_new_tokens`).
    With `output_scores=True, return_dict_in_generate=True` each record also has a `"score"`: beam
    search's `sequences_scores` (length-penalised log-probability), else the sum of the tokens'
    log-probabilities."""

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

    def __call__(self, inputs, **kwargs):
        if isinstance(inputs, str):
            _check_unicode(inputs, "the input")
            # One string -> [{"translation_text": ...}], the shape of the pre-v5 pipeline.
            outputs = super().__call__([inputs], **kwargs)
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
        return super().__call__(list(inputs), **kwargs)

    def preprocess(self, text, truncation=False):
        return self.tokenizer(text, return_tensors="pt", truncation=truncation)

    def _forward(self, model_inputs, generate_kwargs):
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        batch_size = model_inputs["input_ids"].shape[0]
        with torch.inference_mode():
            generated = self.model.generate(**model_inputs, **generate_kwargs)  # (B * n, T)
        scores = None
        if isinstance(generated, torch.Tensor):
            output_ids = generated
        else:  # return_dict_in_generate=True: a ModelOutput
            output_ids = generated.sequences
            scores = _sequence_scores(self.model, generated)  # (B * n,) or None
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


def _sequence_scores(model, generated) -> torch.Tensor | None:
    """One score per returned sequence: beam search's `sequences_scores`, else the sum of the
    tokens' log-probabilities (needs `output_scores=True`); None when generate kept no scores."""
    if getattr(generated, "sequences_scores", None) is not None:
        return generated.sequences_scores
    if getattr(generated, "scores", None) is None:
        return None
    transition = model.compute_transition_scores(
        generated.sequences, generated.scores, normalize_logits=True
    )  # (B * n, T - 1): the tokens after the start token
    generated_tokens = generated.sequences[:, -transition.shape[-1] :]
    padding = generated_tokens == model.config.pad_token_id  # after a finished sequence's </s>
    return transition.masked_fill(padding | torch.isinf(transition), 0.0).sum(-1)
