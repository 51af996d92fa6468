"""The checkpoint table (research/ensemble_table.py): last checkpoint, average and ensemble of a
run's last checkpoints, each scored as the evaluate tool scores it."""

import pytest
from transformers import AutoModelForSeq2SeqLM

from research.ensemble_table import ensemble_table, format_ensemble_table
from tests.conftest import word_tokenizer
from tests.toy_translation import toy_pairs, trained_toy_model
from vanilla_transformer.ensemble import EnsembleModel
from vanilla_transformer.recipe.evaluation import evaluate_translation
from vanilla_transformer.translation import DecodingOptions

ROWS = [{"translation": {"en": en, "es": es}} for en, es in toy_pairs(12, seed=7)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder with three toy checkpoints (trained 150, 200 and 250 steps)."""
    run = tmp_path_factory.mktemp("run")
    for steps in (150, 200, 250):
        folder = run / "checkpoints" / f"checkpoint_{steps}"
        trained_toy_model(steps=steps).save_pretrained(folder)
        word_tokenizer().save_pretrained(folder)
    return run


def test_the_table_has_the_last_checkpoint_the_average_and_the_ensemble_scored_as_evaluate_does(
    run_dir,
):
    options = DecodingOptions(num_beams=2)
    rows = ensemble_table(run_dir, last=2, dataset=ROWS, options=options)
    assert [r["model"] for r in rows] == [
        "last checkpoint (checkpoint_250)",
        "average of the last 2",
        "ensemble of the last 2",
    ]
    folders = [run_dir / "checkpoints" / f"checkpoint_{s}" for s in (200, 250)]
    load = AutoModelForSeq2SeqLM.from_pretrained  # as the evaluate tool loads a model folder
    expected = {0: load(folders[-1]), 2: EnsembleModel([load(f) for f in folders])}
    for index, model in expected.items():
        scores = evaluate_translation(model, word_tokenizer(), ROWS, "en", "es", options=options)
        assert (rows[index]["bleu"], rows[index]["chrf"]) == (scores["bleu"], scores["chrf"])
    assert all(r["sentences_per_second"] > 0 and r["num_samples"] == len(ROWS) for r in rows)
    table = format_ensemble_table(rows).splitlines()
    assert table[0] == "| model | BLEU | chrF | sentences/s |"
    assert table[2].startswith("| last checkpoint (checkpoint_250) | ")
    assert len(table) == 2 + 3 + 2
