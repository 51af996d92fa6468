"""Properties that hold for every small configuration, shape and padding pattern (hypothesis).

Each example draws a tiny model (d_model in {8, 16, 32}, heads dividing it, 1-2 layers per stack,
both attention scalings, both norm placements, both position encodings) and a right-padded batch.
"""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import incremental_logits, tiny_config
from vanilla_transformer import VanillaTransformerForConditionalGeneration

VOCAB = 24
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def models(draw):
    d_model = draw(st.sampled_from([8, 16, 32]))
    heads = [h for h in (1, 2, 4, 8) if d_model % h == 0]
    config = tiny_config(
        vocab_size=VOCAB,
        d_model=d_model,
        encoder_attention_heads=draw(st.sampled_from(heads)),
        decoder_attention_heads=draw(st.sampled_from(heads)),
        encoder_layers=draw(st.integers(1, 2)),
        decoder_layers=draw(st.integers(1, 2)),
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        attention_scaling=draw(st.sampled_from(["sqrt_dk", "key_norm_sum"])),
        norm_first=draw(st.booleans()),
        position_encoding=draw(st.sampled_from(["sinusoidal", "learned"])),
        tie_word_embeddings=draw(st.booleans()),
        max_position_embeddings=32,
    )
    attn = draw(st.sampled_from(["eager", "sdpa"]))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    return VanillaTransformerForConditionalGeneration._from_config(
        config, attn_implementation=attn
    ).eval()


@st.composite
def batches(draw):
    """Source/target ids without special tokens; every row right-padded to its own length >= 1."""
    B = draw(st.integers(1, 3))
    S = draw(st.integers(1, 7))
    T = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    src_lengths = draw(st.lists(st.integers(1, S), min_size=B, max_size=B))
    tgt_lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, VOCAB, (B, S), generator=g)
    y = torch.randint(4, VOCAB, (B, T), generator=g)
    src_mask = (torch.arange(S)[None] < torch.tensor(src_lengths)[:, None]).long()
    tgt_mask = (torch.arange(T)[None] < torch.tensor(tgt_lengths)[:, None]).long()
    return x * src_mask, src_mask, y * tgt_mask, tgt_mask


def forward(model, data, **kwargs):
    """The model on a drawn batch, both padding masks given."""
    x, src_mask, y, tgt_mask = data
    return model(
        input_ids=x,
        attention_mask=src_mask,
        decoder_input_ids=y,
        decoder_attention_mask=tgt_mask,
        **kwargs,
    )


@SETTINGS
@given(model=models(), data=batches())
def test_logits_and_loss_are_finite_for_any_config_shape_and_padding(model, data):
    _, _, y, tgt_mask = data
    with torch.no_grad():
        out = forward(model, data, labels=y.masked_fill(tgt_mask == 0, -100))
    assert torch.isfinite(out.logits).all()
    assert torch.isfinite(out.loss)


@SETTINGS
@given(model=models(), data=batches())
def test_incremental_decoding_with_cache_equals_the_full_forward(model, data):
    x, src_mask, y, _ = data
    with torch.no_grad():
        full = model(input_ids=x, attention_mask=src_mask, decoder_input_ids=y).logits
        stepped, _ = incremental_logits(model, x, src_mask, y)
    torch.testing.assert_close(stepped, full, rtol=0, atol=1e-4)


@SETTINGS
@given(model=models(), data=batches())
def test_a_padded_row_equals_the_same_row_alone(model, data):
    x, src_mask, y, tgt_mask = data
    with torch.no_grad():
        together = forward(model, data).logits
        for row in range(x.shape[0]):
            s, t = int(src_mask[row].sum()), int(tgt_mask[row].sum())
            alone = model(input_ids=x[row : row + 1, :s], decoder_input_ids=y[row : row + 1, :t])
            # Only the real target positions are compared: padded ones are never read.
            torch.testing.assert_close(together[row, :t], alone.logits[0], rtol=0, atol=1e-4)


@SETTINGS
@given(model=models(), data=batches(), new_tokens=st.integers(1, 6))
def test_greedy_generation_with_cache_equals_without(model, data, new_tokens):
    x, src_mask, _, _ = data
    kwargs = dict(attention_mask=src_mask, num_beams=1, do_sample=False, max_new_tokens=new_tokens)
    cached = model.generate(x, use_cache=True, **kwargs)
    uncached = model.generate(x, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
