"""The last checkpoint, the average of the last K and the ensemble of the last K of a training run:
BLEU, chrF and sentences per second on a split (docs/translate.md, "Ensembles").

    python scripts/benchmark.py ensemble-table --model runs/cpu-small --last 5 --markdown table.md

Every row is scored through the evaluate tool's code path (`recipe.evaluation.evaluate_translation`,
the same decoder, corpus and sacrebleu settings), so its numbers are the ones
`vanilla-transformer-evaluate` prints for the same model: the run's corpus (`run_corpus_options`),
the paper's decoding (beam 4, length penalty 0.6) unless `options` says otherwise. Speed is the
split's sentences over the wall time of its decoding and scoring, on one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

from vanilla_transformer.ensemble import EnsembleModel
from vanilla_transformer.recipe.checkpoints import (
    average_checkpoints,
    list_checkpoints,
    load_averaged_weights,
    resolve_model_folder,
)
from vanilla_transformer.recipe.evaluation import evaluate_translation
from vanilla_transformer.recipe.options import CorpusOptions
from vanilla_transformer.recipe.run_folder import run_corpus_options
from vanilla_transformer.translation import DecodingOptions

__all__ = ["checkpoint_variants", "ensemble_table", "format_ensemble_table"]


def load_model(folder: Path):
    """A checkpoint's model, its weights read as the average tool reads them (a save_pretrained
    folder or an accelerate checkpoint alike; the mean of one checkpoint is its weights)."""
    model = AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(folder))
    load_averaged_weights(model, average_checkpoints([folder]))
    return model.eval()


def checkpoint_variants(folders: Sequence[Path]) -> list[tuple[str, Callable]]:
    """(name, build the model) for the last of `folders`, their average and their ensemble; each
    model is built when its row is scored, so one variant is in memory at a time."""
    folders = [Path(f) for f in folders]

    def last():
        return load_model(folders[-1])

    def average():
        model = load_model(folders[-1])
        load_averaged_weights(model, average_checkpoints(folders))
        return model

    def ensemble():
        return EnsembleModel([load_model(f) for f in folders], [f.name for f in folders])

    k = len(folders)
    return [
        (f"last checkpoint ({folders[-1].name})", last),
        (f"average of the last {k}", average),
        (f"ensemble of the last {k}", ensemble),
    ]


def _run_tokenizer(run_dir: Path, folders: Sequence[Path]):
    """The newest checkpoint's tokenizer, else the run's model's."""
    with_tokenizer = [f for f in folders if (f / "tokenizer_config.json").is_file()]
    return AutoTokenizer.from_pretrained(
        with_tokenizer[-1] if with_tokenizer else resolve_model_folder(run_dir)
    )


def ensemble_table(
    run_dir: str | Path,
    last: int = 5,
    split: str = "test",
    dataset=None,
    options: DecodingOptions | None = None,
    max_samples: int | None = None,
    device: str = "cpu",
) -> list[dict]:
    """One row per variant (`checkpoint_variants` of the run's last `last` checkpoints):
    {"model", "bleu", "chrf", "sentences_per_second", "num_samples"}. `dataset`: rows to score
    (default: the run's corpus, `split`)."""
    run_dir = Path(run_dir)
    folders = list_checkpoints(run_dir)[-last:]
    if not folders:
        raise FileNotFoundError(f"no checkpoints with weights under {run_dir}.")
    corpus = run_corpus_options(run_dir, CorpusOptions())
    if dataset is None:
        dataset = corpus.split(corpus.load(), split)
    tokenizer = _run_tokenizer(run_dir, folders)
    options = options or DecodingOptions()
    rows = []
    for name, build in checkpoint_variants(folders):
        model = build()
        start = time.perf_counter()
        scores = evaluate_translation(
            model, tokenizer, dataset, corpus.src_lang, corpus.tgt_lang, max_samples,
            options=options, device=device,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        rows.append(
            {
                "model": name,
                "bleu": scores["bleu"],
                "chrf": scores["chrf"],
                "sentences_per_second": scores["num_samples"] / seconds,
                "num_samples": scores["num_samples"],
                "bleu_signature": scores["bleu_signature"],
            }
        )
        del model
    return rows


def format_ensemble_table(rows: Sequence[dict]) -> str:
    """The rows as a markdown table, with the sacrebleu signature under it."""
    lines = ["| model | BLEU | chrF | sentences/s |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['bleu']:.2f} | {row['chrf']:.2f} | "
            f"{row['sentences_per_second']:.1f} |"
        )
    lines.append("")
    lines.append(
        f"{rows[0]['num_samples']} sentences; BLEU signature: `{rows[0]['bleu_signature']}`"
    )
    return "\n".join(lines)
