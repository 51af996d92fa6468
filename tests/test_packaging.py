"""An installed wheel carries what the tools need at run time: the card template, the `evaluate`
metric modules, and a console entry point for every product tool."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("train", "translate", "evaluate", "average", "push")


def test_the_wheel_ships_templates_metric_modules_and_console_tools(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("vanilla_transformer-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert "vanilla_transformer/publishing/templates/model_card.md" in names
    assert "vanilla_transformer/metrics/sacrebleu_scores/sacrebleu_scores.py" in names
    for tool in TOOLS:
        assert f"vanilla-transformer-{tool} = vanilla_transformer.cli.{tool}:main" in scripts
    assert not any(n.startswith(("research/", "scripts/", "tests/")) for n in names)
