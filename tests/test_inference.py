"""The opt-in fast CPU path (`optimize_for_cpu_inference`): plain `generate()` on a compiled static-
cache decode step gives the default path's tokens in fp32 and mostly the same tokens in int8; bf16
is refused where the CPU would emulate it. Correctness only: no timing is asserted."""

import copy

import pytest
import torch

import vanilla_transformer.inference as inference
from tests.conftest import tiny_config, word_tokenizer
from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.inference import (
    cpu_features,
    cpu_has_native_bf16,
    optimize_for_cpu_inference,
)

GREEDY = dict(num_beams=1, do_sample=False, max_new_tokens=10, min_new_tokens=10)
BEAM = dict(num_beams=3, do_sample=False, max_new_tokens=10, min_new_tokens=10)
EPYC_AVX2 = frozenset("fpu sse2 avx avx2 fma".split())
XEON_AMX = frozenset("avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_int8 amx_tile".split())


def build(**overrides) -> VanillaTransformerForConditionalGeneration:
    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(tiny_config(**overrides)).eval()
    with torch.no_grad():  # sharpen the random model's choices (no near-ties)
        model.model.shared.weight.mul_(4.0)
    return model


def sources(batch: int = 3):
    g = torch.Generator().manual_seed(batch)
    x = torch.randint(4, 30, (batch, 7), generator=g)
    mask = torch.ones_like(x)
    x[-1, 5:], mask[-1, 5:] = 0, 0  # one right-padded source
    return {"input_ids": x, "attention_mask": mask}


@pytest.fixture
def graph_only_compile(monkeypatch):
    """torch.compile with the `eager` backend: dynamo still captures the forward as one graph
    (fullgraph, so any break fails) but nothing is code-generated, which keeps the test fast. The
    inductor path itself runs in the slow test below."""
    real_compile = torch.compile

    def compile_(fn, fullgraph=False, options=None, **kwargs):
        return real_compile(fn, fullgraph=fullgraph, backend="eager")

    monkeypatch.setattr(inference.torch, "compile", compile_)


# -- CPU features ----------------------------------------------------------------------------------


def test_cpu_features_are_read_from_the_flags():
    assert cpu_features(EPYC_AVX2) == {
        "avx2": True,
        "avx512": False,
        "avx512_bf16": False,
        "vnni": False,
        "amx_bf16": False,
        "amx_int8": False,
    }
    assert all(cpu_features(XEON_AMX).values())
    assert cpu_features(frozenset({"avx_vnni"}))["vnni"]  # AVX-VNNI counts as VNNI


def test_native_bf16_means_avx512_bf16_or_amx():
    assert not cpu_has_native_bf16(EPYC_AVX2)
    assert cpu_has_native_bf16(XEON_AMX)
    assert cpu_has_native_bf16(frozenset({"amx_bf16"}))


def test_bf16_is_refused_where_it_would_be_emulated(monkeypatch):
    monkeypatch.setattr(inference, "cpu_flags", lambda: EPYC_AVX2)
    with pytest.raises(ValueError, match="natively"):
        optimize_for_cpu_inference(build(), "bf16")


def test_unknown_modes_are_refused_with_the_accepted_ones():
    with pytest.raises(ValueError, match=r"mode must be one of \['int8', 'bf16', 'fp32'\]"):
        optimize_for_cpu_inference(build(), "int4")


# -- what the transformation does ------------------------------------------------------------------


def test_the_original_model_is_left_untouched_and_stays_savable():
    model = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_cpu_inference(model, "fp32", compile=False)
    assert fast is not model and not fast.training
    assert model.lm_head.weight is model.model.shared.weight
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "cache_implementation" not in model.generation_config.to_diff_dict()


def test_int8_quantises_the_linear_layers_but_not_the_embedding_lookups():
    pytest.importorskip("torchao")
    model = build()
    fast = optimize_for_cpu_inference(model, "int8", compile=False)
    embeddings = fast.get_input_embeddings().weight
    assert type(embeddings) is torch.nn.Parameter and embeddings.dtype == torch.float32
    assert torch.equal(embeddings, model.get_input_embeddings().weight)
    # torchao swaps each Linear weight for an int8 tensor subclass; the head is untied first.
    assert fast.lm_head.weight is not embeddings
    for module in (fast.lm_head, fast.model.decoder.layers[0].ffn.fc1):
        assert type(module.weight.data) is not torch.Tensor


def test_int8_logits_stay_close_to_fp32():
    pytest.importorskip("torchao")
    model = build()
    fast = optimize_for_cpu_inference(model, "int8", compile=False)
    batch = sources()
    y = torch.randint(4, 30, (3, 6), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = model(**batch, decoder_input_ids=y).logits
        logits = fast(**batch, decoder_input_ids=y).logits
    assert (logits - reference).abs().max() < 0.25 * reference.std()
    assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.9


# -- generate() through the compiled static-cache step ---------------------------------------------


@pytest.mark.parametrize("settings", [GREEDY, BEAM], ids=["greedy", "beam"])
def test_fp32_fast_path_generates_the_default_paths_tokens(graph_only_compile, settings):
    model = build()
    fast = optimize_for_cpu_inference(model, "fp32")
    assert fast.generation_config.cache_implementation == "static"
    batch = sources()
    with torch.inference_mode():
        expected = model.generate(**batch, **settings)
        assert torch.equal(fast.generate(**batch, **settings), expected)
        # A second call (another batch size) reuses the compiled forward.
        smaller = {k: v[:2] for k, v in batch.items()}
        assert torch.equal(
            fast.generate(**smaller, **settings), model.generate(**smaller, **settings)
        )


def test_int8_fast_path_mostly_agrees_with_fp32_tokens(graph_only_compile):
    pytest.importorskip("torchao")
    model = build()
    fast = optimize_for_cpu_inference(model, "int8")
    # Eager: inductor miscompiles torchao's int8 linear (wrong tokens after the first).
    assert "cache_implementation" not in fast.generation_config.to_diff_dict()
    batch = sources()
    with torch.inference_mode():
        expected = model.generate(**batch, **GREEDY)
        generated = fast.generate(**batch, **GREEDY)
    assert generated.shape == expected.shape
    assert (generated == expected).float().mean() >= 0.75


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="bf16 needs AVX-512 BF16 or AMX")
def test_bf16_fast_path_mostly_agrees_with_fp32_tokens(graph_only_compile):
    model = build()
    fast = optimize_for_cpu_inference(model, "bf16")
    assert fast.lm_head.weight.dtype == torch.bfloat16
    batch = sources()
    with torch.inference_mode():
        expected = model.generate(**batch, **GREEDY)
        generated = fast.generate(**batch, **GREEDY)
    assert (generated == expected).float().mean() >= 0.75


@pytest.mark.slow
def test_inductor_compiled_fast_paths_generate_like_the_default_path():
    """The real thing: inductor with freezing, greedy and beam, fp32 exact and int8 close."""
    model = build()
    batch = sources()
    modes = ["fp32"]
    try:
        import torchao  # noqa: F401

        modes.append("int8")
    except ImportError:
        pass
    with torch.inference_mode():
        for mode in modes:
            fast = optimize_for_cpu_inference(copy.deepcopy(model), mode)
            for settings in (GREEDY, BEAM):
                expected = model.generate(**batch, **settings)
                generated = fast.generate(**batch, **settings)
                agree = (generated == expected).float().mean()
                assert agree == 1.0 if mode == "fp32" else agree >= 0.75


def test_translation_pipeline_fast_cpu_flag_translates_like_the_default_pipeline(
    graph_only_compile, tokenizer
):
    from vanilla_transformer import translation_pipeline

    model = build(vocab_size=len(tokenizer))
    plain = translation_pipeline(model, tokenizer)
    fast = translation_pipeline(model, tokenizer, fast_cpu="fp32")
    assert fast.model is not model and fast.model.generation_config.cache_implementation == "static"
    texts = ["the big dog", "a red house is small"]
    settings = dict(max_new_tokens=6, min_new_tokens=6)
    assert fast(texts, num_beams=2, **settings) == plain(texts, num_beams=2, **settings)


@pytest.mark.slow
@pytest.mark.xfail(
    reason="inductor (torch 2.13, torchao 0.18) miscompiles torchao's int8 linear in the decode "
    "step: tokens drift from the eager int8 model's after the first. When this passes, int8 can "
    "be compiled again (optimize_for_cpu_inference skips _compile_decoding for int8).",
    strict=False,
)
def test_inductor_compiled_int8_matches_eager_int8():
    pytest.importorskip("torchao")
    from tests.toy_translation import SENTENCES, trained_toy_model

    tokenizer = word_tokenizer()
    model = trained_toy_model()
    eager = optimize_for_cpu_inference(model, "int8")
    compiled = optimize_for_cpu_inference(model, "int8")
    inference._compile_decoding(compiled)
    batch = tokenizer(SENTENCES[:3], padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = eager.generate(**batch, num_beams=1, max_new_tokens=8)
        assert torch.equal(compiled.generate(**batch, num_beams=1, max_new_tokens=8), expected)
