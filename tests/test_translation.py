"""Specification of `vanilla_transformer.translation` and the `vanilla-transformer-translate` tool
(`vanilla_transformer.cli.translate`): stdin or a file in, stdout or a file out, one line per
line, batched by tokens and restored to the input order."""

import io
import os
import select
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO, run_python, tiny_config
from tests.conftest import SENTENCES as SHARED_SENTENCES
from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.cli import translate as translate_tool
from vanilla_transformer.recipe.tokenization import train_tokenizer
from vanilla_transformer.translation import (
    DecodingOptions,
    TokenizerMismatchError,
    check_tokenizer_matches,
    stream_hypotheses,
    token_batches,
    translate_lines,
    translate_stream,
)

# Two sentences, an empty line, two more.
SENTENCES = [*SHARED_SENTENCES[:2], "", SHARED_SENTENCES[2], SHARED_SENTENCES[4]]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A tiny model and its BPE tokenizer saved as a model folder."""
    tokenizer = train_tokenizer([s for s in SENTENCES if s] * 3, vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(
        tiny_config(vocab_size=len(tokenizer), max_position_embeddings=128)
    )
    model.generation_config.max_new_tokens = 8  # untrained: keep outputs short
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def loaded(model_folder):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    return AutoModelForSeq2SeqLM.from_pretrained(model_folder), AutoTokenizer.from_pretrained(
        model_folder
    )


def test_token_batches_cover_every_line_once_within_the_token_budget():
    lengths = [3, 9, 1, 9, 4, 20, 2]
    batches = token_batches(lengths, max_tokens=12)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) * longest <= 12 or len(batch) == 1  # an over-long line goes alone
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)  # longest first


def test_batched_translation_equals_one_at_a_time_in_input_order(loaded):
    model, tokenizer = loaded
    options = DecodingOptions(num_beams=2)
    batched = translate_lines(
        model, tokenizer, SENTENCES, DecodingOptions(num_beams=2, max_tokens=40)
    )
    alone = [translate_lines(model, tokenizer, [s], options)[0] for s in SENTENCES]
    assert batched == alone
    assert batched[2] == [""]  # an empty line stays an empty line: outputs stay aligned


def test_num_return_sequences_gives_that_many_outputs_per_line(loaded):
    model, tokenizer = loaded
    out = translate_lines(
        model, tokenizer, SENTENCES, DecodingOptions(num_beams=3, num_return_sequences=3)
    )
    assert [len(o) for o in out] == [3] * len(SENTENCES)
    sampled = translate_lines(
        model,
        tokenizer,
        SENTENCES[:2],
        DecodingOptions(do_sample=True, num_beams=1, top_p=0.9, num_return_sequences=2),
    )
    assert [len(o) for o in sampled] == [2, 2]


def test_more_return_sequences_than_beams_is_an_error_naming_both():
    with pytest.raises(ValueError, match=r"num_return_sequences \(3\).*num_beams \(2\)"):
        DecodingOptions(num_beams=2, num_return_sequences=3)


def _translate(args, **kwargs):
    return run_python(
        "-m", "vanilla_transformer.cli.translate", *args, cwd=REPO, timeout=240, **kwargs
    )


def test_translate_tool_reads_stdin_and_writes_one_line_per_input_to_stdout(model_folder, loaded):
    result = _translate([model_folder, "--num_beams", "2"], input="\n".join(SENTENCES) + "\n")
    assert result.returncode == 0, result.stderr
    expected = translate_lines(*loaded, SENTENCES, DecodingOptions(num_beams=2))
    assert result.stdout.splitlines() == [o[0] for o in expected]


def test_translate_tool_translates_a_file_into_a_file_with_a_progress_bar(tmp_path, model_folder):
    source, target = tmp_path / "in.en", tmp_path / "out.es"
    source.write_text("\n".join(SENTENCES) + "\n")
    args = [model_folder, "--input", source, "--output", target, "--num_beams", "1"]
    result = _translate([*args, "--num_return_sequences", "1"])
    assert result.returncode == 0, result.stderr
    assert len(target.read_text().splitlines()) == len(SENTENCES)
    assert "translate" in result.stderr and "line" in result.stderr  # the tqdm bar
    assert result.stdout == ""


def test_token_batches_hold_at_most_batch_size_sentences():
    batches = token_batches([5] * 10, max_tokens=1000, batch_size=3)
    assert [len(b) for b in batches] == [3, 3, 3, 1]


def test_translate_stream_equals_translate_lines_whatever_the_window(loaded):
    options = DecodingOptions(num_beams=2, batch_size=2)
    expected = translate_lines(*loaded, SENTENCES, options)
    for window in (1, 2, 3, 100):
        assert list(translate_stream(*loaded, iter(SENTENCES), options, window)) == expected


def test_stream_arguments_after_the_window_are_keywords_so_a_positional_device_is_refused(loaded):
    """`prefixes` is the streaming functions' third option: a device passed where it stood in
    earlier releases is a TypeError, never read as prefixes."""
    greedy = DecodingOptions(num_beams=1)
    with pytest.raises(TypeError):
        list(translate_stream(*loaded, iter(SENTENCES), greedy, 2, "cpu"))
    with pytest.raises(TypeError):
        list(stream_hypotheses(*loaded, iter(SENTENCES), greedy, 2, "cpu"))


def test_translate_stream_translates_the_lines_read_before_a_reading_error(loaded):
    def lines():
        yield from SENTENCES[:2]
        raise ValueError("line 3 is broken")

    outputs = []
    with pytest.raises(ValueError, match="line 3"):
        for texts in translate_stream(*loaded, lines(), DecodingOptions(num_beams=1), window=10):
            outputs.append(texts)
    assert outputs == translate_lines(*loaded, SENTENCES[:2], DecodingOptions(num_beams=1))


def test_a_tokenizer_of_another_vocabulary_or_other_special_ids_is_refused(loaded):
    model, tokenizer = loaded
    check_tokenizer_matches(model.config, tokenizer)  # its own tokenizer passes
    bigger = tiny_config(vocab_size=len(tokenizer) + 7)
    with pytest.raises(
        TokenizerMismatchError, match=rf"{len(tokenizer)} tokens.*{bigger.vocab_size}"
    ):
        check_tokenizer_matches(bigger, tokenizer)
    other_pad = tiny_config(vocab_size=len(tokenizer), pad_token_id=3)
    with pytest.raises(TokenizerMismatchError, match="pad_token_id"):
        check_tokenizer_matches(other_pad, tokenizer)


def _run_main(argv, stdin: bytes = b"", monkeypatch=None):
    """The tool in this process: (exit code) with stdin fed from bytes."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    return translate_tool.main([str(a) for a in argv])


def test_output_line_i_is_input_line_i_whatever_unicode_calls_a_line_break(
    model_folder, loaded, monkeypatch, capsys
):
    # \f, U+0085, U+2028, \x1c and a lone \r end a line for str.splitlines(), not for the tool.
    lines = ["a red\fhouse", "the cat\x85runs", "the dog\u2028saw", "a\x1cred house", "the\rcat"]
    data = "\n".join(lines).encode() + b"\r\n"  # a trailing \r\n counts as \n
    assert _run_main([model_folder, "--num_beams", "1"], data, monkeypatch) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == len(lines)
    expected = translate_lines(*loaded, lines, DecodingOptions(num_beams=1))
    assert out.split("\n")[:-1] == [o[0] for o in expected]


def test_a_crlf_file_translates_as_its_lf_twin(model_folder, monkeypatch, capsys):
    lf = "\n".join(SENTENCES).encode() + b"\n"
    assert _run_main([model_folder, "--num_beams", "1"], lf, monkeypatch) == 0
    from_lf = capsys.readouterr().out
    crlf = b"\xef\xbb\xbf" + lf.replace(b"\n", b"\r\n")  # and a BOM at the start is dropped
    assert _run_main([model_folder, "--num_beams", "1"], crlf, monkeypatch) == 0
    assert capsys.readouterr().out == from_lf


def test_invalid_utf8_is_an_error_naming_the_line_after_writing_the_lines_before(
    model_folder, loaded, monkeypatch, capsys
):
    data = b"a red house\nthe big dog\nthe \xff cat\nthe house\n"
    assert _run_main([model_folder, "--num_beams", "1"], data, monkeypatch) == 2
    captured = capsys.readouterr()
    assert "stdin, line 3: not UTF-8" in captured.err
    assert "Traceback" not in captured.err
    expected = translate_lines(
        *loaded, ["a red house", "the big dog"], DecodingOptions(num_beams=1)
    )
    assert captured.out.split("\n")[:-1] == [o[0] for o in expected]


@pytest.mark.parametrize(
    "content",
    ["caf\xe9 del r\xedo\n".encode("latin-1"), bytes(range(256))],
    ids=["latin1", "binary"],
)
def test_a_latin1_or_binary_file_is_an_error_naming_the_file(
    tmp_path, model_folder, monkeypatch, capsys, content
):
    source = tmp_path / "verses.en"
    source.write_bytes(content)
    assert _run_main([model_folder, "--input", source], b"", monkeypatch) == 2
    err = capsys.readouterr().err
    assert f"{source}, line 1: " in err and ("not UTF-8" in err or "binary" in err)


def test_a_missing_model_or_input_file_is_an_error_naming_it(
    tmp_path, model_folder, monkeypatch, capsys
):
    assert _run_main([tmp_path / "nowhere"], b"a\n", monkeypatch) == 2
    assert f"no model at {tmp_path / 'nowhere'}" in capsys.readouterr().err
    assert _run_main([model_folder, "--input", tmp_path / "no.en"], b"", monkeypatch) == 2
    assert f"no input file {tmp_path / 'no.en'}" in capsys.readouterr().err


def test_a_ctranslate2_folder_is_refused_saying_how_to_use_it(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "ct2"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"\0" * 16)
    (folder / "shared_vocabulary.json").write_text("[]")
    assert _run_main([folder], b"a\n", monkeypatch) == 2
    err = capsys.readouterr().err
    assert "CTranslate2 export" in err and "CTranslate2Translator" in err
    assert "CheckpointError" not in err


def test_a_model_folder_with_another_tokenizer_is_refused(
    tmp_path, model_folder, monkeypatch, capsys
):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in model_folder.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    other = train_tokenizer(["one two three four five six"] * 3, vocab_size=280, min_frequency=1)
    other.save_pretrained(folder)
    assert _run_main([folder], b"a red house\n", monkeypatch) == 2
    assert "the tokenizer does not match the model" in capsys.readouterr().err


def test_help_shows_the_batch_flags_and_their_defaults(capsys):
    with pytest.raises(SystemExit):
        translate_tool.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag in ("--batch_size", "--max_tokens", "--fast_cpu"):
        assert flag in help_text
    assert "(default: 32)" in help_text or "default: 32" in help_text


@pytest.mark.slow  # an inductor compilation in a subprocess (~45 s)
def test_the_tool_on_a_file_with_fast_cpu_fp32_matches_the_plain_path(tmp_path, model_folder):
    source, plain, fast = tmp_path / "in.en", tmp_path / "plain.es", tmp_path / "fast.es"
    source.write_text("\n".join(SENTENCES) + "\n")
    common = [model_folder, "--input", source, "--num_beams", "1", "--device", "cpu"]
    assert _translate([*common, "--output", plain]).returncode == 0
    result = _translate([*common, "--output", fast, "--fast_cpu", "fp32"])
    assert result.returncode == 0, result.stderr
    assert fast.read_text() == plain.read_text()


def test_stdin_is_translated_as_lines_arrive(model_folder):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = [model_folder, "--num_beams", "1", "--batch_size", "2"]
    with subprocess.Popen(
        [sys.executable, "-m", "vanilla_transformer.cli.translate", *map(str, args)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env,
    ) as proc:  # fmt: skip
        proc.stdin.write(b"a red house\nthe big dog\n")  # one batch; stdin stays open
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 180)
        assert ready, "no output before stdin was closed"
        first = proc.stdout.readline()
        proc.stdin.close()
        rest = proc.stdout.read()
        assert proc.wait(60) == 0
    assert (first + rest).count(b"\n") == 2


def test_progress_counts_the_lines_of_a_file(tmp_path, model_folder):
    source = tmp_path / "in.en"
    source.write_text("\n".join(SENTENCES * 3) + "\n")
    result = _translate(
        [model_folder, "--input", source, "--output", tmp_path / "o", "--num_beams", "1"]
    )
    assert result.returncode == 0, result.stderr
    assert f"{3 * len(SENTENCES)}/{3 * len(SENTENCES)}" in result.stderr


def test_ctrl_c_in_the_middle_of_a_file_keeps_every_finished_window(tmp_path, model_folder, loaded):
    lines = [SENTENCES[i % 5] for i in range(4000)]
    source, target = tmp_path / "in.en", tmp_path / "out.es"
    source.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = [model_folder, "--input", source, "--output", target, "--num_beams", "1"]
    args += ["--batch_size", "1"]  # windows of 8 lines, written as each finishes
    with subprocess.Popen(
        [sys.executable, "-m", "vanilla_transformer.cli.translate", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env,
    ) as proc:  # fmt: skip
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (
            not target.exists() or target.read_bytes().count(b"\n") < 16
        ):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    written = target.read_text().split("\n")
    assert written[-1] == ""  # whole lines only
    written = written[:-1]
    assert 16 <= len(written) < len(lines) and len(written) % 8 == 0
    expected = translate_lines(*loaded, lines[:16], DecodingOptions(num_beams=1))
    assert written[:16] == [o[0] for o in expected]


@pytest.mark.parametrize(
    "bad", [{"length_penalty": float("nan")}, {"batch_size": 0}, {"max_tokens": 0}]
)
def test_decoding_options_refuse_a_nan_penalty_or_an_empty_batch(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        DecodingOptions(**bad)
