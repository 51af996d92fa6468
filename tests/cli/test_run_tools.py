"""Every run yields a loadable, publishable model, and the tools take a run folder as it is.

One tiny training run on ONE JSONL file (no validation or test split) is shared by the tests;
each tool then runs on it in a subprocess, as a user would run it."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import vanilla_transformer  # noqa: F401
from vanilla_transformer.recipe.checkpoints import complete_checkpoints

REPO = Path(__file__).resolve().parents[2]
WORDS = {"house": "casa", "dog": "perro", "cat": "gato", "big": "grande", "red": "rojo"}
TINY = (
    "--d_model 32 --ffn_dim 64 --attention_heads 4 --encoder_layers 1 --decoder_layers 1 "
    "--max_position_embeddings 64 --max_source_length 32 --max_target_length 32 "
    "--batch_tokens 300 --update_tokens 300 --warmup_steps 4 --log_with none --threads 1 "
    "--logging_steps 2 --eval_steps 0 --tokenizer_vocab_size 280"
).split()


def run_tool(module: str, *args, cwd=REPO, **kwargs) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("HF_TOKEN", None)
    command = [sys.executable, "-m", f"vanilla_transformer.cli.{module}", *map(str, args)]
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **kwargs
    )


def write_corpus(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        en = [rng.choice(list(WORDS)) for _ in range(rng.randint(2, 6))]
        rows.append({"translation": {"en": " ".join(en), "es": " ".join(WORDS[w] for w in en)}})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 6-update run on one JSONL file: no validation or test split."""
    root = tmp_path_factory.mktemp("run")
    data = write_corpus(root / "pairs.jsonl", 150, seed=0)
    out = root / "run"
    result = run_tool(
        "train",
        "--dataset", data, "--tokenizer", root / "tok", "--output_dir", out, *TINY,
        "--max_steps", "6", "--checkpoint_steps", "3", "--average_last", "2",
        "--warmup_steps", "3",  # both checkpoints past the warm-up: averaged (issue 19.2)
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return {"root": root, "out": out, "data": data, "result": result}


def test_a_run_without_a_test_split_still_saves_its_averaged_model_as_a_hub_folder(run):
    summary = json.loads((run["out"] / "summary.json").read_text())
    assert summary["hub_folder"] and summary["scores"] == {}
    hub = Path(summary["hub_folder"])
    model = AutoModelForSeq2SeqLM.from_pretrained(hub)
    assert model.config.vocab_size == len(AutoTokenizer.from_pretrained(hub))
    card = ModelCard.load(hub / "README.md")
    assert "model-index" not in card.data.to_dict()
    assert "Not evaluated" in card.text
    assert "checkpoint_3, checkpoint_6" in summary["averaging"]


def test_every_checkpoint_folder_loads_with_from_pretrained(run):
    checkpoints = complete_checkpoints(run["out"])
    assert [c.name for c in checkpoints] == ["checkpoint_3", "checkpoint_6"]
    for folder in checkpoints:
        for name in ("config.json", "generation_config.json", "tokenizer.json"):
            assert (folder / name).is_file(), (folder, name)
        model = AutoModelForSeq2SeqLM.from_pretrained(folder)
        assert model.lm_head.weight is model.model.shared.weight  # tied again on load
        AutoTokenizer.from_pretrained(folder)


def test_training_logs_its_setup_and_saves_without_shared_tensor_warnings(run):
    log = run["result"].stderr
    for phrase in (
        "pairs with both sides non-empty",
        "kept",
        "parameters;",
        "micro-batches",
        "checkpoint saved",
    ):
        assert phrase in log, phrase
    assert "Removed shared tensor" not in log
    assert "pin_memory" not in log


def test_training_curves_are_drawn_beside_the_summary(run):
    pytest.importorskip("matplotlib")
    png = run["out"] / "training_curves.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    records = [json.loads(x) for x in (run["out"] / "train_log.jsonl").read_text().splitlines()]
    assert all("minutes" in r for r in records if "train/loss" in r)


def test_evaluate_takes_a_checkpoint_of_a_run_with_no_other_flag(run, tmp_path):
    checkpoint = complete_checkpoints(run["out"])[-1]
    result = run_tool("evaluate", checkpoint, "--split", "train", "--max_samples", "8",
                      "--num_beams", "1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BLEU = " in result.stdout and "TER  = " in result.stdout
    assert "nrefs:1" in result.stdout


@pytest.fixture(scope="module")
def averaged(run):
    """`vanilla-transformer-average RUN`, nothing else."""
    result = run_tool("average", run["out"], "--last", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return run["out"] / "averaged"


def test_average_takes_a_run_folder_with_no_other_flag(averaged):
    AutoModelForSeq2SeqLM.from_pretrained(averaged)
    record = json.loads((averaged / "averaging.json").read_text())
    assert [Path(c).name for c in record["checkpoints"]] == ["checkpoint_3", "checkpoint_6"]
    info = json.loads((averaged / "card_info.json").read_text())
    assert info["averaging"].startswith("mean of 2 checkpoints") and "test_bleu" not in info


def test_push_publishes_an_averaged_model_with_a_fresh_card_and_only_model_files(
    averaged, tmp_path
):
    (averaged / "training_args.bin").write_bytes(b"a pickle")
    result = run_tool("push", averaged, "me/vt-averaged", "--dry_run", tmp_path / "dry")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "README.md: card written for me/vt-averaged" in result.stdout
    repo = tmp_path / "dry" / "repo"
    uploaded = {p.name for p in repo.iterdir()}
    assert "training_args.bin" not in uploaded and "card_info.json" not in uploaded
    assert {"README.md", "model.safetensors", "modeling_vanilla_transformer.py"} <= uploaded
    card = ModelCard.load(repo / "README.md")
    assert 'from_pretrained("me/vt-averaged", trust_remote_code=True)' in card.text
    assert "Not evaluated" in card.text and "mean of 2 checkpoints" in card.text


def test_a_tokenizer_made_for_another_vocabulary_size_is_an_error(run, tmp_path):
    result = run_tool(
        "train", "--dataset", run["data"], "--tokenizer", run["root"] / "tok",
        "--output_dir", tmp_path / "other", *TINY, "--tokenizer_vocab_size", "4000",
        "--max_steps", "1",
    )  # fmt: skip
    assert result.returncode != 0
    assert "was made for 280 tokens but tokenizer_vocab_size is 4000" in result.stderr
    assert not (tmp_path / "other" / "checkpoints").exists()


def test_train_tokenizer_never_overwrites_a_tokenizer_without_overwrite(run):
    tokenizer_file = run["root"] / "tok" / "tokenizer.json"
    before = tokenizer_file.read_bytes()
    result = run_tool(
        "train_tokenizer", "--dataset", run["data"], "--output_dir", run["root"] / "tok",
        "--vocab_size", "300", "--min_frequency", "1",
    )  # fmt: skip
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert tokenizer_file.read_bytes() == before


def test_progress_bar_total_follows_the_time_budget_not_max_steps(run, tmp_path):
    result = run_tool(
        "train", "--dataset", run["data"], "--tokenizer", run["root"] / "tok",
        "--output_dir", tmp_path / "timed", *TINY, "--max_steps", "100000",
        "--max_train_minutes", "0.1", "--checkpoint_steps", "0", "--average_last", "1",
        "--no_save_hub", "--final_eval_splits", "",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "timed" / "summary.json").read_text())
    assert summary["stop_reason"] == "max_train_minutes"
    bars = [part for part in result.stderr.replace("\r", "\n").splitlines() if "train:" in part]
    assert bars and "/100000" not in bars[-1]  # the ETA is the time budget's, not 100k updates'
