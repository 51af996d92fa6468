"""BLEU, chrF and TER as one `evaluate` metric module wrapping sacrebleu's `BLEU`, `CHRF` and
`TER` (corpus-level, on detokenised text), so that scores come with sacrebleu's signature. The
configuration name picks the metric; loaded offline from the package with
`vanilla_transformer.metrics.load("bleu")` (`evaluate.load(<path of this folder>, config_name="bleu")`).

This file is copied into evaluate's module cache when loaded: it imports only evaluate, datasets
and sacrebleu.
"""

import datasets
import evaluate
from sacrebleu.metrics import BLEU, CHRF, TER

_DESCRIPTION = (
    "Corpus-level BLEU (Papineni et al., 2002), chrF (Popovic, 2015) or translation edit rate "
    "(Snover et al., 2006), by configuration name, computed by sacrebleu, with its signature."
)
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of hypotheses (str), detokenised.
    references: list of references: one str per prediction, or a list of str per prediction
        (several references; every prediction must have the same number).
    **kwargs: passed to the sacrebleu metric, e.g. tokenize='13a' (BLEU), word_order=2 (chrF++),
        case_sensitive=True (TER).
Returns:
    score: the corpus score in [0, 100] (sacrebleu's `score`; lower is better for TER);
    precisions, bp, sys_len, ref_len (BLEU only): its n-gram precisions, brevity penalty and
        lengths;
    signature: sacrebleu's signature of the settings, e.g. 'nrefs:1|case:mixed|...'.
"""
# BibTeX of sacrebleu (Post, 2018), then of BLEU, chrF and TER.
_CITATION = """@inproceedings{post-2018-call, title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt", booktitle = "Proceedings of the Third Conference on Machine
    Translation", year = "2018", pages = "186--191"}
@inproceedings{papineni-etal-2002-bleu, title = "{B}leu: a Method for Automatic Evaluation of
    Machine Translation", author = "Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu,
    Wei-Jing", booktitle = "Proceedings of the 40th Annual Meeting of the ACL", year = "2002"}
@inproceedings{popovic-2015-chrf, title = "chr{F}: character n-gram F-score for automatic {MT}
    evaluation", author = "Popovi{\\'c}, Maja", booktitle = "Proceedings of the Tenth Workshop on
    Statistical Machine Translation", year = "2015"}
@inproceedings{snover-etal-2006-study, title = "A Study of Translation Edit Rate with Targeted
    Human Annotation", author = "Snover, Matthew and Dorr, Bonnie and Schwartz, Rich and
    Micciulla, Linnea and Makhoul, John", booktitle = "Proceedings of AMTA", year = "2006"}"""
METRICS = {"bleu": BLEU, "chrf": CHRF, "ter": TER}


def _transpose(references: list) -> list[list[str]]:
    """Per-prediction references -> sacrebleu's layout: one list per reference position."""
    rows = [[r] if isinstance(r, str) else list(r) for r in references]
    counts = {len(r) for r in rows}
    if len(counts) > 1:
        raise ValueError(f"every prediction needs the same number of references, got {counts}.")
    return [list(column) for column in zip(*rows, strict=True)]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SacrebleuScores(evaluate.Metric):
    def _info(self):
        if self.config_name not in METRICS:
            raise KeyError(f"config_name must be one of {list(METRICS)}, got {self.config_name!r}.")
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
        metric = METRICS[self.config_name](**kwargs)
        result = metric.corpus_score(list(predictions), _transpose(references))
        extra = {}
        if self.config_name == "bleu":
            extra = {
                "precisions": list(result.precisions),
                "bp": result.bp,
                "sys_len": result.sys_len,
                "ref_len": result.ref_len,
            }
        return {"score": result.score, **extra, "signature": str(metric.get_signature())}
