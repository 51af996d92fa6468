"""The configuration (`configuration_vanilla_transformer.py`): every field validated at
construction and on load, each bad value named in a `ValueError`."""

import pytest
from transformers import AutoConfig, AutoModelForSeq2SeqLM, BertConfig, BertModel

from tests.conftest import edit_config, tiny_config
from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.loading import CheckpointError, load_pretrained_strict

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
        ({"max_position_embeddings": 10**12}, r"max_position_embeddings must be <= 1048576"),
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
        ({"pad_token_id": None}, r"pad_token_id .* got None"),
        ({"decoder_start_token_id": None}, r"decoder_start_token_id .* got None"),
        ({"eos_token_id": []}, r"eos_token_id .* got \[\]"),
        # a head count that does not divide d_model, out-of-range values
        ({"d_model": 30}, "d_model"),  # 30 not divisible by 4 heads
        ({"decoder_attention_heads": 5}, "d_model"),
        ({"attention_scaling": "cosine"}, "attention_scaling"),
        ({"position_encoding": "rotary"}, "position_encoding"),
        ({"activation_function": "relu6"}, "activation_function"),
        ({"encoder_layers": 0}, "encoder_layers"),
        ({"vocab_size": -5}, "vocab_size"),
        ({"encoder_ffn_dim": 2.5}, "encoder_ffn_dim"),
        ({"attention_dropout": -0.1}, "attention_dropout"),
        ({"activation_dropout": 1.5}, "activation_dropout"),
        ({"norm_first": "yes"}, "norm_first"),
        ({"init_std": 0.0}, "init_std"),
        ({"pad_token_id": 10_000}, "pad_token_id"),
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
        ({"pad_token_id": None}, "pad_token_id"),
        ({"eos_token_id": []}, "eos_token_id"),
        ({"max_position_embeddings": 10**12}, "max_position_embeddings"),
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


@pytest.mark.parametrize("typo", ["d_modle", "encoder_layer"])
def test_an_unknown_key_in_config_json_is_a_warning_naming_it(fresh_copy, typo, caplog):
    folder = fresh_copy()
    edit_config(folder, **{typo: 64})
    with caplog.at_level("WARNING", logger="transformers"):
        AutoConfig.from_pretrained(folder)
    assert f"unknown key(s) ['{typo}']" in caplog.text


def test_the_keys_transformers_writes_into_config_json_give_no_warning(fresh_copy, caplog):
    """A saved folder's own config.json (auto_map, custom_pipelines, architectures, dtype,
    transformers_version, ...) and the legacy generation keys older releases wrote there."""
    folder = fresh_copy()
    edit_config(folder, num_beams=4, max_length=200, architectures=["X"], dtype="float32")
    with caplog.at_level("WARNING", logger="transformers"):
        AutoConfig.from_pretrained(folder)
        AutoModelForSeq2SeqLM.from_pretrained(folder)
    assert "unknown key" not in caplog.text
