"""A joint source/target byte-level BPE tokenizer (Section 5.1: "a shared source-target
vocabulary"), trained with the `tokenizers` library and wrapped as a `PreTrainedTokenizerFast`.

Choices, and why:

- **Normalisation: NFC only.** Unicode composition makes "á" one code point whatever the input
  used, so the same word always gives the same tokens; no lowercasing, no accent stripping, no
  whitespace rewriting, so decoding gives the NFC text back exactly (English and Spanish accents,
  "¿¡«»—’" included).
- **Pre-tokenisation: byte-level (GPT-2 style), no prefix space.** Every string maps to bytes
  and all 256 bytes are in the base vocabulary, so characters never seen in training (Greek,
  Chinese, emoji) are encoded as byte tokens: `<unk>` is never produced. Without a prefix space,
  decode(encode(text)) == NFC(text).
- **Special tokens with fixed ids**: `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3, the model config's
  defaults (pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1).
- **Post-processing**: every sequence, source or `text_target`, ends with `</s>`; no `<s>` is
  prepended (the model shifts the labels right and starts the decoder with `<s>`).

The saved folder is plain `tokenizer.json` + `tokenizer_config.json`:
`AutoTokenizer.from_pretrained` loads it without this package.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import datasets
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3, in this order
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def _iter_texts(
    texts: Iterable[str] | datasets.Dataset | datasets.DatasetDict,
    languages: Iterable[str] | None,
    batch_size: int,
) -> Iterator[list[str]]:
    """Batches of strings from a plain iterable or a translation dataset, never all at once."""
    if isinstance(texts, datasets.DatasetDict):
        if "train" not in texts:
            raise ValueError(f"DatasetDict has no 'train' split to train on; found {list(texts)}")
        texts = texts["train"]
    if isinstance(texts, (datasets.Dataset, datasets.IterableDataset)):
        if "translation" not in (texts.column_names or []):
            raise ValueError(
                f"dataset needs a 'translation' column; found columns {texts.column_names}"
            )
        for batch in texts.iter(batch_size=batch_size):
            for row in batch["translation"]:
                keys = languages if languages is not None else row.keys()
                yield [row[k] for k in keys if row.get(k)]
        return
    batch: list[str] = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must yield strings, got {type(text).__name__}: {text!r}")
        batch.append(text)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_tokenizer_model() -> Tokenizer:
    """An untrained `tokenizers.Tokenizer` with the pipeline described in the module docstring."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(
    texts: Iterable[str] | datasets.Dataset | datasets.DatasetDict,
    vocab_size: int = 8000,
    min_frequency: int = 2,
    languages: Iterable[str] | None = None,
    model_max_length: int = 1024,
    batch_size: int = 1000,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """Train one joint byte-level BPE on source and target text.

    Args:
        texts: an iterable of strings (streamed), or a translation ``Dataset`` /
            ``DatasetDict`` (its ``train`` split) whose ``translation`` column holds
            ``{lang: text}`` dicts; both sides are used.
        vocab_size: final vocabulary size, special tokens and the 256 byte tokens included.
            8000 suits the ~31k-verse Bible corpus.
        min_frequency: a pair must occur this often to be merged.
        languages: keys of ``translation`` to read (default: all of them).
        model_max_length: the longest sequence the model takes (its ``max_position_embeddings``);
            ``truncation=True`` cuts there.
        batch_size: strings per batch pulled from ``texts``.
        show_progress: show the `tokenizers` trainer's progress bar.

    Returns:
        A ``PreTrainedTokenizerFast`` with ``<pad>``=0, ``<s>``=1, ``</s>``=2, ``<unk>``=3 that
        appends ``</s>`` to every sequence, including ``text_target``.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (256 bytes + special "
            f"tokens), got {vocab_size}"
        )
    languages = list(languages) if languages is not None else None
    tokenizer = build_tokenizer_model()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(_iter_texts(texts, languages, batch_size), trainer=trainer)
    for token, expected in zip(SPECIAL_TOKENS, range(len(SPECIAL_TOKENS)), strict=True):
        if tokenizer.token_to_id(token) != expected:  # guards a change of trainer behaviour
            raise RuntimeError(f"{token} got id {tokenizer.token_to_id(token)}, not {expected}")
    return wrap_tokenizer(tokenizer, model_max_length)


def wrap_tokenizer(tokenizer: Tokenizer, model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """Add the ``</s>`` post-processor and wrap as a transformers tokenizer."""
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, EOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
