"""Padding on the Bible training split: token-budget batches vs fixed-size random batches."""

from __future__ import annotations

import argparse
import logging
import sys

# First: the package's log filters precede transformers' torchao import (quiet_imports).
import vanilla_transformer  # noqa: F401

# isort: split
from transformers import AutoTokenizer

from vanilla_transformer.recipe.bible import ENGLISH_MODULES, build_bible_corpus
from vanilla_transformer.recipe.data import (
    TokenBudgetBatchSampler,
    fixed_size_batches,
    padding_stats,
    tokenize_translation_dataset,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache_dir", default="data_cache/bible", help="Bible corpus cache.")
    parser.add_argument(
        "--english", default="kjv", choices=sorted(ENGLISH_MODULES), help="Bible English side."
    )
    parser.add_argument(
        "--tokenizer", default="data_cache/tokenizer", help="Folder of a saved tokenizer."
    )
    parser.add_argument(
        "--max_tokens", type=int, default=4000, help="Token budget (padded source + target)."
    )
    parser.add_argument("--max_length", type=int, default=256, help="Drop longer pairs.")
    parser.add_argument("--seed", type=int, default=0, help="Shuffling seed.")
    parser.add_argument("--num_proc", type=int, default=None, help="Processes for tokenizing.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    corpus = build_bible_corpus(args.cache_dir, english=args.english)
    train, _ = tokenize_translation_dataset(
        corpus["train"], tokenizer, "en", "es", args.max_length, args.max_length, args.num_proc
    )
    sampler = TokenBudgetBatchSampler.from_dataset(train, args.max_tokens, seed=args.seed)
    budget = padding_stats(list(sampler), sampler.src_lengths, sampler.tgt_lengths)
    size = max(1, round(budget["mean_batch_size"]))
    fixed = padding_stats(
        fixed_size_batches(len(train), size, seed=args.seed),
        sampler.src_lengths,
        sampler.tgt_lengths,
    )
    print(f"{len(train)} training pairs, budget {args.max_tokens} tokens per batch")
    for name, stats in (("token-budget buckets", budget), (f"random batches of {size}", fixed)):
        print(
            f"{name:>24}: padding {stats['padding_fraction']:.1%}, "
            f"{stats['num_batches']} batches, mean size {stats['mean_batch_size']:.1f}, "
            f"largest {stats['max_batch_tokens']} padded tokens"
        )


if __name__ == "__main__":
    sys.exit(main())
