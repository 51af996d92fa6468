"""The benchmark compares like with like, counts FLOPs right, and the fast inference paths keep the
model's outputs. Correctness only: no timing is asserted."""

import pytest
import torch

from research import benchmarking as bm
from vanilla_transformer import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration
from vanilla_transformer.configuration_vanilla_transformer import SIZE_FIELDS

TINY = dict(vocab_size=97, d_model=16, layers=2, heads=4, ffn_dim=32)


@pytest.fixture(scope="module")
def models():
    ours, marian = bm.build_models(TINY)
    return ours.eval(), marian.eval()


def test_both_models_have_the_claimed_identical_shape(models):
    ours, marian = models
    oc, mc = ours.config, marian.config
    for field in (*SIZE_FIELDS, "activation_function", "scale_embedding", "tie_word_embeddings"):
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


def test_marian_with_our_weights_computes_the_same_function(models):
    ours, _ = models
    marian = bm.marian_like(ours)
    data = bm.random_batch(TINY["vocab_size"], 2, 7, 5, seed=3)
    with torch.inference_mode():
        expected = ours(**data).logits
        got = marian(**data).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "change",
    [
        {"norm_first": True},
        {"position_encoding": "learned"},
        {"decoder_layers": 1},
        {"decoder_attention_heads": 4},
        {"tie_word_embeddings": False},
    ],
)
def test_marian_refuses_a_model_it_cannot_compute_instead_of_scoring_garbage(change):
    """A pre-LN model once went through marian_like and the engines table showed Marian at BLEU
    0.00 on the same weights: what Marian cannot compute is refused, naming why."""
    shape = dict(
        vocab_size=40, d_model=16, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
    )  # fmt: skip
    ours = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig(**shape | change))
    with pytest.raises(ValueError, match="cannot compute this model"):
        bm.marian_like(ours)


def test_ctranslate2_conversion_scores_like_our_model(models, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    ours, _ = models
    translator = bm.ctranslate2_translator(ours, str(tmp_path / "ct2"), "float32", threads=1)
    assert isinstance(translator, ctranslate2.Translator)
    data = bm.random_batch(TINY["vocab_size"], 2, 7, 1, seed=4)
    with torch.inference_mode():
        expected = ours.generate(
            input_ids=data["input_ids"],
            attention_mask=data["attention_mask"],
            num_beams=1,
            do_sample=False,
            min_new_tokens=6,
            max_new_tokens=6,
        )
    run = bm.ctranslate2_generate_fn(translator, data["input_ids"], TINY["vocab_size"], 1, 6)
    tokens = bm.ctranslate2_tokens(TINY["vocab_size"])
    got = [[tokens.index(t) for t in r.hypotheses[0]] for r in run()]
    assert got == expected[:, 1:].tolist()  # generate() starts with the decoder start token


def test_decoder_step_weights_and_bandwidth_floor_by_hand():
    config, _ = bm.model_configs("base")
    # Per layer: self-attention 4 d^2, cross-attention W^Q and W^O 2 d^2, FFN 2 d d_ff.
    per_layer = 6 * 512 * 512 + 2 * 512 * 2048
    assert bm.decoder_step_weights(config) == 6 * per_layer + 512 * 8000
    # About 105 MB of float32 per greedy step: 10 GB/s -> 10.4 ms; int8 a quarter of that.
    assert bm.bandwidth_floor_ms(config, 4, 10.0) == pytest.approx(10.45, abs=0.01)
    assert bm.bandwidth_floor_ms(config, 1, 10.0) == pytest.approx(10.45 / 4, abs=0.01)


def test_int8_kernel_part_sums_each_kernel_over_one_steps_products():
    config, _ = bm.model_configs(TINY)
    # 49 products per step at base: 6 layers x (6 of d x d + W_1 + W_2) + the output projection.
    base, _ = bm.model_configs("base")
    assert sum(calls for *_, calls in bm.decoder_step_products(base)) == 6 * 8 + 1
    for rows in (1, 4):
        step = bm.int8_kernel_step_ms(config, rows, repeats=1, calls=2)
        assert set(step) == {
            "fp32 F.linear",
            "int8 torch._int_mm (Int8Linear)",
            "int8 oneDNN qlinear_pointwise, prepacked (PT2E)",
            "int8 weight-only _weight_int8pack_mm, bf16 activations",
        }
        assert all(ms is None or ms > 0 for ms in step.values())
        assert step["int8 torch._int_mm (Int8Linear)"] > 0  # the kernel the fast path uses
    report = bm.format_int8_kernels({1: step, 32: step})
    assert "| int8 torch._int_mm (Int8Linear) |" in report and "| kernel | 1 row(s) | 32" in report


def test_reference_decoding_times_every_path_in_every_setting():
    calls = []

    def path(name):
        def make(input_ids, mask, beams, new_tokens):
            return lambda: calls.append((name, input_ids.shape[0], beams))

        return make

    rows = bm.bench_reference_decoding(
        {"a": path("a"), "b": path("b")},
        vocab_size=50,
        settings=(("greedy", 1, 1), ("beam", 2, 4)),
        src_len=5,
        new_tokens=4,
        repeats=2,
    )
    assert [(r["setting"], r["path"]) for r in rows] == [
        ("greedy", "a"),
        ("greedy", "b"),
        ("beam", "a"),
        ("beam", "b"),
    ]
    assert calls[:2] == [("a", 1, 1), ("b", 1, 1)] and calls[-1] == ("b", 2, 4)
    assert len(calls) == 2 * 2 * 3  # 2 paths x 2 settings x (1 warm-up + 2 timed)


def test_reference_report_states_flags_floors_and_target_ratios():
    rows = []
    for setting in ("greedy, batch 1", "beam 4, batch 8"):
        for path, ms in (
            ("ours default fp32", 10.0),
            ("Marian fp32", 13.0),
            ("CTranslate2 int8", 6.0),
            ("ours fast int8", 5.0),
        ):
            rows.append(
                {"setting": setting, "path": path, "ms_per_step": ms, "times_floor": ms / 2}
            )
    training = {
        "batch": 8,
        "src_len": 24,
        "tgt_len": 32,
        "ours_step_s": 1.0,
        "marian_step_s": 1.1,
        "ratio": 1.1,
        "peak_tflops": 0.2,
    }
    reference = {
        "decoding": rows,
        "training": training,
        "bandwidth_gb_per_s": 20.0,
        "decoder_step_weights": 26_000_000,
        "src_len": 24,
        "new_tokens": 32,
    }
    report = bm.format_reference(reference, {"cpu_flags": "AVX2 yes AMX-INT8 no"}, "python x")
    assert "CPU flags: AVX2 yes AMX-INT8 no" in report
    assert "20.0 GB/s" in report and "200 GFLOP/s" in report
    assert "fp32 5.20 ms" in report and "int8 1.30 ms" in report
    assert "| ours default fp32 vs Marian fp32 | **1.30x** | **1.30x** | >= 1.3x |" in report
    assert "| ours fast int8 vs CTranslate2 int8 | **1.20x** | **1.20x** | >= 1.0x |" in report
    assert "**1.10x**" in report and "Command: `python x`" in report


def test_the_report_has_a_table_for_each_part_measured_and_names_the_machine():
    machine = {"cpu_model": "Test CPU", "cpu_count": 2, "torch": "2.13", "torch_threads": 2,
               "cpu_capability": "AVX512", "cpu_flags": "avx2 avx512f"}  # fmt: skip
    training = {"shape": "tiny", "batch": 8, "src_len": 32, "tgt_len": 32, "params_ours": 1e6,
                "params_marian": 1.1e6, "ours_tokens_per_s": 110.0, "marian_tokens_per_s": 100.0,
                "ratio": 1.1, "ours_peak_rss_mb": 10, "marian_peak_rss_mb": 11}  # fmt: skip
    real = {"data": "Bible", "shape": "tiny", "steps": 3, "max_tokens": 100,
            "budget_padding": 0.1, "random_batch_size": 8, "random_padding": 0.3,
            "ours_budget_real_tgt_tokens_per_s": 3.0, "ours_random_real_tgt_tokens_per_s": 2.0,
            "marian_random_real_tgt_tokens_per_s": 2.5, "budget_vs_marian_random": 1.2}  # fmt: skip
    decoding = {"shape": "tiny", "src_len": 5, "new_tokens": 7, "batch": 1, "num_beams": 4,
                "ours_tokens_per_s": 50.0, "marian_tokens_per_s": 40.0,
                "ours_latency_ms_per_sentence": 3.0, "marian_latency_ms_per_sentence": 4.0}  # fmt: skip
    report = bm.format_report(
        {"machine": machine, "training": [training], "real_data": real, "decoding": [decoding]}
    )
    assert report.startswith("Machine: Test CPU, 2 cores") and "CPU flags: avx2 avx512f" in report
    assert "| tiny | 8x32x32 | 1.00M / 1.10M | " in report and "| **1.10x** |" in report
    assert "| **ours budget / Marian random** | **1.20x** |" in report
    assert "| 1 | 4 | " in report and "| **1.25x** |" in report  # ours / Marian at decoding
    only_training = bm.format_report({"machine": machine, "training": [training]})
    assert "real data" not in only_training and "generate()" not in only_training
