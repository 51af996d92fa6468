"""BLEU, chrF and TER of a saved model on a translation dataset split (sacrebleu through the
package's `evaluate` metric modules, detokenised text).

MODEL may be a model folder, a training run folder (its final model, else its newest checkpoint)
or one of its checkpoints: the corpus options the run was trained with are used unless corpus
flags are given.

Examples:
    vanilla-transformer-evaluate runs/cpu-small                 # the run's model and corpus
    vanilla-transformer-evaluate runs/base/hub                  # Bible KJV->RV1909, test split
    vanilla-transformer-evaluate runs/base/hub --split validation --num_beams 1
    vanilla-transformer-evaluate runs/base/hub --fast_cpu int8  # BLEU of the fast int8 path
    vanilla-transformer-evaluate runs/base/hub --engine ctranslate2 --quantization int8
    vanilla-transformer-evaluate MODEL --dataset pairs.jsonl --split train --src_lang en --tgt_lang es

Prints the scores with their sacrebleu signatures, writes the hypotheses one per line (dataset
order; by default into the run folder, see --hypotheses_file), and optionally the scores as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import vanilla_transformer  # noqa: F401  (registers the model with the Auto classes)
from vanilla_transformer.engines import (
    ALL_QUANTIZATIONS,
    ENGINE_HELP,
    ENGINES,
    QUANTIZATION_HELP,
    load_translator,
    tool_quantization,
)
from vanilla_transformer.errors import console_tool
from vanilla_transformer.inference import MODES
from vanilla_transformer.recipe.checkpoints import resolve_model_folder
from vanilla_transformer.recipe.evaluation import evaluate_translation
from vanilla_transformer.recipe.options import (
    CorpusOptions,
    DecodingOptions,
    model_argument,
    option,
    parse_cli,
)
from vanilla_transformer.recipe.run_folder import find_run_dir, run_corpus_options


@dataclass
class EvaluateOptions:
    split: str = option("test", "Split to score (test, validation, ...).")
    hypotheses_file: str | None = option(
        None,
        "Where to write the hypotheses (default: hypotheses.<split>.txt beside --results_json, "
        "else in the model's run folder, else <model folder>.hypotheses.<split>.txt beside the "
        "model folder; for a Hub id, in the current folder).",
    )
    results_json: str | None = option(None, "Also write the scores and settings to this file.")
    fast_cpu: str | None = option(
        None,
        "Decode on the opt-in fast CPU path (optimize_for_cpu_inference): int8, bf16 (CPUs with "
        "native bf16 only) or fp32. Scores the same test set as the default path, so that the "
        "BLEU of each mode can be compared with fp32's.",
        choices=list(MODES),
    )
    engine: str = option("torch", ENGINE_HELP, choices=list(ENGINES))
    quantization: str | None = option(None, QUANTIZATION_HELP, choices=list(ALL_QUANTIZATIONS))


def parse_args(argv: list[str] | None = None):
    """(CorpusOptions, DecodingOptions, EvaluateOptions, Namespace with `model`)."""
    return parse_cli(
        [CorpusOptions, DecodingOptions, EvaluateOptions],
        argv,
        __doc__,
        extra_arguments=[model_argument()],
    )


def default_hypotheses_file(model: str, split: str, results_json: str | None) -> Path:
    """Where the hypotheses go unless --hypotheses_file says (see its help): never into an input."""
    name = f"hypotheses.{split}.txt"
    if results_json:
        return Path(results_json).parent / name
    path = Path(model)
    if not path.is_dir():
        return Path(name)  # a Hub id
    run_dir = find_run_dir(path)
    if run_dir is not None:
        return run_dir / name
    return path.absolute().parent / f"{path.absolute().name}.{name}"


def default_device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


@console_tool
def main(argv: list[str]) -> int:
    corpus_options, decoding, options, positional = parse_args(argv)
    args = argparse.Namespace(
        **vars(corpus_options), **vars(decoding), **vars(options), **vars(positional)
    )
    folder = resolve_model_folder(args.model)
    corpus_options = run_corpus_options(args.model, corpus_options)
    args.dataset = corpus_options.dataset
    split = corpus_options.split(corpus_options.load(), args.split)
    quantization = tool_quantization(args.engine, args.quantization, args.fast_cpu)
    # A local folder loads strictly (every weight or an error), the tokenizer checked against it.
    translator = load_translator(folder, args.engine, quantization, decoding.device)
    hypotheses_file = args.hypotheses_file or default_hypotheses_file(
        args.model, args.split, args.results_json
    )
    scores = evaluate_translation(
        translator,
        translator.tokenizer,
        split,
        args.src_lang,
        args.tgt_lang,
        **{**asdict(decoding), "device": default_device(decoding.device)},
        hypotheses_file=hypotheses_file,
        show_progress=True,
    )
    print(
        f"{args.model} on {args.dataset} [{args.split}], {scores['num_samples']} pairs, "
        f"beam {args.num_beams}, length penalty {args.length_penalty}"
        + (f", fast CPU path {args.fast_cpu}" if args.fast_cpu else "")
        + (
            f", engine {args.engine} {quantization or ''}".rstrip()
            if args.engine != "torch"
            else ""
        )
    )
    print(f"BLEU = {scores['bleu']:.2f}  ({scores['bleu_signature']})")
    print(f"chrF = {scores['chrf']:.2f}  ({scores['chrf_signature']})")
    print(f"TER  = {scores['ter']:.2f}  ({scores['ter_signature']})")
    print(f"hypotheses: {hypotheses_file}")
    if args.results_json:
        record = {**scores, **{k: v for k, v in vars(args).items() if k != "results_json"}}
        Path(args.results_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results_json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
