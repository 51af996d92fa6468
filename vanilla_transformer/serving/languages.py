"""The language pair a server announces (`GET /languages`) and accepts (`source`, `target`).

Where the codes come from, first found: the server's `--source_lang` / `--target_lang`; the
translator's `source_lang` / `target_lang` (its config or tokenizer, `engines.Translator`); the
model card's `language:` list (`[source, target]`, as `vanilla-transformer-push` and the training
recipe write it) in the model folder. None found is a `UserError` asking for the options.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UserError

__all__ = ["LanguagePair", "language_name", "resolve_language_pair"]

# English names of common ISO 639-1 codes (LibreTranslate's `name` field); others show the code.
NAMES = {
    "ar": "Arabic", "ca": "Catalan", "cs": "Czech", "da": "Danish", "de": "German",
    "el": "Greek", "en": "English", "es": "Spanish", "eu": "Basque", "fi": "Finnish",
    "fr": "French", "gl": "Galician", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean", "la": "Latin",
    "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian",
    "ru": "Russian", "sv": "Swedish", "tr": "Turkish", "uk": "Ukrainian", "zh": "Chinese",
}  # fmt: skip


def language_name(code: str) -> str:
    return NAMES.get(code.split("-")[0].split("_")[0].lower(), code)


@dataclasses.dataclass(frozen=True)
class LanguagePair:
    source: str
    target: str

    def languages(self) -> list[dict]:
        """`GET /languages`: LibreTranslate's `[{"code", "name", "targets"}]`; the target
        language is listed too, with no targets of its own (the model translates one way)."""
        return [
            {"code": self.source, "name": language_name(self.source), "targets": [self.target]},
            {"code": self.target, "name": language_name(self.target), "targets": []},
        ]


def resolve_language_pair(
    translator, model: str | Path | None = None, source=None, target=None
) -> LanguagePair:
    """The pair from the options, else the translator, else the card of `model` (a model folder,
    run folder or Hub id; module docstring)."""
    card = _card_languages(_local_folder(model)) if not (source and target) else (None, None)
    source = source or getattr(translator, "source_lang", None) or card[0]
    target = target or getattr(translator, "target_lang", None) or card[1]
    if not source or not target:
        raise UserError(
            "the model does not record its languages (no src_lang/tgt_lang in its config or "
            "tokenizer, no language list in its model card): pass --source_lang and --target_lang."
        )
    if source == target:
        raise UserError(f"the source and target languages are both {source!r}.")
    return LanguagePair(source, target)


def _local_folder(model) -> str | None:
    """The model's local folder (where its card is), or None (a Hub id, nothing given)."""
    if model is None:
        return None
    from ..recipe.checkpoints import resolve_model_folder

    try:
        return resolve_model_folder(model)
    except (FileNotFoundError, UserError):
        return None


def _card_languages(folder) -> tuple[str | None, str | None]:
    card = Path(folder) / "README.md" if folder is not None else None
    if card is None or not card.is_file():
        return None, None
    from huggingface_hub import ModelCard

    try:
        languages = ModelCard.load(card).data.language
    except Exception:  # not a card with metadata: no languages from it
        return None, None
    if isinstance(languages, list) and len(languages) == 2:
        return str(languages[0]), str(languages[1])
    return None, None
