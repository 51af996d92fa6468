"""TER as an `evaluate` metric module wrapping sacrebleu's `TER` (corpus-level, on
detokenised text), so that scores come with sacrebleu's signature. Loaded offline from the package
with `vanilla_transformer.metrics.load("ter")` (`evaluate.load(<path of this folder>)`).

This file is copied into evaluate's module cache when loaded: it imports only evaluate, datasets
and sacrebleu.
"""

import datasets
import evaluate
from sacrebleu.metrics import TER

_DESCRIPTION = "Corpus-level translation edit rate (Snover et al., 2006) computed by sacrebleu, with its signature."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of hypotheses (str), detokenised.
    references: list of references: one str per prediction, or a list of str per prediction
        (several references; every prediction must have the same number).
    **kwargs: passed to `sacrebleu.metrics.TER(...)`, e.g. case_sensitive=True.
Returns:
    score: the corpus TER in [0, 100] (sacrebleu's `score`) (lower is better);
    signature: sacrebleu's signature of the settings, e.g. 'nrefs:1|case:mixed|...'.
"""
_CITATION = """@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation",
    year = "2018",
    pages = "186--191",
}
@inproceedings{snover-etal-2006-study,
    title = "A Study of Translation Edit Rate with Targeted Human Annotation",
    author = "Snover, Matthew and Dorr, Bonnie and Schwartz, Rich and Micciulla, Linnea and Makhoul, John",
    booktitle = "Proceedings of AMTA",
    year = "2006",
}"""


def _transpose(references: list) -> list[list[str]]:
    """Per-prediction references -> sacrebleu's layout: one list per reference position."""
    rows = [[r] if isinstance(r, str) else list(r) for r in references]
    counts = {len(r) for r in rows}
    if len(counts) > 1:
        raise ValueError(f"every prediction needs the same number of references, got {counts}.")
    return [list(column) for column in zip(*rows, strict=True)]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Ter(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://github.com/mjpost/sacrebleu",
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Value("string"),
                    }
                ),
            ],
            reference_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references, **kwargs):
        metric = TER(**kwargs)
        result = metric.corpus_score(list(predictions), _transpose(references))
        return {
            "score": result.score,
            "signature": str(metric.get_signature()),
        }
