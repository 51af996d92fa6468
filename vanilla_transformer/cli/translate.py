"""Translate text with a saved model: stdin or a file, one sentence per line, to stdout or a file.

Examples:
    echo "In the beginning God created the heaven and the earth." \\
        | vanilla-transformer-translate runs/cpu-small/hub
    vanilla-transformer-translate runs/cpu-small/hub --input verses.en --output verses.es
    vanilla-transformer-translate runs/cpu-small --num_beams 1              # a run folder: its model
    vanilla-transformer-translate runs/cpu-small/hub --fast_cpu int8 --input verses.en
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
from vanilla_transformer.errors import UserError, run_tool
from vanilla_transformer.inference import MODES, optimize_for_cpu_inference
from vanilla_transformer.loading import load_model, load_tokenizer
from vanilla_transformer.recipe.checkpoints import resolve_model_folder
from vanilla_transformer.recipe.lines import count_lines, decoded_lines
from vanilla_transformer.recipe.options import option, parse_cli
from vanilla_transformer.translation import (
    DecodingOptions,
    check_tokenizer_matches,
    translate_stream,
)

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


def model_folder(name: str) -> str:
    """The folder (or Hub id) to load for `name`, refusing what is not one of our models."""
    path = Path(name)
    if path.is_dir() and (path / "model.bin").is_file() and not (path / "config.json").is_file():
        raise UserError(
            f"{name} is a CTranslate2 export (model.bin, no config.json): translate with "
            "vanilla_transformer.export.ctranslate2.CTranslate2Translator(folder).translate(lines), "
            "or pass the model folder it was exported from."
        )
    looks_local = path.is_absolute() or name.startswith(".") or name.count("/") != 1
    if not path.exists() and looks_local:
        raise UserError(f"no model at {name}: pass a model folder, a run folder or a Hub id.")
    try:
        return resolve_model_folder(name)
    except FileNotFoundError as err:
        raise UserError(str(err)) from err


def load_model_and_tokenizer(name: str, device: str, fast_cpu: str | None = None):
    """The model and tokenizer of `name` in eval mode on `device` (the fast CPU path with
    `fast_cpu`), the tokenizer checked against the model."""
    folder = model_folder(name)
    model = load_model(folder).to(device).eval()  # a local folder loads strictly
    tokenizer = load_tokenizer(folder)
    check_tokenizer_matches(model.config, tokenizer)
    if fast_cpu:
        if device != "cpu":
            raise UserError(
                f"--fast_cpu is a CPU path: pass --device cpu (the device is {device})."
            )
        model = optimize_for_cpu_inference(model, fast_cpu, inplace=True)
    return model, tokenizer


def main(argv: list[str] | None = None) -> int:
    """The console tool: `translate` with the one error style (`run_tool`); returns the exit code."""
    return run_tool(translate, argv)


def translate(argv: list[str]) -> int:
    decoding, args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    is_file = args.input != "-"
    if is_file and not Path(args.input).is_file():
        raise UserError(f"no input file {args.input}.")
    model, tokenizer = load_model_and_tokenizer(args.model, device, args.fast_cpu)
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
        run = lambda lines: translate_stream(  # noqa: E731
            model, tokenizer, lines, decoding, window, device, bar
        )
        if args.alignment.alignment:  # each line gets " ||| " and its alignment
            align = args.alignment.aligner(model, tokenizer, decoding, device)
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
