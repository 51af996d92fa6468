"""The engines that decode with transformers' `generate()` on a model object, through
`translation.translate_lines` / `translate_hypotheses` (length sorting, token batches, prefixes,
scores): `GenerateTranslator`, and the PyTorch engine `TorchTranslator` built on it. The ONNX
Runtime engine is one too: its model is the `generate()` facade over the sessions."""

from __future__ import annotations

from .. import translation
from ..translation import DecodingOptions, Hypothesis
from .base import Translator


class GenerateTranslator(Translator):
    """`model` (anything with `generate()` and a config) and its tokenizer, on `device` (None:
    where the model is)."""

    def __init__(self, model, tokenizer, device=None):
        super().__init__(model.config, tokenizer)
        self.model = model
        self.device = device

    def translate(
        self, lines: list[str], options: DecodingOptions | None = None, progress=None
    ) -> list[list[str]]:
        return translation.translate_lines(
            self.model, self.tokenizer, lines, options, self.device, progress
        )

    def translate_hypotheses(
        self,
        lines: list[str],
        options: DecodingOptions | None = None,
        prefixes: list[str] | None = None,
        progress=None,
    ) -> list[list[Hypothesis]]:
        return translation.translate_hypotheses(
            self.model,
            self.tokenizer,
            lines,
            options,
            device=self.device,
            progress=progress,
            prefixes=prefixes,
        )


class TorchTranslator(GenerateTranslator):
    """A loaded `VanillaTransformerForConditionalGeneration` (plain, or prepared by
    `optimize_for_cpu_inference`) and its tokenizer, on `device`."""

    engine = "torch"
