"""Build the offline Bible EN->ES corpus (SWORD modules via diatheke) into a cache folder."""

from __future__ import annotations

import argparse
import logging
import sys

from vanilla_transformer.recipe.bible import ENGLISH_MODULES, build_bible_corpus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--cache_dir",
        default="data_cache/bible",
        help="Folder for the built corpus (one sub-folder per English version, with README.md).",
    )
    parser.add_argument(
        "--english",
        default="kjv",
        choices=sorted(ENGLISH_MODULES),
        help="English side: kjv (King James, closer to RV 1909, default) or web (World English).",
    )
    parser.add_argument(
        "--min_ratio", type=float, default=0.6, help="Lowest Spanish/English character ratio kept."
    )
    parser.add_argument(
        "--max_ratio", type=float, default=1.9, help="Highest Spanish/English character ratio kept."
    )
    parser.add_argument(
        "--overwrite",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Rebuild even if a cache with the same settings exists.",
    )
    parser.add_argument(
        "--samples", type=int, default=3, help="Pairs of each split to print as a sanity check."
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    corpus = build_bible_corpus(
        args.cache_dir,
        english=args.english,
        min_ratio=args.min_ratio,
        max_ratio=args.max_ratio,
        overwrite=args.overwrite,
    )
    for split, dataset in corpus.items():
        print(f"{split}: {len(dataset)} pairs")
        for row in dataset.select(range(min(args.samples, len(dataset)))):
            print(f"  {row['ref']}: {row['translation']['en']}\n    -> {row['translation']['es']}")


if __name__ == "__main__":
    sys.exit(main())
