"""CTranslate2 export: the exported folder scores and translates exactly like the PyTorch model."""

import importlib.util
import json
import os
import platform
import subprocess
import sys

import pytest
import torch
from conftest import tiny_config, word_tokenizer
from toy_translation import SENTENCES, toy_pairs, trained_toy_model
from transformers import AutoTokenizer

from vanilla_transformer import VanillaTransformerForConditionalGeneration, translation_pipeline
from vanilla_transformer.translation import DecodingOptions

needs_ctranslate2 = pytest.mark.skipif(
    importlib.util.find_spec("ctranslate2") is None,
    reason="ctranslate2 is not installed (pip install -e '.[export]')",
)
pytestmark = needs_ctranslate2

# Every kind of config CTranslate2 can express, each trained briefly so outputs are real text.
CONFIGS = {
    "paper_post_ln_sinusoidal": {},
    "pre_ln_learned_positions": {"norm_first": True, "position_encoding": "learned"},
    "untied_gelu_unscaled_fewer_decoder_heads": {
        "tie_word_embeddings": False,
        "activation_function": "gelu",
        "scale_embedding": False,
        "decoder_attention_heads": 2,
        "decoder_ffn_dim": 48,
    },
}
TARGETS = ["el perro grande corre", "la gato rojo es en el casa", "ver", "perro"]


def exported(tmp_path, overrides, quantization="float32"):
    import ctranslate2

    from vanilla_transformer.export.ctranslate2 import export_ctranslate2

    model = trained_toy_model(**overrides)
    folder = export_ctranslate2(model, word_tokenizer(), tmp_path / "ct2", quantization)
    return model, ctranslate2.Translator(str(folder), compute_type=quantization, intra_threads=1)


def our_log_probs(model, tokenizer, source: str, target: str) -> torch.Tensor:
    """Per-token log-probabilities of `target` + </s> given `source` (teacher forcing)."""
    target_ids = tokenizer(target, add_special_tokens=False).input_ids
    decoder_input_ids = torch.tensor([[model.config.decoder_start_token_id] + target_ids])
    labels = torch.tensor([target_ids + [tokenizer.eos_token_id]])
    with torch.no_grad():
        logits = model(
            **tokenizer(source, return_tensors="pt"), decoder_input_ids=decoder_input_ids
        )
    return logits.logits.log_softmax(-1).gather(-1, labels[..., None])[0, :, 0]


def our_greedy_tokens(model, tokenizer, sources: list[str]) -> list[list[str]]:
    batch = tokenizer(sources, return_tensors="pt", padding=True)
    with torch.no_grad():
        output = model.generate(**batch, num_beams=1, do_sample=False)
    specials = set(tokenizer.all_special_ids)
    rows = output.tolist()
    return [tokenizer.convert_ids_to_tokens([i for i in row if i not in specials]) for row in rows]


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_ctranslate2_scores_equal_ours_within_1e_4(tmp_path, overrides):
    from vanilla_transformer.export.ctranslate2 import tokenize_for_ctranslate2

    tokenizer = word_tokenizer()
    model, translator = exported(tmp_path, overrides)
    targets = [tokenizer.tokenize(t) for t in TARGETS]
    results = translator.score_batch(tokenize_for_ctranslate2(tokenizer, SENTENCES), targets)
    for source, target, result in zip(SENTENCES, TARGETS, results, strict=True):
        ours = our_log_probs(model, tokenizer, source, target)
        theirs = torch.tensor(result.log_probs)  # includes the final </s>, like ours
        assert theirs.shape == ours.shape
        torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_ctranslate2_greedy_output_equals_our_greedy_generate(tmp_path, overrides):
    from vanilla_transformer.export.ctranslate2 import tokenize_for_ctranslate2

    tokenizer = word_tokenizer()
    model, translator = exported(tmp_path, overrides)
    sources = tokenize_for_ctranslate2(tokenizer, SENTENCES)
    longest = tokenizer(SENTENCES, padding=True, return_tensors="pt").input_ids.shape[1]
    results = translator.translate_batch(
        sources,
        beam_size=1,
        # generate's defaults: up to source length + 50 new tokens, </s> allowed at step one.
        max_decoding_length=longest + 50,
        min_decoding_length=0,
    )
    theirs = [result.hypotheses[0] for result in results]
    assert theirs == our_greedy_tokens(model, tokenizer, SENTENCES)


def test_translator_on_exported_folder_returns_the_pipeline_text(tmp_path):
    """The folder is self-contained (tokenizer beside the weights) and text in gives the same
    text out as our translation pipeline."""
    from vanilla_transformer.engines import CTranslate2Translator
    from vanilla_transformer.export.ctranslate2 import export_ctranslate2

    model = trained_toy_model()
    folder = export_ctranslate2(model, word_tokenizer(), tmp_path / "ct2")
    assert AutoTokenizer.from_pretrained(str(folder)).get_vocab() == word_tokenizer().get_vocab()
    translate = CTranslate2Translator(folder, intra_threads=1)
    pipe = translation_pipeline(model, word_tokenizer())
    expected = [pipe(s, num_beams=1)[0]["translation_text"] for s in SENTENCES]
    assert translate(SENTENCES, num_beams=1) == expected


# CTranslate2 picks its int8 matrix kernels per CPU, and each can be selected on any x86 machine
# (the variables are read when the library loads, hence one process per backend). What the project's
# machines get: Intel Xeon -> MKL; AMD EPYC -> DNNL with u8s8 kernels, which use VNNI where the CPU has
# it (Zen 4) and vpmaddubsw where it has not (Zen 3, AVX2 only): that instruction adds pairs of
# products into int16 and saturates, so its scores are further from float32.
INT8_BACKENDS = {
    "mkl": {"CT2_USE_MKL": "1"},
    "dnnl": {"CT2_USE_MKL": "0"},  # this CPU's own DNNL kernels, with or without VNNI
    "dnnl_without_vnni": {"CT2_USE_MKL": "0", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def int8_bound(environment: dict) -> float:
    """The bound on the mean |log-prob difference| of int8 from float32 over the model's own
    translations (trained_toy_model(1000), 24 sentences). Measured 2026-12-04 on an AMD EPYC
    (Zen 4): MKL 0.0036, DNNL with VNNI 0.0036, DNNL without VNNI 0.040; a wrong weight mapping
    moves them by about 2."""
    from vanilla_transformer.hardware import cpu_features

    # MKL limited to AVX2 (MKL_ENABLE_INSTRUCTIONS=AVX2) measured as with VNNI; a CPU without VNNI
    # gets the wider bound whatever the backend, DNNL also when its instruction set is capped.
    dnnl_capped = environment.get("CT2_USE_MKL") == "0" and "ONEDNN_MAX_CPU_ISA" in environment
    return 0.1 if dnnl_capped or not cpu_features()["vnni"] else 0.02


SCORE_IN_A_FRESH_PROCESS = """
import json, sys
import ctranslate2
folder, sources, targets = json.load(sys.stdin)
translator = ctranslate2.Translator(folder, compute_type="int8", intra_threads=1)
scores = [r.log_probs for r in translator.score_batch(sources, targets)]
greedy = [r.hypotheses[0] for r in translator.translate_batch(sources, beam_size=1)]
print(json.dumps([scores, greedy]))
"""


def test_int8_export_is_under_60_percent_of_the_float32_size(tmp_path):
    from vanilla_transformer.export.ctranslate2 import export_ctranslate2

    model = trained_toy_model()
    int8 = export_ctranslate2(model, word_tokenizer(), tmp_path / "int8", quantization="int8")
    fp32 = export_ctranslate2(model, word_tokenizer(), tmp_path / "fp32")
    assert (int8 / "model.bin").stat().st_size < 0.6 * (fp32 / "model.bin").stat().st_size


@pytest.mark.slow  # a subprocess per int8 backend (~30 s)
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 int8 backends")
@pytest.mark.parametrize("backend", INT8_BACKENDS, ids=INT8_BACKENDS)
def test_int8_scores_the_models_own_translations_close_to_float32_on_every_cpu_backend(
    tmp_path, backend
):
    from toy_translation import toy_pairs

    from vanilla_transformer.export.ctranslate2 import export_ctranslate2, tokenize_for_ctranslate2

    environment = {**os.environ, **INT8_BACKENDS[backend]}
    tokenizer = word_tokenizer()
    model = trained_toy_model(1000)
    folder = export_ctranslate2(model, tokenizer, tmp_path / "int8", quantization="int8")
    sources = [source for source, _ in toy_pairs(24, seed=123)]
    float32_outputs = our_greedy_tokens(model, tokenizer, sources)
    request = [str(folder), tokenize_for_ctranslate2(tokenizer, sources), float32_outputs]
    done = subprocess.run(
        [sys.executable, "-c", SCORE_IN_A_FRESH_PROCESS],
        input=json.dumps(request),
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    int8_scores, int8_outputs = json.loads(done.stdout)
    differences = torch.cat(
        [
            (torch.tensor(scores) - our_log_probs(model, tokenizer, source, " ".join(target))).abs()
            for source, target, scores in zip(sources, float32_outputs, int8_scores, strict=True)
        ]
    )
    assert differences.mean() < int8_bound(environment)
    # The translations themselves, equal to float32: 24/24 measured with VNNI or MKL, 23/24 with
    # DNNL capped at AVX2 on a Zen 4, 20/24 with DNNL on a real Zen 3 (2026-12-05: its scores
    # still within the bound above). Wider bound where the int16 pair sums saturate.
    same = sum(a == b for a, b in zip(int8_outputs, float32_outputs, strict=True))
    assert same >= (18 if int8_bound(environment) > 0.02 else 22)


def test_export_leaves_the_pytorch_weights_unchanged(tmp_path):
    """CTranslate2 quantises its arrays in place: they must not share memory with the model."""
    from vanilla_transformer.export.ctranslate2 import export_ctranslate2

    model = VanillaTransformerForConditionalGeneration(tiny_config()).eval()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    export_ctranslate2(model, word_tokenizer(), tmp_path / "ct2", quantization="int8")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_key_norm_sum_attention_is_refused_with_the_reason(tmp_path):
    from vanilla_transformer.export.ctranslate2 import export_ctranslate2

    model = VanillaTransformerForConditionalGeneration(
        tiny_config(attention_scaling="key_norm_sum")
    )
    with pytest.raises(ValueError, match=r"key_norm_sum.*1/sqrt\(d_k\)"):
        export_ctranslate2(model, word_tokenizer(), tmp_path / "ct2")
    assert not (tmp_path / "ct2").exists()


def test_translator_decodes_with_the_papers_beam_and_length_penalty_like_the_pipeline(tmp_path):
    """Beam 4 and length penalty 0.6 (DecodingOptions' defaults, the model's generation config),
    not CTranslate2's length penalty 1."""
    from vanilla_transformer.engines import CTranslate2Translator
    from vanilla_transformer.export.ctranslate2 import export_ctranslate2

    model = trained_toy_model()
    folder = export_ctranslate2(model, word_tokenizer(), tmp_path / "ct2")
    translate = CTranslate2Translator(folder, intra_threads=1)
    assert (model.generation_config.num_beams, model.generation_config.length_penalty) == (4, 0.6)
    pipe = translation_pipeline(model, word_tokenizer())
    # Inputs where the length penalty (or an immediate </s>) may change the best beam; the toy
    # model's training differs a little from one CPU kind to another, so many of them.
    sources = [*SENTENCES, "and blue see cat", "big big cat cat", "and is red and dog ran", "gato"]
    sources += [source for source, _ in toy_pairs(40, seed=7)]
    expected = [pipe(s)[0]["translation_text"] for s in sources]  # the model's own settings
    assert translate(sources) == expected
    unpenalised = [pipe(s, length_penalty=1.0)[0]["translation_text"] for s in sources]
    assert translate(sources, length_penalty=1.0) == unpenalised
    # The best beam may be the same under both settings (on some CPU kinds it is for every one of
    # these inputs), its score is not: log-probability / length ** length_penalty, so a longer
    # output than </s> alone scores lower (further below 0) with 0.6 than with 1.
    paper, plain = (
        [best.score for [best] in translate.translate_hypotheses(sources, options)]
        for options in (DecodingOptions(), DecodingOptions(length_penalty=1.0))
    )
    rows = zip(expected, unpenalised, paper, plain, strict=True)
    same = [(a, b) for t, u, a, b in rows if t == u and t]
    assert same and all(score < score_plain for score, score_plain in same)
