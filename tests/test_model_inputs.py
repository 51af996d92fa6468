"""Bad model inputs end in a ValueError that says what and where, never in silent wrong results."""

import pytest
import torch

from tests.conftest import (
    tiny_config,
    tiny_model,
)
from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.modeling_vanilla_transformer import CACHE_OUTPUT_FIELD


@pytest.fixture
def model():
    return VanillaTransformerForConditionalGeneration(tiny_config()).eval()


def ids(*shape, low=4, high=40):
    return torch.randint(low, high, shape)


@pytest.mark.parametrize(
    "make_kwargs, message",
    [
        (
            lambda: dict(input_ids=torch.tensor([[5, 999]]), labels=ids(1, 3)),
            r"input_ids holds ids in \[5, 999\]",
        ),
        (
            lambda: dict(input_ids=torch.tensor([[-1, 5]]), labels=ids(1, 3)),
            r"input_ids holds ids in \[-1, 5\]",
        ),
        (lambda: dict(input_ids=ids(1, 4), labels=torch.tensor([[5, -7]])), "labels holds ids"),
        (lambda: dict(input_ids=ids(1, 4), labels=torch.tensor([[5, 4000]])), "labels holds ids"),
        (
            lambda: dict(input_ids=ids(1, 4), decoder_input_ids=torch.tensor([[1, 77]])),
            "decoder_input_ids holds ids",
        ),
        (
            lambda: dict(input_ids=ids(2, 5), attention_mask=torch.ones(2, 3), labels=ids(2, 3)),
            r"attention_mask has shape \(2, 3\)",
        ),
        (
            lambda: dict(
                input_ids=ids(2, 5),
                decoder_input_ids=ids(2, 4),
                decoder_attention_mask=torch.ones(2, 2),
            ),
            "decoder_attention_mask has shape",
        ),
        (
            lambda: dict(input_ids=ids(0, 5), labels=ids(0, 3)),
            r"labels must be a non-empty .* shape \(0, 3\)",
        ),
        (lambda: dict(input_ids=ids(2, 0), labels=ids(2, 3)), r"non-empty .* shape \(2, 0\)"),
        (
            lambda: dict(
                input_ids=ids(2, 5),
                attention_mask=torch.tensor([[1] * 5, [0] * 5]),
                labels=ids(2, 3),
            ),
            r"rows \[1\] are all padding",
        ),
    ],
)
def test_bad_inputs_raise_value_error_saying_what_and_where(model, make_kwargs, message):
    with pytest.raises(ValueError, match=message):
        model(**make_kwargs())


def test_label_ignore_index_is_accepted(model):
    labels = ids(2, 4)
    labels[0, 2:] = -100
    assert torch.isfinite(model(input_ids=ids(2, 5), labels=labels).loss)


def test_generate_refuses_out_of_vocabulary_sources(model):
    with pytest.raises(ValueError, match="input_ids holds ids"):
        model.generate(torch.tensor([[5, 9999]]), max_new_tokens=3)


def test_key_norm_sum_stays_finite_when_a_decoder_row_is_all_padding():
    model = VanillaTransformerForConditionalGeneration(
        tiny_config(attention_scaling="key_norm_sum")
    ).eval()
    dmask = torch.ones(2, 4, dtype=torch.long)
    dmask[1] = 0
    out = model(input_ids=ids(2, 5), decoder_input_ids=ids(2, 4), decoder_attention_mask=dmask)
    assert torch.isfinite(out.logits).all()


def test_left_padded_sources_are_refused_rather_than_encoded_at_shifted_positions(model):
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    with pytest.raises(ValueError, match="right-padded"):
        model(input_ids=ids(2, 4), attention_mask=mask, labels=ids(2, 3))


def test_a_mask_that_is_neither_2d_nor_4d_is_refused(model):
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 4, 1\)"):
        model(input_ids=ids(2, 4), attention_mask=torch.ones(2, 4, 1), labels=ids(2, 3))


# ------------------------------------------------------------------------------------------------
# Model inputs beyond test_model_inputs.py
# ------------------------------------------------------------------------------------------------


def test_inputs_longer_than_a_learned_position_table_raise_naming_the_limit():
    model = tiny_model(position_encoding="learned", max_position_embeddings=8)
    with pytest.raises(ValueError, match="max_position_embeddings=8"):
        model(input_ids=torch.randint(4, 40, (1, 9)), decoder_input_ids=torch.ones(1, 2).long())


def test_float_token_ids_are_refused_before_the_embedding():
    model = tiny_model()
    with pytest.raises((ValueError, RuntimeError), match="(?i)long|int|dtype|indices"):
        model(input_ids=torch.rand(1, 4), decoder_input_ids=torch.ones(1, 2).long())


def test_labels_that_are_all_ignored_give_a_zero_loss_not_nan(model):
    labels = torch.full((2, 5), -100)
    out = model(input_ids=ids(2, 4), decoder_input_ids=ids(2, 5), labels=labels)
    assert out.loss.item() == 0.0
    out.loss.backward()  # and a zero, finite gradient: the Trainer may pass such a batch
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    counted = model(input_ids=ids(2, 4), labels=labels, num_items_in_batch=torch.tensor(0))
    assert counted.loss.item() == 0.0


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.int8, torch.float16])
def test_token_ids_of_a_non_integer_or_narrow_dtype_are_refused_naming_it(model, dtype):
    with pytest.raises(ValueError, match=rf"input_ids must hold token ids as torch.long .*{dtype}"):
        model(input_ids=ids(1, 4).to(dtype), decoder_input_ids=ids(1, 2))


@pytest.mark.parametrize("name", ["num_beams", "num_return_sequences"])
@pytest.mark.parametrize("value", [0, -1])
def test_generate_refuses_a_beam_or_sequence_count_below_one(model, name, value):
    with pytest.raises(ValueError, match=rf"{name} must be an integer >= 1, got {value}"):
        model.generate(ids(1, 4), **{name: value}, max_new_tokens=3)


def test_a_cache_reused_at_another_batch_size_is_refused(model):
    first = model(input_ids=ids(2, 4), decoder_input_ids=ids(2, 3), use_cache=True)
    cache = getattr(first, CACHE_OUTPUT_FIELD)
    with pytest.raises(ValueError, match="cache holds keys for a batch of 2 .* batch size 3"):
        model(input_ids=ids(3, 4), decoder_input_ids=ids(3, 1), cache=cache, use_cache=True)


@pytest.mark.parametrize(
    "make_mask",
    [
        lambda: torch.zeros(2, 1, 4, 4, dtype=torch.bool),
        lambda: torch.full((2, 1, 4, 4), torch.finfo(torch.float32).min),
    ],
    ids=["bool", "additive"],
)
def test_an_all_false_4d_mask_is_refused_naming_the_rows(model, make_mask):
    mask = make_mask()
    mask[0] = True if mask.dtype == torch.bool else 0.0  # row 0 sees everything, row 1 nothing
    with pytest.raises(
        ValueError, match=r"hides every key from every query of batch row\(s\) \[1\]"
    ):
        model(input_ids=ids(2, 4), attention_mask=mask, decoder_input_ids=ids(2, 3))
