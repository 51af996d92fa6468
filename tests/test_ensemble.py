"""Ensemble decoding (`vanilla_transformer.ensemble`): an ensemble of one model, or of one model
twice, is that model; caches are reordered per member under beam search; models of other
vocabularies are refused."""

import io
import sys

import pytest
import torch

from tests.conftest import tiny_config, word_tokenizer
from tests.toy_translation import SENTENCES, trained_toy_model
from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.cli import translate as translate_tool
from vanilla_transformer.ensemble import EnsembleMismatchError, EnsembleModel, check_same_tokenizer
from vanilla_transformer.translation import DecodingOptions, translate_hypotheses, translate_lines


@pytest.fixture(scope="module")
def toy():
    return trained_toy_model()


@pytest.fixture(scope="module")
def other_toy():
    """A second trained model of the same vocabulary (another seed of the training data)."""
    return trained_toy_model(steps=200)


def _generate(model, **kwargs):
    inputs = word_tokenizer()(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=12, **kwargs)


@pytest.mark.parametrize("copies", [1, 2])
@pytest.mark.parametrize("num_beams", [1, 4])
def test_an_ensemble_of_one_model_or_of_the_same_model_twice_gives_its_tokens(
    toy, copies, num_beams
):
    ensemble = EnsembleModel([toy] * copies)
    assert torch.equal(
        _generate(ensemble, num_beams=num_beams), _generate(toy, num_beams=num_beams)
    )


def test_an_ensemble_scores_as_its_one_model(toy):
    options = DecodingOptions(num_beams=4, num_return_sequences=2)
    alone = translate_hypotheses(toy, word_tokenizer(), SENTENCES, options)
    twice = translate_hypotheses(EnsembleModel([toy, toy]), word_tokenizer(), SENTENCES, options)
    for a, b in zip(alone, twice, strict=True):
        assert [h.text for h in a] == [h.text for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_an_ensembles_cached_decoding_equals_its_uncached_decoding(toy, other_toy, num_beams):
    # Different members: a member cache reordered with another's beams would change the tokens.
    ensemble = EnsembleModel([toy, other_toy])
    cached = _generate(ensemble, num_beams=num_beams)
    uncached = _generate(ensemble, num_beams=num_beams, use_cache=False)
    assert torch.equal(cached, uncached)


def test_an_ensembles_next_token_distribution_is_the_mean_of_its_members(toy, other_toy):
    inputs = word_tokenizer()(SENTENCES[:2], padding=True, return_tensors="pt")
    decoder_input_ids = torch.tensor([[1, 5, 6], [1, 7, 8]])
    with torch.no_grad():
        probs = [
            m(**inputs, decoder_input_ids=decoder_input_ids).logits.softmax(-1)
            for m in (toy, other_toy)
        ]
        ensemble = EnsembleModel([toy, other_toy])(**inputs, decoder_input_ids=decoder_input_ids)
    torch.testing.assert_close(ensemble.logits.exp(), (probs[0] + probs[1]) / 2)


def test_models_of_other_vocabularies_are_refused(toy):
    bigger = VanillaTransformerForConditionalGeneration(
        tiny_config(vocab_size=toy.config.vocab_size + 3)
    )
    with pytest.raises(EnsembleMismatchError, match=r"vocab_size differs: a: \d+, b: \d+"):
        EnsembleModel([toy, bigger], names=["a", "b"])
    other_pad = VanillaTransformerForConditionalGeneration(tiny_config(pad_token_id=3))
    with pytest.raises(EnsembleMismatchError, match="pad_token_id differs"):
        EnsembleModel([toy, other_pad])
    other = word_tokenizer()
    other.add_tokens(["zebra"])
    with pytest.raises(EnsembleMismatchError, match="the tokenizer of b is not the one of a"):
        check_same_tokenizer([word_tokenizer(), other], ["a", "b"])


def test_the_tool_decodes_several_models_as_an_ensemble(
    toy, other_toy, tmp_path, monkeypatch, capsys
):
    folders = []
    for name, model in (("a", toy), ("b", other_toy)):
        model.save_pretrained(tmp_path / name)
        word_tokenizer().save_pretrained(tmp_path / name)
        folders.append(tmp_path / name)
    stdin = io.TextIOWrapper(io.BytesIO(("\n".join(SENTENCES) + "\n").encode()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert translate_tool.main([*map(str, folders), "--num_beams", "4"]) == 0
    from_folders = EnsembleModel.from_pretrained_list([str(f) for f in folders])
    expected = translate_lines(from_folders, word_tokenizer(), SENTENCES)
    assert expected == translate_lines(EnsembleModel([toy, other_toy]), word_tokenizer(), SENTENCES)
    assert capsys.readouterr().out.splitlines() == [o[0] for o in expected]
