"""`scripts/export.py` (vanilla_transformer.cli.export): options, and a CTranslate2 int8 export of a
saved folder. (The ONNX route is exercised through the same `main` in test_onnx_export.py.)"""

import importlib.util
import json

import pytest
from conftest import tiny_config, word_tokenizer

from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.cli.export import build_parser, main, parse_args


def test_quantization_is_refused_for_onnx_with_the_reason(capsys):
    with pytest.raises(SystemExit):
        parse_args(["model", "out", "--format", "onnx", "--quantization", "int8"])
    assert "--format ctranslate2 only" in capsys.readouterr().err


def test_format_is_required_and_every_option_has_help():
    with pytest.raises(SystemExit):
        parse_args(["model", "out"])
    actions = [a for a in build_parser()._actions if a.dest != "help"]
    assert {a.dest for a in actions} == {
        "model",
        "output_dir",
        "format",
        "quantization",
        "tokenizer",
        "overwrite_output_dir",
        "debug",
    }
    assert all(a.help for a in actions)


@pytest.mark.skipif(
    importlib.util.find_spec("ctranslate2") is None,
    reason="ctranslate2 is not installed (pip install -e '.[export]')",
)
def test_cli_writes_an_int8_ctranslate2_folder_with_the_tokenizer(tmp_path):
    import ctranslate2

    model = VanillaTransformerForConditionalGeneration(tiny_config())
    model.save_pretrained(tmp_path / "model")
    word_tokenizer().save_pretrained(tmp_path / "model")
    main([str(tmp_path / "model"), str(tmp_path / "ct2"), "--format", "ctranslate2",
          "--quantization", "int8"])  # fmt: skip
    folder = tmp_path / "ct2"
    assert (folder / "model.bin").is_file() and (folder / "tokenizer.json").is_file()
    assert json.loads((folder / "config.json").read_text())["decoder_start_token"] == "<s>"
    translator = ctranslate2.Translator(str(folder), compute_type="int8")
    result = translator.translate_batch(
        [["the", "dog", "</s>"]], beam_size=1, max_decoding_length=5
    )
    assert all(token in word_tokenizer().get_vocab() for token in result[0].hypotheses[0])
