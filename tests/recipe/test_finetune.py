"""Specification of `vanilla_transformer.recipe.finetuning` and `scripts/finetune.py`: the
Seq2SeqTrainer path."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq

from tests.conftest import tiny_config
from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.recipe.finetuning import make_compute_metrics
from vanilla_transformer.recipe.tokenization import train_tokenizer

REPO = Path(__file__).resolve().parents[2]
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
    assert metrics == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}


def test_finetune_script_lowers_the_training_loss_and_saves_a_loadable_model(tmp_path, tokenizer):
    model_dir = tmp_path / "pretrained"
    tiny_model(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "data"
    data.mkdir()
    rows = word_by_word_pairs(80)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:72]))
    (data / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[72:]))
    out = tmp_path / "finetuned"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "finetune.py"),
            str(model_dir),
            "--dataset",
            str(data),
            "--output_dir",
            str(out),
            *"--max_steps 40 --logging_steps 5 --learning_rate 3e-3".split(),
            *"--lr_scheduler_type constant --warmup_steps 0".split(),
            *"--per_device_train_batch_size 16 --eval_steps 40 --num_beams 1".split(),
            *"--max_eval_samples 4".split(),
        ],
        capture_output=True,
        text=True,
        timeout=500,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
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
