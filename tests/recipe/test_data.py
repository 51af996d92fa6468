"""Loading parallel corpora (JSONL, TSV, save_to_disk), bad inputs, tokenisation, collation."""

import json

import datasets
import pytest

from tests.conftest import write_jsonl
from vanilla_transformer.recipe import data
from vanilla_transformer.recipe.data import (
    load_translation_dataset,
    make_collator,
    tokenize_translation_dataset,
)
from vanilla_transformer.recipe.tokenization import train_tokenizer

PAIRS = [
    ("In the beginning God created the heaven.", "En el principio crió Dios los cielos."),
    ("And there was light.", "Y fué la luz."),
    ("Why standest thou afar off?", "¿Por qué estás lejos?"),
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer((t for pair in PAIRS * 20 for t in pair), vocab_size=400)


def test_loads_jsonl_translation_rows(tmp_path):
    path = write_jsonl(
        tmp_path / "train.jsonl", [{"translation": {"en": e, "es": s}} for e, s in PAIRS]
    )
    ds = load_translation_dataset(path, "en", "es")
    assert list(ds) == ["train"]
    assert ds["train"][1]["translation"] == {"en": PAIRS[1][0], "es": PAIRS[1][1]}


def test_loads_a_folder_of_split_files(tmp_path):
    rows = [{"translation": {"en": e, "es": s}} for e, s in PAIRS]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "dev.jsonl", rows[:1])
    (tmp_path / "test.tsv").write_text("es\ten\nHola\tHello\n")
    ds = load_translation_dataset(tmp_path, "en", "es")
    assert {k: len(v) for k, v in ds.items()} == {"train": 3, "validation": 1, "test": 1}
    assert ds["test"][0]["translation"] == {"en": "Hello", "es": "Hola"}


def test_loads_tsv_without_header_as_src_tab_tgt(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{e}\t{s}\n" for e, s in PAIRS))
    ds = load_translation_dataset(path, "en", "es")
    assert ds["train"][2]["translation"] == {"en": PAIRS[2][0], "es": PAIRS[2][1]}


def test_loads_a_save_to_disk_folder(tmp_path):
    saved = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list([{"translation": {"en": "a", "es": "b"}}])}
    )
    saved.save_to_disk(str(tmp_path / "saved"))
    ds = load_translation_dataset(tmp_path / "saved", "en", "es")
    assert ds["train"][0]["translation"] == {"en": "a", "es": "b"}


def test_missing_language_key_names_found_and_expected(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"translation": {"en": "a", "fr": "b"}}])
    with pytest.raises(ValueError, match=r"\['es'\].*found \['en', 'fr'\]"):
        load_translation_dataset(path, "en", "es")


def test_missing_translation_column_is_a_clear_error(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"en": "a", "es": "b"}])
    with pytest.raises(ValueError, match="expected a 'translation' object"):
        load_translation_dataset(path, "en", "es")


def test_tsv_with_wrong_columns_is_a_clear_error(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tb\tc\nd\te\tf\n")
    with pytest.raises(ValueError, match="does not name the languages"):
        load_translation_dataset(path, "en", "es")


def test_non_utf8_file_names_the_file_and_byte_offset(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes(b"Hello\tHola\n" + "Coffee\tcafé\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.tsv is not valid UTF-8: byte offset 21"):
        load_translation_dataset(path, "en", "es")


def test_empty_and_whitespace_pairs_are_dropped_and_counted(tmp_path, caplog):
    rows = [{"translation": {"en": e, "es": s}} for e, s in [("a", "b"), ("", "c"), ("d", "  ")]]
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    with caplog.at_level("WARNING"):
        ds = load_translation_dataset(path, "en", "es")
    assert len(ds["train"]) == 1
    assert "dropped 2 pairs" in caplog.text


def test_tokenize_gives_model_columns_and_drops_long_pairs(tokenizer):
    raw = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(
                [{"translation": {"en": e, "es": s}} for e, s in PAIRS]
            )
        }
    )
    lengths = [len(tokenizer(e).input_ids) for e, _ in PAIRS]
    limit = sorted(lengths)[1]  # keeps the two shortest sources
    tokenized, counts = tokenize_translation_dataset(raw, tokenizer, "en", "es", limit, 1000)
    train = tokenized["train"]
    assert set(train.column_names) == {"input_ids", "attention_mask", "labels"}
    assert counts["train"] == {"before": 3, "kept": 2, "too_long": 1}
    assert all(len(ids) <= limit for ids in train["input_ids"])
    assert all(labels[-1] == tokenizer.eos_token_id for labels in train["labels"])


def test_collator_pads_labels_with_minus_100(tokenizer):
    features = [dict(tokenizer(e, text_target=s)) for e, s in PAIRS]
    batch = make_collator(tokenizer)(features)
    longest = max(len(f["labels"]) for f in features)
    assert batch["labels"].shape == (3, longest)
    shortest = min(range(3), key=lambda i: len(features[i]["labels"]))
    assert batch["labels"][shortest, -1].item() == -100
    assert (batch["input_ids"] == 0).any() and (batch["attention_mask"] == 0).any()


# ------------------------------------------------------------------------------------------------
# Data and tokenizer: bad text is either handled as documented or named in a clear error
# ------------------------------------------------------------------------------------------------


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
    assert counts["train"] == {"before": 3, "kept": 2, "too_long": 1}


def test_invalid_utf8_names_the_file_and_byte_offset(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"translation": {"en": "caf\xe9", "es": "x"}}\n')
    with pytest.raises(ValueError, match=r"train\.jsonl is not valid UTF-8: byte offset 27"):
        data.load_translation_dataset(path, "en", "es", cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"train\.jsonl:1: invalid JSON"),
        ("\ufeff" + json.dumps({"translation": {"en": "a", "es": "b"}}), r"train\.jsonl:1:.*BOM"),
        (json.dumps({"en": "a", "es": "b"}), r"train\.jsonl:1: expected a 'translation' object"),
        (json.dumps({"translation": {"en": "a", "de": "b"}}), r"train\.jsonl:1: language key"),
    ],
    ids=["not-json", "bom", "no-translation", "wrong-language"],
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
