"""Batched translation with a loaded model: the one home of decoding for the evaluation, the translate
tool, the demo and the export comparisons.

- `DecodingOptions`: how each batch is decoded (beam search as in the paper: 4 beams, length
  penalty 0.6; greedy; sampling) and how batches are formed (at most `batch_size` sentences and
  `max_tokens` padded source tokens, fairseq's `--max-tokens` / Marian's `--mini-batch-words`).
- `translate_lines`: sentences sorted by length into batches (similar lengths waste little padding,
  and the model's output limit, longest source + 50, is tighter), generated and decoded; the outputs
  come back in the input order, `num_return_sequences` per line.
- `translate_stream`: the same over an iterable of lines read a bounded window at a time, yielding
  each window's outputs in input order as soon as it is done (a tool writes them at once).
- `check_tokenizer_matches`: refuses a tokenizer whose vocabulary or special ids are not the model's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import torch

from .errors import UserError

__all__ = [
    "DecodingOptions",
    "Hypothesis",
    "TokenizerMismatchError",
    "check_tokenizer_matches",
    "read_windows",
    "token_batches",
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


def translate_lines(
    model,
    tokenizer,
    lines: Iterable[str],
    options: DecodingOptions | None = None,
    device: str | torch.device | None = None,
    progress=None,
) -> list[list[str]]:
    """Translate each line; returns, per input line and in input order, its
    `options.num_return_sequences` translations (best first for beam search). An empty or
    whitespace-only line translates to empty strings, so outputs stay aligned with the input.

    `model` is put in eval mode for the call (a DDP-style wrapper is unwrapped) and moved to
    `device` (default: where it is). `progress`: an object with `update(n)` (a tqdm bar), told the
    number of lines each batch finishes.
    """
    options = options or DecodingOptions()
    lines = _checked_lines(lines)
    n = options.num_return_sequences
    outputs: list[list[str]] = [[""] * n for _ in lines]
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
    batches = token_batches([len(ids) for ids in encoded], options.max_tokens, options.batch_size)
    kwargs = options.generate_kwargs()
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            input_ids, attention_mask = _pad([encoded[j] for j in batch], pad_id)
            with torch.inference_mode():
                generated = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    **kwargs,
                )  # (B * n, T)
            texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
            for row, j in enumerate(batch):
                outputs[todo[j]] = [t.strip() for t in texts[row * n : (row + 1) * n]]
            if progress is not None:
                progress.update(len(batch))
    finally:
        model.train(was_training)
    return outputs


def read_windows(lines: Iterable[str], window: int) -> Iterator[list[str]]:
    """`lines` read `window` at a time, each window as a list. If reading raises (e.g. a line that
    is not UTF-8), the lines read before it are yielded first, then the error propagates."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}.")
    source = iter(lines)
    while True:
        chunk: list[str] = []
        failure: BaseException | None = None
        try:
            for line in source:
                chunk.append(line)
                if len(chunk) == window:
                    break
        except Exception as err:  # keep what was read before it
            failure = err
        if chunk:
            yield chunk
        if failure is not None:
            raise failure
        if len(chunk) < window:
            return


def translate_stream(
    model,
    tokenizer,
    lines: Iterable[str],
    options: DecodingOptions | None = None,
    window: int | None = None,
    device: str | torch.device | None = None,
    progress=None,
) -> Iterator[list[str]]:
    """`translate_lines` over `lines` read `window` lines at a time (default: one batch,
    `options.batch_size`; `read_windows`): yields each line's translations in input order, a window
    as soon as it is done, so a reader of stdin translates as lines arrive and a caller that writes
    each output at once keeps every finished window when interrupted. Sorting by length happens
    within a window. If reading `lines` raises (e.g. a line that is not UTF-8), the lines read
    before it are translated and yielded first, then the error propagates."""
    options = options or DecodingOptions()
    for chunk in read_windows(lines, window or options.batch_size):
        yield from translate_lines(model, tokenizer, chunk, options, device, progress)
