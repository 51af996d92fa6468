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


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("pipeline-model")
    VanillaTransformerForConditionalGeneration(tiny_config()).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


def test_the_registered_task_loads_a_folder_or_a_model_without_remote_code(pipe, model_folder):
    from transformers import pipeline

    import vanilla_transformer

    expected = pipe(SENTENCES[:2], num_beams=2, max_new_tokens=4)
    from_folder = pipeline(vanilla_transformer.PIPELINE_TASK, model=str(model_folder))
    assert type(from_folder).__name__ == "TranslationPipeline"
    assert from_folder(SENTENCES[:2], num_beams=2, max_new_tokens=4) == expected
    from_object = pipeline(
        vanilla_transformer.PIPELINE_TASK, model=pipe.model, tokenizer=pipe.tokenizer
    )
    assert from_object(SENTENCES[:2], num_beams=2, max_new_tokens=4) == expected


def test_the_removed_translation_task_names_the_ways_that_work(pipe):
    from transformers import pipeline

    with pytest.raises(KeyError, match=r"translation_pipeline.*vanilla-translation"):
        pipeline("translation", model=pipe.model, tokenizer=pipe.tokenizer)


@pytest.mark.parametrize("beams", [1, 3])
def test_scores_are_returned_when_asked_per_beam(pipe, beams):
    kwargs = dict(num_beams=beams, num_return_sequences=beams, max_new_tokens=4)
    plain = pipe(SENTENCES[:2], **kwargs)
    scored = pipe(SENTENCES[:2], output_scores=True, return_dict_in_generate=True, **kwargs)
    for plain_out, scored_out in zip(plain, scored, strict=True):
        plain_out = plain_out if beams > 1 else [plain_out]
        scored_out = scored_out if beams > 1 else [scored_out]
        assert [r["translation_text"] for r in scored_out] == [
            r["translation_text"] for r in plain_out
        ]
        scores = [r["score"] for r in scored_out]
        assert all(isinstance(s, float) and s <= 0 for s in scores)
        assert scores == sorted(scores, reverse=True)  # best first


def test_beam_scores_are_generates_sequences_scores(pipe):
    inputs = pipe.tokenizer([SENTENCES[1]], return_tensors="pt")
    out = pipe.model.generate(
        **inputs, num_beams=3, max_new_tokens=4, output_scores=True, return_dict_in_generate=True
    )
    record = pipe(
        SENTENCES[1],
        num_beams=3,
        max_new_tokens=4,
        output_scores=True,
        return_dict_in_generate=True,
    )
    assert record[0]["score"] == pytest.approx(out.sequences_scores[0].item())


def test_a_lone_surrogate_is_a_value_error_naming_it(pipe):
    with pytest.raises(ValueError, match=r"inputs\[1\] holds a lone surrogate"):
        pipe(["the dog", "the \udc80 cat"])
    with pytest.raises(ValueError, match="lone surrogate"):
        pipe("the \ud800 dog")
