"""Loading parallel corpora (JSONL, TSV, save_to_disk), bad inputs, tokenisation, collation."""

import json
import tempfile
from pathlib import Path

import datasets
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import write_jsonl
from vanilla_transformer.errors import UserError
from vanilla_transformer.recipe import data
from vanilla_transformer.recipe.data import (
    TranslationCorpus,
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


def write(path: Path, text: str) -> Path:
    """`text` in the UTF-8 file `path`, newlines as given; returns `path`."""
    path.write_text(text, encoding="utf-8", newline="")
    return path


def assert_refused(path: Path, message: str) -> None:
    """Loading `path` as an EN->ES corpus raises a ValueError matching `message`."""
    with pytest.raises(ValueError, match=message):
        load_translation_dataset(path, "en", "es", cache_dir=str(Path(path).parent / "cache"))


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
    path = write(tmp_path / "pairs.tsv", "".join(f"{e}\t{s}\n" for e, s in PAIRS))
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
    assert_refused(path, r"\['es'\].*found \['en', 'fr'\]")


def test_missing_translation_column_is_a_clear_error(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"en": "a", "es": "b"}])
    assert_refused(path, "expected a 'translation' object")


def test_tsv_with_wrong_columns_is_a_clear_error(tmp_path):
    path = write(tmp_path / "x.tsv", "a\tb\tc\nd\te\tf\n")
    assert_refused(path, r"x\.tsv:1: expected 2 tab-separated columns")


def test_non_utf8_file_names_the_file_and_byte_offset(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes(b"Hello\tHola\n" + "Coffee\tcafé\n".encode("latin-1"))
    assert_refused(path, r"latin1\.tsv is not valid UTF-8: byte offset 21")


def test_empty_and_whitespace_pairs_are_dropped_and_counted(tmp_path, caplog):
    rows = [{"translation": {"en": e, "es": s}} for e, s in [("a", "b"), ("", "c"), ("d", "  ")]]
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    with caplog.at_level("WARNING"):
        ds = load_translation_dataset(path, "en", "es")
    assert len(ds["train"]) == 1
    assert "dropped 2 pairs" in caplog.text


def write_moses(prefix, pairs):
    prefix.with_name(prefix.name + ".en").write_text("".join(e + "\n" for e, _ in pairs))
    prefix.with_name(prefix.name + ".es").write_text("".join(s + "\n" for _, s in pairs))


def test_loads_moses_parallel_files_by_prefix(tmp_path):
    write_moses(tmp_path / "train", PAIRS)
    ds = load_translation_dataset(tmp_path / "train", "en", "es")
    assert list(ds) == ["train"]
    assert [r["translation"] for r in ds["train"]] == [{"en": e, "es": s} for e, s in PAIRS]


def test_loads_a_folder_of_moses_split_files(tmp_path):
    write_moses(tmp_path / "train", PAIRS)
    write_moses(tmp_path / "valid", PAIRS[:2])
    write_moses(tmp_path / "test", PAIRS[:1])
    ds = load_translation_dataset(tmp_path, "en", "es")
    assert {k: len(v) for k, v in ds.items()} == {"train": 3, "validation": 2, "test": 1}


def test_moses_files_of_unequal_length_name_both_counts_and_paths(tmp_path):
    write_moses(tmp_path / "train", PAIRS)
    (tmp_path / "train.es").write_text("uno\ndos\n")
    with pytest.raises(ValueError) as err:
        load_translation_dataset(tmp_path / "train", "en", "es")
    message = str(err.value)
    assert "train.en has 3 lines" in message and "train.es has 2" in message


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
    assert counts["train"] == {
        "before": 3,
        "kept": 2,
        "too_long": 1,
        "source_too_long": 1,
        "target_too_long": 0,
        "too_long_before_tokenizing": 0,
    }
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


# --------------------------------------------------------------------------------------------------
# TSV: plain by default, every row as wide as the header, BOM and header never a pair
# --------------------------------------------------------------------------------------------------


def load_tsv(tmp_path, text: str, name="x.tsv", **kwargs):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    ds = load_translation_dataset(path, "en", "es", cache_dir=str(tmp_path / "cache"), **kwargs)
    return [(r["en"], r["es"]) for r in ds["train"]["translation"]]


def test_a_quote_in_plain_tsv_is_text(tmp_path):
    rows = load_tsv(tmp_path, '"Come," he said.\t"Ven", dijo.\n"a\t"b\n')
    assert rows == [('"Come," he said.', '"Ven", dijo.'), ('"a', '"b')]


def test_a_quoted_cell_with_a_tab_is_refused_in_plain_mode_and_read_with_quoting(tmp_path):
    text = '"a\tb"\tc\n'
    with pytest.raises(ValueError, match=r"x\.tsv:1: expected 2 tab-separated columns.*found 3"):
        load_tsv(tmp_path, text)
    assert load_tsv(tmp_path, text, name="q.tsv", tsv_quoting=True) == [("a\tb", "c")]


@pytest.mark.parametrize(
    "text, line",
    [("a\tb\nc\td\te\n", 2), ("a\tb\n\nc\n", 3), ("en\tes\tde\na\tb\tc\nd\te\n", 3)],
    ids=["more-cells", "fewer-cells", "narrower-than-header"],
)
def test_a_row_with_more_or_fewer_cells_is_refused_with_its_line_number(tmp_path, text, line):
    with pytest.raises(ValueError, match=rf"x\.tsv:{line}: expected \d tab-separated columns"):
        load_tsv(tmp_path, text)


def test_a_byte_order_mark_is_stripped_and_a_header_behind_it_is_recognised(tmp_path):
    assert load_tsv(tmp_path, "\ufeffes\ten\nhola\thello\n") == [("hello", "hola")]
    assert load_tsv(tmp_path, "\ufeffhello\thola\n", name="y.tsv") == [("hello", "hola")]


def test_a_header_naming_other_languages_is_refused_never_a_pair(tmp_path):
    with pytest.raises(
        ValueError, match=r"x\.tsv:1: the header names the languages \['de', 'fr'\]"
    ):
        load_tsv(tmp_path, "de\tfr\nHaus\tmaison\n")


def test_a_byte_order_mark_before_jsonl_is_stripped(tmp_path):
    path = write(
        tmp_path / "x.jsonl", "\ufeff" + json.dumps({"translation": {"en": "a", "es": "b"}}) + "\n"
    )
    ds = load_translation_dataset(path, "en", "es", cache_dir=str(tmp_path / "cache"))
    assert ds["train"][0]["translation"] == {"en": "a", "es": "b"}


def test_crlf_line_endings_are_not_text_but_a_lone_carriage_return_is(tmp_path):
    assert load_tsv(tmp_path, "a\tb\r\nc\rd\te\r\n") == [("a", "b"), ("c\rd", "e")]


def test_an_over_long_side_is_dropped_before_tokenizing_and_counted(
    tmp_path, tokenizer, monkeypatch
):
    long_line = "word " * 200_000  # 1 MB: far more characters than 64 tokens can hold
    rows = [*PAIRS, (long_line, "x"), ("y", long_line)]
    raw = datasets.Dataset.from_list([{"translation": {"en": e, "es": s}} for e, s in rows])
    seen = []
    original = type(tokenizer).__call__

    def spy(self, text=None, *args, text_target=None, **kwargs):
        for texts in (text, text_target):
            seen.extend(len(t) for t in (texts if isinstance(texts, list) else [texts or ""]))
        return original(self, text, *args, text_target=text_target, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", spy)
    tokenized, counts = tokenize_translation_dataset(raw, tokenizer, "en", "es", 64, 64)
    assert seen and max(seen) < len(long_line)  # the long side never reached the tokenizer
    assert len(tokenized) == 3
    assert counts["train"]["too_long_before_tokenizing"] == 2
    assert counts["train"]["source_too_long"] == 1 and counts["train"]["target_too_long"] == 1
    assert counts["train"]["too_long"] == 2


def test_an_empty_split_tokenizes_to_an_empty_split_with_zero_counts(tokenizer):
    raw = datasets.Dataset.from_list([{"translation": {"en": "a", "es": "b"}}]).select([])
    tokenized, counts = tokenize_translation_dataset(raw, tokenizer, "en", "es", 64, 64)
    assert len(tokenized) == 0 and counts["train"]["kept"] == 0 and counts["train"]["before"] == 0


# --------------------------------------------------------------------------------------------------
# Properties: any content round-trips, or is refused naming its line
# --------------------------------------------------------------------------------------------------

CELL_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=12
)
PROPERTY_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _kept(pairs):
    """What the loader keeps: pairs with text on both sides (others are dropped and counted)."""
    return [(s, t) for s, t in pairs if s.strip() and t.strip()]


@PROPERTY_SETTINGS
@given(pairs=st.lists(st.tuples(CELL_TEXT, CELL_TEXT), min_size=1, max_size=8))
def test_any_tsv_content_round_trips_or_is_refused_naming_the_first_bad_line(pairs):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.tsv"
        # The header fixes the columns, so that no first row is mistaken for one.
        lines = ["en\tes"] + [f"{s}\t{t}" for s, t in pairs]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8", newline="")
        bad = [i for i, (s, t) in enumerate(pairs) if "\t" in s + t and (s + t).strip()]
        if bad:
            assert_refused(path, rf"train\.tsv:{bad[0] + 2}: expected 2 tab")
            return
        if not _kept(pairs):
            return  # nothing left: covered by the empty-file and empty-split tests
        ds = load_translation_dataset(path, "en", "es", cache_dir=str(Path(tmp) / "c"))
        assert [(r["en"], r["es"]) for r in ds["train"]["translation"]] == _kept(pairs)


@PROPERTY_SETTINGS
@given(
    pairs=st.lists(
        st.tuples(st.text(st.characters(blacklist_categories=("Cs",))), CELL_TEXT),
        min_size=1,
        max_size=8,
    ),
    broken=st.one_of(st.none(), st.integers(0, 7)),
    garbage=st.sampled_from(["{broken", "[1, 2]", '{"en": "a"}', '{"translation": {"en": "a"}}']),
)
def test_any_jsonl_content_round_trips_or_is_refused_naming_the_bad_line(pairs, broken, garbage):
    lines = [json.dumps({"translation": {"en": s, "es": t}}) for s, t in pairs]
    if broken is not None:
        broken = min(broken, len(lines))
        lines.insert(broken, garbage)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.jsonl"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        if broken is not None:
            assert_refused(path, rf"train\.jsonl:{broken + 1}: ")
            return
        if not _kept(pairs):
            return
        ds = load_translation_dataset(path, "en", "es", cache_dir=str(Path(tmp) / "c"))
        assert [(r["en"], r["es"]) for r in ds["train"]["translation"]] == _kept(pairs)


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
    assert counts["train"]["before"] == 3 and counts["train"]["kept"] == 2
    assert counts["train"]["too_long"] == counts["train"]["source_too_long"] == 1


def test_invalid_utf8_names_the_file_and_byte_offset(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"translation": {"en": "caf\xe9", "es": "x"}}\n')
    assert_refused(path, r"train\.jsonl is not valid UTF-8: byte offset 27")


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"train\.jsonl:1: invalid JSON"),
        (json.dumps({"en": "a", "es": "b"}), r"train\.jsonl:1: expected a 'translation' object"),
        (json.dumps({"translation": {"en": "a", "de": "b"}}), r"train\.jsonl:1: language key"),
        ('{"translation": {"en": "a\\ud800", "es": "b"}}', r"train\.jsonl:1"),
    ],
    ids=["not-json", "no-translation", "wrong-language", "lone-surrogate-escape"],
)
def test_malformed_jsonl_rows_name_the_file_and_line(tmp_path, line, message):
    path = write_jsonl(tmp_path / "train.jsonl", [line])
    assert_refused(path, message)


def test_an_empty_corpus_file_names_the_file(tmp_path):
    path = write(tmp_path / "train.jsonl", "\n  \n")
    assert_refused(path, r"train\.jsonl")


def test_a_tsv_with_control_characters_keeps_them_and_a_ragged_row_names_the_line(tmp_path):
    good = write(tmp_path / "ok.tsv", "a\x00b\tc\x1b\n")
    ds = data.load_translation_dataset(good, "en", "es", cache_dir=str(tmp_path / "cache"))
    assert ds["train"][0]["translation"] == {"en": "a\x00b", "es": "c\x1b"}
    ragged = write(tmp_path / "ragged.tsv", "a\tb\nonly-one-column\n")
    assert_refused(ragged, r"ragged\.tsv:2: expected 2 tab-separated columns")


def test_tsv_quoting_is_an_option_of_every_corpus_tool(tmp_path):
    from vanilla_transformer.recipe.options import CorpusOptions, parse_cli

    path = write(tmp_path / "train.tsv", '"a\tb"\tc\n')
    (quoted,) = parse_cli([CorpusOptions], ["--dataset", str(path), "--tsv_quoting"], None)
    assert [r["en"] for r in quoted.load()["train"]["translation"]] == ["a\tb"]
    (plain,) = parse_cli([CorpusOptions], ["--dataset", str(path)], None)
    with pytest.raises(ValueError, match=r"train\.tsv:1: expected 2 tab-separated columns"):
        plain.load()


def test_moses_pairs_stay_aligned_when_a_line_holds_a_lone_carriage_return(tmp_path):
    # Only "\n" ends a line: a lone "\r" (or U+2028) inside a sentence is text, "\r\n" is "\n".
    (tmp_path / "train.en").write_bytes("one\rtwo\nthree\u2028x\r\nfour\n".encode())
    (tmp_path / "train.es").write_bytes(b"uno dos\r\ntres\ncuatro\n")
    ds = load_translation_dataset(tmp_path / "train", "en", "es", cache_dir=str(tmp_path / "c"))
    assert [r["translation"] for r in ds["train"]] == [
        {"en": "one\rtwo", "es": "uno dos"},
        {"en": "three\u2028x", "es": "tres"},
        {"en": "four", "es": "cuatro"},
    ]


def test_a_byte_order_mark_before_moses_files_is_stripped(tmp_path):
    write_moses(tmp_path / "train", PAIRS)
    for name in ("train.en", "train.es"):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    ds = load_translation_dataset(tmp_path / "train", "en", "es", cache_dir=str(tmp_path / "c"))
    assert [r["translation"] for r in ds["train"]] == [{"en": e, "es": s} for e, s in PAIRS]


def test_an_unpaired_moses_file_in_a_folder_is_an_error_naming_the_missing_file(tmp_path):
    write_moses(tmp_path / "train", PAIRS)
    (tmp_path / "valid.en").write_text("And there was light.\n")
    with pytest.raises(UserError, match=r"valid\.en has no valid\.es beside it"):
        load_translation_dataset(tmp_path, "en", "es")


@pytest.mark.parametrize("name", ["data.jsonl", "corpus/train", "./pairs.tsv"])
def test_a_missing_local_data_file_is_no_such_file_not_a_hub_error(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    with pytest.raises(UserError, match=f"no such file or folder: {name.removeprefix('./')}"):
        load_translation_dataset(name, "en", "es")


def test_half_a_moses_pair_names_the_missing_file(tmp_path):
    (tmp_path / "train.en").write_text("a\n")
    with pytest.raises(UserError, match=rf"no such file: {tmp_path / 'train'}\.es"):
        load_translation_dataset(tmp_path / "train", "en", "es")


def test_the_empty_pairs_dropped_are_a_declared_field_of_the_loaded_corpus(tmp_path):
    rows = [{"translation": {"en": e, "es": s}} for e, s in [("a", "b"), ("", "c"), ("d", "  ")]]
    ds = load_translation_dataset(write_jsonl(tmp_path / "x.jsonl", rows), "en", "es")
    assert isinstance(ds, TranslationCorpus) and isinstance(ds, datasets.DatasetDict)
    assert ds.empty_pairs_dropped == {"train": 2}
