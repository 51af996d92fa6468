"""The one interface every engine implements: `Translator`.

A translator holds a model loaded on one engine (PyTorch, CTranslate2, ONNX Runtime) with its
config and tokenizer, and translates lists of lines with `translation.DecodingOptions`:

- `translate(lines, options, progress)`: per input line, in input order, its
  `options.num_return_sequences` translations (an empty line gives empty strings), the contract of
  `translation.translate_lines`;
- `translate_hypotheses(lines, options, prefixes, progress)`: the same as `translation.Hypothesis`
  (text and score: the log-probability normalised as `generate()`'s `sequences_scores`), each
  output optionally forced to start with a target prefix;
- `stream_hypotheses(lines, options, window, progress, prefixes)`: the same over an iterable read
  a window at a time (the translate tool's streaming).

An engine implements one method, `_decode`; the public ones above are the base class's.

An option an engine cannot honour is a `UnsupportedOption` (a `UserError`) naming the option and
the engines that have it, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from ..errors import UserError
from ..translation import (
    LEARNED_TABLE,
    DecodingOptions,
    Hypothesis,
    _checked_lines,
    check_position_limit,
    position_limit,
    read_windows,
    token_batches,
)

ENGINES = ("torch", "ctranslate2", "onnxruntime")


class UnsupportedOption(UserError, ValueError):
    """A decoding option or quantization the chosen engine does not have."""


def unsupported(option: str, engine: str, engines_with_it: Sequence[str]) -> UnsupportedOption:
    others = " or ".join(f"--engine {name}" for name in engines_with_it) or "no engine"
    return UnsupportedOption(
        f"{option} is not supported by the {engine} engine; use {others}, or drop the option."
    )


def _first_attribute(objects, names) -> str | None:
    for obj in objects:
        for name in names:
            value = getattr(obj, name, None)
            if isinstance(value, str) and value:
                return value
    return None


class Translator:
    """A model on one engine: `engine`, `config`, `tokenizer`, `source_lang` / `target_lang`
    (where the config or tokenizer records them, else None), `translate` and
    `translate_hypotheses`. Build one with `vanilla_transformer.engines.load_translator`."""

    engine: str = ""

    def __init__(self, config, tokenizer):
        self.config = config
        self.tokenizer = tokenizer

    @property
    def source_lang(self) -> str | None:
        return _first_attribute((self.config, self.tokenizer), ("src_lang", "source_lang"))

    @property
    def target_lang(self) -> str | None:
        return _first_attribute((self.config, self.tokenizer), ("tgt_lang", "target_lang"))

    def translate(
        self, lines: list[str], options: DecodingOptions | None = None, progress=None
    ) -> list[list[str]]:
        """Per input line (input order) its `num_return_sequences` translations, best first."""
        hypotheses = self._decode(lines, with_defaults(options), None, progress, scores=False)
        return [[h.text for h in line] for line in hypotheses]

    def translate_hypotheses(
        self,
        lines: list[str],
        options: DecodingOptions | None = None,
        prefixes: list[str] | None = None,
        progress=None,
    ) -> list[list[Hypothesis]]:
        """Per input line its hypotheses (text and score), each starting with its prefix if
        `prefixes` (one per line) are given."""
        return self._decode(lines, with_defaults(options), prefixes, progress, scores=True)

    def stream_hypotheses(
        self,
        lines: Iterable[str],
        options: DecodingOptions | None = None,
        window: int | None = None,
        progress=None,
        prefixes: Iterable[str] | None = None,
    ) -> Iterator[list[Hypothesis]]:
        """`translate_hypotheses` over `lines` and their `prefixes`, read in step `window` lines at
        a time (default: one batch), each line's hypotheses yielded in input order as soon as its
        window is done (`translation.read_windows`: a reading error comes after the lines read
        before it)."""
        options = with_defaults(options)
        for chunk, forced in read_windows(lines, window or options.batch_size, prefixes):
            yield from self._decode(chunk, options, forced, progress, scores=True)

    def _decode(
        self, lines: list[str], options: DecodingOptions, prefixes, progress, scores: bool
    ) -> list[list[Hypothesis]]:
        """What an engine implements: per line its hypotheses under `options` (defaults already
        filled in); `scores=False` lets an engine skip computing them (the texts are the same)."""
        raise NotImplementedError

    @property
    def position_limit(self) -> int | None:
        """The most positions the loaded model encodes (`translation.position_limit`): a longer
        line is refused before decoding, and the default output limit is capped at it."""
        return position_limit(self.config) if self.config is not None else None

    position_table = LEARNED_TABLE  # where `position_limit` comes from

    def __call__(self, texts: list[str], **decoding) -> list[str]:
        """The best translation of each text (`DecodingOptions(**decoding)`, the paper's beam 4 and
        length penalty 0.6 by default)."""
        options = DecodingOptions(**{**decoding, "num_return_sequences": 1})
        return [outputs[0] for outputs in self.translate(texts, options)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(engine={self.engine!r})"

    # -- shared by the engines that batch themselves (CTranslate2) --------------------------------

    def _batched(
        self,
        lines: list[str],
        options: DecodingOptions,
        prefixes: list[str] | None,
        progress,
        decode: Callable[[list[list[int]], list[list[int]] | None], list[list[Hypothesis]]],
    ) -> list[list[Hypothesis]]:
        """`decode(sources, prefixes)` (token ids, without padding) over the batches of
        `translation.token_batches` (longest first, `options.max_tokens` / `batch_size`), the
        results in input order; an empty line gives `num_return_sequences` empty hypotheses."""
        lines = _checked_lines(lines)
        if prefixes is not None and len(prefixes) != len(lines):
            raise ValueError(f"{len(prefixes)} prefixes for {len(lines)} lines: give one per line.")
        n = options.num_return_sequences
        outputs = [[Hypothesis("") for _ in range(n)] for _ in lines]
        todo = [i for i, line in enumerate(lines) if line.strip()]
        if progress is not None and len(todo) < len(lines):
            progress.update(len(lines) - len(todo))
        if not todo:
            return outputs
        encoded = self.tokenizer([lines[i] for i in todo], add_special_tokens=True)["input_ids"]
        check_position_limit(
            [len(e) for e in encoded], todo, self.position_limit, options.max_new_tokens,
            self.position_table,
        )  # fmt: skip
        targets = None
        if prefixes is not None:
            targets = self.tokenizer(
                [prefixes[i] for i in todo], add_special_tokens=False
            ).input_ids
        for batch in token_batches(
            [len(e) for e in encoded], options.max_tokens, options.batch_size
        ):
            results = decode(
                [encoded[j] for j in batch],
                None if targets is None else [targets[j] for j in batch],
            )
            for j, hypotheses in zip(batch, results, strict=True):
                outputs[todo[j]] = hypotheses
            if progress is not None:
                progress.update(len(batch))
        return outputs


def with_defaults(options: DecodingOptions | None) -> DecodingOptions:
    return options if options is not None else DecodingOptions()
