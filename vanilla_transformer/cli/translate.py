"""Translate text with a saved model: stdin or a file, one sentence per line, to stdout or a file.

Examples:
    echo "In the beginning God created the heaven and the earth." \\
        | vanilla-transformer-translate runs/cpu-small/hub
    vanilla-transformer-translate runs/cpu-small/hub --input verses.en --output verses.es
    vanilla-transformer-translate runs/cpu-small --num_beams 1              # a run folder: its model
    vanilla-transformer-translate runs/cpu-small/hub --fast_cpu int8 --input verses.en
    vanilla-transformer-translate MODEL --do_sample --top_p 0.9 --num_return_sequences 3
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from tqdm.auto import tqdm

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from vanilla_transformer.ensemble import EnsembleModel, check_same_tokenizer
from vanilla_transformer.errors import UserError, run_tool
from vanilla_transformer.inference import MODES, optimize_for_cpu_inference
from vanilla_transformer.publishing.safety import load_model, load_tokenizer
from vanilla_transformer.recipe.checkpoints import resolve_model_folder
from vanilla_transformer.recipe.options import option, parse_cli
from vanilla_transformer.translation import (
    DecodingOptions,
    check_tokenizer_matches,
    format_hypotheses,
    stream_hypotheses,
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
    decoding, options, positional = parse_cli(
        [DecodingOptions, TranslateOptions],
        argv,
        __doc__,
        extra_arguments=[
            (
                "model",
                {"nargs": "+", "help": "Model folder, run folder or Hub id; several: an ensemble."},
            ),
        ],
    )
    return checked_nbest(decoding, options), argparse.Namespace(**vars(options), **vars(positional))


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


def load_models(names: list[str], device: str, fast_cpu: str | None = None):
    """One model, or the `EnsembleModel` of several sharing one tokenizer, and the tokenizer."""
    loaded = [load_model_and_tokenizer(name, device, fast_cpu) for name in names]
    if len(loaded) == 1:
        return loaded[0]
    check_same_tokenizer([tokenizer for _, tokenizer in loaded], names)
    return EnsembleModel([model for model, _ in loaded], names).eval(), loaded[0][1]


def decoded_lines(stream: BinaryIO, name: str) -> Iterator[str]:
    """The lines of a byte stream as text: only b"\\n" ends a line, a "\\r" before it and a UTF-8 BOM
    at the start are dropped; a line that is not UTF-8 (or holds a NUL byte, binary data) is a
    UserError naming `name` and the line."""
    for number, raw in enumerate(stream, start=1):
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if b"\0" in raw:
            raise UserError(
                f"{name}, line {number}: a NUL byte, binary data and not text; the lines before "
                "it were translated. Pass a UTF-8 text file, one sentence per line."
            )
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(
                f"{name}, line {number}: not UTF-8 ({err.reason} at byte {err.start}); the "
                "lines before it were translated. Convert the input to UTF-8 (e.g. iconv)."
            ) from None


def count_lines(path: str) -> int:
    """Lines in a file by the tool's rule (only b"\\n" ends one; a last line without it counts)."""
    count, last = 0, b"\n"
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


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
    check_prefix_file(args.prefix, args.input if is_file else None)
    model, tokenizer = load_models(args.model, device, args.fast_cpu)
    name = args.input if is_file else "stdin"
    window = decoding.batch_size * (FILE_WINDOW_BATCHES if is_file else 1)
    output_format = "nbest" if args.nbest and args.output_format == "text" else args.output_format
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open(args.input, "rb")) if is_file else sys.stdin.buffer
        prefixes = None
        if args.prefix:
            prefix_stream = stack.enter_context(open(args.prefix, "rb"))
            prefixes = decoded_lines(prefix_stream, args.prefix)
        sink = sys.stdout
        if args.output != "-":
            sink = stack.enter_context(open(args.output, "w", encoding="utf-8", newline="\n"))
        total = count_lines(args.input) if is_file else None
        bar = stack.enter_context(
            tqdm(total=total, desc="translate", unit="line", disable=not is_file, file=sys.stderr)
        )
        outputs = stream_hypotheses(
            model, tokenizer, decoded_lines(source, name), decoding, window, device, bar,
            prefixes, scores=output_format != "text",
        )  # fmt: skip
        for index, hypotheses in enumerate(outputs):
            sink.write(format_hypotheses(index, hypotheses, output_format))
            if (index + 1) % window == 0:
                sink.flush()
        sink.flush()
    if args.output != "-":
        logger.info("%d lines translated into %s", bar.n, args.output)
    return 0


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
