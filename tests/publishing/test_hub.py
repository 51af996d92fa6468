"""Specification of `vanilla_transformer.publishing.hub` (model card, Hub folder, upload) and
`scripts/push_to_hub.py`. Nothing here touches the network."""

import json
import logging
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

import vanilla_transformer
from tests.conftest import run_script
from tests.publishing.conftest import EXPECTED_FILES, FAKE_TOKEN, FakeApi, card_info
from vanilla_transformer.errors import UserError
from vanilla_transformer.publishing.hub import (
    EVALUATION_FIELDS,
    REMOTE_CODE_FILES,
    REQUIRED_CARD_FIELDS,
    prepare_model_folder,
    push_folder,
    render_model_card,
    save_hub_folder,
    upload_file_list,
)


def test_card_has_translation_metadata_model_index_and_signatures(model):
    info = card_info(model)
    card = render_model_card(info)
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "translation"
    assert data["language"] == ["en", "es"] and data["license"] == "apache-2.0"
    # A local corpus is no Hub dataset: no `datasets:` entry linking to a page that does not exist.
    assert "datasets" not in data and data["library_name"] == "transformers"
    with_hub = render_model_card(card_info(model, hub_datasets=["wmt14"])).data.to_dict()
    assert with_hub["datasets"] == ["wmt14"]
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
    # Nothing given: the evaluation values are optional as a group ("Not evaluated").
    assert all(
        name in str(error.value) for name in REQUIRED_CARD_FIELDS if name not in EVALUATION_FIELDS
    )


def test_a_card_without_test_scores_says_not_evaluated_and_has_no_model_index(model):
    info = {k: v for k, v in card_info(model).items() if k not in EVALUATION_FIELDS}
    card = render_model_card(info)
    assert "model-index" not in card.data.to_dict()
    assert "Not evaluated" in card.text and "nrefs:" not in card.text
    partial = {**info, "test_bleu": 12.0}  # some evaluation values but not all: an error
    with pytest.raises(ValueError, match="test_chrf"):
        render_model_card(partial)


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
    # card_info.json keeps the card values for the push tool; it is not uploaded.
    assert {p.name for p in folder.iterdir()} == EXPECTED_FILES | {"card_info.json"}
    assert set(upload_file_list(folder)) == EXPECTED_FILES
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
    assert upload["commit_message"] == "first"
    # The upload is a staged copy holding exactly the model files, byte for byte.
    assert api.uploaded.keys() == EXPECTED_FILES
    assert all(data == (folder / name).read_bytes() for name, data in api.uploaded.items())
    assert plan["commit_url"].endswith("/commit/1")
    assert FAKE_TOKEN not in repr(api.calls) + caplog.text + json.dumps(plan)
    for path in folder.rglob("*"):
        assert FAKE_TOKEN.encode() not in path.read_bytes()


def test_push_refuses_a_folder_that_contains_a_token(tmp_path, model, tokenizer):
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hub_token": FAKE_TOKEN}))
    with pytest.raises(UserError, match="contains a Hugging Face access token") as error:
        push_folder(folder, "someone/vt", api=FakeApi())
    assert FAKE_TOKEN not in str(error.value)


def test_push_without_a_token_explains_how_to_log_in(tmp_path, model, tokenizer):
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    with pytest.raises(UserError, match="HF_TOKEN"):
        push_folder(folder, "someone/vt")


def test_push_refuses_an_incomplete_folder(tmp_path, model, tokenizer):
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    (folder / "pipeline_vanilla_transformer.py").unlink()
    with pytest.raises(UserError, match="missing pipeline_vanilla_transformer.py"):
        push_folder(folder, "someone/vt", api=FakeApi())


def test_push_script_dry_run_prints_the_files_and_never_the_token(tmp_path, model, tokenizer):
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    proc = run_script(
        "push_to_hub.py",
        str(folder),
        "someone/vt",
        "--dry_run",
        str(tmp_path / "dry"),
        env={"HF_TOKEN": FAKE_TOKEN},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dry run: 9 files" in proc.stdout and "README.md" in proc.stdout
    card = (tmp_path / "dry" / "repo" / "README.md").read_text()
    assert 'from_pretrained("someone/vt", trust_remote_code=True)' in card
    assert FAKE_TOKEN not in proc.stdout + proc.stderr
    for path in (tmp_path / "dry").rglob("*"):
        assert path.is_dir() or FAKE_TOKEN.encode() not in path.read_bytes()


def test_only_model_file_kinds_are_uploaded_never_pickles(tmp_path, model, tokenizer):
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    for name in ("training_args.bin", "optimizer.bin", "rng_state.pth", "notes.txt", "run.pkl"):
        (folder / name).write_bytes(b"not for the Hub")
    plan = push_folder(folder, "someone/vt", api=FakeApi())
    assert set(plan["files"]) == EXPECTED_FILES
    assert plan["calls"][1]["kwargs"]["allow_patterns"]


def test_a_token_in_any_uploaded_file_is_refused_naming_the_file(tmp_path, model, tokenizer):
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    with open(folder / "model.safetensors", "ab") as f:  # a binary file, not only text ones
        f.write(b"\x00" + FAKE_TOKEN.encode())
    with pytest.raises(UserError, match="model.safetensors contains a Hugging Face access token"):
        push_folder(folder, "someone/vt", api=FakeApi())


def test_publishing_refreshes_outdated_remote_code_and_says_so(tmp_path, model, tokenizer):
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card_info(model))
    (folder / "modeling_vanilla_transformer.py").write_text("# an earlier release's modeling\n")
    (folder / "pipeline_vanilla_transformer.py").unlink()
    changes = prepare_model_folder(folder, "someone/vt")
    assert "replaced modeling_vanilla_transformer.py with the current package's copy" in changes
    assert "added pipeline_vanilla_transformer.py (current package copy)" in changes
    package = Path(vanilla_transformer.__file__).parent
    for name in REMOTE_CODE_FILES:
        assert (folder / name).read_bytes() == (package / name).read_bytes()
    assert not [c for c in prepare_model_folder(folder, "someone/vt") if "replaced" in c]


def test_any_model_folder_gets_a_card_with_base_model_and_the_target_repo_id(tmp_path, model):
    folder = tmp_path / "finetuned"
    model.save_pretrained(folder)
    info = {k: v for k, v in card_info(model).items() if k not in ("config", "num_parameters")}
    (folder / "card_info.json").write_text(json.dumps({**info, "base_model": "someone/base"}))
    prepare_model_folder(folder, "me/finetuned")
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "someone/base"
    assert 'from_pretrained("me/finetuned", trust_remote_code=True)' in card.text


def test_a_folder_without_card_values_is_an_error_naming_them_and_the_flag(tmp_path, model):
    folder = tmp_path / "bare"
    model.save_pretrained(folder)
    with pytest.raises(UserError, match=r"src_lang.*--card_info"):
        prepare_model_folder(folder, "me/bare")
