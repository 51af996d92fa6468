"""The joint BPE tokenizer: fixed special ids, </s> on every sequence, exact round trips."""

import pytest
from transformers import AutoTokenizer

from vanilla_transformer.recipe import tokenization
from vanilla_transformer.recipe.tokenization import train_tokenizer

CORPUS = [
    "In the beginning God created the heaven and the earth.",
    "En el principio crió Dios los cielos y la tierra.",
    "And God said, Let there be light: and there was light.",
    "Y dijo Dios: Sea la luz: y fué la luz.",
    "¿Por qué estás lejos, oh Jehová? ¡Respóndeme cuando clamo!",
    "Why standest thou afar off, O LORD? “Hear me when I call.”",
    "Enseñaré á los niños; el corazón del señor está en paz.",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(iter(CORPUS), vocab_size=500, min_frequency=1)


def test_training_streams_an_iterator_and_reaches_the_vocab_size(tokenizer):
    assert 300 < len(tokenizer) <= 500


def test_special_tokens_have_the_config_default_ids(tokenizer):
    assert tokenizer.pad_token_id == 0
    assert tokenizer.bos_token_id == 1
    assert tokenizer.eos_token_id == 2
    assert tokenizer.unk_token_id == 3
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<s>", "</s>", "<unk>"]


def test_source_ends_with_eos_and_has_no_bos(tokenizer):
    ids = tokenizer("Y dijo Dios").input_ids
    assert ids[-1] == 2
    assert 1 not in ids
    assert ids.count(2) == 1


def test_text_target_gives_labels_ending_with_eos(tokenizer):
    batch = tokenizer(["Y dijo Dios", "luz"], text_target=["And God said", "light"])
    assert set(batch) >= {"input_ids", "attention_mask", "labels"}
    assert all(labels[-1] == 2 for labels in batch["labels"])
    assert all(1 not in labels for labels in batch["labels"])


@pytest.mark.parametrize(
    "text",
    [
        "¿Qué pasó, señor? ¡Él dijo «sí»!",
        "Jehová habló á Moisés — y fué así; “The LORD’s word.”",
        "Naïve café, ÀÉÍÓÚ ñ Ü (1909) [sic] 25,000 tokens...",
    ],
)
def test_round_trip_english_and_spanish_with_accents_and_punctuation(tokenizer, text):
    ids = tokenizer(text).input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_unseen_characters_fall_back_to_bytes_not_unk(tokenizer):
    text = "Ελληνικά 東京 😀 ŋ"
    ids = tokenizer(text).input_ids
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_decomposed_accents_are_normalised_to_nfc(tokenizer):
    decomposed = "Jehova\u0301"  # "a" + combining acute
    ids = tokenizer(decomposed).input_ids
    assert ids == tokenizer("Jehová").input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Jehová"


def test_reloads_with_autotokenizer_from_a_folder(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "¿Por qué estás lejos, oh Jehová?"
    assert reloaded(text).input_ids == tokenizer(text).input_ids
    assert reloaded(text, text_target="Why?")["labels"][-1] == 2
    assert (reloaded.pad_token_id, reloaded.eos_token_id, reloaded.bos_token_id) == (0, 2, 1)
    assert reloaded.model_max_length == tokenizer.model_max_length == 1024


def test_trains_on_a_translation_dataset():
    import datasets

    ds = datasets.Dataset.from_list(
        [{"translation": {"en": CORPUS[i], "es": CORPUS[i + 1]}} for i in range(0, 6, 2)] * 10
    )
    tok = train_tokenizer(ds, vocab_size=300, min_frequency=1)
    assert tok.decode(tok("crió Dios").input_ids, skip_special_tokens=True) == "crió Dios"


def test_too_small_vocab_is_rejected():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(iter(CORPUS), vocab_size=100)


# ------------------------------------------------------------------------------------------------
# Data and tokenizer: bad text is either handled as documented or named in a clear error
# ------------------------------------------------------------------------------------------------


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
