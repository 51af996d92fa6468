"""The translation pipeline: output i belongs to input i, whatever the batch size and the number of
hypotheses per input; inputs it cannot translate are refused naming the item."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import WORDS, tiny_config, word_tokenizer
from vanilla_transformer import VanillaTransformerForConditionalGeneration, translation_pipeline

SENTENCES = [
    "the big dog",
    "a red house is small",
    "the cat saw the dog in the house",
    "green",
    "the small blue cat runs to the big red house and the dog ran",
]


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(tiny_config()).eval()
    return translation_pipeline(model, word_tokenizer())


def alone(pipe, text: str, n: int) -> list[str]:
    """The hypotheses of one input translated on its own (batch size 1)."""
    out = pipe([text], batch_size=1, num_beams=n, num_return_sequences=n, max_new_tokens=4)[0]
    return [r["translation_text"] for r in (out if n > 1 else [out])]


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    picks=st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=5),
    batch_size=st.integers(1, 4),
    n=st.integers(1, 3),
)
def test_output_i_belongs_to_input_i_for_any_batch_size_and_num_return_sequences(
    pipe, picks, batch_size, n
):
    outputs = pipe(
        picks, batch_size=batch_size, num_beams=n, num_return_sequences=n, max_new_tokens=4
    )
    assert len(outputs) == len(picks)
    for text, output in zip(picks, outputs, strict=True):
        hypotheses = output if n > 1 else [output]
        assert isinstance(output, list) == (n > 1)
        assert len(hypotheses) == n
        assert [r["translation_text"] for r in hypotheses] == alone(pipe, text, n)


def test_batched_hypotheses_are_not_shifted_to_the_next_input(pipe):
    """The reported case: 3 inputs, 2 hypotheses each, batch size 2."""
    texts = SENTENCES[:3]
    outputs = pipe(texts, batch_size=2, num_beams=2, num_return_sequences=2, max_new_tokens=4)
    assert [[r["translation_text"] for r in o] for o in outputs] == [
        alone(pipe, t, 2) for t in texts
    ]


def test_an_empty_list_translates_to_an_empty_list(pipe):
    assert pipe([]) == []
    assert pipe([], batch_size=3, num_return_sequences=2, num_beams=2) == []


@pytest.mark.parametrize("bad", [None, 7, b"bytes", ["nested"]])
def test_a_non_string_item_is_refused_naming_its_index(pipe, bad):
    with pytest.raises(ValueError, match=rf"inputs\[1\] is {type(bad).__name__}"):
        pipe([WORDS[0], bad, WORDS[1]])
