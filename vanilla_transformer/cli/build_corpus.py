"""Build the offline Bible EN->ES corpus (SWORD modules via diatheke) into a cache folder."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from vanilla_transformer.errors import UserError, console_tool
from vanilla_transformer.recipe.bible import build_bible_corpus
from vanilla_transformer.recipe.options import BIBLE, CorpusOptions, option, parse_cli


@dataclass
class BuildOptions:
    min_ratio: float = option(0.6, "Lowest Spanish/English character ratio kept.")
    max_ratio: float = option(1.9, "Highest Spanish/English character ratio kept.")
    overwrite: bool = option(False, "Rebuild even if a cache with the same settings exists.")
    samples: int = option(3, "Pairs of each split to print as a sanity check.")


def parse_args(argv: list[str] | None = None) -> tuple[CorpusOptions, BuildOptions]:
    """The corpus options (`--english`, `--bible_cache_dir` alias `--cache_dir`: one sub-folder
    per English version, with README.md) and the build's own."""
    corpus, options = parse_cli([CorpusOptions, BuildOptions], argv, __doc__)
    if corpus.dataset != BIBLE:
        raise UserError(f"this tool builds the Bible corpus, not {corpus.dataset!r}.")
    return corpus, options


@console_tool
def main(argv: list[str]) -> int:
    corpus_options, args = parse_args(argv)
    corpus = build_bible_corpus(
        corpus_options.bible_cache_dir,
        english=corpus_options.english,
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
