"""The model's specification: each test names the property it guards."""

import json
import math
import os
import textwrap

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM
from transformers.cache_utils import DynamicCache

from tests.conftest import incremental_logits, run_python, tiny_config
from vanilla_transformer import (
    VanillaTransformerConfig,
    VanillaTransformerForConditionalGeneration,
    VanillaTransformerModel,
)
from vanilla_transformer.modeling_vanilla_transformer import shift_tokens_right

SCALINGS = ["sqrt_dk", "key_norm_sum"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(attn="sdpa", **overrides):
    config = tiny_config(**overrides)
    return VanillaTransformerForConditionalGeneration._from_config(
        config, attn_implementation=attn
    ).eval()


def batch(vocab=40, B=3, S=7, T=6, pad_row=1, pad_from=4):
    """Random source/target ids (specials excluded), row `pad_row` right-padded from `pad_from`."""
    input_ids = torch.randint(4, vocab, (B, S))
    attention_mask = torch.ones_like(input_ids)
    input_ids[pad_row, pad_from:] = 0
    attention_mask[pad_row, pad_from:] = 0
    labels = torch.randint(4, vocab, (B, T))
    return input_ids, attention_mask, labels


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


def count(config):
    return sum(p.numel() for p in VanillaTransformerForConditionalGeneration(config).parameters())


def test_parameter_counts_match_the_paper():
    # Table 3: base 65M, big 213M with a shared ~37k vocabulary (tied weights counted once).
    base = count(VanillaTransformerConfig(vocab_size=37000))
    big = count(
        VanillaTransformerConfig(
            vocab_size=37000,
            d_model=1024,
            encoder_ffn_dim=4096,
            decoder_ffn_dim=4096,
            encoder_attention_heads=16,
            decoder_attention_heads=16,
            dropout=0.3,
        )
    )
    assert 63e6 <= base <= 65.5e6, base
    assert 210e6 <= big <= 216e6, big


def test_defaults_are_the_paper_base_model():
    c = VanillaTransformerConfig()
    assert (c.d_model, c.encoder_layers, c.decoder_layers) == (512, 6, 6)
    assert (c.encoder_ffn_dim, c.encoder_attention_heads, c.dropout) == (2048, 8, 0.1)
    assert c.activation_function == "relu" and c.scale_embedding and c.tie_word_embeddings
    assert c.position_encoding == "sinusoidal" and not c.norm_first
    assert c.attention_scaling == "sqrt_dk"


def test_generic_names_resolve_through_attribute_map():
    c = tiny_config()
    assert c.hidden_size == c.d_model == 32
    assert c.num_attention_heads == c.encoder_attention_heads == 4
    assert c.num_hidden_layers == c.encoder_layers == 2


def test_config_json_with_unknown_attention_scaling_fails_on_load(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    data = json.loads(path.read_text())
    data["attention_scaling"] = "bogus"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="attention_scaling"):
        VanillaTransformerConfig.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------------
# Architecture
# ------------------------------------------------------------------------------------------------


def test_embeddings_and_output_projection_share_one_matrix():
    model = build()
    shared = model.model.shared.weight
    assert model.lm_head.weight is shared
    assert model.model.encoder.embed_tokens.weight is shared
    assert model.model.decoder.embed_tokens.weight is shared


def test_untied_embeddings_when_tie_word_embeddings_is_false():
    model = build(tie_word_embeddings=False)
    assert model.lm_head.weight is not model.model.shared.weight
    assert model.model.encoder.embed_tokens.weight is not model.model.decoder.embed_tokens.weight


def test_sinusoidal_encoding_follows_section_3_5():
    from vanilla_transformer.modeling_vanilla_transformer import sinusoidal_table

    pe = sinusoidal_table(50, 16)
    pos, i = 7, 3
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(pos / 10000 ** (2 * i / 16)), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(
        math.cos(pos / 10000 ** (2 * i / 16)), abs=1e-6
    )


def test_post_ln_is_layernorm_of_residual_sum():
    """Post-LN (the paper): every sub-layer output is LayerNorm(x + Sublayer(x)), so each
    encoder layer's output has zero mean and unit variance over d_model (before the affine
    LayerNorm parameters, which start at 1 and 0)."""
    model = build()
    x, mask, _ = batch()
    out = model.model.encoder(input_ids=x, attention_mask=mask).last_hidden_state
    assert torch.allclose(out.mean(-1), torch.zeros_like(out.mean(-1)), atol=1e-5)
    assert torch.allclose(out.var(-1, unbiased=False), torch.ones_like(out[..., 0]), atol=1e-3)
    assert model.model.encoder.layer_norm is None  # no final norm in post-LN


def test_pre_ln_adds_a_final_layer_norm_per_stack():
    model = build(norm_first=True)
    assert model.model.encoder.layer_norm is not None
    assert model.model.decoder.layer_norm is not None


def test_loss_is_token_mean_cross_entropy_ignoring_minus_100():
    model = build()
    x, mask, labels = batch()
    labels[0, -2:] = -100
    out = model(input_ids=x, attention_mask=mask, labels=labels)
    expected = torch.nn.functional.cross_entropy(
        out.logits.view(-1, out.logits.shape[-1]), labels.view(-1), ignore_index=-100
    )
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_decoder_inputs_are_labels_shifted_right_behind_the_start_token():
    labels = torch.tensor([[5, 6, 2, -100]])
    assert shift_tokens_right(labels, 0, 1).tolist() == [[1, 5, 6, 2]]
    model = build()
    assert model.prepare_decoder_input_ids_from_labels(labels).tolist() == [[1, 5, 6, 2]]


# ------------------------------------------------------------------------------------------------
# Masking: causality, padding and batch invariance
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scaling", SCALINGS)
def test_decoder_is_causal(scaling):
    model = build(attention_scaling=scaling)
    x, mask, y = batch()
    logits = model(input_ids=x, attention_mask=mask, decoder_input_ids=y).logits
    y2 = y.clone()
    y2[:, 3:] = torch.randint(4, 40, y2[:, 3:].shape)
    logits2 = model(input_ids=x, attention_mask=mask, decoder_input_ids=y2).logits
    torch.testing.assert_close(logits[:, :3], logits2[:, :3], rtol=0, atol=1e-5)
    assert not torch.allclose(logits[:, 3:], logits2[:, 3:])


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("scaling", SCALINGS)
def test_source_padding_does_not_change_outputs(scaling, attn):
    model = build(attn=attn, attention_scaling=scaling)
    x = torch.randint(4, 40, (1, 5))
    y = torch.randint(4, 40, (1, 4))
    alone = model(input_ids=x, decoder_input_ids=y).logits
    padded = torch.cat([x, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 5 + [0] * 3])
    with_pad = model(input_ids=padded, attention_mask=mask, decoder_input_ids=y).logits
    torch.testing.assert_close(alone, with_pad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scaling", SCALINGS)
def test_each_row_is_independent_of_the_rest_of_the_batch(scaling):
    model = build(attention_scaling=scaling)
    x, mask, y = batch()
    together = model(input_ids=x, attention_mask=mask, decoder_input_ids=y).logits
    for row in range(x.shape[0]):
        n = int(mask[row].sum())
        alone = model(input_ids=x[row : row + 1, :n], decoder_input_ids=y[row : row + 1]).logits
        torch.testing.assert_close(together[row : row + 1], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scaling", SCALINGS)
def test_eager_and_sdpa_agree(scaling):
    sdpa = build(attn="sdpa", attention_scaling=scaling)
    eager = build(attn="eager", attention_scaling=scaling)
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa"
    assert eager.config._attn_implementation == "eager"
    x, mask, y = batch()
    dmask = torch.ones_like(y)
    dmask[2, 4:] = 0
    kwargs = dict(input_ids=x, attention_mask=mask, labels=y, decoder_attention_mask=dmask)
    torch.testing.assert_close(sdpa(**kwargs).logits, eager(**kwargs).logits, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Bernhard (2023) key-norm-sum scaling against a direct computation
# ------------------------------------------------------------------------------------------------


def reference_key_norm_attention(q, k, v, allowed):
    """softmax_j(q.k_j / sum_{j allowed} ||k_j||) over allowed keys; q/k/v (B, h, L, d), allowed
    bool (B, 1, T, S)."""
    norms = k.norm(dim=-1)  # (B, h, S)
    denom = (allowed.float() * norms[:, :, None, :]).sum(-1, keepdim=True)  # (B, h, T, 1)
    scores = (q @ k.transpose(-1, -2)) / denom
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, -1) @ v


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_key_norm_sum_matches_reference_with_padding_and_causal_masks(attn):
    model = build(attn=attn, attention_scaling="key_norm_sum")
    x, mask, y = batch()
    captured = {}

    def hook(name):
        def fn(module, args, kwargs, output):
            captured[name] = (args[0], kwargs.get("key_value_states"), output[0])

        return fn

    dec_layer = model.model.decoder.layers[0]
    enc_layer = model.model.encoder.layers[0]
    enc_layer.self_attn.register_forward_hook(hook("enc"), with_kwargs=True)
    dec_layer.self_attn.register_forward_hook(hook("self"), with_kwargs=True)
    dec_layer.encoder_attn.register_forward_hook(hook("cross"), with_kwargs=True)
    model(input_ids=x, attention_mask=mask, decoder_input_ids=y)

    def check(name, attn_module, allowed):
        hidden, kv, output = captured[name]
        kv = hidden if kv is None else kv
        split = attn_module._split_heads
        q, k, v = (
            split(attn_module.q_proj(hidden)),
            split(attn_module.k_proj(kv)),
            split(attn_module.v_proj(kv)),
        )
        ref = reference_key_norm_attention(q, k, v, allowed)  # (B, h, T, d)
        ref = attn_module.out_proj(ref.transpose(1, 2).reshape(hidden.shape))
        valid = allowed.any(-1).squeeze(1)  # rows with at least one visible key
        torch.testing.assert_close(output[valid], ref[valid], rtol=1e-4, atol=1e-5)

    src_allowed = mask.bool()[:, None, None, :]
    check("enc", enc_layer.self_attn, src_allowed.expand(-1, 1, x.shape[1], -1))
    T = y.shape[1]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None]
    check("self", dec_layer.self_attn, causal.expand(x.shape[0], 1, T, T))
    check("cross", dec_layer.encoder_attn, src_allowed.expand(-1, 1, T, -1))


# ------------------------------------------------------------------------------------------------
# Incremental decoding and generation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scaling", SCALINGS)
def test_incremental_decoding_with_cache_reproduces_the_full_forward(scaling):
    model = build(attention_scaling=scaling)
    x, mask, y = batch()
    full = model(input_ids=x, attention_mask=mask, decoder_input_ids=y).logits
    stepped, cache = incremental_logits(model, x, mask, y)
    torch.testing.assert_close(stepped, full, rtol=1e-4, atol=1e-5)
    assert cache.get_seq_length() == y.shape[1]


@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("num_beams", [1, 4])
def test_cached_and_uncached_generation_give_identical_tokens(scaling, num_beams):
    model = build(attention_scaling=scaling)
    x, mask, _ = batch()
    kwargs = dict(attention_mask=mask, num_beams=num_beams, max_new_tokens=12, do_sample=False)
    cached = model.generate(x, use_cache=True, **kwargs)
    uncached = model.generate(x, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_sampling_and_num_return_sequences():
    model = build()
    x, mask, _ = batch()
    out = model.generate(
        x,
        attention_mask=mask,
        do_sample=True,
        top_k=5,
        num_return_sequences=3,
        max_new_tokens=5,
        num_beams=1,
    )
    assert out.shape[0] == 3 * x.shape[0]
    beams = model.generate(
        x, attention_mask=mask, num_beams=4, num_return_sequences=2, max_new_tokens=5
    )
    assert beams.shape[0] == 2 * x.shape[0]


def test_generation_defaults_are_the_papers_and_length_is_source_plus_50():
    model = build()
    gc = model.generation_config
    assert (gc.num_beams, gc.length_penalty, gc.early_stopping) == (4, 0.6, True)
    assert gc.decoder_start_token_id == 1 and gc.eos_token_id == 2 and gc.pad_token_id == 0
    x = torch.randint(4, 40, (2, 5))
    # Forbidding </s> forces the limit to be reached: 1 start token + source length 5 + 50.
    out = model.generate(x, num_beams=1, suppress_tokens=[2])
    assert out.shape[1] == 1 + 5 + 50
    # An explicit limit wins.
    assert model.generate(x, num_beams=1, max_new_tokens=3).shape[1] == 4


def test_sinusoidal_positions_extend_beyond_the_table_but_learned_ones_raise():
    model = build(max_position_embeddings=8)
    x = torch.randint(4, 40, (1, 12))
    assert model(input_ids=x, decoder_input_ids=x).logits.shape == (1, 12, model.config.vocab_size)
    learned = build(max_position_embeddings=8, position_encoding="learned")
    with pytest.raises(ValueError, match="max_position_embeddings"):
        learned(input_ids=x, decoder_input_ids=x)


def test_attention_weights_and_hidden_states_can_be_returned():
    model = build(attn="eager")
    x, mask, y = batch()
    out = model(
        input_ids=x,
        attention_mask=mask,
        decoder_input_ids=y,
        output_attentions=True,
        output_hidden_states=True,
    )
    assert len(out.encoder_attentions) == 2 and out.encoder_attentions[0].shape == (3, 4, 7, 7)
    assert len(out.decoder_attentions) == 2 and out.cross_attentions[0].shape == (3, 4, 6, 7)
    assert len(out.encoder_hidden_states) == 3  # embeddings + one per layer
    # Attention rows sum to one and padded keys get zero weight.
    torch.testing.assert_close(out.encoder_attentions[0].sum(-1), torch.ones(3, 4, 7))
    assert out.cross_attentions[0][1, :, :, 4:].abs().max() < 1e-6


def test_gradient_checkpointing_gives_the_same_gradients():
    model = build()
    x, mask, y = batch()
    model.train()
    model(input_ids=x, attention_mask=mask, labels=y).loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    # transformers 5.24 renamed gradient_checkpointing_enable (deprecated) to
    # activation_checkpointing_enable; older releases only have the old name.
    enable = getattr(model, "activation_checkpointing_enable", None)
    (enable or model.gradient_checkpointing_enable)()
    model(input_ids=x, attention_mask=mask, labels=y).loss.backward()
    for n, p in model.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_torch_compile_of_the_forward_matches_eager_mode():
    model = build()
    x, mask, y = batch()
    expected = model(input_ids=x, attention_mask=mask, labels=y).logits
    compiled = torch.compile(model)
    torch.testing.assert_close(
        compiled(input_ids=x, attention_mask=mask, labels=y).logits, expected, rtol=1e-4, atol=1e-5
    )


# ------------------------------------------------------------------------------------------------
# Saving, loading, remote code
# ------------------------------------------------------------------------------------------------


def test_save_load_round_trip_is_identical(tmp_path):
    model = build(attention_scaling="key_norm_sum", norm_first=True)
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"config.json", "generation_config.json", "model.safetensors"} <= files
    assert {"modeling_vanilla_transformer.py", "configuration_vanilla_transformer.py"} <= files
    assert "pipeline_vanilla_transformer.py" in files
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    # The shared matrix is stored once; the sinusoid table is derived, never stored.
    assert (
        sum(
            k.endswith("embed_tokens.weight")
            or k.endswith("lm_head.weight")
            or k.endswith("shared.weight")
            for k in keys
        )
        == 1
    )
    assert not any(k.endswith(".pe") for k in keys)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSeq2SeqLM"].endswith(
        "VanillaTransformerForConditionalGeneration"
    )
    assert config["auto_map"]["AutoModel"].endswith("VanillaTransformerModel")
    assert "translation" in config["custom_pipelines"]

    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, VanillaTransformerForConditionalGeneration)
    assert loaded.lm_head.weight is loaded.model.shared.weight
    x, mask, y = batch()
    torch.testing.assert_close(
        loaded(input_ids=x, attention_mask=mask, labels=y).logits,
        model(input_ids=x, attention_mask=mask, labels=y).logits,
        rtol=0,
        atol=0,
    )
    assert loaded.generation_config.num_beams == 4
    bare = AutoModel.from_pretrained(tmp_path)
    assert isinstance(bare, VanillaTransformerModel)
    assert AutoConfig.from_pretrained(tmp_path).attention_scaling == "key_norm_sum"


BLOCK_PACKAGE = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "vanilla_transformer" or name.startswith("vanilla_transformer."):
            raise ImportError("vanilla_transformer is blocked in this test")
sys.meta_path.insert(0, _Block())
"""


def run_without_package(code: str, tmp_path) -> str:
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": None}
    script = BLOCK_PACKAGE + textwrap.dedent(code)
    result = run_python("-c", script, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_remote_code_loads_where_the_package_is_not_installed(tmp_path, tokenizer):
    model = build()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    x, mask, y = batch()
    expected = model(input_ids=x, attention_mask=mask, labels=y).logits
    torch.save({"x": x, "mask": mask, "y": y, "expected": expected}, tmp_path / "io.pt")
    out = run_without_package(
        f"""
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoModel, pipeline
        try:
            import vanilla_transformer
            raise SystemExit("package import was not blocked")
        except ImportError:
            pass
        io = torch.load({str(tmp_path / "io.pt")!r})
        m = AutoModelForSeq2SeqLM.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(m).__module__.startswith("transformers_modules"), type(m).__module__
        got = m(input_ids=io["x"], attention_mask=io["mask"], labels=io["y"]).logits
        assert torch.equal(got, io["expected"]), (got - io["expected"]).abs().max()
        AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
        pipe = pipeline("translation", model={str(folder)!r}, trust_remote_code=True)
        print(type(pipe).__name__, pipe("the dog", max_new_tokens=4))
        """,
        tmp_path,
    )
    assert "TranslationPipeline" in out and "translation_text" in out


def test_translation_pipeline_returns_translation_text(tmp_path, tokenizer):
    from transformers import pipeline

    from vanilla_transformer import translation_pipeline

    model = build()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    for pipe in (
        translation_pipeline(str(tmp_path)),
        translation_pipeline(model, tokenizer),
        pipeline("translation", model=str(tmp_path), trust_remote_code=True),
    ):
        single = pipe("the big dog", max_new_tokens=5, num_beams=2)
        assert isinstance(single, list) and set(single[0]) == {"translation_text"}
        many = pipe(["the big dog", "a red house is small"], max_new_tokens=5)
        assert len(many) == 2 and all(isinstance(r["translation_text"], str) for r in many)
        # Generation kwargs pass through: greedy with max_new_tokens=1 yields at most one word.
        short = pipe("the big dog", max_new_tokens=1, num_beams=1)[0]["translation_text"]
        assert len(short.split()) <= 1
    with pytest.raises(ValueError, match="string"):
        pipe(123)


@pytest.mark.parametrize("past", [0, 3])
def test_key_norm_sum_reads_the_same_visible_keys_from_every_mask_form(past):
    """The attention module derives the keys a query may attend to from the mask its kernel gets:
    flash attention's 2D padding mask (queries aligned with the last kept keys), SDPA's and eager's
    4D masks, and no mask at all (causal by position) name the same keys."""
    from transformers.masking_utils import create_causal_mask

    from vanilla_transformer.modeling_vanilla_transformer import (
        CAUSAL_MASK_CACHE_ARG,
        visible_keys,
    )

    B, T = 3, 4
    padding = torch.ones(B, past + T, dtype=torch.long)
    padding[1, -1:] = 0  # a right-padded target
    padding[2, :2] = 0  # a left-padded one
    cache = DynamicCache()
    if past:
        cache.update(torch.zeros(B, 1, past, 2), torch.zeros(B, 1, past, 2), 0)
    forms = {}
    for attn in ("sdpa", "eager"):
        config = tiny_config()
        config._attn_implementation = attn
        mask = create_causal_mask(
            config=config,
            inputs_embeds=torch.zeros(B, T, 8),
            attention_mask=padding,
            **{CAUSAL_MASK_CACHE_ARG: cache},
        )
        forms[attn] = visible_keys(mask, True, T, past + T, mask.device)
    forms["flash (2D padding)"] = visible_keys(padding, True, T, past + T, padding.device)
    for name, visible in forms.items():
        assert torch.equal(visible.expand(B, 1, T, past + T), forms["sdpa"]), name
    unpadded = visible_keys(None, True, T, past + T, padding.device)
    expected = torch.ones(T, past + T, dtype=torch.bool).tril(past)
    assert torch.equal(unpadded[0, 0], expected)
    cross = visible_keys(padding, False, T, past + T, padding.device)
    assert torch.equal(cross.expand(B, 1, T, -1), padding.bool()[:, None, None].expand(B, 1, T, -1))
