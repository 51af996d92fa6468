"""The tools on an engine: `--engine` / `--quantization` on vanilla-transformer-translate and
-evaluate give the engine's translations, BLEU through the same code path, and one-line errors."""

import importlib.util
import io
import json
import sys

import pytest
from toy_translation import SENTENCES, save_toy_model, toy_pairs

from vanilla_transformer.cli import evaluate as evaluate_tool
from vanilla_transformer.cli import translate as translate_tool
from vanilla_transformer.recipe.evaluation import compute_bleu

needs_ctranslate2 = pytest.mark.skipif(
    importlib.util.find_spec("ctranslate2") is None, reason="ctranslate2 is not installed"
)
LINES = [*SENTENCES, *(s for s, _ in toy_pairs(8, seed=7))]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return save_toy_model(tmp_path_factory.mktemp("toy") / "model")


@pytest.fixture(autouse=True)
def engine_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VANILLA_TRANSFORMER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def translated(argv, lines, monkeypatch, capsys) -> tuple[int, list[str], str]:
    stdin = io.TextIOWrapper(io.BytesIO("\n".join(lines).encode() + b"\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    code = translate_tool.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


@needs_ctranslate2
@pytest.mark.parametrize("beams", ["1", "4"])
def test_translate_on_ctranslate2_writes_torchs_translations(
    model_folder, monkeypatch, capsys, beams
):
    code, on_torch, _ = translated([model_folder, "--num_beams", beams], LINES, monkeypatch, capsys)
    assert code == 0
    argv = [model_folder, "--num_beams", beams, "--engine", "ctranslate2"]
    code, on_ct2, _ = translated(argv, LINES, monkeypatch, capsys)
    assert code == 0 and on_ct2 == on_torch and len(on_ct2) == len(LINES)


@needs_ctranslate2
def test_evaluate_on_an_engine_scores_what_translate_on_it_writes(
    model_folder, tmp_path, monkeypatch, capsys
):
    pairs = toy_pairs(16, seed=11)
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(json.dumps({"translation": {"en": s, "es": t}}) + "\n" for s, t in pairs)
    )
    engine = ["--engine", "ctranslate2", "--quantization", "int8", "--num_beams", "4"]
    results = tmp_path / "scores.json"
    argv = [model_folder, "--dataset", data, "--split", "train", *engine, "--results_json", results]
    assert evaluate_tool.main([str(a) for a in argv]) == 0
    assert "BLEU =" in capsys.readouterr().out
    code, written, _ = translated(
        [model_folder, *engine], [s for s, _ in pairs], monkeypatch, capsys
    )
    assert code == 0
    assert (tmp_path / "hypotheses.train.txt").read_text().splitlines() == written
    expected = compute_bleu(written, [t for _, t in pairs])["bleu"]
    assert json.loads(results.read_text())["bleu"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--engine", "onnxruntime", "--quantization", "bfloat16"],
            "onnxruntime engine has no quantization 'bfloat16'",
        ),
        (
            ["--engine", "ctranslate2", "--fast_cpu", "fp32"],
            "--fast_cpu is the torch engine's fast path",
        ),
        (["--fast_cpu", "fp32", "--quantization", "int8"], "disagree"),
    ],
)
def test_a_quantization_the_engine_lacks_is_a_one_line_error(
    model_folder, monkeypatch, capsys, flags, message
):
    code, out, err = translated([model_folder, *flags], ["the dog"], monkeypatch, capsys)
    assert code == 2 and out == []
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_an_unknown_engine_is_refused_with_the_choices(model_folder, monkeypatch, capsys):
    with pytest.raises(SystemExit) as stopped:
        translated([model_folder, "--engine", "tensorflow"], ["the dog"], monkeypatch, capsys)
    assert stopped.value.code == 2
    assert "ctranslate2" in capsys.readouterr().err


@pytest.mark.slow  # an export in a subprocess (~40 s for ONNX)
@needs_ctranslate2
@pytest.mark.parametrize("engine", ["ctranslate2", "onnxruntime"])
def test_the_readme_engines_example_prints_the_pipelines_translation(model_folder, engine):
    from tests.export.readme_examples import readme_python_example, run_example
    from vanilla_transformer import translation_pipeline

    verse = "In the beginning God created the heaven and the earth."
    printed = run_example(
        readme_python_example("Engines, tools for MT work, and a server"),
        # int8 run in float32: the printed text then equals the pipeline's on every CPU (int8's
        # closeness per CPU backend is tests/export/test_ctranslate2_export.py's).
        {
            "runs/cpu-small/hub": str(model_folder),
            verse: SENTENCES[1],
            '"ctranslate2"': f'"{engine}"',
            '"int8"': '"float32"',
        },
    )
    expected = translation_pipeline(str(model_folder))(SENTENCES[1])[0]["translation_text"]
    assert printed.strip() == str([expected])
