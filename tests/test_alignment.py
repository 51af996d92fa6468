"""Specification of `vanilla_transformer.alignment` and the translate tool's `--alignment`: Pharaoh
pairs `i-j` (source word i, output word j, from 0) from the cross-attention of one decoder layer,
in word or subword units; on a toy task whose word order is known, they recover it."""

import pytest
import torch
from toy_translation import (
    reordered_pairs,
    save_toy_model,
    trained_reordering_model,
)

from tests.conftest import tiny_config, word_tokenizer
from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.alignment import (
    AlignmentOptions,
    align_pairs,
    aligned_stream,
    pharaoh,
    unit_alignment,
)
from vanilla_transformer.cli import translate as translate_tool
from vanilla_transformer.recipe.tokenization import train_tokenizer
from vanilla_transformer.translation import DecodingOptions, translate_stream


def test_pharaoh_writes_source_dash_target_pairs_separated_by_spaces():
    assert pharaoh([(1, 0), (0, 1), (2, 2)]) == "1-0 0-1 2-2"
    assert pharaoh([]) == ""


def test_a_target_word_goes_to_the_source_word_with_the_most_attention_mass():
    # Source: word 0 = two subwords, word 1 = one subword, then </s> (no unit).
    # Target: word 0 = one subword, word 1 = two subwords, then </s>.
    attention = torch.tensor(
        [
            [0.30, 0.30, 0.40, 0.00],  # word 1 has the largest subword, word 0 the most mass
            [0.05, 0.05, 0.20, 0.70],  # </s> takes most: it is no word; word 1 wins
            [0.05, 0.05, 0.15, 0.75],
            [0.40, 0.40, 0.10, 0.10],  # the target's </s>: no unit, ignored
        ]
    )
    pairs = unit_alignment(attention, [0, 0, 1, None], [0, 1, 1, None])
    assert pairs == [(0, 0), (1, 1)]  # target word 1: 0.175 on source word 1, 0.1 on word 0
    assert unit_alignment(attention, [None, None, None, None], [0, 1, 1, None]) == []


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE of the project's kind, small enough to split words into several subwords,
    and an untrained model of its vocabulary (the format does not depend on the weights)."""
    texts = ["the big dog saw the small cat", "el perro grande vio al gato pequeño"] * 3
    tokenizer = train_tokenizer(texts, vocab_size=270, min_frequency=1)
    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(
        tiny_config(vocab_size=len(tokenizer), max_position_embeddings=128)
    ).eval()
    return model, tokenizer


def test_word_units_index_whitespace_words_and_subword_units_index_tokens(bpe):
    model, tokenizer = bpe
    source, target = "the small  cat, saw  a dog", "el gato pequeño vio"
    subwords = len(tokenizer(target).input_ids) - 1  # without </s>
    source_subwords = len(tokenizer(source).input_ids) - 1
    assert subwords > len(target.split())  # words do split into several subwords
    (words,) = align_pairs(model, tokenizer, [source], [target], units="word")
    assert [j for _, j in words] == list(range(len(target.split())))  # each output word once
    assert all(0 <= i < len(source.split()) for i, _ in words)
    (pieces,) = align_pairs(model, tokenizer, [source], [target], units="subword")
    assert [j for _, j in pieces] == list(range(subwords))
    assert all(0 <= i < source_subwords for i, _ in pieces)


def test_an_empty_source_or_target_has_an_empty_alignment(bpe):
    model, tokenizer = bpe
    no_source, no_target, one_word = align_pairs(
        model, tokenizer, ["", "the dog", "the dog"], ["el perro", "", "el"]
    )
    assert no_source == [] and no_target == []
    assert len(one_word) == 1 and one_word[0][0] in (0, 1) and one_word[0][1] == 0


def test_a_layer_the_decoder_does_not_have_is_refused_naming_the_range(bpe):
    model, tokenizer = bpe
    with pytest.raises(ValueError, match="has 2 layers"):
        align_pairs(model, tokenizer, ["the dog"], ["el perro"], layer=2)
    assert align_pairs(model, tokenizer, ["the dog"], ["el perro"], layer=-1)  # the last is fine


def test_alignment_leaves_the_models_attention_implementation_as_it_was(bpe):
    model, tokenizer = bpe
    before = model.config._attn_implementation
    align_pairs(model, tokenizer, ["the dog"], ["el perro"])
    assert model.config._attn_implementation == before


def accuracy(alignments, triples) -> float:
    """The share of target words aligned to the source word they translate."""
    right = total = 0
    for pairs, (_, _, order) in zip(alignments, triples, strict=True):
        found = {j: i for i, j in pairs}
        right += sum(found.get(j) == i for j, i in enumerate(order))
        total += len(order)
    return right / total


@pytest.mark.slow  # trains 1500 tiny updates: 12-35 s on one core
def test_the_alignment_recovers_a_known_word_reordering_on_a_trained_toy_task():
    """Word-by-word translation with each adjacent pair of words swapped (`swap_pairs`): target
    word j translates source word order[j]; the default layer's alignment finds it."""
    model, tokenizer = trained_reordering_model(), word_tokenizer()
    triples = reordered_pairs(60, seed=123)  # sentences unseen in training
    sources, targets = [s for s, _, _ in triples], [t for _, t, _ in triples]
    assert accuracy(align_pairs(model, tokenizer, sources, targets), triples) >= 0.9


def test_aligned_stream_gives_each_translation_the_alignment_to_its_own_line(bpe):
    model, tokenizer = bpe
    lines = ["the big dog", "", "the small cat saw the dog", "a cat", "dog"]
    options = DecodingOptions(num_beams=2, num_return_sequences=2, max_new_tokens=6)
    run = lambda lines: translate_stream(model, tokenizer, lines, options, window=2)  # noqa: E731
    align = AlignmentOptions(alignment=True).aligner(model, tokenizer)
    outputs = list(aligned_stream(run, lines, align))
    plain = list(run(lines))
    assert len(outputs) == len(lines)
    for line, texts, annotated in zip(lines, plain, outputs, strict=True):
        expected = align_pairs(model, tokenizer, [line] * 2, texts)
        assert annotated == [f"{t} ||| {pharaoh(a)}" for t, a in zip(texts, expected, strict=True)]


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory):
    return save_toy_model(tmp_path_factory.mktemp("toy") / "model")


@pytest.mark.parametrize("units", ["word", "subword"])
def test_the_translate_tool_appends_the_pharaoh_alignment_to_each_line(
    tmp_path, toy_folder, units, capsys
):
    source = tmp_path / "in.en"
    lines = ["the big dog runs", "a red cat is in the house", "", "dog"]
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    code = translate_tool.main(
        [str(toy_folder), "--input", str(source), "--alignment", "--alignment_units", units]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = out.splitlines()
    assert len(rows) == len(lines)
    for line, row in zip(lines, rows, strict=True):
        text, alignment = row.split(" ||| ")
        pairs = [tuple(map(int, p.split("-"))) for p in alignment.split()]
        # The word tokenizer has one token per word: both units index the words.
        assert [j for _, j in pairs] == list(range(len(text.split())))
        assert all(0 <= i < len(line.split()) for i, _ in pairs)


def test_the_translate_tool_refuses_a_layer_the_decoder_lacks_before_translating(
    tmp_path, toy_folder, capsys
):
    source = tmp_path / "in.en"
    source.write_text("the big dog\n", encoding="utf-8")
    code = translate_tool.main(
        [str(toy_folder), "--input", str(source), "--alignment", "--alignment_layer", "2"]
    )
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "error: alignment layer 2 does not exist: the decoder has 2 layers" in err


def test_aligned_stream_pairs_each_line_with_its_own_alignment_when_the_translator_reads_ahead():
    lines = ["a b", "c", "d e f", "g h i j", "k"]
    calls = []

    def align(sources, targets):  # the last source word to the first target word
        calls.append(len(sources))
        return [[(len(source.split()) - 1, 0)] for source in sources]

    def read_everything_first(lines):
        return iter([[line.upper()] for line in list(lines)])

    outputs = list(aligned_stream(read_everything_first, lines, align, most=2))
    assert outputs == [[f"{line.upper()} ||| {len(line.split()) - 1}-0"] for line in lines]
    assert max(calls) <= 2 and sum(calls) == len(lines)
