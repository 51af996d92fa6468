"""The engines that decode with transformers' `generate()` on a model object, through
`translation.translate_lines` / `translate_hypotheses` (length sorting, token batches, prefixes,
scores): `GenerateTranslator`, and the PyTorch engine `TorchTranslator` built on it. The ONNX
Runtime engine is one too: its model is the `generate()` facade over the sessions."""

from __future__ import annotations

from .. import translation
from .base import Translator


class GenerateTranslator(Translator):
    """`model` (anything with `generate()` and a config) and its tokenizer, on `device` (None:
    where the model is)."""

    def __init__(self, model, tokenizer, device=None):
        super().__init__(model.config, tokenizer)
        self.model = model
        self.device = device

    def _decode(self, lines, options, prefixes, progress, scores):
        return translation.translate_hypotheses(
            self.model, self.tokenizer, lines, options, self.device, progress, prefixes, scores
        )


class TorchTranslator(GenerateTranslator):
    """A loaded `VanillaTransformerForConditionalGeneration` (plain, or prepared by
    `optimize_for_cpu_inference`) and its tokenizer, on `device`."""

    engine = "torch"
