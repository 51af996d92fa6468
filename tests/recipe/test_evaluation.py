"""Specification of `vanilla_transformer.recipe.evaluation` and `scripts/evaluate_model.py`."""

import json
from pathlib import Path

import evaluate
import pytest
import sacrebleu
import sacrebleu.metrics
import torch
from torch import nn

from tests.conftest import REPO, SENTENCES, run_script, save_tiny_model, tiny_config, write_jsonl
from vanilla_transformer import (
    VanillaTransformerConfig,
    VanillaTransformerForConditionalGeneration,
    metrics,
)
from vanilla_transformer.recipe.evaluation import compute_bleu, evaluate_translation, translate
from vanilla_transformer.recipe.tokenization import train_tokenizer


@pytest.fixture(scope="module")
def bpe_tokenizer():
    return train_tokenizer(SENTENCES * 3, vocab_size=300, min_frequency=1)


def tiny_model(vocab_size: int, **overrides) -> VanillaTransformerForConditionalGeneration:
    config = tiny_config(vocab_size=vocab_size, max_position_embeddings=128, **overrides)
    torch.manual_seed(0)
    return VanillaTransformerForConditionalGeneration(config)


class EchoModel(nn.Module):
    """A stand-in whose `generate` returns its input: a perfect 'translation' into the source
    language, recording each call."""

    def __init__(self, pad_token_id: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.config = VanillaTransformerConfig(vocab_size=400, pad_token_id=pad_token_id)
        self.calls = []

    def generate(self, input_ids, attention_mask, **kwargs):
        self.calls.append({"lengths": attention_mask.sum(1).tolist(), **kwargs})
        return input_ids


def test_bleu_and_chrf_of_identical_text_are_100():
    scores = compute_bleu(SENTENCES, SENTENCES)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["chrf"] == pytest.approx(100.0)
    assert scores["ter"] == pytest.approx(0.0)
    assert set(scores) == {
        "bleu",
        "chrf",
        "ter",
        "bleu_signature",
        "chrf_signature",
        "ter_signature",
    }


def test_the_evaluate_modules_give_sacrebleus_numbers_and_signatures():
    """BLEU, chrF and TER through `evaluate.load(<packaged module>)`, offline, equal direct
    sacrebleu calls, with several references too."""
    hypotheses = ["the dog saw a cat in the house", "a house that is red", "in the beginning"]
    first, second = SENTENCES[:3], SENTENCES[3:6]
    references = [[a, b] for a, b in zip(first, second, strict=True)]
    direct = {
        "bleu": sacrebleu.metrics.BLEU(),
        "chrf": sacrebleu.metrics.CHRF(),
        "ter": sacrebleu.metrics.TER(),
    }
    for name, metric in direct.items():
        module = metrics.load(name)
        assert isinstance(module, evaluate.EvaluationModule)
        result = module.compute(predictions=hypotheses, references=references)
        assert result["score"] == pytest.approx(
            metric.corpus_score(hypotheses, [first, second]).score
        )
        assert result["signature"] == str(metric.get_signature())
        assert "nrefs:2" in result["signature"]
    chrf_pp = metrics.load("chrf").compute(predictions=hypotheses, references=first, word_order=2)
    assert chrf_pp["score"] == pytest.approx(
        sacrebleu.corpus_chrf(hypotheses, [first], word_order=2).score
    )


def test_metric_modules_are_package_data_loaded_from_a_local_path():
    for name in metrics.NAMES:
        folder = Path(metrics.module_path(name))
        assert (folder / f"{folder.name}.py").is_file()
        assert folder.is_relative_to(Path(metrics.__file__).parent)


def test_bleu_is_sacrebleu_corpus_score_with_13a_signature():
    hypotheses = ["the dog saw a cat in the house", "a house that is red"]
    scores = compute_bleu(hypotheses, SENTENCES[:2])
    expected = sacrebleu.corpus_bleu(hypotheses, [SENTENCES[:2]])
    assert scores["bleu"] == pytest.approx(expected.score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [SENTENCES[:2]]).score)
    assert "tok:13a" in scores["bleu_signature"] and "nrefs:1" in scores["bleu_signature"]
    assert scores["chrf_signature"].startswith("nrefs:1|")


def test_compute_bleu_rejects_unequal_lengths_and_empty_input():
    with pytest.raises(ValueError, match="same length"):
        compute_bleu(["a b c d"], ["a b c d", "e f g h"])
    with pytest.raises(ValueError, match="at least one"):
        compute_bleu([], [])


def test_translate_restores_input_order_and_batches_by_length(bpe_tokenizer):
    model = EchoModel()
    outputs = translate(
        model, bpe_tokenizer, SENTENCES, batch_size=2, num_beams=3, length_penalty=0.7
    )
    assert outputs == SENTENCES  # the echo model is perfect, so any reordering shows
    lengths = [n for call in model.calls for n in call["lengths"]]
    assert lengths == sorted(lengths, reverse=True)  # longest first, similar lengths together
    assert [len(call["lengths"]) for call in model.calls] == [2, 2, 2, 1]
    assert all(c["num_beams"] == 3 and c["length_penalty"] == 0.7 for c in model.calls)


def test_translate_in_batches_equals_one_sentence_at_a_time(bpe_tokenizer):
    model = tiny_model(len(bpe_tokenizer))
    batched = translate(model, bpe_tokenizer, SENTENCES, batch_size=3, max_new_tokens=6)
    single = [
        translate(model, bpe_tokenizer, [s], batch_size=1, max_new_tokens=6)[0] for s in SENTENCES
    ]
    assert batched == single


def test_translate_restores_the_training_mode(bpe_tokenizer):
    model = tiny_model(len(bpe_tokenizer)).train()
    translate(model, bpe_tokenizer, SENTENCES[:2], num_beams=1, max_new_tokens=3)
    assert model.training
    assert translate(model, bpe_tokenizer, []) == []


def test_evaluate_translation_writes_hypotheses_in_dataset_order(tmp_path, bpe_tokenizer):
    rows = [{"translation": {"en": s, "es": s}} for s in SENTENCES]
    out = tmp_path / "sub" / "hyp.txt"
    scores = evaluate_translation(
        EchoModel(),
        bpe_tokenizer,
        rows,
        "en",
        "es",
        batch_size=3,
        max_samples=5,
        hypotheses_file=out,
    )
    assert scores["bleu"] == pytest.approx(100.0) and scores["num_samples"] == 5
    assert out.read_text(encoding="utf-8").splitlines() == SENTENCES[:5]


def test_evaluate_translation_names_a_missing_language(bpe_tokenizer):
    rows = [{"translation": {"en": "a", "es": "b"}}]
    with pytest.raises(ValueError, match="'fr'"):
        evaluate_translation(EchoModel(), bpe_tokenizer, rows, "en", "fr")


def test_evaluate_script_scores_a_saved_model(tmp_path, bpe_tokenizer):
    model_dir = save_tiny_model(tmp_path / "model", bpe_tokenizer)
    data_dir = tmp_path / "data"
    write_jsonl(data_dir / "test.jsonl", [(s, s) for s in SENTENCES])
    hyp, results = tmp_path / "hyp.txt", tmp_path / "scores.json"
    proc = run_script(
        "evaluate_model.py",
        str(model_dir),
        "--dataset",
        str(data_dir),
        *"--split test --num_beams 2 --batch_size 2 --max_samples 4".split(),
        *"--max_new_tokens 5 --hypotheses_file".split(),
        str(hyp),
        "--results_json",
        str(results),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "BLEU = " in proc.stdout and "tok:13a" in proc.stdout and "chrF = " in proc.stdout
    assert len(hyp.read_text(encoding="utf-8").splitlines()) == 4
    record = json.loads(results.read_text())
    assert record["num_samples"] == 4 and 0 <= record["bleu"] <= 100
    assert record["num_beams"] == 2


def test_the_documented_metrics_example_runs():
    """The metrics example in docs/recipe.md (where the README sends readers) runs as printed."""
    text = (REPO / "docs" / "recipe.md").read_text(encoding="utf-8")
    block = next(
        b for b in text.split("```python")[1:] if "from vanilla_transformer import metrics" in b
    )
    namespace = {}
    exec(block.split("```")[0], namespace)  # noqa: S102  (the README's own example)
    result = namespace["bleu"].compute(
        predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]]
    )
    assert result["score"] == pytest.approx(100.0) and result["signature"].startswith("nrefs:1")


def test_evaluate_tool_fast_cpu_fp32_scores_exactly_like_the_default_path(
    tmp_path, bpe_tokenizer, monkeypatch, capsys
):
    """`--fast_cpu MODE` is how each fast mode's BLEU is measured against fp32's on a test set;
    in fp32 the translations, hence the scores, are the default path's. (Compiled with dynamo's
    `eager` backend to keep the test fast; tests/test_inference.py runs inductor.)"""
    import vanilla_transformer.inference as inference
    from vanilla_transformer.cli import evaluate as evaluate_tool

    real_compile = torch.compile
    monkeypatch.setattr(
        inference.torch,
        "compile",
        lambda fn, fullgraph=False, options=None, **kw: real_compile(
            fn, fullgraph=fullgraph, backend="eager"
        ),
    )
    model_dir = tmp_path / "model"
    tiny_model(len(bpe_tokenizer)).save_pretrained(model_dir)
    bpe_tokenizer.save_pretrained(model_dir)
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.jsonl").write_text(
        "".join(json.dumps({"translation": {"en": s, "es": s}}) + "\n" for s in SENTENCES)
    )
    records = {}
    for name, extra in (("default", []), ("fast", ["--fast_cpu", "fp32"])):
        results = tmp_path / f"{name}.json"
        argv = [str(model_dir), "--dataset", str(data), "--split", "test", "--num_beams", "2"]
        argv += ["--max_new_tokens", "6", "--batch_size", "3", "--device", "cpu"]
        argv += ["--hypotheses_file", str(tmp_path / f"{name}.txt")]
        assert evaluate_tool.main(argv + ["--results_json", str(results)] + extra) == 0
        records[name] = json.loads(results.read_text())
    assert "fast CPU path fp32" in capsys.readouterr().out
    assert records["fast"]["fast_cpu"] == "fp32" and records["default"]["fast_cpu"] is None
    assert (tmp_path / "fast.txt").read_text() == (tmp_path / "default.txt").read_text()
    assert records["fast"]["bleu"] == records["default"]["bleu"]


def test_evaluation_decodes_through_the_one_batched_translate_function(bpe_tokenizer):
    from vanilla_transformer.recipe import evaluation
    from vanilla_transformer.translation import DecodingOptions, translate_lines

    model = tiny_model(len(bpe_tokenizer))
    model.generation_config.max_new_tokens = 6
    options = DecodingOptions(num_beams=2, batch_size=3)
    best = [texts[0] for texts in translate_lines(model, bpe_tokenizer, SENTENCES, options)]
    assert translate(model, bpe_tokenizer, SENTENCES, num_beams=2, batch_size=3) == best
    assert translate(model, bpe_tokenizer, SENTENCES, options) == best
    # No second decoder: the module keeps no padding or generate loop of its own.
    assert (
        not hasattr(evaluation, "_pad") and "generate(" not in Path(evaluation.__file__).read_text()
    )


def test_evaluate_tool_refuses_a_tokenizer_that_is_not_the_models(tmp_path, bpe_tokenizer):
    model_dir = save_tiny_model(tmp_path / "model", bpe_tokenizer)
    other = train_tokenizer(["one two three four five"] * 3, vocab_size=280, min_frequency=1)
    other.save_pretrained(model_dir)  # the model's folder now holds another vocabulary
    write_jsonl(tmp_path / "data" / "test.jsonl", [(s, s) for s in SENTENCES])
    proc = run_script(
        "evaluate_model.py", str(model_dir), "--dataset", str(tmp_path / "data"), cwd=tmp_path
    )
    assert proc.returncode != 0
    assert "the tokenizer does not match the model" in proc.stderr
