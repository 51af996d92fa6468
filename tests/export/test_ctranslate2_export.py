"""CTranslate2 export: the exported folder scores and translates exactly like the PyTorch model."""

import importlib.util

import pytest
import torch
from conftest import tiny_config, word_tokenizer
from toy_translation import SENTENCES, trained_toy_model
from transformers import AutoTokenizer

from vanilla_transformer import VanillaTransformerForConditionalGeneration, translation_pipeline

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
    from vanilla_transformer.export.ctranslate2 import CTranslate2Translator, export_ctranslate2

    model = trained_toy_model()
    folder = export_ctranslate2(model, word_tokenizer(), tmp_path / "ct2")
    assert AutoTokenizer.from_pretrained(str(folder)).get_vocab() == word_tokenizer().get_vocab()
    translate = CTranslate2Translator(folder, intra_threads=1)
    pipe = translation_pipeline(model, word_tokenizer())
    expected = [pipe(s, num_beams=1)[0]["translation_text"] for s in SENTENCES]
    assert translate(SENTENCES, beam_size=1) == expected


def test_int8_export_is_smaller_and_scores_close_to_float32(tmp_path):
    from vanilla_transformer.export.ctranslate2 import export_ctranslate2, tokenize_for_ctranslate2

    tokenizer = word_tokenizer()
    model, int8 = exported(tmp_path / "int8", {}, quantization="int8")
    fp32_folder = export_ctranslate2(model, tokenizer, tmp_path / "fp32")
    int8_size = (tmp_path / "int8" / "ct2" / "model.bin").stat().st_size
    assert int8_size < 0.6 * (fp32_folder / "model.bin").stat().st_size
    targets = [tokenizer.tokenize(t) for t in TARGETS]
    results = int8.score_batch(tokenize_for_ctranslate2(tokenizer, SENTENCES), targets)
    differences = torch.cat(
        [
            (torch.tensor(result.log_probs) - our_log_probs(model, tokenizer, source, target)).abs()
            for source, target, result in zip(SENTENCES, TARGETS, results, strict=True)
        ]
    )
    # int8 rounding moved these d_model=32 scores by 0.03 on average (0.4 at most) when measured;
    # a wrong weight mapping, or even 10 fewer training steps, moves them by about 2.
    assert differences.mean() < 0.1


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


def test_readme_example_translates_with_the_exported_folder_like_our_pipeline(tmp_path):
    from readme_examples import readme_python_example, run_example

    from vanilla_transformer.export.ctranslate2 import export_ctranslate2

    model = trained_toy_model()
    folder = export_ctranslate2(model, word_tokenizer(), tmp_path / "ct2", quantization="int8")
    verse = "In the beginning God created the heaven and the earth."
    printed = run_example(
        readme_python_example("Export to CTranslate2"),
        {"exported/ct2": str(folder), verse: SENTENCES[1]},
    )
    # Beam 4, length penalty 0.6 on both sides (int8 weights in CTranslate2).
    expected = translation_pipeline(model, word_tokenizer())(SENTENCES[1])[0]["translation_text"]
    assert printed.strip() == expected


def test_translator_decodes_with_the_models_beam_and_length_penalty_like_the_pipeline(tmp_path):
    """Beam 4 and the model's length penalty (saved with the export), not CTranslate2's default 1."""
    from vanilla_transformer.export.ctranslate2 import CTranslate2Translator, export_ctranslate2

    model = trained_toy_model()
    folder = export_ctranslate2(model, word_tokenizer(), tmp_path / "ct2")
    translate = CTranslate2Translator(folder, intra_threads=1)
    assert translate.generation["num_beams"] == model.generation_config.num_beams == 4
    assert translate.generation["length_penalty"] == model.generation_config.length_penalty
    pipe = translation_pipeline(model, word_tokenizer())
    # Inputs where the length penalty (or an immediate </s>) changes the best beam.
    sources = [*SENTENCES, "and blue see cat", "big big cat cat", "and is red and dog ran", "gato"]
    expected = [pipe(s)[0]["translation_text"] for s in sources]  # the model's own settings
    assert translate(sources) == expected
    assert translate(sources, length_penalty=1.0) != expected  # the setting matters here
