"""Reliability: bad input gets a clear error, no checkpoint is ever half-loaded, saved folders hold
no pickles or risky remote code, and training survives being killed.
"""

import ast
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSeq2SeqLM, BertConfig, BertModel

from tests.conftest import tiny_config, word_tokenizer
from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.publishing.safety import (
    PICKLE_SUFFIXES,
    CheckpointError,
    check_safetensors_file,
    load_pretrained_strict,
)
from vanilla_transformer.recipe import data, tokenization

REMOTE_CODE = (
    "configuration_vanilla_transformer.py",
    "modeling_vanilla_transformer.py",
    "pipeline_vanilla_transformer.py",
)


def tiny_model(**overrides) -> VanillaTransformerForConditionalGeneration:
    return VanillaTransformerForConditionalGeneration(tiny_config(**overrides)).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """One saved tiny model (single safetensors file + tokenizer); tests copy it before harming it."""
    folder = tmp_path_factory.mktemp("saved") / "model"
    torch.manual_seed(0)
    tiny_model().save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def fresh_copy(saved, tmp_path):
    def make(name="model") -> Path:
        return Path(shutil.copytree(saved, tmp_path / name))

    return make


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------
# Configuration: every field validated at construction and on load
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, field",
    [
        # positive integers: wrong type, bool, zero, negative
        ({"vocab_size": "45"}, "vocab_size"),
        ({"vocab_size": True}, "vocab_size"),
        ({"d_model": None}, "d_model"),
        ({"d_model": 32.0}, "d_model"),
        ({"encoder_layers": -1}, "encoder_layers"),
        ({"decoder_layers": 0}, "decoder_layers"),
        ({"encoder_attention_heads": 0}, "encoder_attention_heads"),
        ({"decoder_attention_heads": -4}, "decoder_attention_heads"),
        ({"decoder_ffn_dim": 0}, "decoder_ffn_dim"),
        ({"max_position_embeddings": 0}, "max_position_embeddings"),
        # combinations
        ({"d_model": 30}, "encoder_attention_heads"),
        ({"d_model": 32, "decoder_attention_heads": 3}, "decoder_attention_heads"),
        ({"vocab_size": 2}, "eos_token_id|bos_token_id|decoder_start_token_id"),
        # probabilities
        ({"dropout": float("nan")}, "dropout"),
        ({"dropout": "0.1"}, "dropout"),
        ({"attention_dropout": True}, "attention_dropout"),
        ({"activation_dropout": -0.01}, "activation_dropout"),
        # choices
        ({"attention_scaling": "SQRT_DK"}, "attention_scaling"),
        ({"attention_scaling": None}, "attention_scaling"),
        ({"position_encoding": "rope"}, "position_encoding"),
        ({"activation_function": None}, "activation_function"),
        # bools
        ({"scale_embedding": 1}, "scale_embedding"),
        ({"tie_word_embeddings": None}, "tie_word_embeddings"),
        ({"norm_first": "false"}, "norm_first"),
        # init_std
        ({"init_std": -0.02}, "init_std"),
        ({"init_std": "0.02"}, "init_std"),
        ({"init_std": float("nan")}, "init_std"),
        # token ids
        ({"pad_token_id": -1}, "pad_token_id"),
        ({"bos_token_id": 45}, "bos_token_id"),
        ({"decoder_start_token_id": -1}, "decoder_start_token_id"),
        ({"eos_token_id": [2, 45]}, "eos_token_id"),
        ({"pad_token_id": "0"}, "pad_token_id"),
        ({"pad_token_id": 1.5}, "pad_token_id"),
        ({"bos_token_id": True}, "bos_token_id"),
        ({"eos_token_id": "2"}, "eos_token_id"),
        ({"init_std": True}, "init_std"),
        ({"init_std": float("inf")}, "init_std"),
        ({"use_cache": "yes"}, "use_cache"),
    ],
)
def test_every_config_field_is_validated_at_construction_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        {"dropout": 0, "attention_dropout": 0.0, "activation_dropout": 0.999},
        {"d_model": 8, "encoder_attention_heads": 8, "decoder_attention_heads": 1},
        {"eos_token_id": [2, 3], "bos_token_id": None, "init_std": 0.02},
        {"vocab_size": 4, "max_position_embeddings": 1},
    ],
)
def test_boundary_values_of_the_config_are_accepted(overrides):
    config = tiny_config(**overrides)
    assert all(getattr(config, k) == v for k, v in overrides.items())


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"attention_scaling": "bogus"}, "attention_scaling"),
        ({"position_encoding": "alibi"}, "position_encoding"),
        ({"d_model": 30}, "attention_heads"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
@pytest.mark.parametrize("loader", ["AutoConfig", "AutoModelForSeq2SeqLM", "strict"])
def test_an_invalid_config_json_fails_on_load_naming_the_field(fresh_copy, changes, field, loader):
    folder = fresh_copy()
    edit_config(folder, **changes)
    load = {
        "AutoConfig": AutoConfig.from_pretrained,
        "AutoModelForSeq2SeqLM": AutoModelForSeq2SeqLM.from_pretrained,
        "strict": load_pretrained_strict,
    }[loader]
    with pytest.raises(ValueError, match=field):
        load(folder)


def test_a_config_json_that_is_not_json_names_the_file(fresh_copy):
    folder = fresh_copy()
    (folder / "config.json").write_text('{"model_type": "vanilla_transformer", ')
    with pytest.raises(OSError, match="config.json"):
        AutoModelForSeq2SeqLM.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON"):
        load_pretrained_strict(folder)


@pytest.mark.parametrize("model_type", ["bert", "no_such_model_type"])
def test_a_foreign_model_type_in_config_json_is_refused(fresh_copy, model_type):
    """transformers: without trust_remote_code, AutoModelForSeq2SeqLM refuses but asks for
    `trust_remote_code=True` (it does not mention model_type; with it, our remote code loads and
    keeps the foreign model_type on the config); AutoConfig returns a BertConfig for "bert" without
    a word. The strict loader names the file, the field and both values."""
    folder = fresh_copy()
    edit_config(folder, model_type=model_type)
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForSeq2SeqLM.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=rf"config\.json: model_type is '{model_type}'"):
        load_pretrained_strict(folder)


def test_a_bert_checkpoint_is_not_silently_loaded_into_our_class(tmp_path):
    """The model class alone loads a BERT folder as a randomly initialised translation model (a
    warning and a load report only); the strict loader refuses it."""
    bert = tmp_path / "bert"
    BertModel(
        BertConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            vocab_size=40,
        )
    ).save_pretrained(bert)
    _, info = VanillaTransformerForConditionalGeneration.from_pretrained(
        bert, output_loading_info=True
    )
    assert info["missing_keys"] and info["unexpected_keys"]  # transformers: warn, not raise
    with pytest.raises(CheckpointError, match="model_type is 'bert'"):
        load_pretrained_strict(bert)


# ------------------------------------------------------------------------------------------------
# Checkpoint loading: complete and exact, or an error naming the file or key
# ------------------------------------------------------------------------------------------------


def test_the_strict_loader_returns_the_saved_model_exactly(saved):
    torch.manual_seed(0)
    reference = tiny_model()  # built exactly as the `saved` fixture built its model
    loaded = load_pretrained_strict(saved)
    assert same_weights(loaded, reference)
    assert loaded.lm_head.weight is loaded.model.shared.weight


def test_the_strict_loader_reads_a_sharded_checkpoint(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 2
    assert same_weights(load_pretrained_strict(tmp_path), model)


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def corrupt_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:20] = b"not json !!!"  # the JSON header starts after the 8-byte length
    path.write_bytes(bytes(data))


def huge_header_length(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")
    path.write_bytes(bytes(data))


def one_byte_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(
    "harm", [truncate, corrupt_header, huge_header_length, one_byte_short, empty]
)
def test_a_damaged_safetensors_file_fails_to_load_and_the_strict_loader_names_it(fresh_copy, harm):
    folder = fresh_copy()
    harm(folder / "model.safetensors")
    with pytest.raises(SafetensorError):  # transformers: raises, without the file's name
        AutoModelForSeq2SeqLM.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors"):
        load_pretrained_strict(folder)


@pytest.fixture
def sharded(tmp_path) -> Path:
    folder = tmp_path / "sharded"
    tiny_model().save_pretrained(folder, max_shard_size="20KB")
    return folder


def test_a_missing_shard_fails_to_load_naming_the_shard(sharded):
    shard = sorted(sharded.glob("model-*-of-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        AutoModelForSeq2SeqLM.from_pretrained(sharded)
    with pytest.raises(CheckpointError, match=f"missing from .*{shard.name}"):
        load_pretrained_strict(sharded)


def test_a_truncated_shard_fails_to_load_naming_the_shard(sharded):
    shard = sorted(sharded.glob("model-*-of-*.safetensors"))[-1]
    truncate(shard, 0.9)
    with pytest.raises(SafetensorError):
        AutoModelForSeq2SeqLM.from_pretrained(sharded)
    with pytest.raises(CheckpointError, match=shard.name):
        load_pretrained_strict(sharded)


def test_a_config_json_whose_d_model_disagrees_with_the_weights_names_the_keys(fresh_copy):
    folder = fresh_copy()
    edit_config(folder, d_model=64)
    # transformers raises, but its message only says "look at the above report" (the log).
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        AutoModelForSeq2SeqLM.from_pretrained(folder)
    with pytest.raises(
        CheckpointError, match=r"of another shape: .*\(checkpoint \(\d+, 32\), model \(\d+, 64\)\)"
    ):
        load_pretrained_strict(folder)


def test_extra_layers_in_config_json_are_random_with_from_pretrained_but_refused_strictly(
    fresh_copy,
):
    """The silent wrong result: transformers initialises the missing layer randomly and returns
    the model after a logged report. Strict loading refuses, naming the missing keys."""
    folder = fresh_copy()
    edit_config(folder, encoder_layers=3)
    model, info = AutoModelForSeq2SeqLM.from_pretrained(folder, output_loading_info=True)
    assert len(model.model.encoder.layers) == 3
    assert any(k.startswith("model.encoder.layers.2.") for k in info["missing_keys"])
    with pytest.raises(
        CheckpointError, match=r"missing from the checkpoint: model\.encoder\.layers\.2"
    ):
        load_pretrained_strict(folder)


def test_fewer_layers_in_config_json_drop_weights_with_from_pretrained_but_are_refused(fresh_copy):
    folder = fresh_copy()
    edit_config(folder, decoder_layers=1)
    _, info = AutoModelForSeq2SeqLM.from_pretrained(folder, output_loading_info=True)
    assert any(k.startswith("model.decoder.layers.1.") for k in info["unexpected_keys"])
    with pytest.raises(CheckpointError, match=r"not in the model: model\.decoder\.layers\.1"):
        load_pretrained_strict(folder)


def test_untying_embeddings_in_config_json_is_refused(fresh_copy):
    """A tied checkpoint stores one matrix: loading it untied would leave lm_head random."""
    folder = fresh_copy()
    edit_config(folder, tie_word_embeddings=False)
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        load_pretrained_strict(folder)


def test_a_folder_without_weights_names_what_it_looked_for(fresh_copy):
    folder = fresh_copy()
    (folder / "model.safetensors").unlink()
    with pytest.raises(OSError, match="model.safetensors"):
        AutoModelForSeq2SeqLM.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=r"no model\.safetensors"):
        load_pretrained_strict(folder)


def test_the_strict_loader_refuses_pickled_weights(fresh_copy):
    """transformers still loads a folder holding only pytorch_model.bin (torch.load, a pickle);
    the strict loader never unpickles."""
    folder = fresh_copy()
    weights = load_file(folder / "model.safetensors")
    torch.save(weights, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert AutoModelForSeq2SeqLM.from_pretrained(folder) is not None
    with pytest.raises(CheckpointError, match=r"only pickled weights \(pytorch_model\.bin\)"):
        load_pretrained_strict(folder)


def test_the_strict_loader_names_a_path_that_is_not_a_model_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_pretrained_strict(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match=r"config\.json not found"):
        load_pretrained_strict(tmp_path)


# ------------------------------------------------------------------------------------------------
# Security: weights only as safetensors; the remote code saved beside them is inert
# ------------------------------------------------------------------------------------------------


def test_a_saved_folder_holds_no_pickles(tmp_path, tokenizer):
    tiny_model().save_pretrained(tmp_path / "single")
    tiny_model().save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    tokenizer.save_pretrained(tmp_path / "single")
    for path in tmp_path.rglob("*"):
        assert path.suffix not in PICKLE_SUFFIXES, path
        if path.suffix == ".safetensors":
            # An 8-byte little-endian header length, then a JSON object.
            assert path.read_bytes()[8:9] == b"{", path
        elif path.is_file():
            path.read_text(encoding="utf-8")  # everything else is text (JSON, Python)


STDLIB_ALLOWED = {"__future__", "math", "collections", "typing", "dataclasses", "functools"}
THIRD_PARTY_ALLOWED = {"torch", "transformers"}
FORBIDDEN_NAMES = {
    "environ",
    "getenv",
    "putenv",
    "eval",
    "exec",
    "compile",
    "__import__",
    "open",
    "system",
    "popen",
    "urlopen",
    "import_module",
    "load_dynamic",
}


def remote_code_findings(source: str) -> list[str]:
    """Imports outside torch/transformers/a few pure stdlib modules/siblings, and any use of
    environment variables, process, network, file or dynamic-code functions."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # `from .configuration_x import X`: a sibling file, checked itself
                sibling = f"{node.module}.py"
                if sibling not in REMOTE_CODE:
                    found.append(f"relative import of {node.module}")
                continue
            modules = [node.module]
        else:
            name = getattr(node, "id", None) or getattr(node, "attr", None)
            if name in FORBIDDEN_NAMES:
                found.append(f"line {node.lineno}: {name}")
            continue
        for module in modules:
            top = module.split(".")[0]
            if top not in STDLIB_ALLOWED | THIRD_PARTY_ALLOWED:
                found.append(f"line {node.lineno}: import {module}")
    return found


def test_the_remote_code_saved_beside_a_model_imports_nothing_risky(saved):
    """The files `trust_remote_code=True` executes import only torch, transformers, pure stdlib
    modules and each other, and touch no environment variable, process, socket, URL or file."""
    for name in REMOTE_CODE:
        path = saved / name
        assert path.is_file(), f"{name} not saved beside the weights"
        findings = remote_code_findings(path.read_text(encoding="utf-8"))
        assert not findings, f"{name}: {findings}"
    assert not [p.name for p in saved.glob("*.py") if p.name not in REMOTE_CODE]


def test_the_remote_code_check_catches_what_it_looks_for():
    bad = (
        "import os\nimport subprocess\nfrom urllib.request import urlopen\nimport requests\n"
        "import socket\nx = os.environ['HOME']\ny = os.getenv('X')\neval('1')\nexec('2')\n"
        "from .evil import z\n"
    )
    findings = " ".join(remote_code_findings(bad))
    for word in (
        "os",
        "subprocess",
        "urllib",
        "requests",
        "socket",
        "environ",
        "getenv",
        "eval",
        "exec",
        "evil",
    ):
        assert word in findings, word
    assert sys.stdlib_module_names >= STDLIB_ALLOWED


# ------------------------------------------------------------------------------------------------
# Model inputs beyond test_model_inputs.py
# ------------------------------------------------------------------------------------------------


def test_inputs_longer_than_a_learned_position_table_raise_naming_the_limit():
    model = tiny_model(position_encoding="learned", max_position_embeddings=8)
    with pytest.raises(ValueError, match="max_position_embeddings=8"):
        model(input_ids=torch.randint(4, 40, (1, 9)), decoder_input_ids=torch.ones(1, 2).long())


def test_float_token_ids_are_refused_before_the_embedding():
    model = tiny_model()
    with pytest.raises((ValueError, RuntimeError), match="(?i)long|int|dtype|indices"):
        model(input_ids=torch.rand(1, 4), decoder_input_ids=torch.ones(1, 2).long())


# ------------------------------------------------------------------------------------------------
# Data and tokenizer: bad text is either handled as documented or named in a clear error
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe():
    texts = ["the big house is red", "la casa grande es roja", "Ελληνικά 中文 🙂"] * 10
    return tokenization.train_tokenizer(texts, vocab_size=300, min_frequency=1)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\t\r\n",
        "a\x00b\x07c\x1b[31m\x7f",
        "Ελληνικά 中文 العربية עברית 🙂 e\u0301",
        "\ufeffBOM\u200bzero\u00a0width",
        "x" * 20_000,
    ],
    ids=["empty", "spaces", "control-ws", "control", "mixed-scripts", "bom-zw", "very-long"],
)
def test_any_unicode_text_encodes_without_unk_and_decodes_to_its_nfc_form(bpe, text):
    import unicodedata

    ids = bpe(text)["input_ids"]
    assert ids[-1] == tokenization.EOS_ID and tokenization.UNK_ID not in ids
    assert bpe.decode(ids, skip_special_tokens=True) == unicodedata.normalize("NFC", text)


def test_non_string_tokenizer_input_is_refused(bpe):
    with pytest.raises((TypeError, ValueError)):
        bpe(["fine", None])
    with pytest.raises(TypeError, match="texts must yield strings"):
        tokenization.train_tokenizer(["a", 3], vocab_size=300)


def write_jsonl(path: Path, rows) -> Path:
    lines = [
        r if isinstance(r, str) else json.dumps({"translation": {"en": r[0], "es": r[1]}})
        for r in rows
    ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_empty_whitespace_and_null_sides_are_dropped_and_the_rest_kept(tmp_path):
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [("the house", "la casa"), ("", "x"), ("  \t", "y"), ("z", "\u3000"), (None, "w"), ""],
    )
    ds = data.load_translation_dataset(path, "en", "es", cache_dir=str(tmp_path / "cache"))
    assert [r["en"] for r in ds["train"]["translation"]] == ["the house"]


def test_control_characters_and_very_long_lines_are_kept_then_dropped_by_length(tmp_path, bpe):
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [("a\x00b\x1b[0m", "c\x07"), ("house " * 3000, "casa"), ("中文 🙂", "é")],
    )
    ds = data.load_translation_dataset(path, "en", "es", cache_dir=str(tmp_path / "cache"))
    assert len(ds["train"]) == 3
    tokenized, counts = data.tokenize_translation_dataset(ds, bpe, "en", "es", 64, 64)
    assert counts["train"]["before"] == 3 and counts["train"]["kept"] == 2
    assert counts["train"]["too_long"] == counts["train"]["source_too_long"] == 1


def test_invalid_utf8_names_the_file_and_byte_offset(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"translation": {"en": "caf\xe9", "es": "x"}}\n')
    with pytest.raises(ValueError, match=r"train\.jsonl is not valid UTF-8: byte offset 27"):
        data.load_translation_dataset(path, "en", "es", cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"train\.jsonl:1: invalid JSON"),
        (json.dumps({"en": "a", "es": "b"}), r"train\.jsonl:1: expected a 'translation' object"),
        (json.dumps({"translation": {"en": "a", "de": "b"}}), r"train\.jsonl:1: language key"),
    ],
    ids=["not-json", "no-translation", "wrong-language"],
)
def test_malformed_jsonl_rows_name_the_file_and_line(tmp_path, line, message):
    path = write_jsonl(tmp_path / "train.jsonl", [line])
    with pytest.raises(ValueError, match=message):
        data.load_translation_dataset(path, "en", "es", cache_dir=str(tmp_path / "cache"))


def test_a_lone_surrogate_escape_names_the_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"translation": {"en": "a\\ud800", "es": "b"}}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.jsonl:1"):
        data.load_translation_dataset(path, "en", "es", cache_dir=str(tmp_path / "cache"))


def test_an_empty_corpus_file_names_the_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.jsonl"):
        data.load_translation_dataset(path, "en", "es", cache_dir=str(tmp_path / "cache"))


def test_a_tsv_with_control_characters_keeps_them_and_a_ragged_row_names_the_line(tmp_path):
    good = tmp_path / "ok.tsv"
    good.write_text("a\x00b\tc\x1b\n", encoding="utf-8")
    ds = data.load_translation_dataset(good, "en", "es", cache_dir=str(tmp_path / "cache"))
    assert ds["train"][0]["translation"] == {"en": "a\x00b", "es": "c\x1b"}
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("a\tb\nonly-one-column\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"ragged\.tsv:2: expected 2 tab-separated columns"):
        data.load_translation_dataset(ragged, "en", "es", cache_dir=str(tmp_path / "cache2"))


# ------------------------------------------------------------------------------------------------
# Checkpoint folders of a run: half-written ones are never picked up
# ------------------------------------------------------------------------------------------------


def test_list_checkpoints_ignores_temporary_folders_of_an_interrupted_save(tmp_path):
    from vanilla_transformer.recipe.checkpoints import list_checkpoints

    model = tiny_model()
    for name in ("checkpoint-1", "checkpoint-2", "checkpoint-3.tmp"):
        model.save_pretrained(tmp_path / name)
    truncate(tmp_path / "checkpoint-3.tmp" / "model.safetensors")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-2"]


# ------------------------------------------------------------------------------------------------
# Training faults: SIGKILL during checkpoint saves, disk full, unwritable output directory
# ------------------------------------------------------------------------------------------------
#
# Drives scripts/train.py as a subprocess on an in-test JSONL corpus and the conftest word
# tokenizer. Checkpoints are `output_dir/checkpoints/checkpoint_<step>`, written as
# `checkpoint_<step>.tmp` and renamed once `trainer_state.json` (written last) is in.

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "scripts" / "train.py"
CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)$")
STATE_FILE = "trainer_state.json"


@pytest.fixture
def training_inputs(tmp_path) -> dict[str, Path]:
    """A tiny JSONL corpus and the conftest word tokenizer saved as a folder."""
    from tests.conftest import WORDS

    # conftest's WORDS holds "a" twice, so word_tokenizer() has 44 entries but ids up to 44 (the
    # last word): len(tokenizer) is then too small a vocabulary. Leave that word out.
    words = WORDS[:-1]
    english, spanish = words[: len(words) // 2], words[len(words) // 2 :]
    rows = []
    for i in range(96):
        n = 2 + i % 5
        rows.append(
            (
                " ".join(english[(i + j) % len(english)] for j in range(n)),
                " ".join(spanish[(i + j) % len(spanish)] for j in range(n)),
            )
        )
    corpus = write_jsonl(tmp_path / "train.jsonl", rows)
    tokenizer_dir = tmp_path / "tokenizer"
    word_tokenizer().save_pretrained(tokenizer_dir)
    return {"train_file": corpus, "tokenizer": tokenizer_dir}


def train_command(inputs, output_dir: Path, steps: int, every: int, resume: bool = False):
    command = [
        sys.executable,
        str(TRAIN_SCRIPT),
        "--dataset",
        str(inputs["train_file"]),
        "--src_lang",
        "en",
        "--tgt_lang",
        "es",
        "--tokenizer",
        str(inputs["tokenizer"]),
        "--d_model",
        "16",
        "--ffn_dim",
        "32",
        "--attention_heads",
        "2",
        "--encoder_layers",
        "1",
        "--decoder_layers",
        "1",
        "--max_position_embeddings",
        "32",
        "--batch_tokens",
        "200",
        "--max_steps",
        str(steps),
        "--checkpoint_steps",
        str(every),
        "--keep_last",
        "100",
        "--eval_steps",
        "0",
        "--average_last",
        "1",
        "--no_save_hub",
        "--final_eval_splits",
        "",
        "--threads",
        "1",
        "--log_with",
        "none",
        "--seed",
        "0",
        "--output_dir",
        str(output_dir),
    ]
    if resume:
        command += ["--resume_from_checkpoint", "latest"]
    return command


def checkpoint_folders(output_dir: Path) -> list[Path]:
    """Folders with a final checkpoint name (temporary `.tmp` folders excluded), oldest first."""
    parent = output_dir / "checkpoints"
    if not parent.is_dir():
        return []
    found = [(int(m.group(1)), c) for c in parent.iterdir() if (m := CHECKPOINT_NAME.match(c.name))]
    return [path for _, path in sorted(found)]


def assert_checkpoint_loads(folder: Path) -> None:
    """Its trainer state is in (written last) and every weights file is whole."""
    state = json.loads((folder / STATE_FILE).read_text())
    assert state["step"] == int(CHECKPOINT_NAME.match(folder.name).group(1))
    weights = sorted(folder.rglob("*.safetensors"))
    assert weights, f"{folder} holds no safetensors weights: {sorted(os.listdir(folder))}"
    for path in weights:
        check_safetensors_file(path)
        load_file(path)


@pytest.mark.slow
def test_training_killed_during_checkpoint_saves_always_resumes_from_a_whole_checkpoint(
    training_inputs, tmp_path
):
    """SIGKILL three times (twice as a save's temporary folder appears, once at a random
    moment): after each kill every checkpoint folder with a final name loads, and resuming from
    the latest one runs to the end."""
    out = tmp_path / "out"
    steps, every = 12, 2
    rng = random.Random(0)
    resume = False
    saves_hit = 0
    for attempt in ("on-save", "random", "on-save"):
        process = subprocess.Popen(
            train_command(training_inputs, out, steps, every, resume),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + (rng.uniform(4, 12) if attempt == "random" else 120)
        while process.poll() is None and time.monotonic() < deadline:
            ckpts = out / "checkpoints"
            if attempt == "on-save" and ckpts.is_dir():
                if any(name.endswith(".tmp") for name in os.listdir(ckpts)):
                    saves_hit += 1
                    break  # a save is under way
            time.sleep(0.002)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        for checkpoint in checkpoint_folders(out):
            assert_checkpoint_loads(checkpoint)
        resume = bool(checkpoint_folders(out))
    assert saves_hit >= 1, "no kill landed during a save"
    final = subprocess.run(
        train_command(training_inputs, out, steps, every, resume),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert final.returncode == 0, final.stderr[-3000:]
    checkpoints = checkpoint_folders(out)
    assert checkpoints[-1].name == f"checkpoint_{steps}"
    for checkpoint in checkpoints:
        assert_checkpoint_loads(checkpoint)


DISK_FULL_SHIM = """
import errno, runpy, sys
import safetensors.torch, torch
calls, limit = {"n": 0}, int(sys.argv[1])
def full(original):
    def save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args, **kwargs)
    return save
safetensors.torch.save_file = full(safetensors.torch.save_file)
torch.save = full(torch.save)
script = sys.argv[2]
sys.argv = sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.slow
def test_a_full_disk_during_a_save_is_a_clear_error_and_the_previous_checkpoint_survives(
    training_inputs, tmp_path
):
    """safetensors/torch saves start failing with ENOSPC after the first checkpoint's files: the
    run stops with an error that says so, and the first checkpoint still loads."""
    out = tmp_path / "out"
    command = train_command(training_inputs, out, steps=6, every=2)
    # Four writes make one checkpoint: model (safetensors), optimizer, scheduler, RNG states.
    shim = [sys.executable, "-c", DISK_FULL_SHIM, "4", *command[1:]]
    result = subprocess.run(shim, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode != 0
    assert "No space left on device" in result.stderr, result.stderr[-3000:]
    checkpoints = checkpoint_folders(out)
    assert [c.name for c in checkpoints] == ["checkpoint_2"], result.stderr[-3000:]
    for checkpoint in checkpoints:
        assert_checkpoint_loads(checkpoint)


@pytest.mark.slow
def test_an_unwritable_output_directory_fails_fast_naming_it(training_inputs, tmp_path):
    """Root ignores permission bits, so the output directory lies under a regular file."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = blocker / "out"
    result = subprocess.run(
        train_command(training_inputs, out, steps=4, every=2),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode != 0
    assert str(blocker) in result.stderr, result.stderr[-3000:]
