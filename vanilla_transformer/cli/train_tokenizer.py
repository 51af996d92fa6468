"""Train the joint source/target BPE tokenizer on a translation corpus and save it."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vanilla_transformer.errors import UserError, console_tool
from vanilla_transformer.recipe.options import CorpusOptions, option, parse_cli
from vanilla_transformer.recipe.tokenization import train_tokenizer


@dataclass
class TokenizerOptions:
    vocab_size: int = option(8000, "BPE vocabulary size.")
    min_frequency: int = option(2, "Minimum count of a pair to be merged.")
    model_max_length: int = option(1024, "Longest sequence the model accepts.")
    output_dir: str = option("data_cache/tokenizer", "Where save_pretrained writes.")
    overwrite: bool = option(
        False, "Replace a tokenizer already in output_dir (runs trained with it no longer match)."
    )


def parse_args(argv: list[str] | None = None) -> tuple[CorpusOptions, TokenizerOptions]:
    return parse_cli([CorpusOptions, TokenizerOptions], argv, __doc__)


@console_tool
def main(argv: list[str]) -> int:
    corpus_options, args = parse_args(argv)
    existing = Path(args.output_dir) / "tokenizer.json"
    if existing.is_file() and not args.overwrite:
        raise UserError(
            f"{args.output_dir} already holds a tokenizer ({existing}); models trained with "
            "it need it unchanged. Pass --overwrite to replace it, or choose another --output_dir."
        )
    corpus = corpus_options.load()
    start = time.perf_counter()
    tokenizer = train_tokenizer(
        corpus["train"],
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        languages=[corpus_options.src_lang, corpus_options.tgt_lang],
        model_max_length=args.model_max_length,
        show_progress=True,
    )
    seconds = time.perf_counter() - start
    tokenizer.save_pretrained(args.output_dir)
    print(f"trained in {seconds:.1f} s; vocabulary {len(tokenizer)}; saved to {args.output_dir}")
    example = corpus["train"][0]["translation"]
    for lang in (corpus_options.src_lang, corpus_options.tgt_lang):
        print(f"{lang}: {tokenizer.tokenize(example[lang])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
