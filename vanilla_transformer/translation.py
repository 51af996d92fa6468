"""Batched translation with a loaded model: the one home of decoding for the evaluation, the translate
tool, the demo and the export comparisons.

- `DecodingOptions`: how each batch is decoded (beam search as in the paper: 4 beams, length
  penalty 0.6; greedy; sampling) and how batches are formed (at most `batch_size` sentences and
  `max_tokens` padded source tokens, fairseq's `--max-tokens` / Marian's `--mini-batch-words`).
- `translate_hypotheses`: sentences sorted by length into batches (similar lengths waste little
  padding, and the model's output limit, longest source + 50, is tighter), generated and decoded;
  the outputs come back in the input order, `num_return_sequences` `Hypothesis` per line, each
  with its score (`pipeline_vanilla_transformer.sequence_scores`), optionally after a forced target
  prefix per line. `translate_lines`: their texts only.
- `stream_hypotheses` / `translate_stream`: the same over an iterable of lines read a bounded window
  at a time, yielding each window's outputs in input order as soon as it is done (a tool writes
  them at once).
- `check_tokenizer_matches`: refuses a tokenizer whose vocabulary or special ids are not the model's.
- `position_limit` / `check_position_limit`: a model with learned positions (or an engine's export
  with a position table) encodes at most so many positions; a longer line, or a longer requested
  output, is refused before decoding with the line's number, never a kernel's index error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence

import torch
from transformers import LogitsProcessorList

from .errors import UserError
from .pipeline_vanilla_transformer import PrefixForcingLogitsProcessor, sequence_scores

__all__ = [
    "DecodingOptions",
    "Hypothesis",
    "InputTooLongError",
    "PrefixCountError",
    "TokenizerMismatchError",
    "check_position_limit",
    "check_tokenizer_matches",
    "position_limit",
    "format_hypotheses",
    "parse_nbest_line",
    "read_windows",
    "stream_hypotheses",
    "token_batches",
    "translate_hypotheses",
    "translate_lines",
    "translate_stream",
]


def _option(default, help: str, **kwargs):
    """A dataclass field with its command-line help (read by `HfArgumentParser`)."""
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclasses.dataclass
class DecodingOptions:
    """How sentences are batched and decoded (the arguments of `model.generate`); the one set of
    decoding flags of the translate, evaluate and average tools."""

    num_beams: int = _option(4, "Beam size (default: %(default)s, the paper's; 1: greedy).")
    length_penalty: float = _option(
        0.6, "Beam-search length penalty alpha (default: %(default)s, the paper's)."
    )
    do_sample: bool = _option(False, "Sample instead of searching.")
    temperature: float = _option(1.0, "Sampling temperature (default: %(default)s).")
    top_k: int | None = _option(None, "Sample from the k most likely tokens (default: all).")
    top_p: float | None = _option(None, "Nucleus sampling mass (default: 1.0, off).")
    num_return_sequences: int = _option(
        1,
        "Translations per input line, written as consecutive lines (default: %(default)s).",
    )
    max_new_tokens: int | None = _option(
        None, "Output limit in tokens (default: the model's, longest source in the batch + 50)."
    )
    batch_size: int = _option(32, "Sentences per batch, at most (default: %(default)s).")
    max_tokens: int = _option(
        4096, "Padded source tokens per batch, at most (default: %(default)s)."
    )

    def __post_init__(self):
        for name in ("num_beams", "num_return_sequences", "batch_size", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not self.do_sample and self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"num_return_sequences ({self.num_return_sequences}) must be <= num_beams "
                f"({self.num_beams}) without sampling: beam search returns its best beams; "
                "raise --num_beams or pass --do_sample."
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if self.length_penalty != self.length_penalty:  # NaN
            raise ValueError("length_penalty must be a number, got nan.")

    def generate_kwargs(self) -> dict:
        kwargs = {
            "num_beams": self.num_beams,
            "do_sample": self.do_sample,
            "num_return_sequences": self.num_return_sequences,
        }
        if self.num_beams > 1:
            kwargs["length_penalty"] = self.length_penalty
        if self.do_sample:
            kwargs["temperature"] = self.temperature
            # Explicit values so the generation config's defaults (top_k 50) do not apply silently.
            kwargs["top_k"] = self.top_k if self.top_k is not None else 0
            kwargs["top_p"] = self.top_p if self.top_p is not None else 1.0
        if self.max_new_tokens is not None:
            kwargs["max_new_tokens"] = self.max_new_tokens
        return kwargs


@dataclasses.dataclass
class Hypothesis:
    """One translation of one input line, as every engine returns it.

    `score`: its log-probability under the model (or the ensemble), normalised as `generate()`'s
    `sequences_scores` are: the sum of its tokens' log-probabilities divided by its length to the
    power `length_penalty` (None where it was not asked for). `alignment`: Pharaoh pairs
    `(source_index, target_index)`, counted from 0 (None where not asked for)."""

    text: str
    score: float | None = None
    alignment: list[tuple[int, int]] | None = None


class TokenizerMismatchError(UserError, ValueError):
    """A tokenizer that is not the model's: its ids would index another vocabulary."""


class PrefixCountError(UserError, ValueError):
    """Target prefixes that are not one per input line."""


def check_tokenizer_matches(config, tokenizer) -> None:
    """Raise `TokenizerMismatchError` unless `tokenizer` has the model's vocabulary size
    (`config.vocab_size`) and its pad / eos / bos ids are the config's (where both define one).
    A mismatched tokenizer decodes into garbage without any other error."""
    problems = []
    if len(tokenizer) != config.vocab_size:
        problems.append(f"{len(tokenizer)} tokens, the model has {config.vocab_size}")
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        ours, theirs = getattr(config, name, None), getattr(tokenizer, name, None)
        if isinstance(ours, list):
            ours = ours[0] if len(ours) == 1 else ours
        if ours is not None and theirs is not None and ours != theirs:
            problems.append(f"{name} {theirs}, the model's is {ours}")
    if problems:
        raise TokenizerMismatchError(
            "the tokenizer does not match the model (" + "; ".join(problems) + "): use the "
            "tokenizer saved with the model (the same folder)."
        )


LEARNED_TABLE = "the model's learned position table"


class InputTooLongError(UserError, ValueError):
    """A line, or a requested output, longer than the positions the model can encode."""


def position_limit(model_or_config) -> int | None:
    """The most positions a model encodes (source tokens; decoder steps): the size of its learned
    position table (`position_encoding="learned"`), the smallest of an ensemble's members; None
    where sinusoids extend to any length."""
    members = getattr(model_or_config, "members", None) or [model_or_config]
    limits = []
    for member in members:
        config = getattr(member, "config", member)
        if getattr(config, "position_encoding", None) == "learned":
            limits.append(config.max_position_embeddings)
    return min(limits) if limits else None


def check_position_limit(
    lengths: Sequence[int],
    line_numbers: Sequence[int],
    limit: int | None,
    max_new_tokens: int | None = None,
    table: str = LEARNED_TABLE,
) -> None:
    """Raise `InputTooLongError` if a source (`lengths[k]` tokens, input line `line_numbers[k]`,
    counted from 0) or `max_new_tokens` needs more than `limit` positions (`table` names where the
    limit comes from)."""
    if limit is None:
        return
    for length, number in zip(lengths, line_numbers, strict=True):
        if length > limit:
            raise InputTooLongError(
                f"line {number + 1} is {length} tokens long, but the model encodes at most {limit} "
                f"positions ({table}, max_position_embeddings={limit}): shorten or split the line."
            )
    if max_new_tokens is not None and max_new_tokens > limit:
        raise InputTooLongError(
            f"max_new_tokens={max_new_tokens} needs {max_new_tokens} decoder positions, but the "
            f"model encodes at most {limit} ({table}): pass max_new_tokens <= {limit}."
        )


def token_batches(
    lengths: Sequence[int], max_tokens: int, batch_size: int | None = None
) -> list[list[int]]:
    """Indices grouped into batches, longest sentences first, each holding at most `max_tokens`
    padded tokens (batch size x its longest length) and at most `batch_size` sentences; a sentence
    longer than `max_tokens` is a batch of its own. Longest first: a batch that does not fit in
    memory fails at once."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}.")
    limit = batch_size or len(lengths)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    for i in order:
        # Sorted descending: the batch's first sentence is its longest.
        last = batches[-1] if batches else None
        if last and len(last) < limit and (len(last) + 1) * lengths[last[0]] <= max_tokens:
            last.append(i)
        else:
            batches.append([i])
    return batches


@contextlib.contextmanager
def eval_mode(model):
    """`model` in eval mode inside the block; its own mode (training or not) comes back after it,
    on an error too."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _pad(encoded: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), longest), pad_id, dtype=torch.long)  # (B, S)
    attention_mask = torch.zeros((len(encoded), longest), dtype=torch.long)  # (B, S)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def _generating_model(model):
    """The model that has `generate`: unwrap DDP-style wrappers (`model.module`)."""
    while not hasattr(model, "generate") and hasattr(model, "module"):
        model = model.module
    if not hasattr(model, "generate"):
        raise TypeError(f"model must have a `generate` method, got {type(model).__name__}.")
    return model


def _pad_token_id(model, tokenizer) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        raise ValueError("Neither the tokenizer nor model.config defines a pad token id.")
    return pad


def _checked_lines(lines: Iterable[str]) -> list[str]:
    if isinstance(lines, str):
        raise TypeError("lines must be a list of strings, got a single str.")
    lines = list(lines)
    bad = next((i for i, line in enumerate(lines) if not isinstance(line, str)), None)
    if bad is not None:
        raise TypeError(f"lines[{bad}] must be a str, got {type(lines[bad]).__name__}.")
    return lines


def _checked_prefixes(prefixes, count: int) -> list[str] | None:
    """One prefix per line (None: none), or a ValueError; all-empty prefixes are no prefixes."""
    if prefixes is None:
        return None
    prefixes = _checked_lines(prefixes)
    if len(prefixes) != count:
        raise PrefixCountError(f"{len(prefixes)} prefixes for {count} lines: pass one per line.")
    return prefixes if any(prefixes) else None


def _unfinished_outputs(lines, prefixes, n, scores: bool) -> list[list[Hypothesis]]:
    """What each line gives before decoding: a blank line its prefix (or nothing), scored 0.0
    (None without scores)."""
    score = 0.0 if scores else None
    return [
        [Hypothesis(prefixes[i].strip() if prefixes else "", score) for _ in range(n)]
        for i in range(len(lines))
    ]


def _generate_batch(model, input_ids, attention_mask, kwargs, prefixes, with_scores, penalty):
    """One batch through `generate`: (B * n, T) sequences and (B * n,) scores (or None)."""
    if prefixes is not None:
        kwargs = {
            **kwargs,
            "logits_processor": LogitsProcessorList([PrefixForcingLogitsProcessor(prefixes)]),
        }
    if with_scores:  # beam search's own scores; the raw logits for greedy search and sampling
        beam = kwargs["num_beams"] > 1
        kwargs = {**kwargs, "return_dict_in_generate": True}
        kwargs["output_scores" if beam else "output_logits"] = True
    with torch.inference_mode():
        generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    if not with_scores:
        return generated, None
    return generated.sequences, sequence_scores(model, generated, penalty)


def translate_hypotheses(
    model,
    tokenizer,
    lines: Iterable[str],
    options: DecodingOptions | None = None,
    device: str | torch.device | None = None,
    progress=None,
    prefixes: Iterable[str] | None = None,
    scores: bool = True,
) -> list[list[Hypothesis]]:
    """Translate each line; returns, per input line and in input order, its
    `options.num_return_sequences` hypotheses (best first for beam search), each with its score
    (`Hypothesis.score`, the same normalisation on every decoding mode; `scores=False` skips it,
    and the memory generate() needs to keep per-step scores). An empty or whitespace-only line gives
    empty hypotheses (its prefix, if any) scored 0.0, so outputs stay aligned with the input.

    `prefixes`: one target prefix per line, forced as the first tokens of its translations (as
    tokenized alone, without special tokens; beam search continues from it); "" for none.
    `model` is put in eval mode for the call (a DDP-style wrapper is unwrapped) and moved to
    `device` (default: where it is). `progress`: an object with `update(n)` (a tqdm bar), told the
    number of lines each batch finishes.
    """
    options = options or DecodingOptions()
    lines = _checked_lines(lines)
    prefixes = _checked_prefixes(prefixes, len(lines))
    n = options.num_return_sequences
    outputs = _unfinished_outputs(lines, prefixes, n, scores)
    todo = [i for i, line in enumerate(lines) if line.strip()]
    if progress is not None and len(todo) < len(lines):
        progress.update(len(lines) - len(todo))
    if not todo:
        return outputs
    model = _generating_model(model)
    pad_id = _pad_token_id(model, tokenizer)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if next(model.parameters()).device != device:
        model.to(device)
    encoded = tokenizer([lines[i] for i in todo], add_special_tokens=True)["input_ids"]
    check_position_limit(
        [len(ids) for ids in encoded], todo, position_limit(model), options.max_new_tokens
    )
    prefix_ids = None
    if prefixes is not None:
        prefix_ids = tokenizer([prefixes[i] for i in todo], add_special_tokens=False)["input_ids"]
    batches = token_batches([len(ids) for ids in encoded], options.max_tokens, options.batch_size)
    kwargs = options.generate_kwargs()
    with eval_mode(model):
        for batch in batches:
            input_ids, attention_mask = _pad([encoded[j] for j in batch], pad_id)
            forced = None if prefix_ids is None else [prefix_ids[j] for j in batch]
            sequences, batch_scores = _generate_batch(
                model, input_ids.to(device), attention_mask.to(device), kwargs, forced, scores,
                options.length_penalty,
            )  # fmt: skip
            texts = tokenizer.batch_decode(sequences, skip_special_tokens=True)  # B * n
            values = batch_scores.tolist() if batch_scores is not None else [None] * len(texts)
            for row, j in enumerate(batch):
                span = range(row * n, (row + 1) * n)
                outputs[todo[j]] = [Hypothesis(texts[k].strip(), values[k]) for k in span]
            if progress is not None:
                progress.update(len(batch))
    return outputs


def translate_lines(model, tokenizer, lines: Iterable[str], *args, **kwargs) -> list[list[str]]:
    """`translate_hypotheses`' texts, without scores, with its arguments (`options`, `device`,
    `progress`, `prefixes`): per input line and in input order, its
    `options.num_return_sequences` translations (best first for beam search)."""
    hypotheses = translate_hypotheses(model, tokenizer, lines, *args, **kwargs, scores=False)
    return [[h.text for h in per_line] for per_line in hypotheses]


def _windows(lines: Iterable[str], window: int) -> Iterator[tuple[list[str], Exception | None]]:
    """`lines` read `window` at a time: (chunk, the reading error that ended it, if any)."""
    source = iter(lines)
    while True:
        chunk: list[str] = []
        failure: Exception | None = None
        try:
            for line in source:
                chunk.append(line)
                if len(chunk) == window:
                    break
        except Exception as err:  # keep what was read before it
            failure = err
        yield chunk, failure
        if failure is not None or len(chunk) < window:
            return


def _take_prefixes(prefixes: Iterator[str] | None, count: int, last: bool) -> list[str] | None:
    """The next `count` prefixes, one per line; a `PrefixCountError` when there are fewer, or
    (after the `last` window) more."""
    if prefixes is None:
        return None
    taken = list(itertools.islice(prefixes, count))
    if len(taken) < count or (last and next(prefixes, None) is not None):
        raise PrefixCountError(
            "the prefixes and the input have different line counts: pass one prefix per input line."
        )
    return taken


def read_windows(
    lines: Iterable[str], window: int, prefixes: Iterable[str] | None = None
) -> Iterator[tuple[list[str], list[str] | None]]:
    """`lines` read `window` at a time, with their `prefixes` read in step (None without): each
    window as `(lines, prefixes)`, the one streaming rule of every engine. If reading `lines` raises
    (e.g. a line that is not UTF-8), the window read before it is yielded first, then the error
    propagates; prefixes fewer or more than the lines are a `PrefixCountError`."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}.")
    prefix_source = iter(prefixes) if prefixes is not None else None
    for chunk, failure in _windows(lines, window):
        last = failure is None and len(chunk) < window
        forced = _take_prefixes(prefix_source, len(chunk), last)
        if chunk:
            yield chunk, forced
        if failure is not None:
            raise failure


def stream_hypotheses(
    model,
    tokenizer,
    lines: Iterable[str],
    options: DecodingOptions | None = None,
    window: int | None = None,
    *,
    prefixes: Iterable[str] | None = None,
    **kwargs,
) -> Iterator[list[Hypothesis]]:
    """`translate_hypotheses` over `lines` (and `prefixes`, read in step with them) `window` lines
    at a time (default: one batch, `options.batch_size`; `read_windows`): yields each line's
    hypotheses in input order, a window as soon as it is done, so a reader of stdin translates as
    lines arrive and a caller that writes each output at once keeps every finished window when
    interrupted. Sorting by length happens within a window. If reading `lines` raises (e.g. a line
    that is not UTF-8), the lines read before it are translated and yielded first, then the error
    propagates. `prefixes` and `kwargs` (`device`, `progress`, `scores`, which go to
    `translate_hypotheses`) are keywords."""
    options = options or DecodingOptions()
    for chunk, forced in read_windows(lines, window or options.batch_size, prefixes):
        yield from translate_hypotheses(model, tokenizer, chunk, options, prefixes=forced, **kwargs)


def translate_stream(
    model, tokenizer, lines: Iterable[str], *args, **kwargs
) -> Iterator[list[str]]:
    """`stream_hypotheses`' texts, without scores, with its arguments (`options`, `window`; then
    as keywords `prefixes`, `device`, `progress`): each line's translations in input order, a
    window at a time (default: one batch, `options.batch_size`)."""
    for hypotheses in stream_hypotheses(model, tokenizer, lines, *args, **kwargs, scores=False):
        yield [h.text for h in hypotheses]


NBEST_SEPARATOR = " ||| "


def format_hypotheses(index: int, hypotheses: Sequence[Hypothesis], output_format: str) -> str:
    """One input's hypotheses as output lines (each ending in "\\n"), best first:
    - "nbest": Moses' n-best format, `index ||| translation ||| F0= score ||| score`;
    - "jsonl": `{"index", "rank", "translation", "score"}` per line;
    - "text": the translations alone.
    `index` counts inputs from 0; a line end inside a translation is written as a space."""
    lines = []
    for rank, hypothesis in enumerate(hypotheses):
        text = hypothesis.text.replace("\r", " ").replace("\n", " ")
        if output_format == "jsonl":
            record = {"index": index, "rank": rank, "translation": text, "score": hypothesis.score}
            lines.append(json.dumps(record, ensure_ascii=False))
        elif output_format == "nbest":
            score = f"{hypothesis.score:.6f}"
            lines.append(NBEST_SEPARATOR.join([str(index), text, f"F0= {score}", score]))
        else:
            lines.append(text)
    return "".join(line + "\n" for line in lines)


def parse_nbest_line(line: str) -> tuple[int, str, dict[str, float], float]:
    """(index, translation, features, score) of one Moses n-best line (`format_hypotheses`)."""
    fields = line.rstrip("\n").split(NBEST_SEPARATOR)
    if len(fields) < 4:
        raise ValueError(f"not an n-best line (index ||| text ||| features ||| score): {line!r}")
    names_values = fields[-2].split()
    features = {
        n.rstrip("="): float(v) for n, v in zip(names_values[::2], names_values[1::2], strict=True)
    }
    text = NBEST_SEPARATOR.join(fields[1:-2])
    return int(fields[0]), text, features, float(fields[-1])
