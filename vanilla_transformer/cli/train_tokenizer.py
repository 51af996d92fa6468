"""Train the joint source/target BPE tokenizer on a translation corpus and save it."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from vanilla_transformer.recipe.bible import ENGLISH_MODULES, build_bible_corpus
from vanilla_transformer.recipe.data import load_translation_dataset
from vanilla_transformer.recipe.tokenization import train_tokenizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--dataset",
        default="bible",
        help="'bible' (the offline corpus, default), or anything load_translation_dataset "
        "accepts: a JSONL/TSV file or folder, a save_to_disk folder, or a Hub id.",
    )
    parser.add_argument("--config_name", default=None, help="Hub dataset config, e.g. de-en.")
    parser.add_argument("--src_lang", default="en", help="Source language key.")
    parser.add_argument("--tgt_lang", default="es", help="Target language key.")
    parser.add_argument(
        "--cache_dir", default="data_cache/bible", help="Bible corpus cache (with --dataset bible)."
    )
    parser.add_argument(
        "--english", default="kjv", choices=sorted(ENGLISH_MODULES), help="Bible English side."
    )
    parser.add_argument("--vocab_size", type=int, default=8000, help="BPE vocabulary size.")
    parser.add_argument(
        "--min_frequency", type=int, default=2, help="Minimum count of a pair to be merged."
    )
    parser.add_argument(
        "--model_max_length", type=int, default=1024, help="Longest sequence the model accepts."
    )
    parser.add_argument(
        "--output_dir", default="data_cache/tokenizer", help="Where save_pretrained writes."
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.dataset == "bible":
        corpus = build_bible_corpus(args.cache_dir, english=args.english)
    else:
        corpus = load_translation_dataset(
            args.dataset, args.src_lang, args.tgt_lang, config_name=args.config_name
        )
    start = time.perf_counter()
    tokenizer = train_tokenizer(
        corpus["train"],
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        languages=[args.src_lang, args.tgt_lang],
        model_max_length=args.model_max_length,
        show_progress=True,
    )
    seconds = time.perf_counter() - start
    tokenizer.save_pretrained(args.output_dir)
    print(f"trained in {seconds:.1f} s; vocabulary {len(tokenizer)}; saved to {args.output_dir}")
    example = corpus["train"][0]["translation"]
    for lang in (args.src_lang, args.tgt_lang):
        print(f"{lang}: {tokenizer.tokenize(example[lang])}")


if __name__ == "__main__":
    sys.exit(main())
