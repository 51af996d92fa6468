"""Options shared by the recipe and its command-line tools, declared once as dataclasses.

Each tool parses them with `transformers.HfArgumentParser` (`parse_cli`): a field is a flag of the
same name, its `help` metadata the flag's help, and booleans get `--name` / `--no_name`.

- `CorpusOptions`: which parallel corpus, and how to load it (`load`, `split`).
- `DecodingOptions`: the product's decoding options (`vanilla_transformer.translation`) plus the
  evaluation tools' sample count and device.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from .. import translation
from ..errors import DEBUG_FLAG, DEBUG_HELP
from .bible import ENGLISH_MODULES, build_bible_corpus
from .data import SPLIT_ALIASES, load_translation_dataset

__all__ = ["BIBLE", "CorpusOptions", "DecodingOptions", "option", "parse_cli"]

BIBLE = "bible"


def option(default, help: str, **kwargs):
    """A dataclass field with its command-line help (extra keys go to `add_argument`)."""
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class CorpusOptions:
    """Which parallel corpus: the offline Bible EN->ES corpus or any translation dataset."""

    dataset: str = option(
        BIBLE,
        "'bible' (the offline Bible EN->ES corpus, default) or any source "
        "load_translation_dataset reads: a save_to_disk folder, a JSONL/TSV file, a folder of "
        "such files, or a Hub id.",
    )
    dataset_config: str | None = option(
        None, "Hub dataset config, e.g. 'de-en'.", aliases=["--config_name"]
    )
    english: str = option(
        "kjv",
        "English side of the Bible corpus: kjv (King James) or web (World English Bible).",
        choices=sorted(ENGLISH_MODULES),
    )
    bible_cache_dir: str = option(
        "data_cache/bible",
        "Where the Bible corpus is built once and cached (the Bible corpus cache only, not the "
        "Hugging Face cache; a run records it and the tools resolve it against the run folder).",
        aliases=["--cache_dir"],
    )
    src_lang: str = option("en", "Source language key of the 'translation' rows.")
    tgt_lang: str = option("es", "Target language key of the 'translation' rows.")
    tsv_quoting: bool = option(
        False,
        'TSV files: read CSV-quoted cells ("a<TAB>b" is one cell). Off by default: a " is text.',
    )

    def load(self):
        """A `DatasetDict` of `{"translation": {src_lang, tgt_lang}}` rows: `"bible"` is built once
        into `bible_cache_dir` (`bible.build_bible_corpus`); anything else goes to
        `data.load_translation_dataset`."""
        if self.dataset == BIBLE:
            if (self.src_lang, self.tgt_lang) != ("en", "es"):
                raise ValueError(
                    f"the Bible corpus is English -> Spanish; got src_lang={self.src_lang!r}, "
                    f"tgt_lang={self.tgt_lang!r} (expected 'en' and 'es')."
                )
            return build_bible_corpus(self.bible_cache_dir, english=self.english)
        return load_translation_dataset(
            self.dataset,
            self.src_lang,
            self.tgt_lang,
            config_name=self.dataset_config,
            tsv_quoting=self.tsv_quoting,
        )

    @staticmethod
    def split(corpus, split: str):
        """One split of a `DatasetDict`, accepting the usual aliases (`valid`, `dev`)."""
        name = SPLIT_ALIASES.get(split, split)
        if name not in corpus:
            raise ValueError(f"split {split!r} not in the dataset; it has {sorted(corpus)}.")
        return corpus[name]


@dataclass
class DecodingOptions(translation.DecodingOptions):
    """The evaluation tools' decoding flags: the product's `DecodingOptions` (the one set of decoding
    fields, `vanilla_transformer.translation`) plus which pairs to score and where."""

    max_samples: int | None = option(None, "Score only the first N pairs of the split.")
    device: str | None = option(None, "Device, e.g. cpu or cuda (default: auto).")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and each option's default after its help (unless the help
    already names it, or there is none)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, argparse.SUPPRESS):
            return text
        if action.option_strings and action.nargs == 0 and action.default is False:
            return text  # an off-by-default switch
        return f"{text} (default: %(default)s)"


MODEL_HELP = "A model folder, a run folder, a checkpoint or a Hub id."


def model_argument(several: bool = False) -> tuple[str, dict]:
    """The positional `model` of the tools that load one, an item of `parse_cli`'s
    `extra_arguments`; `several`: one or more (an ensemble)."""
    if several:
        return "model", {"nargs": "+", "help": f"{MODEL_HELP} Several: an ensemble."}
    return "model", {"help": MODEL_HELP}


def parse_model_cli(
    dataclass_types: Sequence[type], argv: Sequence[str] | None, description: str | None
) -> tuple:
    """`parse_cli` for a tool that loads one model: an instance of each type, then the model's
    name (the positional `model_argument`)."""
    *instances, positional = parse_cli(dataclass_types, argv, description, [model_argument()])
    return (*instances, positional.model)


def parse_cli(
    dataclass_types: Sequence[type],
    argv: Sequence[str] | None,
    description: str | None,
    extra_arguments: Sequence[tuple[str, dict]] = (),
    only_given: bool = False,
) -> tuple:
    """Parse `argv` into one instance of each of `dataclass_types` with `HfArgumentParser`.

    `extra_arguments`: arguments not from a dataclass, `(name, add_argument kwargs)`, returned
    last as an `argparse.Namespace`. `only_given`: return one dict of the flags given on the command line
    instead of instances (for tools that layer defaults < preset < file < flags). `--help` shows
    each default and `--debug` (which `errors.run_tool` takes off the command line before).
    """
    parser = HfArgumentParser(
        list(dataclass_types), description=description, formatter_class=_HelpFormatter
    )
    for name, kwargs in extra_arguments:
        parser.add_argument(name, **kwargs)
    for action in parser._actions:  # HfArgumentParser gives --no_x the help of --x
        if isinstance(action, argparse._StoreFalseAction) and action.option_strings:
            action.help = f"Turn off --{action.dest}."
    parser.add_argument(DEBUG_FLAG, action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    if only_given:
        help_text = parser.format_help()  # with the defaults, before they are suppressed
        parser.format_help = lambda: help_text
        for action in parser._actions:  # not set_defaults: it also fills the namespace
            action.default = argparse.SUPPRESS
        return (vars(parser.parse_args(argv)),)
    return tuple(parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False))
