"""An installed wheel carries what the tools need at run time: the card template (the top-level
`model_cards/` folder, shipped as `vanilla_transformer.model_cards`), the `evaluate` metric modules,
and a console entry point for every product tool; the card template renders from the wheel."""

import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import tiny_config
from tests.publishing.test_hub import card_info
from vanilla_transformer import VanillaTransformerForConditionalGeneration

REPO = Path(__file__).resolve().parents[1]
TOOLS = {
    "train": "train",
    "translate": "translate",
    "score": "score",
    "evaluate": "evaluate",
    "average": "average",
    "push": "push",
    "build-corpus": "build_corpus",
    "train-tokenizer": "train_tokenizer",
    "finetune": "finetune",
    "export": "export",
    "serve": "serve",
}

_RENDER_FROM_THE_WHEEL = """
import json, sys
sys.path.insert(0, sys.argv[1])
import vanilla_transformer
from vanilla_transformer.publishing.hub import TEMPLATE, render_model_card
assert vanilla_transformer.__file__.startswith(sys.argv[1]), vanilla_transformer.__file__
assert str(TEMPLATE).startswith(sys.argv[1]), TEMPLATE
print(render_model_card(json.loads(open(sys.argv[2]).read())).text)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(folder), str(REPO)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (built,) = folder.glob("vanilla_transformer-*.whl")
    return built


def test_the_wheel_ships_the_card_template_metric_modules_and_every_console_tool(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert "vanilla_transformer/model_cards/model_card.md" in names
    assert "vanilla_transformer/metrics/sacrebleu_scores/sacrebleu_scores.py" in names
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(declared) == {f"vanilla-transformer-{tool}" for tool in TOOLS}
    for tool, module in TOOLS.items():
        assert f"vanilla-transformer-{tool} = vanilla_transformer.cli.{module}:main" in scripts
    assert not any(n.startswith(("research/", "scripts/", "tests/", "model_cards/")) for n in names)


def test_a_card_renders_from_the_wheel_alone(wheel, tmp_path):
    """Unpacked and first on the path, with the repository out of it (-I): the card template is
    found inside the installed package."""
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    model = VanillaTransformerForConditionalGeneration(tiny_config(vocab_size=280))
    info = tmp_path / "card_info.json"
    info.write_text(json.dumps(card_info(model)))
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _RENDER_FROM_THE_WHEEL, str(unpacked), str(info)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "someone/vanilla-transformer-bible-en-es" in proc.stdout
    assert "{{" not in proc.stdout and "Reina-Valera 1909" in proc.stdout
