"""The console tools are leaves: no `cli` module imports another (what two tools share lives in
the recipe or the product), and evaluate writes its hypotheses beside the model, never into the
current folder or into a model folder."""

import ast
from pathlib import Path

from vanilla_transformer.cli.evaluate import default_hypotheses_file

CLI = Path(__file__).resolve().parents[2] / "vanilla_transformer" / "cli"


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_no_cli_module_imports_another():
    tools = {p.stem for p in CLI.glob("*.py") if p.stem != "__init__"}
    for path in CLI.glob("*.py"):
        imported = _imported_modules(path)
        others = {
            t for t in tools - {path.stem}
            if {f"vanilla_transformer.cli.{t}", f".{t}"} & imported
        }  # fmt: skip
        assert not others, f"{path.name} imports cli modules {sorted(others)}"


def test_evaluate_writes_hypotheses_into_the_run_folder_not_the_current_one(tmp_path):
    run = tmp_path / "run"
    (run / "hub").mkdir(parents=True)
    (run / "training_config.json").write_text("{}")
    model = tmp_path / "model"
    model.mkdir()
    assert default_hypotheses_file(str(run / "hub"), "test", None) == run / "hypotheses.test.txt"
    assert default_hypotheses_file(str(model), "test", None) == (
        tmp_path / "model.hypotheses.test.txt"
    )
    results = tmp_path / "out" / "scores.json"
    assert default_hypotheses_file(str(model), "valid", str(results)) == (
        tmp_path / "out" / "hypotheses.valid.txt"
    )
