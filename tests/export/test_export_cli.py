"""`scripts/export.py` (vanilla_transformer.cli.export): options, and a CTranslate2 int8 export of a
saved folder. (The ONNX route is exercised through the same `main` in test_onnx_export.py.)"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_config, word_tokenizer

from vanilla_transformer import VanillaTransformerForConditionalGeneration
from vanilla_transformer.cli.export import build_parser, main, parse_args

REPO = Path(__file__).resolve().parents[2]


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


def _tool_output(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "vanilla_transformer.cli.export", *map(str, args)]
    return subprocess.run(  # one stream, in the order a terminal shows it
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


def _own_lines(result) -> list[str]:
    """The output lines, less torchao's import-time notes (guarded where they are fixed)."""
    lines = result.stdout.splitlines()
    return [line for line in lines if "torchao" not in line and "_pytree.py" not in line]


@pytest.mark.slow  # a whole ONNX export in a subprocess (~60 s)
def test_onnx_export_shows_its_stages_and_ends_with_one_line_naming_the_folder(tmp_path):
    pytest.importorskip("onnxscript")
    model = VanillaTransformerForConditionalGeneration(tiny_config())
    model.save_pretrained(tmp_path / "model")
    word_tokenizer().save_pretrained(tmp_path / "model")
    result = _tool_output(tmp_path / "model", tmp_path / "onnx", "--format", "onnx", cwd=tmp_path)
    lines = _own_lines(result)
    assert result.returncode == 0, result.stdout[-2000:]
    assert len(lines) <= 10, "\n".join(lines)
    assert any("decoder_with_past.onnx" in line for line in lines)  # a stage line
    assert str(tmp_path / "onnx") in lines[-1]


def test_exporting_into_a_folder_holding_another_export_is_refused_unless_asked(tmp_path):
    from vanilla_transformer.cli.export import main

    model = VanillaTransformerForConditionalGeneration(tiny_config())
    model.save_pretrained(tmp_path / "model")
    word_tokenizer().save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    out.mkdir()
    (out / "encoder.onnx").write_bytes(b"an earlier export")
    assert main([str(tmp_path / "model"), str(out), "--format", "ctranslate2"]) != 0
    assert (out / "encoder.onnx").read_bytes() == b"an earlier export"
    if importlib.util.find_spec("ctranslate2") is None:
        return
    assert main([str(tmp_path / "model"), str(out), "--format", "ctranslate2",
                 "--overwrite_output_dir"]) == 0  # fmt: skip
    assert not (out / "encoder.onnx").exists() and (out / "model.bin").is_file()
