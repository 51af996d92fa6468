"""Average the weights of the last K checkpoints into one model (Section 6.1 of the paper: the last
5 checkpoints for the base model, 20 for the big one).

Examples:
    python scripts/average_checkpoints.py --run_dir runs/base --last 5 --output_dir runs/base/avg5
    python scripts/average_checkpoints.py runs/base/checkpoint_8 runs/base/checkpoint_9 \\
        --output_dir runs/base/avg2 --eval_split validation --max_samples 300

Checkpoints are `save_pretrained` or `accelerator.save_state` folders (weights in
model.safetensors). The averaged model takes its config, generation config and tokenizer from
--base_model (default: the newest checkpoint when it holds a config.json) and is written with
save_pretrained, with averaging.json recording the inputs. With --eval_split, BLEU/chrF of the
newest checkpoint alone and of the average are printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from vanilla_transformer.recipe.checkpoints import (
    average_checkpoints,
    list_checkpoints,
    load_averaged_weights,
    load_checkpoint_state_dict,
)
from vanilla_transformer.recipe.evaluation import evaluate_translation
from vanilla_transformer.recipe.options import CorpusOptions, DecodingOptions, option, parse_cli

logger = logging.getLogger("average_checkpoints")


@dataclass
class AverageOptions:
    output_dir: str = field(metadata={"help": "Where the averaged model is saved."})
    run_dir: str | None = option(
        None,
        "A training run folder: its checkpoint sub-folders (name ending in the step, also under "
        "checkpoints/) are ordered by step and the last --last are averaged.",
    )
    last: int = option(5, "How many checkpoints from --run_dir.")
    base_model: str | None = option(
        None,
        "save_pretrained folder giving config, generation config and tokenizer (default: the "
        "newest checkpoint, if it has a config.json).",
    )
    eval_split: str | None = option(
        None, "If set (e.g. validation), print BLEU/chrF of the newest checkpoint and the average."
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Every option in one namespace; `corpus` holds the `CorpusOptions`."""
    corpus, decoding, options, positional = parse_cli(
        [CorpusOptions, DecodingOptions, AverageOptions],
        argv,
        __doc__,
        extra_arguments=[
            ("checkpoints", {"nargs": "*", "help": "Checkpoint folders to average, any order."})
        ],
    )
    return argparse.Namespace(
        corpus=corpus,
        decoding=decoding,
        **vars(corpus),
        **vars(decoding),
        **vars(options),
        **vars(positional),
    )


def checkpoint_folders(args: argparse.Namespace) -> list[Path]:
    if bool(args.checkpoints) == bool(args.run_dir):
        raise SystemExit("error: give checkpoint folders or --run_dir, not both and not neither.")
    if args.checkpoints:
        return [Path(c) for c in args.checkpoints]
    if args.last < 1:
        raise SystemExit(f"error: --last must be >= 1, got {args.last}.")
    found = list_checkpoints(args.run_dir)
    if not found:
        raise SystemExit(f"error: no checkpoint folders with weights under {args.run_dir}.")
    if len(found) < args.last:
        logger.warning("only %d checkpoints in %s; averaging all of them", len(found), args.run_dir)
    return found[-args.last :]


def base_model_folder(args: argparse.Namespace, folders: list[Path]) -> Path:
    if args.base_model:
        return Path(args.base_model)
    if (folders[-1] / "config.json").is_file():
        return folders[-1]
    raise SystemExit(
        f"error: {folders[-1]} has no config.json (an accelerator.save_state folder?); pass "
        "--base_model with a save_pretrained folder of the same run."
    )


def score(model, tokenizer, split, args: argparse.Namespace) -> dict:
    return evaluate_translation(
        model,
        tokenizer,
        split,
        args.src_lang,
        args.tgt_lang,
        **asdict(args.decoding),
        show_progress=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    folders = checkpoint_folders(args)
    logger.info("averaging %d checkpoints: %s", len(folders), [str(f) for f in folders])
    averaged = average_checkpoints(folders)

    base = base_model_folder(args, folders)
    model = AutoModelForSeq2SeqLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    record = {"checkpoints": [str(f) for f in folders], "base_model": str(base)}

    split = None
    if args.eval_split:
        split = args.corpus.split(args.corpus.load(), args.eval_split)
        load_averaged_weights(model, load_checkpoint_state_dict(folders[-1]))
        record["newest_checkpoint_scores"] = score(model, tokenizer, split, args)

    load_averaged_weights(model, averaged)
    if split is not None:
        record["averaged_scores"] = score(model, tokenizer, split, args)
    output_dir = Path(args.output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    (output_dir / "averaging.json").write_text(json.dumps(record, indent=2) + "\n")

    print(f"averaged {len(folders)} checkpoints -> {output_dir}")
    if split is not None:
        newest, avg = record["newest_checkpoint_scores"], record["averaged_scores"]
        print(f"[{args.eval_split}, {avg['num_samples']} pairs, beam {args.num_beams}]")
        print(f"  newest checkpoint  BLEU {newest['bleu']:6.2f}  chrF {newest['chrf']:6.2f}")
        label = f"average of {len(folders)}"
        print(f"  {label:<17}  BLEU {avg['bleu']:6.2f}  chrF {avg['chrf']:6.2f}")
        print(f"  {avg['bleu_signature']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
