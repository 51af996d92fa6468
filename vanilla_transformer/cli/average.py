"""Average the weights of the last K checkpoints into one model (Section 6.1 of the paper: the last
5 checkpoints for the base model, 20 for the big one).

Examples:
    vanilla-transformer-average runs/base                          # last 5 -> runs/base/averaged
    vanilla-transformer-average --run_dir runs/base --last 5 --output_dir runs/base/avg5
    vanilla-transformer-average runs/base/checkpoints/checkpoint_8 runs/base/checkpoints/checkpoint_9 \\
        --output_dir runs/base/avg2 --eval_split validation --max_samples 300

Checkpoints are `save_pretrained` or `accelerator.save_state` folders (weights in
model.safetensors); one folder that is a training run stands for its last --last checkpoints. The
averaged model takes its config, generation config and tokenizer from --base_model, else the
newest checkpoint (training writes them into every checkpoint), else the run's final model or its
training_config.json; it is written with save_pretrained (default folder: RUN/averaged), with
averaging.json recording the inputs and card_info.json for `vanilla-transformer-push`. With
--eval_split, BLEU/chrF of the newest checkpoint alone and of the average are printed; the run's
corpus options are used unless corpus flags are given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from vanilla_transformer.cli import check_output_folder
from vanilla_transformer.errors import UserError, console_tool
from vanilla_transformer.publishing.hub import EVALUATION_FIELDS, read_card_info, write_card_info
from vanilla_transformer.recipe.checkpoints import (
    RUN_CONFIG_FILE,
    average_checkpoints,
    find_run_dir,
    list_checkpoints,
    load_averaged_weights,
    load_checkpoint_state_dict,
    resolve_model_folder,
    run_training_values,
)
from vanilla_transformer.recipe.evaluation import evaluate_translation
from vanilla_transformer.recipe.options import CorpusOptions, DecodingOptions, option, parse_cli
from vanilla_transformer.recipe.run_folder import run_corpus_options
from vanilla_transformer.recipe.training import TrainingConfig, build_model

logger = logging.getLogger("average_checkpoints")


@dataclass
class AverageOptions:
    output_dir: str | None = option(
        None,
        "Where the averaged model is saved (default: RUN/averaged for a run folder). Never one "
        "of the checkpoints or the base model; an existing non-empty folder only with "
        "--overwrite_output_dir.",
    )
    overwrite_output_dir: bool = option(
        False, "Replace what --output_dir holds (it is emptied first; never an input)."
    )
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
    if len(args.checkpoints) == 1 and not args.run_dir and is_run_dir(Path(args.checkpoints[0])):
        args.run_dir, args.checkpoints = args.checkpoints[0], []
    if bool(args.checkpoints) == bool(args.run_dir):
        raise UserError("give checkpoint folders or --run_dir, not both and not neither.")
    if args.checkpoints:
        return [Path(c) for c in args.checkpoints]
    if args.last < 1:
        raise UserError(f"--last must be >= 1, got {args.last}.")
    found = list_checkpoints(args.run_dir)
    if not found:
        raise UserError(f"no checkpoint folders with weights under {args.run_dir}.")
    if len(found) < args.last:
        logger.warning("only %d checkpoints in %s; averaging all of them", len(found), args.run_dir)
    return found[-args.last :]


def is_run_dir(path: Path) -> bool:
    return (path / "checkpoints").is_dir() or (path / RUN_CONFIG_FILE).is_file()


def base_model(args: argparse.Namespace, folders: list[Path]):
    """(model, tokenizer, where from) giving the averaged model its config, generation config and
    tokenizer."""
    if args.base_model:
        base = Path(args.base_model)
    elif (folders[-1] / "config.json").is_file():
        base = folders[-1]
    else:
        run_dir = find_run_dir(folders[-1])
        try:
            base = Path(resolve_model_folder(run_dir)) if run_dir else None
        except FileNotFoundError:
            base = None
        if base is None and run_dir is not None:
            # A run from before checkpoints held a config: rebuild the model from its options.
            config = TrainingConfig(**run_training_values(run_dir))
            tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
            return build_model(config, len(tokenizer)), tokenizer, f"{run_dir}/training_config.json"
        if base is None:
            raise UserError(
                f"{folders[-1]} has no config.json and belongs to no training run; pass "
                "--base_model with a save_pretrained folder of the same model."
            )
    model = AutoModelForSeq2SeqLM.from_pretrained(base)
    return model, AutoTokenizer.from_pretrained(base), str(base)


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


def averaged_card_info(run_dir: Path | None, folders: list[Path], record: dict, args) -> dict:
    """The run's card values (from its final model's card_info.json), with the averaging
    described and the run's scores dropped: they belong to another model. Test scores of the
    average are kept when --eval_split test scored it."""
    info = {}
    if run_dir is not None:
        with contextlib.suppress(FileNotFoundError):
            info = read_card_info(resolve_model_folder(run_dir))
    info = {
        k: v
        for k, v in info.items()
        if k not in EVALUATION_FIELDS and not k.startswith("validation_")
    }
    info["averaging"] = f"mean of {len(folders)} checkpoints ({', '.join(f.name for f in folders)})"
    scores = record.get("averaged_scores")
    if args.eval_split == "test" and scores:
        info.update(
            test_bleu=scores["bleu"],
            test_chrf=scores["chrf"],
            test_samples=scores["num_samples"],
            bleu_signature=scores["bleu_signature"],
            chrf_signature=scores["chrf_signature"],
            num_beams=args.num_beams,
            length_penalty=args.length_penalty,
        )
    return info


def output_folder(args: argparse.Namespace, run_dir: Path | None, folders: list[Path]) -> Path:
    """Where the average goes, checked before any work: never an input (a checkpoint, the base
    model, or a folder holding one), an existing non-empty folder only with
    --overwrite_output_dir (then emptied)."""
    if args.output_dir is None and run_dir is None:
        raise UserError("--output_dir is required when the checkpoints are not in a run.")
    output_dir = Path(args.output_dir or run_dir / "averaged")
    inputs = [*folders, *([Path(args.base_model)] if args.base_model else [])]
    return check_output_folder(output_dir, inputs, args.overwrite_output_dir, "an earlier average")


@console_tool
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    folders = checkpoint_folders(args)
    run_dir = Path(args.run_dir) if args.run_dir else find_run_dir(folders[-1])
    output_dir = output_folder(args, run_dir, folders)
    logger.info("averaging %d checkpoints: %s", len(folders), [str(f) for f in folders])
    averaged = average_checkpoints(folders, show_progress=True)

    model, tokenizer, base = base_model(args, folders)
    record = {"checkpoints": [str(f) for f in folders], "base_model": base}

    split = None
    if args.eval_split:
        corpus = run_corpus_options(folders[-1], args.corpus)
        args.src_lang, args.tgt_lang = corpus.src_lang, corpus.tgt_lang
        split = corpus.split(corpus.load(), args.eval_split)
        load_averaged_weights(model, load_checkpoint_state_dict(folders[-1]))
        record["newest_checkpoint_scores"] = score(model, tokenizer, split, args)

    load_averaged_weights(model, averaged)
    if split is not None:
        record["averaged_scores"] = score(model, tokenizer, split, args)
    if output_dir.is_dir():  # checked empty, or --overwrite_output_dir given
        shutil.rmtree(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    (output_dir / "averaging.json").write_text(json.dumps(record, indent=2) + "\n")
    write_card_info(output_dir, averaged_card_info(run_dir, folders, record, args))

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
