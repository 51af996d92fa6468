"""Scored hypotheses (`translate_hypotheses`), n-best lists and forced target prefixes: a score
means the same on every decoding mode, the n-best format round-trips, and every output starts with
its prefix."""

import io
import json
import sys

import pytest
import torch

from tests.conftest import word_tokenizer
from tests.toy_translation import trained_toy_model
from vanilla_transformer import translation_pipeline
from vanilla_transformer.cli import translate as translate_tool
from vanilla_transformer.translation import (
    DecodingOptions,
    Hypothesis,
    PrefixCountError,
    format_hypotheses,
    parse_nbest_line,
    translate_hypotheses,
    translate_lines,
    translate_stream,
)

LINES = ["the big dog runs", "a red cat is in the house", "", "see the small blue house", "dog"]


@pytest.fixture(scope="module")
def toy():
    return trained_toy_model(), word_tokenizer()


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory, toy):
    folder = tmp_path_factory.mktemp("toy")
    toy[0].save_pretrained(folder)
    toy[1].save_pretrained(folder)
    return folder


def forced_score(model, tokenizer, source: str, output: str, length_penalty: float) -> float:
    """The output's log-probability by teacher forcing (</s> included) / length ** length_penalty."""
    inputs = tokenizer([source], return_tensors="pt")
    target = tokenizer([output], return_tensors="pt").input_ids  # the words then </s>
    with torch.no_grad():
        logits = model(**inputs, labels=target).logits  # (1, T, V)
    log_probs = logits.log_softmax(-1).gather(-1, target[..., None]).squeeze(-1)
    return log_probs.sum().item() / target.shape[1] ** length_penalty


def test_beam_scores_are_generates_sequences_scores(toy):
    model, tokenizer = toy
    options = DecodingOptions(num_beams=4, num_return_sequences=3)
    hypotheses = translate_hypotheses(model, tokenizer, LINES, options)
    for line, per_line in zip(LINES, hypotheses, strict=True):
        if not line:
            continue
        out = model.generate(
            **tokenizer([line], return_tensors="pt"), num_beams=4, num_return_sequences=3,
            length_penalty=0.6, output_scores=True, return_dict_in_generate=True,
        )  # fmt: skip
        assert [h.score for h in per_line] == pytest.approx(out.sequences_scores.tolist())


@pytest.mark.parametrize(
    "options",
    [
        DecodingOptions(num_beams=4),
        DecodingOptions(num_beams=1),
        DecodingOptions(num_beams=1, do_sample=True, temperature=1.5, num_return_sequences=2),
    ],
    ids=["beam", "greedy", "sampling"],
)
def test_a_score_is_the_length_normalised_log_probability_on_every_decoding_mode(toy, options):
    model, tokenizer = toy
    torch.manual_seed(0)
    for line, per_line in zip(
        LINES, translate_hypotheses(model, tokenizer, LINES, options), strict=True
    ):
        for hypothesis in per_line if line else []:
            expected = forced_score(model, tokenizer, line, hypothesis.text, options.length_penalty)
            assert hypothesis.score == pytest.approx(expected, abs=1e-4)


def test_translate_lines_and_translate_stream_are_the_hypotheses_texts(toy):
    options = DecodingOptions(num_beams=3, num_return_sequences=2, batch_size=2)
    hypotheses = translate_hypotheses(*toy, LINES, options)
    texts = [[h.text for h in per_line] for per_line in hypotheses]
    assert translate_lines(*toy, LINES, options) == texts
    assert list(translate_stream(*toy, iter(LINES), options, window=2)) == texts
    assert hypotheses[2] == [Hypothesis("", 0.0)] * 2  # an empty line stays aligned


def test_the_nbest_format_round_trips():
    hypotheses = [Hypothesis("el perro", -0.25), Hypothesis("a ||| b", -1.5), Hypothesis("", -3.0)]
    lines = format_hypotheses(7, hypotheses, "nbest").splitlines()
    parsed = [parse_nbest_line(line) for line in lines]
    assert parsed == [
        (7, "el perro", {"F0": -0.25}, -0.25),
        (7, "a ||| b", {"F0": -1.5}, -1.5),
        (7, "", {"F0": -3.0}, -3.0),
    ]


def _run(argv, stdin: str, monkeypatch, capsys):
    """The tool in this process, stdin fed from `stdin`: (exit code, captured output)."""
    monkeypatch.setattr(
        sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8")
    )
    code = translate_tool.main([str(a) for a in argv])
    return code, capsys.readouterr()


def test_the_tools_nbest_list_has_n_scored_lines_per_input_best_first(
    toy, toy_folder, monkeypatch, capsys
):
    args = [toy_folder, "--nbest", "3", "--num_beams", "4"]
    code, captured = _run(args, "\n".join(LINES) + "\n", monkeypatch, capsys)
    assert code == 0, captured.err
    parsed = [parse_nbest_line(line) for line in captured.out.splitlines()]
    assert [index for index, *_ in parsed] == [i for i in range(len(LINES)) for _ in range(3)]
    expected = translate_hypotheses(
        *toy, LINES, DecodingOptions(num_beams=4, num_return_sequences=3)
    )
    for i, per_line in enumerate(expected):
        rows = parsed[3 * i : 3 * i + 3]
        assert [text for _, text, _, _ in rows] == [h.text for h in per_line]
        scores = [score for *_, score in rows]
        assert scores == sorted(scores, reverse=True)  # best first
        assert scores == pytest.approx([h.score for h in per_line], abs=1e-6)
        assert [features["F0"] for _, _, features, _ in rows] == scores


def test_the_tools_jsonl_output_has_index_rank_translation_and_score(
    toy_folder, monkeypatch, capsys
):
    args = [toy_folder, "--nbest", "2", "--num_beams", "2", "--output_format", "jsonl"]
    code, captured = _run(args, "\n".join(LINES[:2]) + "\n", monkeypatch, capsys)
    assert code == 0, captured.err
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [(r["index"], r["rank"]) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(isinstance(r["translation"], str) and r["score"] <= 0 for r in records)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--nbest", "5", "--num_beams", "4"], "--nbest 5 needs at least 5 beams"),
        (["--nbest", "2", "--num_return_sequences", "2"], "drop --num_return_sequences"),
    ],
)
def test_nbest_without_enough_beams_or_with_num_return_sequences_is_one_line_error(
    toy_folder, monkeypatch, capsys, flags, message
):
    code, captured = _run([toy_folder, *flags], "dog\n", monkeypatch, capsys)
    assert code == 2 and message in captured.err and "Traceback" not in captured.err


def test_sampling_gives_an_nbest_list_whatever_the_beams(toy_folder, monkeypatch, capsys):
    args = [toy_folder, "--nbest", "3", "--num_beams", "1", "--do_sample"]
    code, captured = _run(args, "the big dog runs\n", monkeypatch, capsys)
    assert code == 0, captured.err
    assert [parse_nbest_line(line)[0] for line in captured.out.splitlines()] == [0, 0, 0]


PREFIXES = ["el grande", "", "", "ver el pequeño azul", "perro"]


@pytest.mark.parametrize("num_beams", [1, 4])
def test_outputs_start_with_their_prefix_in_batches_of_different_prefix_lengths(toy, num_beams):
    options = DecodingOptions(num_beams=num_beams, num_return_sequences=min(num_beams, 2))
    outputs = translate_lines(*toy, LINES, options, prefixes=PREFIXES)
    for prefix, per_line in zip(PREFIXES, outputs, strict=True):
        assert all(text.startswith(prefix) for text in per_line), (prefix, per_line)
    one_by_one = [
        translate_lines(*toy, [s], options, prefixes=[p])[0]
        for s, p in zip(LINES, PREFIXES, strict=True)
    ]
    assert outputs == one_by_one  # batching with other prefix lengths changes nothing


def test_beam_search_continues_from_the_prefix(toy):
    # "the big dog runs" -> "el perro grande ...": forced to start "el grande", it goes on, with
    # the continuation the model scores best (the toy model differs a little by CPU kind, and so
    # does which one that is).
    [best, *others] = translate_hypotheses(
        *toy,
        ["the big dog runs"],
        DecodingOptions(num_beams=4, num_return_sequences=4),
        prefixes=["el grande"],
    )[0]
    assert best.text.startswith("el grande ") and len(best.text.split()) > 2
    assert all(h.text.startswith("el grande") and h.score <= best.score for h in others)
    assert best.text != translate_lines(*toy, ["the big dog runs"])[0][0]  # the prefix mattered


def test_an_empty_prefix_equals_no_prefix(toy):
    options = DecodingOptions(num_beams=4, num_return_sequences=2)
    plain = translate_hypotheses(*toy, LINES, options)
    assert translate_hypotheses(*toy, LINES, options, prefixes=[""] * len(LINES)) == plain


def test_prefixes_not_one_per_line_are_refused(toy):
    with pytest.raises(PrefixCountError, match="2 prefixes for 5 lines"):
        translate_lines(*toy, LINES, prefixes=["el", "la"])
    with pytest.raises(PrefixCountError, match="different line counts"):
        list(translate_stream(*toy, iter(LINES), prefixes=iter(["el"]), window=2))


def test_the_pipeline_forces_one_prefix_per_input(toy):
    pipe = translation_pipeline(*toy)
    outputs = pipe(LINES[:2] + LINES[3:], prefix=["el grande", "", "ver", "perro"], batch_size=3)
    texts = [o["translation_text"] for o in outputs]
    assert texts[0].startswith("el grande") and texts[2].startswith("ver")
    assert texts[3].startswith("perro")
    assert texts[1] == pipe(LINES[1])[0]["translation_text"]
    with pytest.raises(ValueError, match="1 prefixes for 2 inputs"):
        pipe(LINES[:2], prefix=["el"])


def test_the_tool_reads_prefixes_from_a_file_with_the_inputs_line_count(
    toy, toy_folder, tmp_path, monkeypatch, capsys
):
    source, prefixes = tmp_path / "in.en", tmp_path / "prefix.es"
    source.write_text("\n".join(LINES) + "\n")
    prefixes.write_text("\n".join(PREFIXES) + "\n")
    args = [toy_folder, "--input", source, "--prefix", prefixes, "--num_beams", "2"]
    code, captured = _run(args, "", monkeypatch, capsys)
    assert code == 0, captured.err
    expected = translate_lines(*toy, LINES, DecodingOptions(num_beams=2), prefixes=PREFIXES)
    assert captured.out.splitlines() == [o[0] for o in expected]
    prefixes.write_text("el\n")
    code, captured = _run(args, "", monkeypatch, capsys)
    assert code == 2 and "pass one prefix per input line" in captured.err


def test_stdin_with_a_prefix_file_of_another_line_count_is_a_one_line_error(
    toy_folder, tmp_path, monkeypatch, capsys
):
    prefixes = tmp_path / "prefix.es"
    prefixes.write_text("el\nla\n")
    args = [toy_folder, "--prefix", prefixes, "--num_beams", "1"]
    code, captured = _run(args, "the dog\na house\nthe cat\n", monkeypatch, capsys)
    assert code == 2 and "different line counts" in captured.err
    assert "Traceback" not in captured.err
