"""Scoring given translations (forced decoding): the log-probability the model gives a target
sentence for its source, as `marian-scorer`, `sockeye-score` and fairseq's `--score-reference` do.
Used to filter corpora (dual conditional cross-entropy) and to rerank n-best lists.

- `score_pairs`: per (source, target) pair, in input order, a `PairScore`: the sum of the target
  tokens' log-probabilities (its `</s>` included), that sum divided by the token count to the power
  `length_penalty` (exactly how `generate()` ranks finished beams and reports `sequences_scores`:
  scoring a beam search's own output with the same length penalty gives its sequence score back),
  and each token's log-probability on request.
- `forced_decode`: the one teacher-forced pass over token batches of pairs, shared with the word
  alignments (`vanilla_transformer.alignment`).

The log-probabilities are a plain log-softmax of the logits: label smoothing is a training loss,
never part of a score. Pairs are batched by tokens (`translation.token_batches`, the one batching
rule) with their source and target lengths together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import torch

from .translation import (
    _checked_lines,
    _generating_model,
    _pad,
    _pad_token_id,
    eval_mode,
    token_batches,
)

__all__ = ["SCORE_TYPES", "PairScore", "ScoringOptions", "forced_decode", "score_pairs"]

SCORE_TYPES = ("normalized", "sum")


def _option(default, help: str, **kwargs):
    """A dataclass field with its command-line help (read by `HfArgumentParser`)."""
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclasses.dataclass
class ScoringOptions:
    """Which score a pair gets and how pairs are batched; the flags of `vanilla-transformer-score`."""

    length_penalty: float = _option(
        0.6,
        "Length penalty alpha of the normalized score: sum / length ** alpha, as beam search "
        "ranks its outputs (default: %(default)s, the translate tool's).",
    )
    score_type: str = _option(
        "normalized",
        "normalized: the length-normalized log-probability (generate()'s sequence score); sum: "
        "the plain sum of the token log-probabilities (default: %(default)s).",
        choices=list(SCORE_TYPES),
    )
    per_token: bool = _option(False, "Also give each target token's log-probability.")
    batch_size: int = _option(32, "Pairs per batch, at most (default: %(default)s).")
    max_tokens: int = _option(
        4096,
        "Padded source + target tokens per batch, at most (default: %(default)s).",
    )

    def __post_init__(self):
        if self.score_type not in SCORE_TYPES:
            raise ValueError(f"score_type must be one of {SCORE_TYPES}, got {self.score_type!r}.")
        for name in ("batch_size", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.length_penalty != self.length_penalty:  # NaN
            raise ValueError("length_penalty must be a number, got nan.")


@dataclasses.dataclass(frozen=True)
class PairScore:
    """The model's score of one target given its source.

    `score`: the requested score (`ScoringOptions.score_type`): `log_prob / length **
    length_penalty` (normalized) or `log_prob` (sum). `log_prob`: the sum of the target tokens'
    log-probabilities, `</s>` included. `length`: how many tokens were scored (`</s>` included, the
    decoder start token not: the length `generate()` divides by). `token_log_probs`: each token's
    log-probability, in order (with `per_token`, else None)."""

    score: float
    log_prob: float
    length: int
    token_log_probs: tuple[float, ...] | None = None


def forced_decode(
    model,
    source_ids: Sequence[Sequence[int]],
    target_ids: Sequence[Sequence[int]],
    pad_id: int,
    device: torch.device,
    max_tokens: int | None = None,
    batch_size: int | None = None,
    output_attentions: bool = False,
):
    """Teacher-forced passes over all the pairs, in `translation.token_batches` (by source +
    target length): the decoder reads `<start> y_1 ... y_{T-1}` and predicts `y_1 ... y_T`. Yields `(batch, token_log_probs (B, T), outputs)`: the pairs'
    indices (rows in that order), the log-probability of each target token (0 at padding) and
    the model's outputs (with the cross-attentions when `output_attentions`; the model must then
    run eager attention). The caller puts the model in eval mode (`translation.eval_mode`)."""
    lengths = [len(s) + len(t) for s, t in zip(source_ids, target_ids, strict=True)]
    for batch in token_batches(lengths, max_tokens, batch_size):
        input_ids, attention_mask = _pad([source_ids[i] for i in batch], pad_id)  # (B, S)
        labels, target_mask = _pad([target_ids[i] for i in batch], pad_id)  # (B, T)
        decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels)  # (B, T)
        with torch.inference_mode():
            outputs = model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                decoder_input_ids=decoder_input_ids.to(device),
                use_cache=False,
                output_attentions=output_attentions,
            )
            # float32 as generate() computes them: log_softmax of the logits, nothing else.
            log_probs = torch.log_softmax(outputs.logits.float(), dim=-1)  # (B, T, V)
            labels, target_mask = labels.to(device), target_mask.to(device)
            token_log_probs = log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            token_log_probs = token_log_probs.masked_fill(target_mask == 0, 0.0)  # (B, T)
        yield batch, token_log_probs, outputs


def model_on_device(model, device: str | torch.device | None = None):
    """The model that generates (a DDP-style wrapper unwrapped) on `device` (default: where it
    is), and that device."""
    model = _generating_model(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if next(model.parameters()).device != device:
        model.to(device)
    return model, device


def _pair_score(token_log_probs: torch.Tensor, options: ScoringOptions) -> PairScore:
    """The score of one target from its tokens' log-probabilities (T,), padding removed."""
    log_prob = float(token_log_probs.double().sum())
    length = int(token_log_probs.numel())
    normalized = log_prob / (length**options.length_penalty)
    return PairScore(
        score=normalized if options.score_type == "normalized" else log_prob,
        log_prob=log_prob,
        length=length,
        token_log_probs=tuple(token_log_probs.tolist()) if options.per_token else None,
    )


def encode_pairs(
    tokenizer, sources: Iterable[str], targets: Iterable[str]
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of the sources and the targets, each ending in `</s>` as in training (the
    tokenizer's post-processor adds it); the two lists must be as long as each other."""
    sources, targets = _checked_lines(sources), _checked_lines(targets)
    if len(sources) != len(targets):
        raise ValueError(
            f"{len(sources)} sources but {len(targets)} targets: give one target per source."
        )
    if not sources:
        return [], []
    source_ids = tokenizer(sources, add_special_tokens=True)["input_ids"]
    target_ids = tokenizer(targets, add_special_tokens=True)["input_ids"]
    return source_ids, target_ids


def score_pairs(
    model,
    tokenizer,
    sources: Iterable[str],
    targets: Iterable[str],
    options: ScoringOptions | None = None,
    device: str | torch.device | None = None,
    progress=None,
) -> list[PairScore]:
    """The model's score of each target given its source (`PairScore`), in input order.

    With `options.score_type="normalized"` (the default) and the length penalty of a beam search,
    the score of that search's output is its `sequences_scores` (when no logits processor alters
    the probabilities: no repetition penalty, no forced or suppressed tokens). `model` is put in
    eval mode for the call and moved to `device` (default: where it is); `progress`: an object with
    `update(n)` (a tqdm bar), told the number of pairs each batch finishes."""
    options = options or ScoringOptions()
    source_ids, target_ids = encode_pairs(tokenizer, sources, targets)
    model, device = model_on_device(model, device)
    pad_id = _pad_token_id(model, tokenizer)
    scores: list[PairScore | None] = [None] * len(source_ids)
    batches = forced_decode(
        model, source_ids, target_ids, pad_id, device, options.max_tokens, options.batch_size
    )
    with eval_mode(model):
        for batch, token_log_probs, _ in batches:
            for row, i in enumerate(batch):
                scores[i] = _pair_score(token_log_probs[row, : len(target_ids[i])].cpu(), options)
            if progress is not None:
                progress.update(len(batch))
    return scores
