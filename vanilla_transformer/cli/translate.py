"""Translate text with a saved model: stdin or a file, one sentence per line, to stdout or a file.

Examples:
    echo "In the beginning God created the heaven and the earth." \\
        | vanilla-transformer-translate runs/cpu-small/hub
    vanilla-transformer-translate runs/cpu-small/hub --input verses.en --output verses.es
    vanilla-transformer-translate runs/cpu-small --num_beams 1              # a run folder: its model
    vanilla-transformer-translate MODEL --do_sample --top_p 0.9 --num_return_sequences 3

MODEL is a save_pretrained folder (a Hub folder, a checkpoint), a training run folder (its final
model, else its newest checkpoint) or a Hub id. Output line i translates input line i; with
--num_return_sequences N each input gives N consecutive lines (best first with beam search).
Sentences are sorted by length and batched by --max_tokens; a progress bar is shown for files.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from dataclasses import dataclass, fields

import torch

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from vanilla_transformer.publishing.safety import load_model, load_tokenizer
from vanilla_transformer.recipe.checkpoints import resolve_model_folder
from vanilla_transformer.recipe.options import option, parse_cli
from vanilla_transformer.translation import GenerationOptions, translate_lines

logger = logging.getLogger("vanilla_transformer.translate")


@dataclass
class TranslateOptions:
    input: str = option("-", "File to translate, one sentence per line ('-': stdin).")
    output: str = option("-", "Where the translations go ('-': stdout).")
    num_beams: int = option(4, "Beam size (the paper: 4; 1: greedy).")
    length_penalty: float = option(0.6, "Beam-search length penalty alpha (the paper: 0.6).")
    do_sample: bool = option(False, "Sample instead of searching.")
    temperature: float = option(1.0, "Sampling temperature.")
    top_k: int | None = option(None, "Sample from the k most likely tokens (default: all).")
    top_p: float | None = option(None, "Nucleus sampling mass (default: 1.0, off).")
    num_return_sequences: int = option(
        1, "Translations per input line, written as consecutive lines."
    )
    max_new_tokens: int | None = option(
        None, "Output limit in tokens (default: the model's, source length + 50)."
    )
    max_tokens: int = option(4096, "Padded source tokens per batch.")
    device: str | None = option(None, "cpu, cuda, ... (default: cuda if available).")
    seed: int = option(0, "Random seed (sampling).")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    options, positional = parse_cli(
        [TranslateOptions],
        argv,
        __doc__,
        extra_arguments=[("model", {"help": "Model folder, run folder or Hub id."})],
    )
    return argparse.Namespace(**vars(options), **vars(positional))


def load_model_and_tokenizer(name: str, device: str):
    """The model and tokenizer of `name` in eval mode on `device`. The fast CPU inference path
    (deployment issue) hooks in here, as a flag that transforms the loaded model."""
    folder = resolve_model_folder(name)
    model = load_model(folder).to(device).eval()  # a local folder loads strictly
    tokenizer = load_tokenizer(folder)
    return model, tokenizer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The decoding flags are named after GenerationOptions' fields.
    generation = GenerationOptions(
        **{f.name: getattr(args, f.name) for f in fields(GenerationOptions)}
    )
    torch.manual_seed(args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model_and_tokenizer(args.model, device)
    with contextlib.ExitStack() as stack:
        if args.input == "-":
            source = sys.stdin
        else:
            source = stack.enter_context(open(args.input, encoding="utf-8"))
        lines = source.read().splitlines()
        translations = translate_lines(
            model,
            tokenizer,
            lines,
            generation,
            max_tokens=args.max_tokens,
            device=device,
            show_progress=args.input != "-",
        )
        if args.output == "-":
            sink = sys.stdout
        else:
            sink = stack.enter_context(open(args.output, "w", encoding="utf-8"))
        for outputs in translations:
            for text in outputs:
                sink.write(text.replace("\n", " ") + "\n")
        sink.flush()
    if args.output != "-":
        logger.info("%d lines translated into %s", len(lines), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
