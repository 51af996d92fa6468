"""Translate text with a saved model: stdin or a file, one sentence per line, to stdout or a file.

Examples:
    echo "In the beginning God created the heaven and the earth." \\
        | vanilla-transformer-translate runs/cpu-small/hub
    vanilla-transformer-translate runs/cpu-small/hub --input verses.en --output verses.es
    vanilla-transformer-translate runs/cpu-small --num_beams 1              # a run folder: its model
    vanilla-transformer-translate runs/cpu-small/hub --fast_cpu int8 --input verses.en
    vanilla-transformer-translate MODEL --do_sample --top_p 0.9 --num_return_sequences 3
    vanilla-transformer-translate MODEL --input verses.en --alignment    # "text ||| 0-0 2-1 1-2"
    vanilla-transformer-translate MODEL --engine ctranslate2 --quantization int8 --input verses.en
    vanilla-transformer-translate MODEL --nbest 4 --input verses.en          # Moses n-best list
    vanilla-transformer-translate MODEL --nbest 4 --output_format jsonl      # JSON lines
    vanilla-transformer-translate MODEL --input verses.en --prefix starts.es # forced target prefixes
    vanilla-transformer-translate CHECKPOINT_A CHECKPOINT_B ...              # an ensemble

MODEL is a save_pretrained folder (a Hub folder, a checkpoint), a training run folder (its final
model, else its newest checkpoint) or a Hub id. Lines (docs/translate.md): only "\\n" ends a line (a
"\\r" before it is dropped); the input must be UTF-8. Output line i translates input line i; with
--num_return_sequences N each input gives N consecutive lines (best first with beam search).
--nbest N: N scored hypotheses per input (beam search with at least N beams, or sampling), written
in Moses' n-best format `i ||| translation ||| F0= score ||| score` (i counts inputs from 0) or, with
--output_format jsonl, as JSON lines. Several models decode as an ensemble (docs/translate.md).
Streaming: lines are read a window at a time (stdin: one batch, --batch_size lines; a file: 8
batches), sorted by length within the window, batched by --batch_size and --max_tokens, translated
and written in input order before the next window is read; Ctrl-C keeps every window written.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from vanilla_transformer.alignment import AlignmentOptions, aligned_stream
from vanilla_transformer.engines import (
    ALL_QUANTIZATIONS,
    ENGINE_HELP,
    ENGINES,
    QUANTIZATION_HELP,
    TorchTranslator,
    load_translator,
    tool_quantization,
)
from vanilla_transformer.engines.loading import load_model_and_tokenizer
from vanilla_transformer.ensemble import EnsembleModel, check_same_tokenizer
from vanilla_transformer.errors import UserError, console_tool
from vanilla_transformer.inference import MODES
from vanilla_transformer.recipe.lines import count_lines, decoded_lines
from vanilla_transformer.recipe.options import model_argument, option, parse_cli
from vanilla_transformer.translation import DecodingOptions, Hypothesis, format_hypotheses

logger = logging.getLogger("vanilla_transformer.translate")

FILE_WINDOW_BATCHES = 8  # a file is read 8 batches at a time: more to sort by length


@dataclass
class TranslateOptions:
    input: str = option("-", "File to translate, one sentence per line, UTF-8 ('-': stdin).")
    output: str = option("-", "Where the translations go ('-': stdout).")
    device: str | None = option(None, "cpu, cuda, ... (default: cuda if available).")
    fast_cpu: str | None = option(
        None,
        "Decode on the opt-in fast CPU path (optimize_for_cpu_inference): int8, bf16 (CPUs with "
        "native bf16 only) or fp32; needs the cpu device.",
        choices=list(MODES),
    )
    engine: str = option("torch", ENGINE_HELP, choices=list(ENGINES))
    quantization: str | None = option(None, QUANTIZATION_HELP, choices=list(ALL_QUANTIZATIONS))
    seed: int = option(0, "Random seed of sampling (default: %(default)s).")
    nbest: int | None = option(
        None,
        "Write N scored hypotheses per input (Moses n-best format, or JSON lines); needs "
        "--num_beams >= N or --do_sample.",
    )
    output_format: str = option(
        "text",
        "text (translations; with --nbest, Moses' n-best lines) or jsonl (one JSON object per "
        "hypothesis: index, rank, translation, score).",
        choices=["text", "jsonl"],
    )
    prefix: str | None = option(
        None,
        "File of target prefixes, one per input line (empty line: none): each translation starts "
        "with its prefix and continues from it.",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    decoding, options, alignment, positional = parse_cli(
        [DecodingOptions, TranslateOptions, AlignmentOptions],
        argv,
        __doc__,
        extra_arguments=[model_argument(several=True)],
    )
    namespace = argparse.Namespace(**vars(options), **vars(positional), alignment=alignment)
    return checked_nbest(decoding, options), namespace


def checked_nbest(decoding: DecodingOptions, options: TranslateOptions) -> DecodingOptions:
    """The decoding options with `--nbest N` as N returned sequences (one flag per meaning: N plain
    lines is --num_return_sequences, N scored hypotheses in the n-best format is --nbest)."""
    if options.nbest is None:
        return decoding
    if options.nbest < 1:
        raise UserError(f"--nbest must be >= 1, got {options.nbest}.")
    if decoding.num_return_sequences != 1:
        raise UserError(
            "--nbest N already returns N hypotheses per input: drop --num_return_sequences."
        )
    if not decoding.do_sample and decoding.num_beams < options.nbest:
        raise UserError(
            f"--nbest {options.nbest} needs at least {options.nbest} beams (beam search returns its "
            f"best beams), got --num_beams {decoding.num_beams}: raise --num_beams or pass --do_sample."
        )
    return dataclasses.replace(decoding, num_return_sequences=options.nbest)


def load_translators(args: argparse.Namespace):
    """The translator of the tool's models: one model on its engine, or the `EnsembleModel` of
    several (sharing one tokenizer) on the torch engine."""
    quantization = tool_quantization(args.engine, args.quantization, args.fast_cpu)
    if len(args.model) == 1:
        return load_translator(args.model[0], args.engine, quantization, args.device)
    if args.engine != "torch":
        raise UserError(
            f"an ensemble of {len(args.model)} models decodes on the torch engine only: drop "
            f"--engine {args.engine}."
        )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = [load_model_and_tokenizer(name, device, args.fast_cpu) for name in args.model]
    check_same_tokenizer([tokenizer for _, tokenizer in loaded], args.model)
    ensemble = EnsembleModel([model for model, _ in loaded], args.model).eval()
    return TorchTranslator(ensemble, loaded[0][1], device)


@console_tool
def main(argv: list[str]) -> int:
    decoding, args = parse_args(argv)
    torch.manual_seed(args.seed)
    is_file = args.input != "-"
    if is_file and not Path(args.input).is_file():
        raise UserError(f"no input file {args.input}.")
    check_prefix_file(args.prefix, args.input if is_file else None)
    output_format = "nbest" if args.nbest and args.output_format == "text" else args.output_format
    if args.alignment.alignment and output_format != "text":
        raise UserError(
            "--alignment appends to plain translation lines: drop --nbest / --output_format jsonl."
        )
    translator = load_translators(args)
    name = args.input if is_file else "stdin"
    window = decoding.batch_size * (FILE_WINDOW_BATCHES if is_file else 1)
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open(args.input, "rb")) if is_file else sys.stdin.buffer
        prefixes = None
        if args.prefix:
            prefixes = decoded_lines(stack.enter_context(open(args.prefix, "rb")), args.prefix)
        sink = sys.stdout
        if args.output != "-":
            sink = stack.enter_context(open(args.output, "w", encoding="utf-8", newline="\n"))
        total = count_lines(args.input) if is_file else None
        bar = stack.enter_context(
            tqdm(total=total, desc="translate", unit="line", disable=not is_file, file=sys.stderr)
        )
        lines = decoded_lines(source, name)
        outputs = translator.stream_hypotheses(lines, decoding, window, bar, prefixes)
        if args.alignment.alignment:  # each line gets " ||| " and its alignment
            outputs = with_alignments(translator, args, decoding, lines, prefixes, window, bar)
        for index, hypotheses in enumerate(outputs):
            sink.write(format_hypotheses(index, hypotheses, output_format))
            if (index + 1) % window == 0:
                sink.flush()
        sink.flush()
    if args.output != "-":
        logger.info("%d lines translated into %s", bar.n, args.output)
    return 0


def with_alignments(translator, args, decoding, lines, prefixes, window, bar):
    """The translations of `lines`, each with ` ||| ` and its alignment appended (as hypotheses,
    for `format_hypotheses`); the cross-attention it reads is the torch engine's."""
    if translator.engine != "torch":
        raise UserError(
            "--alignment reads the model's cross-attention, which only the torch engine "
            f"exposes: drop --engine {translator.engine} (the default is torch)."
        )
    align = args.alignment.aligner(
        translator.model, translator.tokenizer, decoding, translator.device
    )

    def run(lines):
        for hypotheses in translator.stream_hypotheses(lines, decoding, window, bar, prefixes):
            yield [h.text for h in hypotheses]

    for texts in aligned_stream(run, lines, align):
        yield [Hypothesis(text) for text in texts]


def check_prefix_file(prefix: str | None, source: str | None) -> None:
    """A missing prefix file, or one whose line count is not the input file's, is a user error
    (stdin's count is checked as it is read)."""
    if prefix is None:
        return
    if not Path(prefix).is_file():
        raise UserError(f"no prefix file {prefix}.")
    if source is not None and count_lines(prefix) != count_lines(source):
        raise UserError(
            f"{prefix} has {count_lines(prefix)} lines, {source} has {count_lines(source)}: "
            "pass one prefix per input line (an empty line for none)."
        )


if __name__ == "__main__":
    sys.exit(main())
