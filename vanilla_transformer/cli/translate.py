"""Translate text with a saved model: stdin or a file, one sentence per line, to stdout or a file.

Examples:
    echo "In the beginning God created the heaven and the earth." \\
        | vanilla-transformer-translate runs/cpu-small/hub
    vanilla-transformer-translate runs/cpu-small/hub --input verses.en --output verses.es
    vanilla-transformer-translate runs/cpu-small --num_beams 1              # a run folder: its model
    vanilla-transformer-translate runs/cpu-small/hub --fast_cpu int8 --input verses.en
    vanilla-transformer-translate runs/cpu-small/hub --engine ctranslate2 --quantization int8 --input verses.en
    vanilla-transformer-translate MODEL --do_sample --top_p 0.9 --num_return_sequences 3
    vanilla-transformer-translate MODEL --input verses.en --alignment    # "text ||| 0-0 2-1 1-2"

MODEL is a save_pretrained folder (a Hub folder, a checkpoint), a training run folder (its final
model, else its newest checkpoint) or a Hub id. Lines (docs/translate.md): only "\\n" ends a line (a
"\\r" before it is dropped); the input must be UTF-8. Output line i translates input line i; with
--num_return_sequences N each input gives N consecutive lines (best first with beam search).
Streaming: lines are read a window at a time (stdin: one batch, --batch_size lines; a file: 8
batches), sorted by length within the window, batched by --batch_size and --max_tokens, translated
and written in input order before the next window is read; Ctrl-C keeps every window written.
"""

from __future__ import annotations

import argparse
import contextlib
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
    ENGINES,
    load_translator,
    tool_quantization,
)
from vanilla_transformer.engines.loading import load_model_and_tokenizer, model_folder  # noqa: F401
from vanilla_transformer.errors import UserError, run_tool
from vanilla_transformer.inference import MODES
from vanilla_transformer.recipe.lines import count_lines, decoded_lines
from vanilla_transformer.recipe.options import option, parse_cli
from vanilla_transformer.translation import DecodingOptions

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
    engine: str = option(
        "torch",
        "What runs the model: torch (its own generate()), ctranslate2 or onnxruntime (exported on "
        "first use into a cache keyed by the model's content; docs/deployment.md).",
        choices=list(ENGINES),
    )
    quantization: str | None = option(
        None,
        "The engine's weight type: ctranslate2 float32 (default), int8, int8_float32, ...; "
        "onnxruntime float32 (default) or int8; torch: a --fast_cpu mode.",
        choices=list(ALL_QUANTIZATIONS),
    )
    seed: int = option(0, "Random seed of sampling (default: %(default)s).")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    decoding, options, alignment, positional = parse_cli(
        [DecodingOptions, TranslateOptions, AlignmentOptions],
        argv,
        __doc__,
        extra_arguments=[
            ("model", {"help": "Model folder, run folder or Hub id."}),
        ],
    )
    return decoding, argparse.Namespace(**vars(options), **vars(positional), alignment=alignment)


def main(argv: list[str] | None = None) -> int:
    """The console tool: `translate` with the one error style (`run_tool`); returns the exit code."""
    return run_tool(translate, argv)


def translate(argv: list[str]) -> int:
    decoding, args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    is_file = args.input != "-"
    if is_file and not Path(args.input).is_file():
        raise UserError(f"no input file {args.input}.")
    quantization = tool_quantization(args.engine, args.quantization, args.fast_cpu)
    translator = load_translator(args.model, args.engine, quantization, args.device)
    name = args.input if is_file else "stdin"
    window = decoding.batch_size * (FILE_WINDOW_BATCHES if is_file else 1)
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open(args.input, "rb")) if is_file else sys.stdin.buffer
        sink = sys.stdout
        if args.output != "-":
            sink = stack.enter_context(open(args.output, "w", encoding="utf-8", newline="\n"))
        total = count_lines(args.input) if is_file else None
        bar = stack.enter_context(
            tqdm(total=total, desc="translate", unit="line", disable=not is_file, file=sys.stderr)
        )
        lines = decoded_lines(source, name)
        run = lambda lines: translator.translate_stream(lines, decoding, window, bar)  # noqa: E731
        if args.alignment.alignment:  # each line gets " ||| " and its alignment
            if args.engine != "torch":
                raise UserError(
                    "--alignment reads the model's cross-attention, which only the torch engine "
                    f"exposes: drop --engine {args.engine} (the default is torch)."
                )
            align = args.alignment.aligner(
                translator.model, translator.tokenizer, decoding, translator.device
            )
            outputs = aligned_stream(run, lines, align)
        else:
            outputs = run(lines)
        for done, texts in enumerate(outputs, start=1):
            for text in texts:  # a line end inside a translation would shift the next lines
                sink.write(text.replace("\r", " ").replace("\n", " ") + "\n")
            if done % window == 0:
                sink.flush()
        sink.flush()
    if args.output != "-":
        logger.info("%d lines translated into %s", bar.n, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
