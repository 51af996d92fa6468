"""Translate lines of text with a saved model: the logic behind `vanilla-transformer-translate`.

Sentences are sorted by length and packed into batches of at most `max_tokens` padded source
tokens (fairseq's `--max-tokens`, Marian's `--mini-batch-words`): similar lengths waste little
padding, and the output comes back in the input order. Beam search (the paper: 4 beams, length
penalty 0.6), greedy or sampling, with `num_return_sequences` outputs per input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

__all__ = ["GenerationOptions", "token_batches", "translate_lines"]


@dataclasses.dataclass
class GenerationOptions:
    """How each batch is decoded (the arguments of `model.generate`)."""

    num_beams: int = 4
    length_penalty: float = 0.6
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    num_return_sequences: int = 1
    max_new_tokens: int | None = None  # None: the model's own limit (longest source + 50)

    def __post_init__(self):
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}.")
        if self.num_return_sequences < 1:
            raise ValueError(f"num_return_sequences must be >= 1, got {self.num_return_sequences}.")
        if not self.do_sample and self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"num_return_sequences ({self.num_return_sequences}) must be <= num_beams "
                f"({self.num_beams}) without sampling: beam search returns its best beams; "
                "raise --num_beams or pass --do_sample."
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")

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


def token_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches, longest sentences first, each holding at most `max_tokens`
    padded tokens (batch size x its longest length); a sentence longer than `max_tokens` is a
    batch of its own. Longest first: a batch that does not fit in memory fails at once."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}.")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    for i in order:
        # Sorted descending: the batch's first sentence is its longest.
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(i)
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


def translate_lines(
    model,
    tokenizer,
    lines: Iterable[str],
    options: GenerationOptions | None = None,
    max_tokens: int = 4096,
    device: str | torch.device | None = None,
    show_progress: bool = False,
) -> list[list[str]]:
    """Translate each line; returns, per input line and in input order, its
    `options.num_return_sequences` translations (best first for beam search). An empty or
    whitespace-only line translates to empty strings, so outputs stay aligned with the input."""
    options = options or GenerationOptions()
    lines = [line.rstrip("\r\n") for line in lines]
    n = options.num_return_sequences
    outputs: list[list[str]] = [[""] * n for _ in lines]
    todo = [i for i, line in enumerate(lines) if line.strip()]
    if not todo:
        return outputs
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = model.config.pad_token_id
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    model.eval()
    encoded = tokenizer([lines[i] for i in todo], add_special_tokens=True)["input_ids"]
    batches = token_batches([len(ids) for ids in encoded], max_tokens)
    kwargs = options.generate_kwargs()
    with tqdm(total=len(todo), desc="translate", unit="line", disable=not show_progress) as bar:
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
            bar.update(len(batch))
    return outputs


def read_lines(stream) -> Iterator[str]:
    """Lines of a text stream without their line ends."""
    for line in stream:
        yield line.rstrip("\r\n")
