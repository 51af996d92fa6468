"""Score given translations with a saved model (forced decoding): line i of --target given line i of
--source, one score per line, to stdout or a file.

Examples:
    vanilla-transformer-score runs/cpu-small/hub --source test.en --target test.es
    vanilla-transformer-score runs/cpu-small --source test.en --target hyps.es --score_type sum
    vanilla-transformer-score MODEL --source test.en --target test.es --per_token --output scores

MODEL is a save_pretrained folder (a Hub folder, a checkpoint), a training run folder (its final
model, else its newest checkpoint) or a Hub id. The score is the target's log-probability, `</s>`
included: by default divided by its token count to the power --length_penalty, as beam search ranks
its outputs (the score of the translate tool's own output, with the same --length_penalty, is the
score its beam search gave it); --score_type sum gives the plain sum. Output line i is the score of
pair i; with --per_token, each target token's log-probability (space-separated, `</s>` last), then
" ||| " and the score. The line rules are the translate tool's (docs/translate.md): UTF-8, only
"\\n" ends a line; both files must have the same number of lines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from tqdm.auto import tqdm

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from vanilla_transformer.errors import UserError, console_tool
from vanilla_transformer.loading import load_model, load_tokenizer
from vanilla_transformer.recipe.checkpoints import resolve_model_folder
from vanilla_transformer.recipe.lines import count_lines, decoded_lines
from vanilla_transformer.recipe.options import option, parse_model_cli
from vanilla_transformer.scoring import PairScore, ScoringOptions, score_pairs
from vanilla_transformer.translation import check_tokenizer_matches

logger = logging.getLogger("vanilla_transformer.score")

WINDOW_BATCHES = 8  # pairs are read 8 batches at a time, sorted by length within the window


@dataclasses.dataclass
class ScoreToolOptions:
    source: str = dataclasses.field(
        metadata={"help": "Source sentences, one per line, UTF-8 (required)."}
    )
    target: str = dataclasses.field(
        metadata={"help": "Target sentences to score, line i translating source line i (required)."}
    )
    output: str = option("-", "Where the scores go ('-': stdout).")
    device: str | None = option(None, "cpu, cuda, ... (default: cuda if available).")


def parse_args(argv: list[str] | None = None):
    return parse_model_cli([ScoringOptions, ScoreToolOptions], argv, __doc__)


def format_line(result: PairScore) -> str:
    """One output line (without its end): the score, after the per-token scores when present."""
    score = f"{result.score:.6f}"
    if result.token_log_probs is None:
        return score
    return " ".join(f"{p:.6f}" for p in result.token_log_probs) + " ||| " + score


def checked_line_count(source: str, target: str) -> int:
    """The number of pairs: both files exist and have as many lines as each other."""
    for role, path in (("source", source), ("target", target)):
        if not Path(path).is_file():
            raise UserError(f"no {role} file {path}.")
    counts = {path: count_lines(path) for path in (source, target)}
    if counts[source] != counts[target]:
        longer, shorter = sorted((source, target), key=counts.get, reverse=True)
        raise UserError(
            f"{source} has {counts[source]} lines but {target} has {counts[target]}: line "
            f"{counts[shorter] + 1} of {longer} has no partner in {shorter}. Give one target line "
            "per source line."
        )
    return counts[source]


def load_model_and_tokenizer(name: str, device: str):
    """The model and tokenizer of `name` (a model, run folder or Hub id) in eval mode on `device`,
    the tokenizer checked against the model."""
    try:
        folder = resolve_model_folder(name)
    except FileNotFoundError as err:
        raise UserError(str(err)) from err
    model = load_model(folder).to(device).eval()  # a local folder loads strictly
    tokenizer = load_tokenizer(folder)
    check_tokenizer_matches(model.config, tokenizer)
    return model, tokenizer


def windows(pairs: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    """`pairs` `size` at a time; if reading raises (a line that is not UTF-8), the pairs read
    before it are yielded first, then the error propagates."""
    source = iter(pairs)
    while True:
        chunk, failure = [], None
        try:
            for pair in source:
                chunk.append(pair)
                if len(chunk) == size:
                    break
        except UserError as err:
            failure = err
        if chunk:
            yield chunk
        if failure is not None:
            raise failure
        if len(chunk) < size:
            return


@console_tool
def main(argv: list[str]) -> int:
    scoring, args, model_name = parse_args(argv)
    total = checked_line_count(args.source, args.target)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model_and_tokenizer(model_name, device)
    with contextlib.ExitStack() as stack:
        sources = stack.enter_context(open(args.source, "rb"))
        targets = stack.enter_context(open(args.target, "rb"))
        sink = sys.stdout
        if args.output != "-":
            sink = stack.enter_context(open(args.output, "w", encoding="utf-8", newline="\n"))
        bar = stack.enter_context(tqdm(total=total, desc="score", unit="pair", file=sys.stderr))
        pairs = zip(
            decoded_lines(sources, args.source, done="scored"),
            decoded_lines(targets, args.target, done="scored"),
            strict=True,
        )
        for chunk in windows(pairs, scoring.batch_size * WINDOW_BATCHES):
            sources_chunk, targets_chunk = zip(*chunk, strict=True)
            results = score_pairs(
                model, tokenizer, sources_chunk, targets_chunk, scoring, device, bar
            )
            sink.writelines(format_line(result) + "\n" for result in results)
            sink.flush()
    if args.output != "-":
        logger.info("%d pairs scored into %s", bar.n, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
