"""Translation quality: batched beam-search decoding and corpus-level BLEU / chrF / TER.

The paper reports BLEU on detokenised output (Section 6.1). Here every score is sacrebleu's
corpus-level score on detokenised text with its default 13a tokenisation, computed through the
package's `evaluate` metric modules (`vanilla_transformer.metrics`), and the sacrebleu signature
is returned beside the number so a score can be reproduced and compared.

`translate` decodes with `vanilla_transformer.translation.translate_lines`, the package's one
batched decoder: sources sorted by length, so that each batch holds sentences of similar length
(less padding, and a tighter output limit: the model caps a batch at its longest source + 50
tokens, Section 6.1). The outputs come back in the order of the inputs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..engines.base import Translator
from ..metrics import corpus_scores
from ..translation import DecodingOptions, translate_lines

logger = logging.getLogger(__name__)

__all__ = [
    "translate",
    "compute_bleu",
    "evaluate_translation",
]


def translate(
    model,
    tokenizer,
    sources: list[str],
    options: DecodingOptions | None = None,
    device: str | torch.device | None = None,
    show_progress: bool = False,
    **decoding,
) -> list[str]:
    """The best translation of each source, in the order of `sources`: `translate_lines`
    (`vanilla_transformer.translation`, the one batched decoder) with its first output per line, or
    the `translate` of `model` when it is a `Translator` on an engine (`vanilla_transformer.engines`:
    the translate tool's code path, so a BLEU on an engine is that of its translations).

    `options` or `decoding` (`DecodingOptions` fields, e.g. `batch_size`, `num_beams`,
    `length_penalty`, `max_new_tokens`) say how to decode; `show_progress`: a tqdm bar over lines.
    """
    if options is None:
        options = DecodingOptions(**{**decoding, "num_return_sequences": 1})
    elif decoding:
        options = dataclasses.replace(options, **decoding)
    with tqdm(total=None, desc="translate", unit="line", disable=not show_progress) as bar:
        if isinstance(sources, list):
            bar.total = len(sources)
        if isinstance(model, Translator):  # a model on an engine (`vanilla_transformer.engines`)
            outputs = model.translate(sources, options, progress=bar)
        else:
            outputs = translate_lines(model, tokenizer, sources, options, device, progress=bar)
    return [texts[0] for texts in outputs]


def compute_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """Corpus-level BLEU, chrF and TER (sacrebleu defaults: 13a tokenisation, mixed case, one
    reference per hypothesis) of detokenised text, through the package's `evaluate` modules.

    Returns:
        `{"bleu", "chrf", "ter": float, "bleu_signature", "chrf_signature", "ter_signature": str}`;
        BLEU and chrF are in [0, 100].
    """
    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(
            f"hypotheses and references must have the same length, got {len(hypotheses)} and "
            f"{len(references)}."
        )
    if not hypotheses:
        raise ValueError("compute_bleu needs at least one hypothesis/reference pair, got none.")
    for name, texts in (("hypotheses", hypotheses), ("references", references)):
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"{name}[{bad}] must be a str, got {type(texts[bad]).__name__}.")
    return corpus_scores(hypotheses, references)


def _pairs(dataset: Iterable[dict], src_lang: str, tgt_lang: str, max_samples: int | None):
    """(sources, references) from rows `{"translation": {src_lang: ..., tgt_lang: ...}}`."""
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be None or >= 1, got {max_samples}.")
    if hasattr(dataset, "select") and hasattr(dataset, "column_names"):  # a datasets.Dataset
        if "translation" not in dataset.column_names:
            raise ValueError(
                f"dataset must have a 'translation' column, got columns {dataset.column_names}."
            )
        if max_samples is not None:
            dataset = dataset.select(range(min(max_samples, len(dataset))))
        rows = ({"translation": t} for t in dataset["translation"])
    else:
        rows = iter(dataset)
    sources, references = [], []
    for i, row in enumerate(rows):
        if max_samples is not None and i >= max_samples:
            break
        pair = row.get("translation") if isinstance(row, dict) else None
        if not isinstance(pair, dict) or src_lang not in pair or tgt_lang not in pair:
            found = sorted(pair) if isinstance(pair, dict) else row
            raise ValueError(
                f"row {i}: expected {{'translation': {{'{src_lang}': ..., '{tgt_lang}': ...}}}}, "
                f"got translation keys {found!r}."
            )
        sources.append(pair[src_lang])
        references.append(pair[tgt_lang])
    if not sources:
        raise ValueError("dataset has no rows to evaluate.")
    return sources, references


def evaluate_translation(
    model,
    tokenizer,
    dataset,
    src_lang: str,
    tgt_lang: str,
    max_samples: int | None = None,
    hypotheses_file: str | Path | None = None,
    **decoding,
) -> dict:
    """Translate a dataset's sources and score them against its references.

    Args:
        dataset: a `datasets.Dataset` or an iterable of rows
            `{"translation": {src_lang: ..., tgt_lang: ...}}`.
        max_samples: evaluate the first `max_samples` rows only (deterministic).
        hypotheses_file: if given, the hypotheses are written there, one per line in dataset
            order (newlines inside a hypothesis become spaces).
        decoding: `translate`'s keyword arguments: `DecodingOptions` fields (batch_size,
            num_beams, length_penalty, max_new_tokens, ...), `options`, `device`, `show_progress`.

    Returns:
        `compute_bleu`'s dict plus `num_samples`.
    """
    sources, references = _pairs(dataset, src_lang, tgt_lang, max_samples)
    hypotheses = translate(model, tokenizer, sources, **decoding)
    if hypotheses_file is not None:
        path = Path(hypotheses_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = (h.replace("\r", " ").replace("\n", " ") for h in hypotheses)
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    scores = compute_bleu(hypotheses, references)
    scores["num_samples"] = len(sources)
    logger.info(
        "BLEU %.2f chrF %.2f on %d %s->%s pairs",
        scores["bleu"],
        scores["chrf"],
        len(sources),
        src_lang,
        tgt_lang,
    )
    return scores
