"""Translation data: loading, tokenisation, token-budget batching and collation.

Section 5.1 of the paper: "Sentence pairs were batched together by approximate sequence length.
Each training batch contained a set of sentence pairs containing approximately 25000 source tokens
and 25000 target tokens." `TokenBudgetBatchSampler` does this; `padding_stats` measures what it
saves against fixed-size random batches (`fixed_size_batches`).

Typical use::

    raw = load_translation_dataset("data.jsonl", "en", "es")        # or build_bible_corpus(...)
    tokenized, counts = tokenize_translation_dataset(raw, tok, "en", "es", 256, 256)
    train = tokenized["train"]
    sampler = TokenBudgetBatchSampler.from_dataset(train, max_tokens=4000, seed=0)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=make_collator(tok, model))
    for epoch in range(n):
        sampler.set_epoch(epoch)
        for batch in loader: ...

The collate path is `make_collator`: transformers' `DataCollatorForSeq2Seq`, which pads
`input_ids` / `attention_mask` with `<pad>`, pads `labels` with -100 (ignored by the loss), and,
given the model, adds `decoder_input_ids` from its `prepare_decoder_input_ids_from_labels`
(labels shifted right behind `decoder_start_token_id`).
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
from torch.utils.data import Sampler
from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from ..errors import UserError

logger = logging.getLogger(__name__)

SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "dev": "validation",
    "val": "validation",
    "test": "test",
}
JSONL_SUFFIXES = (".jsonl", ".json")
TSV_SUFFIXES = (".tsv", ".txt")


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def check_utf8(path: str | Path, chunk_size: int = 1 << 20) -> None:
    """Raise ``ValueError`` naming the file and byte offset if ``path`` is not valid UTF-8.

    Reads in chunks with an incremental decoder, so large files are never held in memory.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_size)
            # Bytes of a character split across chunks, held back from the previous chunk:
            # the error's position counts from their start.
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                position = offset - pending + err.start
                raise ValueError(
                    f"{path} is not valid UTF-8: byte offset {position} "
                    f"(byte 0x{err.object[err.start]:02x}, {err.reason}). Re-encode it, "
                    f"e.g. `iconv -f latin1 -t utf-8`."
                ) from None
            if not chunk:
                return
            offset += len(chunk)


def _check_languages(keys: Sequence[str], src_lang: str, tgt_lang: str, where: str) -> None:
    missing = [lang for lang in (src_lang, tgt_lang) if lang not in keys]
    if missing:
        raise ValueError(
            f"{where}: language key(s) {missing} not found; found {sorted(keys)}, expected "
            f"src_lang={src_lang!r} and tgt_lang={tgt_lang!r}"
        )


def _jsonl_rows(path: str, src_lang: str, tgt_lang: str, mtime_ns: int) -> Iterator[dict]:
    """Rows of a JSON-lines file in ``{"translation": {src: ..., tgt: ...}}`` form."""
    del mtime_ns  # only part of the cache fingerprint: an edited file is re-read
    with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not JSON
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_number}: invalid JSON ({err.msg})") from None
            pair = row.get("translation") if isinstance(row, dict) else None
            if not isinstance(pair, dict):
                found = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise ValueError(
                    f"{path}:{line_number}: expected a 'translation' object like "
                    f'{{"translation": {{"{src_lang}": ..., "{tgt_lang}": ...}}}}; found {found}'
                )
            _check_languages(list(pair), src_lang, tgt_lang, f"{path}:{line_number}")
            for lang in (src_lang, tgt_lang):
                if pair[lang] is not None and not isinstance(pair[lang], str):
                    raise ValueError(
                        f"{path}:{line_number}: {lang} is a {type(pair[lang]).__name__} "
                        f"({pair[lang]!r}), expected a string"
                    )
                try:  # a JSON escape like \ud800 decodes to a lone surrogate, not valid Unicode
                    str(pair[lang]).encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(
                        f"{path}:{line_number}: {lang} text holds an unpaired surrogate "
                        "(a \\ud800-\\udfff escape): not valid Unicode"
                    ) from None
            yield {"translation": {src_lang: pair[src_lang], tgt_lang: pair[tgt_lang]}}


# A header cell: a language key such as `en`, `es`, `pt-BR`, `zh_Hant` or `eng`.
_LANGUAGE_KEY = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")


def _tsv_lines(path: str, quoting: bool) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of a TSV file. Plain (default): a line ends at `\n` (a `\r\n` ending
    is accepted) and cells are split at every tab; a `"` is text, since MT lines often begin with
    one. `quoting=True`: CSV quoting (`"a\tb"` is one cell, `""` an escaped quote), strictly."""
    # utf-8-sig: a byte-order mark before the first cell is not text.
    with open(path, encoding="utf-8-sig", newline="" if quoting else "\n") as f:
        if quoting:
            reader = csv.reader(f, delimiter="\t", quotechar='"', strict=True)
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    raise ValueError(f"{path}:{reader.line_num}: {err}") from None
                yield reader.line_num, cells
        else:
            for line_number, line in enumerate(f, start=1):
                line = line.removesuffix("\n").removesuffix("\r")
                yield line_number, line.split("\t")


def _tsv_rows(
    path: str, src_lang: str, tgt_lang: str, mtime_ns: int, quoting: bool = False
) -> Iterator[dict]:
    """Rows of a TSV file: ``src<TAB>tgt``, or columns named by a header line.

    The first non-blank line is a header when every cell looks like a language key; it must then
    name ``src_lang`` and ``tgt_lang`` and is never a pair. Every row must have as many cells as
    the header (two without one); a row with more or fewer is refused with its line number.
    """
    del mtime_ns
    src_col, tgt_col, width, header = 0, 1, 2, False
    first = True
    for line_number, cells in _tsv_lines(path, quoting):
        if not any(c.strip() for c in cells):
            continue  # a blank line
        if first:
            first = False
            names = [c.strip() for c in cells]
            lowered = [n.lower() for n in names]
            if all(_LANGUAGE_KEY.fullmatch(n) for n in names) and len(set(lowered)) == len(names):
                missing = [lang for lang in (src_lang, tgt_lang) if lang.lower() not in lowered]
                if missing:
                    raise ValueError(
                        f"{path}:{line_number}: the header names the languages {names}, not "
                        f"{missing} (src_lang={src_lang!r}, tgt_lang={tgt_lang!r}). Pass the "
                        "language keys of this file, or rename its header columns."
                    )
                src_col, tgt_col = lowered.index(src_lang.lower()), lowered.index(tgt_lang.lower())
                width, header = len(cells), True
                continue
        if len(cells) != width:
            expected = "as in the header" if header else "src<TAB>tgt"
            hint = (
                ""
                if quoting
                else "; a tab inside a sentence splits it (quoting is off: pass tsv_quoting=True "
                'for "..." cells)'
            )
            raise ValueError(
                f"{path}:{line_number}: expected {width} tab-separated columns ({expected}), "
                f"found {len(cells)}{hint}"
            )
        yield {"translation": {src_lang: cells[src_col], tgt_lang: cells[tgt_col]}}


def _load_file(
    path: Path, src_lang: str, tgt_lang: str, cache_dir: str | None, tsv_quoting: bool = False
) -> datasets.Dataset:
    check_utf8(path)
    kwargs = {
        "path": str(path),
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        "mtime_ns": path.stat().st_mtime_ns,
    }
    if path.suffix in JSONL_SUFFIXES:
        generator = _jsonl_rows
    elif path.suffix in TSV_SUFFIXES:
        generator = _tsv_rows
        kwargs["quoting"] = tsv_quoting
    else:
        raise ValueError(
            f"{path}: unknown file type {path.suffix!r}; expected one of "
            f"{JSONL_SUFFIXES + TSV_SUFFIXES}"
        )
    features = datasets.Features(
        {"translation": datasets.Translation(languages=sorted({src_lang, tgt_lang}))}
    )
    try:
        return datasets.Dataset.from_generator(
            generator, features=features, gen_kwargs=kwargs, cache_dir=cache_dir
        )
    except datasets.exceptions.DatasetGenerationError as err:
        # Surface our own ValueError (bad row, missing language) instead of the wrapper.
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ValueError):
            raise cause from None
        raise
    except ValueError as err:
        if "corresponds to no data" in str(err):
            raise ValueError(
                f"{path}: no translation pairs (the file is empty or has only blank lines)"
            ) from None
        raise


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _moses_lines(path: str) -> Iterator[str]:
    """The lines of a Moses-style file by the one line rule: only "\n" ends a line (a lone "\r"
    or U+2028 inside a line is text, as `_count_lines` counts), a "\r" before it and a UTF-8 BOM at
    the start are dropped."""
    with open(path, encoding="utf-8", newline="\n") as f:
        for number, line in enumerate(f):
            if line.endswith("\n"):
                line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
            yield line[1:] if number == 0 and line.startswith("\ufeff") else line


def _moses_rows(
    src_path: str, tgt_path: str, src_lang: str, tgt_lang: str, mtime_ns: int
) -> Iterator[dict]:
    """Rows of Moses-style parallel files: line i of `src_path` translates line i of `tgt_path`."""
    del mtime_ns
    for source, target in zip(_moses_lines(src_path), _moses_lines(tgt_path), strict=True):
        yield {"translation": {src_lang: source, tgt_lang: target}}


def moses_pair(prefix: str | Path, src_lang: str, tgt_lang: str) -> tuple[Path, Path] | None:
    """`(<prefix>.<src_lang>, <prefix>.<tgt_lang>)` when both files exist, else None."""
    paths = (Path(f"{prefix}.{src_lang}"), Path(f"{prefix}.{tgt_lang}"))
    return paths if all(p.is_file() for p in paths) else None


def _load_moses(
    prefix: str | Path, src_lang: str, tgt_lang: str, cache_dir: str | None
) -> datasets.Dataset:
    """Moses-style parallel text (`train.en` / `train.es`, one sentence per line), the layout
    most MT corpora ship in. The two files must have the same number of lines."""
    src_path, tgt_path = moses_pair(prefix, src_lang, tgt_lang) or (None, None)
    if src_path is None:
        raise FileNotFoundError(f"{prefix}.{src_lang} and {prefix}.{tgt_lang} must both exist.")
    counts = []
    for path in (src_path, tgt_path):
        check_utf8(path)
        counts.append(_count_lines(path))
    if counts[0] != counts[1]:
        raise ValueError(
            f"Moses-style parallel files must have one line per sentence pair, but {src_path} has "
            f"{counts[0]} lines and {tgt_path} has {counts[1]}."
        )
    if counts[0] == 0:
        raise ValueError(f"{src_path} and {tgt_path}: no translation pairs (empty files).")
    features = datasets.Features(
        {"translation": datasets.Translation(languages=sorted({src_lang, tgt_lang}))}
    )
    kwargs = {
        "src_path": str(src_path),
        "tgt_path": str(tgt_path),
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        "mtime_ns": max(src_path.stat().st_mtime_ns, tgt_path.stat().st_mtime_ns),
    }
    return datasets.Dataset.from_generator(
        _moses_rows, features=features, gen_kwargs=kwargs, cache_dir=cache_dir
    )


def _moses_prefixes(folder: Path, src_lang: str, tgt_lang: str) -> list[Path]:
    """`<folder>/<name>` for every `<name>.<src_lang>` with a `<name>.<tgt_lang>` beside it; a file
    of either language without its partner is an error naming the missing file."""
    prefixes = set()
    for lang, other in ((src_lang, tgt_lang), (tgt_lang, src_lang)):
        for p in folder.glob(f"*.{lang}"):
            if not p.is_file():
                continue
            partner = p.with_suffix(f".{other}")
            if not partner.is_file():
                raise UserError(
                    f"{p} has no {partner.name} beside it: Moses-style files come in pairs, line i "
                    f"of <name>.{src_lang} translating line i of <name>.{tgt_lang}. Add "
                    f"{partner}, or move {p.name} out of {folder}."
                )
            prefixes.add(p.with_suffix(""))
    return sorted(prefixes)


def _split_of_file(path: Path) -> str | None:
    return SPLIT_ALIASES.get(path.name.split(".")[0].lower())


class TranslationCorpus(datasets.DatasetDict):
    """What `load_translation_dataset` returns: its splits, and `empty_pairs_dropped`, the pairs
    dropped per split for an empty side (training says what each filter removed when a split ends
    up empty). A `DatasetDict` in every other way; its transformations return plain ones."""

    def __init__(self, splits: dict, empty_pairs_dropped: dict[str, int] | None = None):
        super().__init__(splits)
        self.empty_pairs_dropped: dict[str, int] = dict(empty_pairs_dropped or {})


def _drop_empty(
    ds: datasets.DatasetDict, src_lang: str, tgt_lang: str, num_proc: int | None
) -> TranslationCorpus:
    """Drop pairs with an empty or whitespace-only side, logging how many per split."""

    def keep(batch: dict) -> list[bool]:
        return [
            bool(isinstance(t[src_lang], str) and t[src_lang].strip())
            and bool(isinstance(t[tgt_lang], str) and t[tgt_lang].strip())
            for t in batch["translation"]
        ]

    out, dropped_per_split = {}, {}
    for split, dataset in ds.items():
        kept = dataset.filter(keep, batched=True, num_proc=num_proc, desc=f"empty pairs {split}")
        dropped = dropped_per_split[split] = len(dataset) - len(kept)
        if dropped:
            logger.warning(
                "%s: dropped %d pairs with an empty %s or %s side",
                split,
                dropped,
                src_lang,
                tgt_lang,
            )
        logger.info("%s: %d pairs with both sides non-empty", split, len(kept))
        out[split] = kept
    return TranslationCorpus(out, empty_pairs_dropped=dropped_per_split)


def _refuse_missing_local_path(path: Path, src_lang: str, tgt_lang: str) -> None:
    """A UserError when `path`, which exists neither as a file nor as a folder, names a local file
    rather than a Hub id: a data file suffix, an absolute or ./ path, a folder that exists, or half
    of a Moses pair. Otherwise `datasets` would report a Hub connection error."""
    for lang, other in ((src_lang, tgt_lang), (tgt_lang, src_lang)):
        if Path(f"{path}.{lang}").is_file():
            raise UserError(
                f"no such file: {path}.{other} (Moses-style files come in pairs: {path}.{lang} "
                f"needs {path}.{other} beside it)."
            )
    local = (
        path.suffix in JSONL_SUFFIXES + TSV_SUFFIXES
        or path.is_absolute()
        or str(path).startswith(".")
        or len(path.parts) > 2
        or (path.parent != Path(".") and path.parent.is_dir())
    )
    if local:
        raise UserError(
            f"no such file or folder: {path} (a JSONL/TSV file, a folder of them, Moses-style "
            f"<prefix>.{src_lang}/.{tgt_lang} files or a save_to_disk folder; a Hub id is "
            "owner/name)."
        )


def load_translation_dataset(
    name_or_path: str | Path,
    src_lang: str,
    tgt_lang: str,
    config_name: str | None = None,
    cache_dir: str | None = None,
    num_proc: int | None = None,
    tsv_quoting: bool = False,
    **hub_kwargs,
) -> TranslationCorpus:
    """Load a parallel corpus as a ``DatasetDict`` (a `TranslationCorpus`) of ``{"translation": {src, tgt}}`` rows.

    ``name_or_path`` may be:

    - a folder written by ``DatasetDict.save_to_disk`` (or ``Dataset.save_to_disk``, which
      becomes the ``train`` split);
    - a JSON-lines file (``.jsonl``/``.json``) of ``{"translation": {"en": ..., "es": ...}}``;
    - Moses-style parallel files given by their prefix: ``data/train`` reads ``data/train.en``
      and ``data/train.es`` (one sentence per line; the line counts must be equal);
    - a TSV file (``.tsv``/``.txt``): ``src<TAB>tgt`` lines, or a header line naming the language
      columns (``en<TAB>es``, any order, extra columns ignored). Plain by default: a ``"`` is
      text and every tab splits; ``tsv_quoting=True`` reads CSV-quoted cells (``"a<TAB>b"``).
      A header is a first line whose cells all look like language keys: it must name
      ``src_lang`` and ``tgt_lang`` and never becomes a pair. A row with more or fewer cells than
      the header (two without one) is refused with its line number. A UTF-8 byte-order mark is
      stripped (TSV and JSONL);
    - a folder of such files (Moses pairs included): ``train.*``, ``validation.*`` (or ``valid``/``dev``/``val``) and
      ``test.*`` become those splits; other files are concatenated into ``train``;
    - otherwise a Hub id passed to ``datasets.load_dataset(name_or_path, config_name)``
      (e.g. ``"wmt14", "de-en"``; needs network).

    Pairs with an empty or whitespace-only side are dropped and their count is logged per split
    (a warning). Files must be UTF-8.

    Raises:
        ValueError: a language key or column is missing (the message lists what was found and
            what was expected), a file is not UTF-8 (the message gives the byte offset), or a
            row is malformed (file and line).
    """
    path = Path(name_or_path)
    if not path.exists() and moses_pair(path, src_lang, tgt_lang):
        ds = datasets.DatasetDict({"train": _load_moses(path, src_lang, tgt_lang, cache_dir)})
    elif path.is_dir() and (
        (path / "dataset_dict.json").exists() or (path / "state.json").exists()
    ):
        ds = _as_dataset_dict(datasets.load_from_disk(str(path)))
    elif path.is_dir():
        ds = _load_folder(path, src_lang, tgt_lang, cache_dir, tsv_quoting)
    elif path.is_file():
        ds = datasets.DatasetDict(
            {"train": _load_file(path, src_lang, tgt_lang, cache_dir, tsv_quoting)}
        )
    else:
        _refuse_missing_local_path(path, src_lang, tgt_lang)
        ds = _as_dataset_dict(
            datasets.load_dataset(str(name_or_path), config_name, cache_dir=cache_dir, **hub_kwargs)
        )
    _check_translation_columns(ds, str(name_or_path), src_lang, tgt_lang)
    return _drop_empty(ds, src_lang, tgt_lang, num_proc)


def _as_dataset_dict(loaded) -> datasets.DatasetDict:
    """A `DatasetDict` as is; a lone `Dataset` becomes its `train` split."""
    if isinstance(loaded, datasets.DatasetDict):
        return loaded
    return datasets.DatasetDict({"train": loaded})


def _load_folder(
    path: Path, src_lang: str, tgt_lang: str, cache_dir: str | None, tsv_quoting: bool
) -> datasets.DatasetDict:
    """A folder of JSONL/TSV files and Moses pairs: each file goes to the split its name says
    (`_split_of_file`), the rest to `train`; the parts of one split are concatenated."""
    files = sorted(p for p in path.iterdir() if p.suffix in JSONL_SUFFIXES + TSV_SUFFIXES)
    prefixes = _moses_prefixes(path, src_lang, tgt_lang)
    if not files and not prefixes:
        raise ValueError(
            f"{path}: no saved dataset, no {JSONL_SUFFIXES + TSV_SUFFIXES} files and no "
            f"Moses-style <name>.{src_lang} / <name>.{tgt_lang} pairs in it"
        )
    parts: dict[str, list[datasets.Dataset]] = {}
    for file in files:
        split = _split_of_file(file) or "train"
        parts.setdefault(split, []).append(
            _load_file(file, src_lang, tgt_lang, cache_dir, tsv_quoting)
        )
    for prefix in prefixes:
        split = _split_of_file(prefix) or "train"
        parts.setdefault(split, []).append(_load_moses(prefix, src_lang, tgt_lang, cache_dir))
    return datasets.DatasetDict(
        {split: datasets.concatenate_datasets(dsets) for split, dsets in parts.items()}
    )


def _check_translation_columns(
    ds: datasets.DatasetDict, name: str, src_lang: str, tgt_lang: str
) -> None:
    """Every split has a `translation` column holding both languages (else a ValueError listing
    what was found)."""
    for split, dataset in ds.items():
        if "translation" not in dataset.column_names:
            raise ValueError(
                f"{name} [{split}]: expected a 'translation' column of "
                f"{{{src_lang!r}: ..., {tgt_lang!r}: ...}}; found columns {dataset.column_names}"
            )
        feature = dataset.features["translation"]
        keys = list(getattr(feature, "languages", None) or feature.keys())
        _check_languages(keys, src_lang, tgt_lang, f"{name} [{split}]")


# ----------------------------------------------------------------------------------------------
# Tokenisation
# ----------------------------------------------------------------------------------------------


MIN_CHARS_PER_TOKEN_BOUND = 16


def max_chars_per_token(tokenizer: PreTrainedTokenizerBase) -> int:
    """An upper bound on the characters one token covers: the longest vocabulary entry (at least
    `MIN_CHARS_PER_TOKEN_BOUND`). For byte-level BPE (the project's tokenizers) an entry's length
    is its byte count, so a text of more than `limit * bound` characters has more than `limit`
    tokens and can be dropped without tokenizing it."""
    longest = max((len(token) for token in tokenizer.get_vocab()), default=0)
    return max(longest, MIN_CHARS_PER_TOKEN_BOUND)


def tokenize_translation_dataset(
    ds: datasets.DatasetDict | datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    src_lang: str,
    tgt_lang: str,
    max_source_length: int,
    max_target_length: int,
    num_proc: int | None = None,
) -> tuple[datasets.DatasetDict | datasets.Dataset, dict[str, dict[str, int]]]:
    """Tokenise pairs into ``input_ids``, ``attention_mask`` and ``labels``; drop long pairs.

    Nothing is truncated: a pair whose source (with ``</s>``) is longer than
    ``max_source_length`` tokens or whose target is longer than ``max_target_length`` is
    dropped, so the model never learns from cut sentences. A side longer than the limit times
    `max_chars_per_token(tokenizer)` characters cannot fit and is dropped BEFORE tokenisation, so
    a 50 MB line costs no more memory than its text (tokenising it would take gigabytes). Other
    columns are removed.

    Returns:
        ``(tokenized, counts)``: the tokenised dataset(s), and per split ``{"before": n, "kept":
        k, "too_long": n - k, "source_too_long": s, "target_too_long": t,
        "too_long_before_tokenizing": c}`` (a pair long on both sides counts in both `s` and `t`;
        `c` of the `too_long` pairs were dropped by their character count), also logged.
    """
    single = isinstance(ds, datasets.Dataset)
    dsd = datasets.DatasetDict({"train": ds}) if single else ds
    bound = max_chars_per_token(tokenizer)

    def encode(batch: dict) -> dict:
        src = [pair[src_lang] for pair in batch["translation"]]
        tgt = [pair[tgt_lang] for pair in batch["translation"]]
        return tokenizer(src, text_target=tgt, truncation=False)

    out, counts = {}, {}
    for split, dataset in dsd.items():
        before = len(dataset)
        src_chars, tgt_chars = _character_lengths(dataset, src_lang, tgt_lang)
        src_long = src_chars > max_source_length * bound
        tgt_long = tgt_chars > max_target_length * bound
        precut = src_long | tgt_long
        if precut.any():
            dataset = dataset.select(np.flatnonzero(~precut))
        encoded = dataset.map(
            encode,
            batched=True,
            num_proc=num_proc,
            remove_columns=dataset.column_names,
            desc=f"tokenize {split}",
        )
        if len(encoded):
            src_tokens = sequence_lengths(encoded, "input_ids") > max_source_length
            tgt_tokens = sequence_lengths(encoded, "labels") > max_target_length
            too_long = src_tokens | tgt_tokens
            kept = encoded.select(np.flatnonzero(~too_long)) if too_long.any() else encoded
        else:  # an empty split has no columns to measure; keep it empty (callers check)
            src_tokens = tgt_tokens = np.zeros(0, dtype=bool)
            kept = encoded
        counts[split] = {
            "before": before,
            "kept": len(kept),
            "too_long": before - len(kept),
            "source_too_long": int(src_long.sum() + src_tokens.sum()),
            "target_too_long": int(tgt_long.sum() + tgt_tokens.sum()),
            "too_long_before_tokenizing": int(precut.sum()),
        }
        logger.info(
            "%s: kept %d of %d pairs; dropped %d longer than %d source / %d target tokens "
            "(%d of them by their length in characters, before tokenizing)",
            split,
            len(kept),
            before,
            before - len(kept),
            max_source_length,
            max_target_length,
            int(precut.sum()),
        )
        out[split] = kept
    result = datasets.DatasetDict(out)
    return (result["train"] if single else result), counts


def _character_lengths(
    ds: datasets.Dataset, src_lang: str, tgt_lang: str
) -> tuple[np.ndarray, np.ndarray]:
    """Characters of each side, computed in Arrow (no Python string per row)."""
    if len(ds) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    pairs = ds.with_format("arrow")[:]["translation"]
    lengths = []
    for lang in (src_lang, tgt_lang):
        side = pc.fill_null(pc.utf8_length(pc.struct_field(pairs, lang)), 0)
        lengths.append(side.to_numpy(zero_copy_only=False).astype(np.int64))
    return lengths[0], lengths[1]


def sequence_lengths(ds: datasets.Dataset, column: str) -> np.ndarray:
    """Lengths of a list column (e.g. ``input_ids``) without decoding the rows to Python."""
    return pc.list_value_length(ds.with_format("arrow")[:][column]).to_numpy().astype(np.int64)


def make_collator(
    tokenizer: PreTrainedTokenizerBase, model=None, pad_to_multiple_of: int | None = None
) -> DataCollatorForSeq2Seq:
    """The collate function training should use (``DataLoader(collate_fn=...)``).

    transformers' ``DataCollatorForSeq2Seq``: pads ``input_ids`` and ``attention_mask`` with the
    tokenizer's ``<pad>`` (id 0), pads ``labels`` with -100 so the loss ignores them, and, when
    ``model`` is given, adds ``decoder_input_ids = model.prepare_decoder_input_ids_from_labels``
    (labels shifted right behind ``<s>``). Without a model the model's forward shifts the labels
    itself. Returns PyTorch tensors.
    """
    return DataCollatorForSeq2Seq(
        tokenizer,
        model=model,
        label_pad_token_id=-100,
        pad_to_multiple_of=pad_to_multiple_of,
        return_tensors="pt",
    )


# ----------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batches of similar-length pairs under a padded-token budget (Section 5.1).

    A batch's cost is its padded size, ``len(batch) * max(src_len) + len(batch) * max(tgt_len)``,
    and it never exceeds ``max_tokens``, except for a single pair longer than the budget on its
    own, which becomes a batch of one (or raises with ``oversized="error"``; filter long pairs in
    ``tokenize_translation_dataset`` to avoid both).

    Each epoch, deterministically from ``(seed, epoch)``:

    1. pairs are sorted by ``src_len + tgt_len`` plus uniform noise in ``[0, length_noise)``
       tokens, so pairs of nearly equal length are ordered (and grouped) differently each epoch;
    2. batches are filled greedily along that order;
    3. the order of batches is shuffled (``shuffle=True``), so lengths are mixed over an epoch.

    Sharding (``num_replicas``, ``rank``): every rank builds the same batch list and takes
    batches ``rank, rank + num_replicas, ...``, so ranks never share a batch. For equal counts
    the list is first cut (``drop_last=True``: the last ``len % num_replicas`` batches are not
    used this epoch) or padded (``drop_last=False``, default: the first batches are repeated).

    Resuming: ``state_dict()`` gives ``{"seed", "epoch", "batches_done"}``; after
    ``load_state_dict`` the next iteration yields exactly the remaining batches of that epoch,
    and ``len()`` is the number of batches the next iteration yields. The counter is reset at
    the end of an epoch and by ``set_epoch``. A ``DataLoader`` with workers pulls batches ahead
    of the training loop, so save the loop's own count of finished steps in the epoch:
    ``{"seed": seed, "epoch": epoch, "batches_done": steps_done_in_epoch}``.

    Use as ``DataLoader(dataset, batch_sampler=sampler, collate_fn=make_collator(...))``. With
    Accelerate, either give ``num_replicas=accelerator.num_processes`` and
    ``rank=accelerator.process_index`` and keep the DataLoader out of ``accelerator.prepare``,
    or leave ``num_replicas=1`` and let ``prepare`` shard the batches.
    """

    def __init__(
        self,
        src_lengths: Sequence[int] | np.ndarray,
        tgt_lengths: Sequence[int] | np.ndarray,
        max_tokens: int,
        seed: int = 0,
        shuffle: bool = True,
        length_noise: float = 2.0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        oversized: str = "own_batch",
    ):
        self.src_lengths = np.asarray(src_lengths, dtype=np.int64)
        self.tgt_lengths = np.asarray(tgt_lengths, dtype=np.int64)
        if self.src_lengths.shape != self.tgt_lengths.shape or self.src_lengths.ndim != 1:
            raise ValueError(
                f"src_lengths and tgt_lengths must be 1-D of equal size, got "
                f"{self.src_lengths.shape} and {self.tgt_lengths.shape}"
            )
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        if oversized not in ("own_batch", "error"):
            raise ValueError(f"oversized must be 'own_batch' or 'error', got {oversized!r}")
        if length_noise < 0:
            raise ValueError(f"length_noise must be >= 0, got {length_noise}")
        self.max_tokens = int(max_tokens)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.length_noise = float(length_noise)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.drop_last = drop_last
        self.oversized = oversized
        self.epoch = 0
        self.batches_done = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    @classmethod
    def from_dataset(
        cls,
        ds: datasets.Dataset,
        max_tokens: int,
        source_column: str = "input_ids",
        target_column: str = "labels",
        **kwargs,
    ) -> TokenBudgetBatchSampler:
        """A sampler over a tokenised dataset, lengths read from its Arrow columns."""
        return cls(
            sequence_lengths(ds, source_column),
            sequence_lengths(ds, target_column),
            max_tokens,
            **kwargs,
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields (and restart it)."""
        if epoch != self.epoch:
            self.batches_done = 0
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, sampler has {self.seed}")
        self.epoch = int(state["epoch"])
        self.batches_done = int(state["batches_done"])

    def all_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every batch of an epoch over all ranks, in shuffled order (before sharding)."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        total = self.src_lengths + self.tgt_lengths
        key = total + rng.uniform(0.0, self.length_noise, size=len(total))
        order = np.argsort(key, kind="stable")
        batches = self._fill(order)
        if self.shuffle:
            permutation = rng.permutation(len(batches))
            batches = [batches[i] for i in permutation]
        return batches

    def _fill(self, order: np.ndarray) -> list[list[int]]:
        batches: list[list[int]] = []
        batch: list[int] = []
        max_src = max_tgt = 0
        src, tgt = self.src_lengths, self.tgt_lengths
        for index in order.tolist():
            s, t = int(src[index]), int(tgt[index])
            if s + t > self.max_tokens and self.oversized == "error":
                raise ValueError(
                    f"example {index} has {s} source + {t} target tokens, more than "
                    f"max_tokens={self.max_tokens}; filter long pairs or raise max_tokens"
                )
            new_src, new_tgt = max(max_src, s), max(max_tgt, t)
            if batch and (len(batch) + 1) * (new_src + new_tgt) > self.max_tokens:
                batches.append(batch)
                batch, new_src, new_tgt = [], s, t
            batch.append(index)
            max_src, max_tgt = new_src, new_tgt
        if batch:
            batches.append(batch)
        return batches

    def rank_batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of an epoch (all of them, ignoring resume progress)."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        batches = self.all_batches(epoch)
        n = len(batches)
        if self.drop_last:
            n -= n % self.num_replicas
            batches = batches[:n]
        elif n % self.num_replicas:
            need = self.num_replicas - n % self.num_replicas
            batches = batches + [batches[i % n] for i in range(need)]
        mine = batches[self.rank :: self.num_replicas]
        self._cache = (epoch, mine)
        return mine

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.rank_batches()
        start = self.batches_done
        for position in range(start, len(batches)):
            self.batches_done = position + 1
            yield batches[position]
        self.batches_done = 0

    def __len__(self) -> int:
        return len(self.rank_batches()) - self.batches_done


def fixed_size_batches(num_examples: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    """Baseline: random batches of ``batch_size`` examples (the last one may be smaller)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.random.default_rng(seed).permutation(num_examples).tolist()
    return [order[i : i + batch_size] for i in range(0, num_examples, batch_size)]


def padding_stats(
    batches: Sequence[Sequence[int]],
    src_lengths: Sequence[int] | np.ndarray,
    tgt_lengths: Sequence[int] | np.ndarray,
) -> dict[str, float]:
    """Padding of a list of batches: source and target are each padded to the batch maximum.

    Returns ``padding_fraction`` (pad tokens / padded tokens), ``real_tokens``,
    ``padded_tokens``, ``num_batches``, ``mean_batch_size`` and ``max_batch_tokens``.
    """
    src = np.asarray(src_lengths)
    tgt = np.asarray(tgt_lengths)
    real = padded = largest = 0
    for batch in batches:
        idx = np.asarray(batch, dtype=np.int64)
        s, t = src[idx], tgt[idx]
        size = len(idx) * (int(s.max()) + int(t.max()))
        real += int(s.sum() + t.sum())
        padded += size
        largest = max(largest, size)
    return {
        "padding_fraction": 1.0 - real / padded if padded else 0.0,
        "real_tokens": real,
        "padded_tokens": padded,
        "num_batches": len(batches),
        "mean_batch_size": sum(len(b) for b in batches) / len(batches) if batches else math.nan,
        "max_batch_tokens": largest,
    }
