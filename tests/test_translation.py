"""Specification of `vanilla_transformer.translation` and the `vanilla-transformer-translate` tool
(`vanilla_transformer.cli.translate`): stdin or a file in, stdout or a file out, one line per
line, batched by tokens and restored to the input order."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, tiny_config
from tests.conftest import SENTENCES as SHARED_SENTENCES
from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.recipe.tokenization import train_tokenizer
from vanilla_transformer.translation import GenerationOptions, token_batches, translate_lines

# Two sentences, an empty line, two more.
SENTENCES = [*SHARED_SENTENCES[:2], "", SHARED_SENTENCES[2], SHARED_SENTENCES[4]]
SENTENCES = [
    "the big dog saw the small cat in the house",
    "a red house",
    "",
    "the cat runs to the blue house and the dog runs too",
    "el perro vio al gato",
]


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
    options = GenerationOptions(num_beams=2)
    batched = translate_lines(model, tokenizer, SENTENCES, options, max_tokens=40)
    alone = [translate_lines(model, tokenizer, [s], options)[0] for s in SENTENCES]
    assert batched == alone
    assert batched[2] == [""]  # an empty line stays an empty line: outputs stay aligned


def test_num_return_sequences_gives_that_many_outputs_per_line(loaded):
    model, tokenizer = loaded
    out = translate_lines(
        model, tokenizer, SENTENCES, GenerationOptions(num_beams=3, num_return_sequences=3)
    )
    assert [len(o) for o in out] == [3] * len(SENTENCES)
    sampled = translate_lines(
        model,
        tokenizer,
        SENTENCES[:2],
        GenerationOptions(do_sample=True, num_beams=1, top_p=0.9, num_return_sequences=2),
    )
    assert [len(o) for o in sampled] == [2, 2]


def test_more_return_sequences_than_beams_is_an_error_naming_both():
    with pytest.raises(ValueError, match=r"num_return_sequences \(3\).*num_beams \(2\)"):
        GenerationOptions(num_beams=2, num_return_sequences=3)


def _translate(args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "vanilla_transformer.cli.translate", *map(str, args)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=240, **kwargs,
    )  # fmt: skip


def test_translate_tool_reads_stdin_and_writes_one_line_per_input_to_stdout(model_folder, loaded):
    result = _translate([model_folder, "--num_beams", "2"], input="\n".join(SENTENCES) + "\n")
    assert result.returncode == 0, result.stderr
    expected = translate_lines(*loaded, SENTENCES, GenerationOptions(num_beams=2))
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
