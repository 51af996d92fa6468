"""Shared by the publishing tests: a tiny model and tokenizer, complete card values, a stand-in
for `HfApi`, and no Hub credentials or network in any test."""

from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_config
from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.recipe.bible import bible_card_info
from vanilla_transformer.recipe.evaluation import compute_bleu
from vanilla_transformer.recipe.tokenization import train_tokenizer

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


class FakeApi:
    """Stands in for `huggingface_hub.HfApi`: records the calls."""

    def __init__(self):
        self.calls = []
        self.uploaded = {}  # path -> bytes of the folder given to upload_folder

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        folder = Path(kwargs["folder_path"])  # what would be sent, read while it exists
        self.uploaded = {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*")
            if p.is_file()
        }
        return type("CommitInfo", (), {"commit_url": "https://huggingface.co/x/commit/1"})()
