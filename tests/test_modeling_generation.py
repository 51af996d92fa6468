"""Generation and today's transformers conventions: the `cache` argument, tuple outputs, every
generation mode that runs offline, and static caches. Each test names the property it guards."""

import warnings

import pytest
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from tests.conftest import tiny_config
from vanilla_transformer import VanillaTransformerForConditionalGeneration, VanillaTransformerModel
from vanilla_transformer.modeling_vanilla_transformer import CACHE_OUTPUT_FIELD

GREEDY = dict(num_beams=1, do_sample=False, max_new_tokens=12, min_new_tokens=12)


def build(**overrides) -> VanillaTransformerForConditionalGeneration:
    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(tiny_config(**overrides)).eval()
    # Sharpen the random model's distributions so greedy/beam choices are not near-ties that
    # float noise could flip between two equivalent computations.
    with torch.no_grad():
        model.model.shared.weight.mul_(4.0)
    return model


def batch():
    x = torch.randint(4, 30, (3, 7))
    mask = torch.ones_like(x)
    x[2, 5:], mask[2, 5:] = 0, 0  # one right-padded source
    return x, mask


def fresh_cache(config) -> EncoderDecoderCache:
    return EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))


# -- the cache argument -----------------------------------------------------------------------------


def test_forward_takes_cache_and_returns_it_under_the_installed_release_field_name():
    model = build()
    x, mask = batch()
    y = torch.full((3, 1), model.config.decoder_start_token_id)
    cache = fresh_cache(model.config)
    out = model(input_ids=x, attention_mask=mask, decoder_input_ids=y, cache=cache, use_cache=True)
    assert getattr(out, CACHE_OUTPUT_FIELD) is cache
    assert cache.get_seq_length() == 1  # the passed cache was used, not a fresh one


@pytest.mark.parametrize("part", ["translation_model", "bare_model", "decoder"])
def test_the_old_past_key_values_name_warns_as_transformers_does_and_gives_the_same_outputs(part):
    """transformers 5.24 renamed the cache argument: the old name still works, with the notice
    transformers' own models give (a FutureWarning naming `past_key_values` as deprecated)."""
    model = build()
    x, mask = batch()
    y = torch.full((3, 1), model.config.decoder_start_token_id)
    if part == "decoder":
        module = model.get_decoder()
        encoder_states = model.get_encoder()(input_ids=x, attention_mask=mask).last_hidden_state
        inputs = dict(input_ids=y, encoder_hidden_states=encoder_states)
        inputs["encoder_attention_mask"] = mask
    else:
        module = model if part == "translation_model" else model.model
        inputs = dict(input_ids=x, attention_mask=mask, decoder_input_ids=y)
    old_name_cache, new_name_cache = fresh_cache(model.config), fresh_cache(model.config)
    expected = module(**inputs, cache=new_name_cache, use_cache=True)
    if CACHE_OUTPUT_FIELD == "cache":  # 5.24+: our forwards announce the rename
        with pytest.warns(FutureWarning, match="`past_key_values` is deprecated"):
            got = module(**inputs, past_key_values=old_name_cache, use_cache=True)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            got = module(**inputs, past_key_values=old_name_cache, use_cache=True)
    assert old_name_cache.get_seq_length() == 1  # the cache passed under the old name was used
    assert torch.equal(got[0], expected[0])


@pytest.mark.parametrize(
    "cls", [VanillaTransformerModel, VanillaTransformerForConditionalGeneration]
)
def test_return_dict_false_gives_tuples_from_the_outer_forwards(cls):
    torch.manual_seed(0)
    model = cls(tiny_config()).eval()
    x, mask = batch()
    y = torch.randint(4, 30, (3, 5))
    as_dict = model(input_ids=x, attention_mask=mask, decoder_input_ids=y)
    as_tuple = model(input_ids=x, attention_mask=mask, decoder_input_ids=y, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict[0], rtol=0, atol=0)
    # A tuple from the encoder is accepted back as encoder_outputs.
    encoder_tuple = model.get_encoder()(input_ids=x, attention_mask=mask, return_dict=False)
    again = model(encoder_outputs=encoder_tuple, attention_mask=mask, decoder_input_ids=y)
    torch.testing.assert_close(again[0], as_dict[0], rtol=0, atol=0)


def test_get_encoder_takes_the_modality_argument_transformers_passes():
    model = build()
    assert model.get_encoder() is model.model.encoder
    assert model.get_encoder(modality=None) is model.model.encoder
    assert model.get_encoder(modality="image") is not model.model.encoder  # no image encoder


def test_a_decoder_called_without_encoder_states_raises_instead_of_attending_to_itself():
    model = build()
    decoder = model.get_decoder()
    y = torch.randint(4, 30, (2, 7))
    cache = fresh_cache(model.config)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        decoder(input_ids=y, cache=cache, use_cache=True)
    assert cache.get_seq_length() == 0  # nothing was written into the cache


# -- generation modes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode",
    [
        dict(num_beams=1, do_sample=False),
        dict(num_beams=4, do_sample=False, length_penalty=0.6, early_stopping=True),
        dict(num_beams=1, do_sample=True, top_k=10),
        dict(num_beams=3, do_sample=True, top_k=10),
    ],
    ids=["greedy", "beam", "sampling", "beam_sample"],
)
def test_every_generation_mode_gives_the_same_tokens_with_and_without_the_cache(mode):
    model = build()
    x, mask = batch()
    kwargs = dict(attention_mask=mask, max_new_tokens=12, **mode)
    torch.manual_seed(1)
    cached = model.generate(x, use_cache=True, **kwargs)
    torch.manual_seed(1)
    uncached = model.generate(x, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_the_cross_attention_mask_is_built_once_per_generate_call_not_per_token(
    num_beams, monkeypatch
):
    """Per-step work the default path no longer does (the padded-source tokens themselves are
    checked against the uncached path in the test above). A build turns the 2D source padding into
    the attention mask; later steps receive that prepared mask, which the helper passes through."""
    from vanilla_transformer import modeling_vanilla_transformer as modeling

    builds = []
    real = modeling.create_bidirectional_mask

    def counting(**kwargs):
        padding = kwargs.get("attention_mask")
        if isinstance(padding, torch.Tensor) and padding.dim() == 2:
            builds.append(kwargs.get("encoder_hidden_states") is not None)
        return real(**kwargs)

    monkeypatch.setattr(modeling, "create_bidirectional_mask", counting)
    model = build()
    x, mask = batch()
    model.generate(x, attention_mask=mask, **{**GREEDY, "num_beams": num_beams})
    # encoder once; cross-attention at the first step and once for the later 11 tokens
    assert builds.count(False) == 1
    assert builds.count(True) == 2


def test_the_cache_holds_only_what_transformers_puts_in_it():
    """Nothing of the model's is stored on transformers' cache object: torch.export and
    transformers' exporters flatten the cache by its attributes, inputs and outputs alike."""
    model = build()
    x, mask = batch()
    out = model(input_ids=x, attention_mask=mask, decoder_input_ids=x[:, :3], use_cache=True)
    fresh = EncoderDecoderCache(DynamicCache(), DynamicCache())
    assert set(vars(getattr(out, CACHE_OUTPUT_FIELD))) == set(vars(fresh))


# transformers 5.24's candidate generator calls generate() with a generation_config plus
# generation kwargs, which that release itself deprecates.
@pytest.mark.transformers_internal_deprecation("Passing `generation_config` together with")
def test_assisted_decoding_gives_the_greedy_tokens():
    model = build()
    assistant = VanillaTransformerForConditionalGeneration(tiny_config(decoder_layers=1)).eval()
    x, mask = batch()
    for row in range(x.shape[0]):  # transformers' assisted decoding takes one sequence at a time
        src, src_mask = (
            x[row : row + 1, : int(mask[row].sum())],
            mask[row : row + 1, : int(mask[row].sum())],
        )
        greedy = model.generate(src, attention_mask=src_mask, **GREEDY)
        assisted = model.generate(src, attention_mask=src_mask, assistant_model=assistant, **GREEDY)
        assert torch.equal(assisted, greedy)


def test_prompt_lookup_decoding_gives_the_greedy_tokens():
    model = build()
    x, mask = batch()
    src, src_mask = x[:1], mask[:1]
    greedy = model.generate(src, attention_mask=src_mask, **GREEDY)
    lookup = model.generate(src, attention_mask=src_mask, prompt_lookup_num_tokens=3, **GREEDY)
    assert torch.equal(lookup, greedy)


def test_scores_attentions_and_hidden_states_come_back_with_the_cache_on():
    model = build()
    model.set_attn_implementation("eager")  # SDPA kernels return no attention weights
    x, mask = batch()
    kwargs = dict(
        attention_mask=mask,
        output_scores=True,
        output_attentions=True,
        output_hidden_states=True,
        return_dict_in_generate=True,
        **GREEDY,
    )
    cached = model.generate(x, use_cache=True, **kwargs)
    uncached = model.generate(x, use_cache=False, **kwargs)
    steps = GREEDY["max_new_tokens"]
    assert len(cached.scores) == steps and len(cached.decoder_attentions) == steps
    assert len(cached.decoder_hidden_states) == steps and len(cached.cross_attentions) == steps
    n = model.config.decoder_layers
    assert len(cached.decoder_attentions[-1]) == n and len(cached.cross_attentions[-1]) == n
    assert len(cached.encoder_attentions) == model.config.encoder_layers
    for a, b in zip(cached.scores, uncached.scores, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # With the cache each step's self-attention covers only the new query over all keys so far.
    assert cached.decoder_attentions[-1][0].shape[-2:] == (1, steps)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_static_cache_generation_equals_the_dynamic_cache(num_beams):
    model = build()
    x, mask = batch()
    kwargs = dict(attention_mask=mask, num_beams=num_beams, do_sample=False, max_new_tokens=12)
    dynamic = model.generate(x, **kwargs)
    static = model.generate(x, cache_implementation="static", **kwargs)
    assert torch.equal(dynamic, static)


def test_key_norm_sum_static_cache_generation_equals_the_dynamic_cache():
    model = build(attention_scaling="key_norm_sum")
    x, mask = batch()
    dynamic = model.generate(x, attention_mask=mask, **GREEDY)
    static = model.generate(x, attention_mask=mask, cache_implementation="static", **GREEDY)
    assert torch.equal(dynamic, static)


def test_default_output_limit_follows_inputs_embeds_too():
    model = build()
    x, mask = batch()
    embeds = model.get_input_embeddings()(x)
    out = model.generate(inputs_embeds=embeds, attention_mask=mask, num_beams=1, min_new_tokens=57)
    assert out.shape[1] == 1 + x.shape[1] + 50  # start token + source length + 50 (Section 6.1)


def test_learned_positions_cap_the_default_limit_and_refuse_an_explicit_one_up_front():
    model = build(position_encoding="learned", max_position_embeddings=20)
    x, mask = batch()  # 7-token sources: the paper's default would be 57 new tokens
    out = model.generate(x, attention_mask=mask, num_beams=1, min_new_tokens=20)
    assert out.shape[1] == 1 + 20
    with pytest.raises(ValueError, match="max_position_embeddings=20"):
        model.generate(x, attention_mask=mask, max_new_tokens=21)
