"""The benchmark compares like with like, counts FLOPs right, and the fast inference paths keep the
model's outputs. Correctness only: no timing is asserted."""

import pytest
import torch

from research import benchmarking as bm
from vanilla_transformer.inference import optimize_for_cpu_inference

TINY = dict(vocab_size=97, d_model=16, layers=2, heads=4, ffn_dim=32)


@pytest.fixture(scope="module")
def models():
    ours, marian = bm.build_models(TINY)
    return ours.eval(), marian.eval()


def test_both_models_have_the_claimed_identical_shape(models):
    ours, marian = models
    oc, mc = ours.config, marian.config
    for field in (
        "vocab_size",
        "d_model",
        "encoder_layers",
        "decoder_layers",
        "encoder_attention_heads",
        "decoder_attention_heads",
        "encoder_ffn_dim",
        "decoder_ffn_dim",
        "activation_function",
        "scale_embedding",
        "tie_word_embeddings",
    ):
        assert getattr(oc, field) == getattr(mc, field), field
    assert ours.config._attn_implementation == marian.config._attn_implementation == "sdpa"
    assert ours.lm_head.weight is ours.model.shared.weight
    assert marian.lm_head.weight is marian.model.shared.weight


def test_parameter_counts_differ_exactly_by_marians_biases(models):
    ours, marian = models
    d, f, n, v = TINY["d_model"], TINY["ffn_dim"], TINY["layers"], TINY["vocab_size"]
    # Ours: no projection biases; Marian: a bias on each of the 4 (encoder) / 8 (decoder)
    # attention projections. final_logits_bias is a buffer, Marian's sinusoids are frozen.
    assert bm.count_parameters(marian) - bm.count_parameters(ours) == 4 * d * n + 8 * d * n
    encoder_layer = 4 * d * d + 2 * d * f + f + d + 2 * 2 * d  # + FFN biases + 2 LayerNorms
    decoder_layer = 8 * d * d + 2 * d * f + f + d + 3 * 2 * d
    assert bm.count_parameters(ours) == v * d + n * (encoder_layer + decoder_layer)


def test_flop_count_matches_a_hand_computation():
    config, _ = bm.model_configs(TINY)
    B, S, T = 2, 5, 3
    d, f, n, v = 16, 32, 2, 97
    # Per source token through the encoder: 2 FLOPs per weight of W^Q W^K W^V W^O W_1 W_2.
    encoder = 2 * S * n * (4 * d * d + 2 * d * f)
    # Per target token: self + cross attention projections, FFN, and the output projection.
    decoder = 2 * T * (n * (8 * d * d + 2 * d * f) + d * v)
    # QK^T and AV: 2 products x 2 FLOPs x d per (query, key) pair, full (unmasked) matrices.
    attention = n * (4 * d * S * S + 4 * d * T * T + 4 * d * T * S)
    assert bm.forward_flops(config, B, S, T) == B * (encoder + decoder + attention)
    assert bm.training_flops(config, B, S, T) == 3 * B * (encoder + decoder + attention)


def test_timing_alternates_runs_in_rounds():
    calls = []
    times = bm.alternate(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2, warmup=1
    )
    assert calls == ["a", "b"] * 3
    assert [len(t) for t in times.values()] == [2, 2]


def test_padded_batch_masks_padding_and_ignores_padded_labels():
    batch = bm.padded_batch([([5, 6, 7], [8]), ([9], [10, 11])])
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[8, -100], [10, 11]]


def test_beam_search_skipping_the_cross_attention_reorder_changes_nothing(models):
    ours, _ = models
    data = bm.random_batch(TINY["vocab_size"], 3, 7, 1, seed=1)
    kwargs = dict(
        input_ids=data["input_ids"],
        attention_mask=data["attention_mask"],
        num_beams=4,
        max_new_tokens=8,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    fast = ours.generate(**kwargs)

    def reorder_everything(past_key_values, beam_idx):
        past_key_values.reorder_cache(beam_idx)  # self- and cross-attention caches
        return past_key_values

    ours._reorder_cache = reorder_everything
    try:
        full = ours.generate(**kwargs)
    finally:
        del ours._reorder_cache
    assert torch.equal(fast.sequences, full.sequences)
    torch.testing.assert_close(fast.sequences_scores, full.sequences_scores)


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_fast_cpu_inference_keeps_outputs_close(models, mode):
    ours, _ = models
    fast = optimize_for_cpu_inference(ours, mode)
    assert fast is not ours and not fast.training
    data = bm.random_batch(TINY["vocab_size"], 4, 9, 6, seed=2)
    with torch.inference_mode():
        reference = ours(**data).logits
        logits = fast(**data).logits
    if mode == "fp32":
        torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
    else:
        # int8 weights: logits move by about a tenth of their spread, the argmax rarely.
        assert (logits - reference).abs().max() < 0.25 * reference.std()
        agree = (logits.argmax(-1) == reference.argmax(-1)).float().mean()
        assert agree >= 0.9
    inputs = {"input_ids": data["input_ids"], "attention_mask": data["attention_mask"]}
    generated = fast.generate(**inputs, num_beams=1, do_sample=False, max_new_tokens=8)
    expected = ours.generate(**inputs, num_beams=1, do_sample=False, max_new_tokens=8)
    assert (generated == expected).float().mean() >= (1.0 if mode == "fp32" else 0.75)


def test_fast_cpu_inference_rejects_unknown_modes(models):
    with pytest.raises(ValueError, match="mode must be one of"):
        optimize_for_cpu_inference(models[0], "int4")
