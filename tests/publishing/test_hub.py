"""Specification of `vanilla_transformer.publishing.hub` (model card, Hub folder, upload) and
`scripts/push_to_hub.py`. Nothing here touches the network."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

from tests.conftest import tiny_config
from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.publishing.hub import (
    REQUIRED_CARD_FIELDS,
    push_folder,
    render_model_card,
    save_hub_folder,
    upload_file_list,
)
from vanilla_transformer.recipe.bible import bible_card_info
from vanilla_transformer.recipe.evaluation import compute_bleu
from vanilla_transformer.recipe.tokenization import train_tokenizer

REPO = Path(__file__).resolve().parents[2]
FAKE_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
EXPECTED_FILES = {
    "README.md",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "configuration_vanilla_transformer.py",
    "modeling_vanilla_transformer.py",
    "pipeline_vanilla_transformer.py",
}


@pytest.fixture(autouse=True)
def _no_hub_credentials(monkeypatch, tmp_path):
    """No real token or network: an empty HF_HOME, no HF_TOKEN, offline mode."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(
        [
            "In the beginning God created the heaven and the earth.",
            "En el principio crió Dios los cielos y la tierra.",
        ]
        * 3,
        vocab_size=280,
        min_frequency=1,
    )


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), max_position_embeddings=128)
    return VanillaTransformerForConditionalGeneration(config)


def card_info(model, **overrides) -> dict:
    scores = compute_bleu(["la casa es roja y grande"], ["la casa es roja y pequeña"])
    info = {
        **bible_card_info("kjv", data_card="# Bible EN-ES\n\n| split | pairs |\n|---|---|\n"),
        "model_name": "vanilla-transformer-bible-en-es",
        "repo_id": "someone/vanilla-transformer-bible-en-es",
        "train_samples": 29_500,
        "train_steps": 1_568,
        "train_tokens": 3_900_000,
        "hardware": "2 CPU cores",
        "training_time": 1_500.0,
        "hyperparameters": {"peak_lr": 1e-3, "warmup_steps": 400, "max_tokens": 2500},
        "test_bleu": scores["bleu"],
        "test_chrf": scores["chrf"],
        "test_samples": 760,
        "bleu_signature": scores["bleu_signature"],
        "chrf_signature": scores["chrf_signature"],
        "num_beams": 4,
        "length_penalty": 0.6,
        "config": model.config.to_dict(),
        "num_parameters": model.num_parameters(),
    }
    info.update(overrides)
    return info


def test_card_has_translation_metadata_model_index_and_signatures(model):
    info = card_info(model)
    card = render_model_card(info)
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "translation"
    assert data["language"] == ["en", "es"] and data["license"] == "apache-2.0"
    assert data["datasets"] == ["bible-kjv-rv1909"] and data["library_name"] == "transformers"
    results = data["model-index"][0]["results"]
    metrics = {m["type"]: m["value"] for r in results for m in r["metrics"]}
    assert metrics == {"bleu": round(info["test_bleu"], 2), "chrf": round(info["test_chrf"], 2)}
    assert results[0]["dataset"]["split"] == "test"
    text = card.text
    assert info["bleu_signature"] in text and info["chrf_signature"] in text
    repo = "someone/vanilla-transformer-bible-en-es"
    assert f'AutoModelForSeq2SeqLM.from_pretrained("{repo}", trust_remote_code=True)' in text
    assert f'pipeline("translation", model="{repo}", trust_remote_code=True)' in text
    assert f"{model.num_parameters():,}" in text and "1,568" in text and "25 min 00 s" in text
    for phrase in ("Reina-Valera 1909", "Archaic Spanish", "Bible domain", "CPU"):
        assert phrase in text
    assert "{{" not in str(card) and "None" not in text


def test_missing_required_values_raise_naming_all_of_them(model):
    info = card_info(model)
    del info["test_bleu"]
    info["hardware"] = ""
    with pytest.raises(ValueError, match=r"missing required values: hardware, test_bleu"):
        render_model_card(info)
    with pytest.raises(ValueError) as error:
        render_model_card({})
    assert all(name in str(error.value) for name in REQUIRED_CARD_FIELDS)


def test_placeholder_and_out_of_range_values_are_refused(model):
    with pytest.raises(ValueError, match="hardware"):
        render_model_card(card_info(model, hardware="TODO"))
    with pytest.raises(ValueError, match="test_bleu"):
        render_model_card(card_info(model, test_bleu=140.0))
    with pytest.raises(ValueError, match="bleu_signature"):
        render_model_card(card_info(model, bleu_signature="BLEU"))


def test_card_lists_deviations_from_the_paper(model):
    config = {**model.config.to_dict(), "norm_first": True, "position_encoding": "learned"}
    text = render_model_card(card_info(model, config=config)).text
    assert "pre-LN residual blocks (`norm_first=True`)" in text
    assert "`position_encoding='learned'`" in text


def test_hub_folder_loads_with_remote_code_and_the_translation_pipeline(tmp_path, model, tokenizer):
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    assert {p.name for p in folder.iterdir()} == EXPECTED_FILES
    assert ModelCard.load(folder / "README.md").data.pipeline_tag == "translation"
    loaded = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.shared.weight.data_ptr()
    translator = pipeline("translation", model=str(folder), trust_remote_code=True)
    result = translator("In the beginning", num_beams=1, max_new_tokens=3)
    assert isinstance(result[0]["translation_text"], str)
    assert AutoTokenizer.from_pretrained(folder)("God")["input_ids"][-1] == 2


def test_a_failed_save_leaves_the_previous_folder_untouched(tmp_path, model, tokenizer):
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ValueError, match="test_chrf"):
        save_hub_folder(model, tokenizer, folder, card_info(model, test_chrf=None))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["hub"]  # no temporary folders left


def test_save_refuses_to_replace_a_folder_that_is_not_a_hub_folder(tmp_path, model, tokenizer):
    run = tmp_path / "run"
    (run / "checkpoint_1").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        save_hub_folder(model, tokenizer, run, card_info(model))
    assert (run / "checkpoint_1").is_dir()
    model.save_pretrained(tmp_path / "final")  # a training output, not a Hub folder
    with pytest.raises(FileExistsError):
        save_hub_folder(model, tokenizer, tmp_path / "final", card_info(model))


def test_dry_run_writes_exactly_the_files_to_upload_and_a_loadable_card(tmp_path, model, tokenizer):
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    (folder / ".DS_Store").write_text("junk")  # hidden files are never uploaded
    plan = push_folder(folder, "someone/vt", private=True, dry_run_dir=tmp_path / "dry")
    written = {
        p.relative_to(tmp_path / "dry" / "repo").as_posix()
        for p in (tmp_path / "dry" / "repo").rglob("*")
        if p.is_file()
    }
    assert written == EXPECTED_FILES == set(upload_file_list(folder))
    for name in EXPECTED_FILES:
        assert (tmp_path / "dry" / "repo" / name).read_bytes() == (folder / name).read_bytes()
    saved_plan = json.loads((tmp_path / "dry" / "upload_plan.json").read_text())
    assert saved_plan == plan
    assert [c["method"] for c in plan["calls"]] == ["create_repo", "upload_folder"]
    assert plan["calls"][0]["kwargs"] == {
        "repo_id": "someone/vt",
        "repo_type": "model",
        "private": True,
        "exist_ok": True,
    }
    card = ModelCard.load(tmp_path / "dry" / "repo" / "README.md")
    assert card.data.eval_results[0].metric_type == "bleu"


class FakeApi:
    """Stands in for `huggingface_hub.HfApi`: records the calls."""

    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return type("CommitInfo", (), {"commit_url": "https://huggingface.co/x/commit/1"})()


def test_push_makes_one_create_repo_and_one_upload_and_never_exposes_the_token(
    tmp_path, model, tokenizer, monkeypatch, caplog
):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    api = FakeApi()
    with caplog.at_level(logging.DEBUG):
        plan = push_folder(folder, "someone/vt", api=api, commit_message="first")
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    create, upload = api.calls[0][1], api.calls[1][1]
    assert create["exist_ok"] is True and create["private"] is False
    assert upload["folder_path"] == str(folder.resolve()) and upload["commit_message"] == "first"
    assert plan["commit_url"].endswith("/commit/1")
    assert FAKE_TOKEN not in repr(api.calls) + caplog.text + json.dumps(plan)
    for path in folder.rglob("*"):
        assert FAKE_TOKEN.encode() not in path.read_bytes()


def test_push_refuses_a_folder_that_contains_a_token(tmp_path, model, tokenizer):
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hub_token": FAKE_TOKEN}))
    with pytest.raises(ValueError, match="contains a Hugging Face access token") as error:
        push_folder(folder, "someone/vt", api=FakeApi())
    assert FAKE_TOKEN not in str(error.value)


def test_push_without_a_token_explains_how_to_log_in(tmp_path, model, tokenizer):
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    with pytest.raises(RuntimeError, match="HF_TOKEN"):
        push_folder(folder, "someone/vt")


def test_push_refuses_an_incomplete_folder(tmp_path, model, tokenizer):
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    (folder / "pipeline_vanilla_transformer.py").unlink()
    with pytest.raises(ValueError, match="missing pipeline_vanilla_transformer.py"):
        push_folder(folder, "someone/vt", api=FakeApi())


def test_push_script_dry_run_prints_the_files_and_never_the_token(tmp_path, model, tokenizer):
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    env = {**os.environ, "HF_TOKEN": FAKE_TOKEN, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "push_to_hub.py"),
            str(folder),
            "someone/vt",
            "--dry_run",
            str(tmp_path / "dry"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dry run: 9 files" in proc.stdout and "README.md" in proc.stdout
    assert FAKE_TOKEN not in proc.stdout + proc.stderr
    for path in (tmp_path / "dry").rglob("*"):
        assert path.is_dir() or FAKE_TOKEN.encode() not in path.read_bytes()
