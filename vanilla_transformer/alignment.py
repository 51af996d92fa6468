"""Word alignments from cross-attention, as marian-decoder's `--alignment` and fairseq's
`--print-alignment` give them: for each output word, the source word it attends to most.

A forced-decoding pass (`scoring.forced_decode`) over the given translation returns the
cross-attention of every decoder layer; one layer's weights, averaged over its heads, are summed over
the subwords of each source word and averaged over the subwords of each target word, and each target
word is aligned to the source word with the highest attention mass. `</s>` and other special tokens
take no part on either side (`</s>` of the source is where attention rests when no word is being
translated).

- Units: words by default (whitespace-separated words of the text as given, so that `i-j` indexes
  `source.split()` and `target.split()`; each subword belongs to the word its first non-space
  character is in, from the tokenizer's offsets), or the tokenizer's subwords (`units="subword"`,
  the non-special tokens in order).
- Layer: `DEFAULT_LAYER`, the last decoder layer, which recovered known word orders best on the
  toy tasks (docs/translate.md; Garg et al., 2019 prefer the penultimate of a 6-layer model on real
  data: `layer=-2`); any layer by index (negative counts from the last). The attention row of a
  target word is the one that predicts it.
- `pharaoh`: `[(0, 1), (1, 0)]` -> `"0-1 1-0"` (source index, target index, from 0).
- `aligned_stream`: the translate tool's `--alignment`: each output line gets ` ||| ` and its
  alignment to its input line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch

from .errors import UserError
from .scoring import forced_decode, model_on_device
from .translation import _checked_lines, _pad_token_id, eval_mode

__all__ = [
    "DEFAULT_LAYER",
    "UNITS",
    "AlignmentLayerError",
    "AlignmentOptions",
    "align_pairs",
    "aligned_stream",
    "pharaoh",
    "unit_alignment",
]

UNITS = ("word", "subword")
DEFAULT_LAYER = -1  # the last decoder layer: the best on the toy tasks (docs/translate.md)
SEPARATOR = " ||| "  # marian-decoder's, between a translation and its alignment


def _option(default, help: str, **kwargs):
    """A dataclass field with its command-line help (read by `HfArgumentParser`)."""
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclasses.dataclass
class AlignmentOptions:
    """The translate tool's alignment flags."""

    alignment: bool = _option(
        False,
        "Append ' ||| ' and the Pharaoh word alignment (i-j: source word i, output word j, from "
        "0) to each output line, from cross-attention (docs/translate.md).",
    )
    alignment_units: str = _option(
        "word",
        "Units of the alignment indices: word (whitespace-separated words) or subword (the "
        "tokenizer's tokens) (default: %(default)s).",
        choices=list(UNITS),
    )
    alignment_layer: int = _option(
        DEFAULT_LAYER,
        "Decoder layer whose cross-attention (heads averaged) aligns; negative counts from the "
        "last (default: %(default)s, the last).",
    )

    def __post_init__(self):
        if self.alignment_units not in UNITS:
            raise ValueError(
                f"alignment_units must be one of {UNITS}, got {self.alignment_units!r}."
            )

    def aligner(self, model, tokenizer, batching=None, device=None):
        """`align(sources, targets)` with these options for `aligned_stream`; `batching`: an
        object with `batch_size` and `max_tokens` (the tool's `DecodingOptions`)."""
        _layer_index(self.alignment_layer, model.config.decoder_layers)  # refused before decoding
        return functools.partial(
            align_pairs,
            model,
            tokenizer,
            layer=self.alignment_layer,
            units=self.alignment_units,
            batch_size=getattr(batching, "batch_size", 32),
            max_tokens=getattr(batching, "max_tokens", 4096),
            device=device,
        )


def pharaoh(pairs: Iterable[tuple[int, int]]) -> str:
    """Pairs `(source_index, target_index)` in Pharaoh format: `"i-j i-j ..."`."""
    return " ".join(f"{i}-{j}" for i, j in pairs)


class AlignmentLayerError(UserError, ValueError):
    """A decoder layer the model does not have."""


def _layer_index(layer: int, layers: int) -> int:
    if not -layers <= layer < layers:
        raise AlignmentLayerError(
            f"alignment layer {layer} does not exist: the decoder has {layers} layers "
            f"(0 to {layers - 1}, or -{layers} to -1 from the last)."
        )
    return layer % layers


def token_units(text: str, encoding, units: str) -> list[int | None]:
    """The unit (word or subword index) of each token of `encoding` (a `tokenizers.Encoding` of
    `text`); None for special tokens and for tokens that cover only spaces."""
    special = encoding.special_tokens_mask
    if units == "subword":
        index = iter(range(len(special)))
        return [None if s else next(index) for s in special]
    word_of_char = [None] * len(text)
    for number, match in enumerate(re.finditer(r"\S+", text)):
        word_of_char[match.start() : match.end()] = [number] * (match.end() - match.start())
    found = []
    for is_special, (start, end) in zip(special, encoding.offsets, strict=True):
        words = [word_of_char[k] for k in range(start, end) if word_of_char[k] is not None]
        found.append(None if is_special or not words else words[0])
    return found


def _membership(units: Sequence[int | None], length: int) -> torch.Tensor:
    """(len(units), count) matrix: 1 where token t belongs to unit u."""
    count = max((u for u in units if u is not None), default=-1) + 1
    matrix = torch.zeros(length, count)
    for t, u in enumerate(units):
        if u is not None:
            matrix[t, u] = 1.0
    return matrix


def unit_alignment(
    attention: torch.Tensor, source_units: Sequence[int | None], target_units: Sequence[int | None]
) -> list[tuple[int, int]]:
    """Pairs `(source_unit, target_unit)`, one per target unit, in target order: each target unit
    goes to the source unit with the highest attention mass. `attention` (T, S): the attention of
    each target token's prediction over the source tokens; a unit of None takes no part."""
    source = _membership(source_units, attention.shape[1])  # (S, I)
    target = _membership(target_units, attention.shape[0])  # (T, J)
    if source.shape[1] == 0 or target.shape[1] == 0:
        return []
    mass = target.T @ attention.float() @ source  # (J, I): summed over both sides' subwords
    mass = mass / target.sum(0).unsqueeze(1)  # averaged over each target unit's subwords
    best = mass.argmax(dim=1).tolist()
    return [(i, j) for j, i in enumerate(best)]


@contextlib.contextmanager
def _eager_attention(model):
    """Eager attention for the call: only it returns the attention weights."""
    previous = model.config._attn_implementation
    if previous != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)


def _encode(tokenizer, texts: list[str]):
    encoded = tokenizer(texts, add_special_tokens=True)
    if encoded.encodings is None:
        raise TypeError(
            "word alignments need a fast tokenizer (its offsets map subwords to words)."
        )
    return encoded["input_ids"], encoded.encodings


def align_pairs(
    model,
    tokenizer,
    sources: Iterable[str],
    targets: Iterable[str],
    layer: int = DEFAULT_LAYER,
    units: str = "word",
    batch_size: int = 32,
    max_tokens: int = 4096,
    device: str | torch.device | None = None,
) -> list[list[tuple[int, int]]]:
    """The alignment of each target to its source: pairs `(source_index, target_index)` from 0, one
    per target unit (word, or subword with `units="subword"`), in target order. Needs a fast
    tokenizer (its offsets say which word a subword belongs to)."""
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}, got {units!r}.")
    sources, targets = _checked_lines(sources), _checked_lines(targets)
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets.")
    if not sources:
        return []
    model, device = model_on_device(model, device)
    index = _layer_index(layer, model.config.decoder_layers)
    pad_id = _pad_token_id(model, tokenizer)
    source_ids, source_encodings = _encode(tokenizer, sources)
    target_ids, target_encodings = _encode(tokenizer, targets)
    source_units = [
        token_units(t, e, units) for t, e in zip(sources, source_encodings, strict=True)
    ]
    target_units = [
        token_units(t, e, units) for t, e in zip(targets, target_encodings, strict=True)
    ]
    alignments: list[list[tuple[int, int]]] = [[] for _ in sources]
    batches = forced_decode(
        model, source_ids, target_ids, pad_id, device, max_tokens, batch_size, True
    )
    with _eager_attention(model), eval_mode(model):
        for batch, _, outputs in batches:
            attention = outputs.cross_attentions[index].mean(dim=1).cpu()  # (B, T, S)
            for row, i in enumerate(batch):
                weights = attention[row, : len(target_ids[i]), : len(source_ids[i])]
                alignments[i] = unit_alignment(weights, source_units[i], target_units[i])
    return alignments


def aligned_stream(
    translate: Callable[[Iterable[str]], Iterable[list[str]]],
    lines: Iterable[str],
    align: Callable[[list[str], list[str]], list[list[tuple[int, int]]]],
    most: int = 1024,
) -> Iterator[list[str]]:
    """`translate(lines)` (each line's translations, in input order, a window at a time) with
    ` ||| ` and each translation's alignment to its line appended. The alignments of a window are
    computed together (`align(sources, translations)`) once the window's last line is out: a
    streaming translator reads the next window only after that (and at most `most` lines wait)."""
    read: deque[str] = deque()

    def recorded() -> Iterator[str]:
        for line in lines:
            read.append(line)
            yield line

    window: list[tuple[str, list[str]]] = []
    for texts in translate(recorded()):
        window.append((read.popleft(), texts))
        if read and len(window) < most:  # lines of this window still to come
            continue
        sources = [source for source, texts in window for _ in texts]
        outputs = [text for _, texts in window for text in texts]
        pairs = iter(align(sources, outputs))
        for _, texts in window:
            yield [f"{text}{SEPARATOR}{pharaoh(next(pairs))}" for text in texts]
        window = []
