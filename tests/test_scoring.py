"""Specification of `vanilla_transformer.scoring` (forced decoding) and the `vanilla-transformer-score`
tool: a target's score is the log-probability the model gives it, normalised exactly as beam search
normalises its own outputs, whatever the batching."""

import pytest
import torch
from toy_translation import trained_toy_model

from tests.conftest import word_tokenizer
from vanilla_transformer.cli import score as score_tool
from vanilla_transformer.scoring import ScoringOptions, score_pairs

# Different lengths, so that every batch of several pairs is padded on both sides.
SOURCES = [
    "the big dog runs",
    "a red cat is in the house",
    "dog",
    "see the small blue house and the green cat",
    "the cat saw a dog",
    "house",
]


@pytest.fixture(scope="module")
def toy():
    return trained_toy_model(), word_tokenizer()


def beam_search(model, tokenizer, sources, length_penalty, n=1):
    inputs = tokenizer(sources, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(
            input_ids=inputs.input_ids,
            attention_mask=inputs.attention_mask,
            num_beams=4,
            length_penalty=length_penalty,
            num_return_sequences=n,
            output_scores=True,
            return_dict_in_generate=True,
        )
    return out.sequences, out.sequences_scores


@pytest.mark.parametrize("length_penalty", [0.6, 1.0])
def test_the_score_of_a_beam_search_output_is_its_sequence_score(toy, length_penalty):
    model, tokenizer = toy
    sequences, expected = beam_search(model, tokenizer, SOURCES, length_penalty, n=2)
    targets = tokenizer.batch_decode(sequences, skip_special_tokens=True)
    # The texts encode back to the searched tokens (after the start token, up to and with </s>).
    for row, target in zip(sequences.tolist(), targets, strict=True):
        generated = row[1 : row.index(tokenizer.eos_token_id) + 1]
        assert tokenizer(target).input_ids == generated
    sources = [s for s in SOURCES for _ in range(2)]
    options = ScoringOptions(length_penalty=length_penalty, batch_size=5)  # padded batches
    scores = score_pairs(model, tokenizer, sources, targets, options)
    torch.testing.assert_close(
        torch.tensor([s.score for s in scores]), expected.float(), atol=1e-4, rtol=0
    )


def test_per_token_scores_sum_to_the_sum_score_and_the_normalized_one_divides_it(toy):
    model, tokenizer = toy
    targets = ["el perro grande corre", "la gato", "perro", "ver el azul", "el gato", "casa casa"]
    total = score_pairs(
        model, tokenizer, SOURCES, targets, ScoringOptions(score_type="sum", per_token=True)
    )
    normalized = score_pairs(model, tokenizer, SOURCES, targets, ScoringOptions(length_penalty=0.6))
    for target, s, n in zip(targets, total, normalized, strict=True):
        assert s.length == len(target.split()) + 1  # every word one token, then </s>
        assert len(s.token_log_probs) == s.length and all(p <= 0 for p in s.token_log_probs)
        assert s.score == pytest.approx(sum(s.token_log_probs), abs=1e-5) == s.log_prob
        assert n.score == pytest.approx(s.log_prob / s.length**0.6, abs=1e-6)
        assert n.token_log_probs is None  # only on request


def test_the_sum_score_is_minus_the_models_unsmoothed_cross_entropy(toy):
    model, tokenizer = toy
    source, target = SOURCES[1], "la rojo gato es en el casa"
    (result,) = score_pairs(model, tokenizer, [source], [target], ScoringOptions(score_type="sum"))
    labels = tokenizer([target], return_tensors="pt").input_ids
    with torch.inference_mode():
        loss = model(
            input_ids=tokenizer([source], return_tensors="pt").input_ids, labels=labels
        ).loss
    assert result.log_prob == pytest.approx(-loss.item() * labels.shape[1], abs=1e-4)


def test_batching_and_padding_do_not_change_the_scores_or_their_order(toy):
    model, tokenizer = toy
    targets = ["el perro grande corre", "la rojo gato", "", "ver", "el gato vio la perro", "casa"]
    alone = score_pairs(model, tokenizer, SOURCES, targets, ScoringOptions(batch_size=1))
    for options in (ScoringOptions(batch_size=32), ScoringOptions(max_tokens=20)):
        together = score_pairs(model, tokenizer, SOURCES, targets, options)
        for a, b in zip(alone, together, strict=True):
            assert a.length == b.length and a.score == pytest.approx(b.score, abs=1e-5)


def test_sources_and_targets_of_different_counts_are_refused(toy):
    model, tokenizer = toy
    with pytest.raises(ValueError, match="3 sources but 2 targets"):
        score_pairs(model, tokenizer, SOURCES[:3], ["el", "la"])


def test_scoring_options_refuse_an_unknown_score_type_or_an_empty_batch():
    with pytest.raises(ValueError, match="score_type"):
        ScoringOptions(score_type="mean")
    with pytest.raises(ValueError, match="batch_size"):
        ScoringOptions(batch_size=0)


# The tool


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, toy):
    model, tokenizer = toy
    folder = tmp_path_factory.mktemp("toy") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_lines(path, lines, ending="\n"):
    path.write_bytes("".join(line + ending for line in lines).encode("utf-8"))
    return path


def run(capsys, *argv):
    code = score_tool.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


TARGETS = ["el perro grande corre", "la rojo gato es en el casa", "perro", "ver", "el", "casa"]


def test_the_tool_writes_one_score_per_pair_as_the_library_computes_it(
    tmp_path, model_folder, toy, capsys
):
    source = write_lines(tmp_path / "src.en", SOURCES)
    target = write_lines(tmp_path / "tgt.es", TARGETS, ending="\r\n")  # CRLF: the same lines
    code, out, err = run(capsys, model_folder, "--source", source, "--target", target)
    assert code == 0, err
    lines = out.splitlines()
    expected = score_pairs(*toy, SOURCES, TARGETS)
    assert len(lines) == len(SOURCES)
    assert [float(line) for line in lines] == pytest.approx([e.score for e in expected], abs=1e-5)


def test_the_tools_per_token_lines_end_in_the_score_after_the_token_scores(
    tmp_path, model_folder, toy, capsys
):
    source = write_lines(tmp_path / "src.en", SOURCES)
    target = write_lines(tmp_path / "tgt.es", TARGETS)
    output = tmp_path / "scores.txt"
    code, out, err = run(
        capsys, model_folder, "--source", source, "--target", target, "--per_token",
        "--score_type", "sum", "--output", output,
    )  # fmt: skip
    assert code == 0 and out == "", err
    lines = output.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(TARGETS)
    for line, target in zip(lines, TARGETS, strict=True):
        tokens, score = line.split(" ||| ")
        token_scores = [float(p) for p in tokens.split()]
        assert len(token_scores) == len(target.split()) + 1  # </s> last
        assert float(score) == pytest.approx(sum(token_scores), abs=1e-5)


def test_files_of_different_line_counts_are_an_error_naming_the_first_unpaired_line(
    tmp_path, model_folder, capsys
):
    source = write_lines(tmp_path / "src.en", SOURCES)
    target = write_lines(tmp_path / "tgt.es", TARGETS[:4])
    code, out, err = run(capsys, model_folder, "--source", source, "--target", target)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert f"line 5 of {source} has no partner in {target}" in err


def test_a_missing_file_is_an_error_naming_it(tmp_path, model_folder, capsys):
    source = write_lines(tmp_path / "src.en", SOURCES)
    code, out, err = run(capsys, model_folder, "--source", source, "--target", tmp_path / "no.es")
    assert code == 2 and f"no target file {tmp_path / 'no.es'}" in err
    code, out, err = run(capsys, tmp_path / "nothing", "--source", source, "--target", source)
    assert code == 2 and "nothing" in err and len(err.strip().splitlines()) <= 2


def test_a_target_line_that_is_not_utf8_is_an_error_naming_it_after_the_pairs_before(
    tmp_path, model_folder, capsys
):
    source = write_lines(tmp_path / "src.en", SOURCES[:3])
    target = tmp_path / "tgt.es"
    target.write_bytes(b"el perro\nla casa\nca\xf1a\n")  # Latin-1 on line 3
    code, out, err = run(capsys, model_folder, "--source", source, "--target", target)
    assert code == 2
    assert f"{target}, line 3: not UTF-8" in err and "were scored" in err
    assert len(out.splitlines()) == 2  # the pairs before it
