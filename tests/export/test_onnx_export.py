"""ONNX export (encoder, decoder, decoder with past) run with ONNX Runtime: the same logits as PyTorch,
and transformers' generate() over the sessions gives the same tokens (greedy and beam search). The
export goes through the command line, as a user runs it."""

import importlib.util

import numpy as np
import pytest
import torch
from conftest import word_tokenizer
from toy_translation import SENTENCES, trained_toy_model
from transformers import AutoTokenizer

from vanilla_transformer import translation_pipeline

MISSING = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"{MISSING} not installed (pip install -e '.[export]')"
)

CONFIGS = {
    "paper_post_ln_sinusoidal": {},
    # Every option CTranslate2 cannot express exports to ONNX, key-norm scaling included.
    "pre_ln_learned_key_norm_sum": pytest.param(
        {"norm_first": True, "position_encoding": "learned", "attention_scaling": "key_norm_sum"},
        marks=pytest.mark.slow,  # a second ~30 s export
    ),
}


@pytest.fixture(scope="module", params=CONFIGS.values(), ids=CONFIGS.keys())
def exported(request, tmp_path_factory):
    """(model, folder): the toy model saved, then exported with `scripts/export.py`'s main."""
    from vanilla_transformer.cli.export import main

    model = trained_toy_model(**request.param)
    root = tmp_path_factory.mktemp("onnx")
    model.save_pretrained(root / "model")
    word_tokenizer().save_pretrained(root / "model")
    torch.set_num_threads(1)
    main([str(root / "model"), str(root / "onnx"), "--format", "onnx"])
    return model, root / "onnx"


def test_export_writes_the_three_graphs_config_and_tokenizer(exported):
    _, folder = exported
    for name in ("encoder.onnx", "decoder.onnx", "decoder_with_past.onnx", "config.json"):
        assert (folder / name).is_file(), name
    assert AutoTokenizer.from_pretrained(str(folder)).get_vocab() == word_tokenizer().get_vocab()


def test_onnx_logits_equal_pytorch_with_and_without_past(exported):
    """decoder.onnx over a whole target (teacher forcing) and decoder_with_past.onnx one token at
    a time both give the PyTorch logits within 1e-4."""
    from vanilla_transformer.engines import OnnxTranslator
    from vanilla_transformer.export.onnx import past_names

    model, folder = exported
    tokenizer = word_tokenizer()
    sessions = OnnxTranslator(folder, intra_op_num_threads=1).model.sessions
    source = tokenizer(SENTENCES[:2], padding=True, return_tensors="np")
    target = tokenizer(["el perro grande corre", "la gato"], padding=True, return_tensors="np")
    start = np.full((2, 1), model.config.decoder_start_token_id)
    decoder_input_ids = np.concatenate([start, target["input_ids"][:, :-1]], axis=1)
    with torch.no_grad():
        expected = model(
            input_ids=torch.from_numpy(source["input_ids"]),
            attention_mask=torch.from_numpy(source["attention_mask"]),
            decoder_input_ids=torch.from_numpy(decoder_input_ids),
            use_cache=False,
        ).logits.numpy()
    (encoder_hidden_states,) = sessions["encoder"].run(None, dict(source))
    full = sessions["decoder"].run(
        None,
        {
            "decoder_input_ids": decoder_input_ids,
            "encoder_hidden_states": encoder_hidden_states,
            "encoder_attention_mask": source["attention_mask"],
        },
    )
    np.testing.assert_allclose(full[0], expected, atol=1e-4, rtol=0)

    layers = model.config.decoder_layers
    logits, *past = sessions["decoder"].run(
        None,
        {
            "decoder_input_ids": decoder_input_ids[:, :1],
            "encoder_hidden_states": encoder_hidden_states,
            "encoder_attention_mask": source["attention_mask"],
        },
    )
    steps = [logits[:, -1]]
    for t in range(1, decoder_input_ids.shape[1]):
        feed = {
            "decoder_input_ids": decoder_input_ids[:, t : t + 1],
            "encoder_attention_mask": source["attention_mask"],
            **dict(zip(past_names(layers, "past"), past, strict=True)),
        }
        logits, *new_self = sessions["decoder_with_past"].run(None, feed)
        for i in range(layers):
            past[4 * i], past[4 * i + 1] = new_self[2 * i], new_self[2 * i + 1]
        steps.append(logits[:, -1])
    np.testing.assert_allclose(np.stack(steps, axis=1), expected, atol=1e-4, rtol=0)


# Inputs of several lengths (padding), where the length penalty or an early </s> matters.
SOURCES = [*SENTENCES, "and blue see cat", "big big cat cat", "and is red and dog ran", "gato"]


@pytest.mark.parametrize(
    "settings",
    [
        {"num_beams": 1, "do_sample": False},
        {"num_beams": 4, "length_penalty": 0.6},
        {"num_beams": 4, "length_penalty": 1.0, "num_return_sequences": 3},
        {"num_beams": 4, "max_new_tokens": 3},
    ],
    ids=["greedy", "beam4", "beam4_nbest3_lp1", "beam4_max3"],
)
def test_generate_over_the_onnx_sessions_returns_pytorchs_tokens(exported, settings):
    """transformers' own generate() drives the three sessions (OnnxSeq2SeqLM): the same token ids
    as the PyTorch model's generate(), greedy and beam search alike, the output limit included."""
    from vanilla_transformer.engines import OnnxTranslator

    model, folder = exported
    batch = word_tokenizer()(SOURCES, padding=True, return_tensors="pt")
    facade = OnnxTranslator(folder, intra_op_num_threads=1).model
    with torch.no_grad():
        expected = model.generate(**batch, **settings)
        tokens = facade.generate(**batch, **settings)
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)


def test_generate_over_the_onnx_sessions_returns_pytorchs_beam_scores(exported):
    from vanilla_transformer.engines import OnnxTranslator

    model, folder = exported
    batch = word_tokenizer()(SOURCES, padding=True, return_tensors="pt")
    facade = OnnxTranslator(folder, intra_op_num_threads=1).model
    settings = {"num_beams": 4, "output_scores": True, "return_dict_in_generate": True}
    with torch.no_grad():
        expected = model.generate(**batch, **settings).sequences_scores
        scores = facade.generate(**batch, **settings).sequences_scores
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-4)


def test_onnx_translator_text_equals_the_pipeline_text(exported):
    from vanilla_transformer.engines import OnnxTranslator

    model, folder = exported
    pipe = translation_pipeline(model, word_tokenizer())
    expected = [pipe(s)[0]["translation_text"] for s in SOURCES]  # beam 4, length penalty 0.6
    assert OnnxTranslator(folder, intra_op_num_threads=1)(SOURCES) == expected
