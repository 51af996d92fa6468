"""Specification of `vanilla_transformer.recipe.finetuning` and `scripts/finetune.py`: the
Seq2SeqTrainer path."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq

from tests.conftest import run_script, save_tiny_model, tiny_config, write_jsonl
from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.recipe.evaluation import evaluate_translation
from vanilla_transformer.recipe.finetuning import FinetuneConfig, finetune, make_compute_metrics
from vanilla_transformer.recipe.tokenization import train_tokenizer

LEXICON = {
    "the": "el",
    "a": "un",
    "house": "casa",
    "dog": "perro",
    "cat": "gato",
    "is": "es",
    "big": "grande",
    "small": "pequeño",
    "red": "rojo",
    "blue": "azul",
    "green": "verde",
}


def word_by_word_pairs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(sorted(LEXICON)) for _ in range(rng.randint(2, 5))]
        rows.append(
            {"translation": {"en": " ".join(words), "es": " ".join(LEXICON[w] for w in words)}}
        )
    return rows


@pytest.fixture(scope="module")
def tokenizer():
    rows = word_by_word_pairs(80)
    return train_tokenizer(
        [r["translation"][k] for r in rows for k in ("en", "es")], vocab_size=300, min_frequency=1
    )


def tiny_model(vocab_size: int) -> VanillaTransformerForConditionalGeneration:
    torch.manual_seed(0)
    return VanillaTransformerForConditionalGeneration(
        tiny_config(vocab_size=vocab_size, max_position_embeddings=128)
    )


def test_collator_pads_labels_with_minus_100_and_shifts_them_into_decoder_inputs(tokenizer):
    model = tiny_model(len(tokenizer))
    features = [
        dict(tokenizer("the big dog", text_target="el perro grande")),
        dict(tokenizer("a cat", text_target="un gato")),
    ]
    batch = DataCollatorForSeq2Seq(tokenizer, model=model)(features)
    labels, decoder_inputs = batch["labels"], batch["decoder_input_ids"]
    short = len(features[1]["labels"])
    assert (labels[1, short:] == -100).all() and labels[1, short - 1] == 2  # </s> then -100
    assert (decoder_inputs[:, 0] == model.config.decoder_start_token_id).all()
    expected = labels[:, :-1].masked_fill(labels[:, :-1] == -100, model.config.pad_token_id)
    assert torch.equal(decoder_inputs[:, 1:], expected)


def test_compute_metrics_decodes_around_minus_100_padding(tokenizer):
    texts = ["el perro grande es rojo", "un gato azul es pequeño"]
    ids = [tokenizer(t)["input_ids"] for t in texts]
    width = max(map(len, ids)) + 2
    padded = np.array([i + [-100] * (width - len(i)) for i in ids])
    metrics = make_compute_metrics(tokenizer)((padded, padded))
    assert metrics == {
        "bleu": pytest.approx(100.0),
        "chrf": pytest.approx(100.0),
        "ter": pytest.approx(0.0),
    }


def test_finetune_script_lowers_the_training_loss_and_saves_a_loadable_model(tmp_path, tokenizer):
    model_dir = save_tiny_model(tmp_path / "pretrained", tokenizer)
    data = tmp_path / "data"
    rows = word_by_word_pairs(80)
    write_jsonl(data / "train.jsonl", rows[:72])
    write_jsonl(data / "validation.jsonl", rows[72:])
    out = tmp_path / "finetuned"
    proc = run_script(
        "finetune.py",
        str(model_dir),
        "--dataset",
        str(data),
        "--output_dir",
        str(out),
        *"--max_steps 40 --logging_steps 5 --learning_rate 3e-3".split(),
        *"--lr_scheduler_type constant --warmup_steps 0".split(),
        *"--per_device_train_batch_size 16 --eval_steps 40 --num_beams 1".split(),
        *"--max_eval_samples 4".split(),
        timeout=500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "finetune_summary.json").read_text())
    losses = summary["losses"]
    assert len(losses) == 8 and losses[-1] < 0.7 * losses[0]
    assert 0 <= summary["eval"]["eval_bleu"] <= 100 and "tok:13a" in summary["bleu_signature"]

    final = Path(summary["final_dir"])
    assert (final / "tokenizer.json").is_file()
    assert (final / "pipeline_vanilla_transformer.py").is_file()
    generation = json.loads((final / "generation_config.json").read_text())
    assert generation["num_beams"] == 4 and "max_length" not in generation  # not Trainer's fill-in
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(final)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.shared.weight.data_ptr()
    # Silent at the source: Trainer's reload of the best checkpoint, pinned memory on CPU.
    assert "There were missing keys" not in proc.stderr and "pin_memory" not in proc.stderr
    # The card values the push tool renders the fine-tuned model's card from.
    info = json.loads((final / "card_info.json").read_text())
    assert info["train_steps"] == 40 and info["eval_split"] == "validation"
    assert info["test_bleu"] == summary["eval"]["eval_bleu"] and info["test_samples"] == 4


def test_finetune_eval_bleu_is_the_evaluate_tools_bleu_on_the_same_checkpoint(tmp_path, tokenizer):
    """Issue 19.1: each checkpoint's eval BLEU/chrF (what load_best_model_at_end compares) is the
    score the evaluate tool gives that checkpoint on the same data, and the checkpoint keeps the
    model's generation settings (the paper's input + 50 output limit, beams, length penalty)."""
    model_dir = save_tiny_model(tmp_path / "pretrained", tokenizer)
    base_generation = json.loads((model_dir / "generation_config.json").read_text())
    data = tmp_path / "data"
    rows = word_by_word_pairs(40, seed=1)
    # Long sources: an untrained model's output runs to its limit, so a cut at 20 tokens shows.
    long_rows = [
        {"translation": {k: " ".join([r["translation"][k]] * 4) for k in ("en", "es")}}
        for r in rows
    ]
    write_jsonl(data / "train.jsonl", long_rows[:32])
    write_jsonl(data / "validation.jsonl", long_rows[32:])
    config = FinetuneConfig(
        model=str(model_dir), dataset=str(data), output_dir=str(tmp_path / "out"),
        max_steps=4, eval_steps=2, logging_steps=2, per_device_train_batch_size=8,
        max_eval_samples=4, num_beams=2, save_total_limit=None, warmup_steps=0,
    )  # fmt: skip
    finetune(config)
    checkpoints = sorted((tmp_path / "out").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
    assert [p.name for p in checkpoints] == ["checkpoint-2", "checkpoint-4"]
    history = json.loads((checkpoints[-1] / "trainer_state.json").read_text())["log_history"]
    evals = {r["step"]: r for r in history if "eval_bleu" in r}
    validation = [json.loads(line) for line in (data / "validation.jsonl").read_text().splitlines()]
    for folder in checkpoints:
        generation = json.loads((folder / "generation_config.json").read_text())
        assert {k: v for k, v in generation.items() if k != "transformers_version"} == {
            k: v for k, v in base_generation.items() if k != "transformers_version"
        }
        model = AutoModelForSeq2SeqLM.from_pretrained(folder)
        scores = evaluate_translation(
            model, tokenizer, validation, "en", "es", num_beams=2, length_penalty=0.6
        )
        step = int(folder.name.split("-")[1])
        assert evals[step]["eval_bleu"] == pytest.approx(scores["bleu"], abs=1e-6)
        assert evals[step]["eval_chrf"] == pytest.approx(scores["chrf"], abs=1e-6)
