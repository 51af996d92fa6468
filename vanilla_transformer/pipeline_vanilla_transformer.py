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
    `clean_up_tokenization_spaces` go to `model.generate` (e.g. `num_beams`, `max_new_tokens`)."""

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
            # One string -> [{"translation_text": ...}], the shape of the pre-v5 pipeline.
            outputs = super().__call__([inputs], **kwargs)
            return outputs[0] if isinstance(outputs[0], list) else outputs
        if not isinstance(inputs, (list, tuple)) or not all(isinstance(x, str) for x in inputs):
            raise ValueError(
                "The translation pipeline takes a string or a list of strings, got "
                f"{type(inputs).__name__}."
            )
        return super().__call__(list(inputs), **kwargs)

    def preprocess(self, text, truncation=False):
        return self.tokenizer(text, return_tensors="pt", truncation=truncation)

    def _forward(self, model_inputs, generate_kwargs):
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        with torch.inference_mode():
            return {"output_ids": self.model.generate(**model_inputs, **generate_kwargs)}

    def postprocess(self, model_outputs, clean_up_tokenization_spaces=False):
        # False: the clean-up step is WordPiece's; on byte-level BPE it strips real spaces.
        texts = self.tokenizer.batch_decode(
            model_outputs["output_ids"],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
        )
        records = [{"translation_text": text.strip()} for text in texts]
        return records if len(records) > 1 else records[0]
