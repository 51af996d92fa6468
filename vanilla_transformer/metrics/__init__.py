"""BLEU, chrF and TER as an `evaluate` metric module shipped inside the package (package data).

`evaluate.load("sacrebleu")` fetches its module from the Hub and fails offline; this module
(`sacrebleu_scores/`, one configuration per metric) loads from the installed package with
`evaluate.load(<local folder>, config_name=name)`, wraps sacrebleu and returns its signature with
each score:

    from vanilla_transformer import metrics

    bleu = metrics.load("bleu")
    bleu.compute(predictions=["the cat"], references=["the cat"])  # {"score": 100.0, ...}

`corpus_scores` computes all three at once; the training loop, the evaluate tool and the
fine-tuning `compute_metrics` all score through it.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Sequence

import evaluate

__all__ = ["NAMES", "load", "module_path", "corpus_scores"]

NAMES = ("bleu", "chrf", "ter")


def module_path(name: str) -> str:
    """The folder of the metric module that computes `name` inside the installed package."""
    if name not in NAMES:
        raise ValueError(f"metric must be one of {NAMES}, got {name!r}.")
    return str(importlib.resources.files(__package__) / "sacrebleu_scores")


@functools.cache
def load(name: str) -> evaluate.EvaluationModule:
    """`evaluate.load` of the packaged module configured for `name` (bleu, chrf or ter), offline,
    in memory."""
    return evaluate.load(module_path(name), config_name=name, keep_in_memory=True)


def corpus_scores(
    hypotheses: Sequence[str], references: Sequence[str], metrics: Sequence[str] = NAMES
) -> dict:
    """`{name: score, name + "_signature": signature}` for each of `metrics`."""
    scores = {}
    for name in metrics:
        result = load(name).compute(predictions=list(hypotheses), references=list(references))
        scores[name] = result["score"]
        scores[f"{name}_signature"] = result["signature"]
    return scores
