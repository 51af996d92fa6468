"""The walls of the layout: what may import what.

- The remote-code files (`configuration_*`, `modeling_*`, `pipeline_*`) are copied next to a model
  on the Hub and imported by transformers without this package: each must import on its own, with
  only its siblings beside it.
- The package never imports `scripts` or `research`; the remote-code files import only torch,
  transformers, huggingface_hub, the standard library and each other (no accelerate, no datasets,
  no other package module); research may import the recipe, never the reverse.
- The floors: the product (the package's top-level modules) imports nothing from the floors
  above it (`recipe/`, `publishing/`, `cli/`, `export/`, `engines/`); every subpackage is a
  package (has its `__init__.py`); no command-line tool imports another (shared code lives below
  the tools).
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REMOTE_CODE

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vanilla_transformer"
REMOTE_CODE_ALLOWED = {"torch", "transformers", "huggingface_hub", "__future__"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(level, module) of every import in `path`; `level` > 0 for relative imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
    return found


def _absolute(path: Path, level: int, module: str) -> str:
    """The dotted name a (possibly relative) import in `path` refers to."""
    if level == 0:
        return module
    package = list(path.relative_to(REPO).with_suffix("").parts[:-1])
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


@pytest.mark.parametrize("name", REMOTE_CODE)
def test_each_remote_code_file_imports_alone_beside_its_siblings(tmp_path, name):
    folder = tmp_path / "remote"
    folder.mkdir()
    for sibling in REMOTE_CODE:
        shutil.copy(PACKAGE / sibling, folder / sibling)
    # A package of the copies only, as transformers' dynamic-module loader builds it; the
    # repository is not on the path, and importing the package by name must fail there.
    (folder / "__init__.py").write_text("")
    # -I: isolated mode, no current folder, no PYTHONPATH, no user site-packages.
    code = (
        "import importlib, importlib.util, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        # The venv may hold an editable install: block the package so that a stray import fails.
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'vanilla_transformer':\n"
        "            raise ModuleNotFoundError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "try:\n"
        "    import vanilla_transformer\n"
        "    raise SystemExit('the package is importable: the check would prove nothing')\n"
        "except ModuleNotFoundError:\n"
        "    pass\n"
        f"importlib.import_module('remote.{name[:-3]}')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("name", REMOTE_CODE)
def test_remote_code_imports_only_torch_transformers_and_siblings(name):
    path = PACKAGE / name
    siblings = {f"vanilla_transformer.{n[:-3]}" for n in REMOTE_CODE}
    for level, module in _imports(path):
        target = _absolute(path, level, module)
        if level:
            assert target in siblings, f"{name} imports {target!r}, not a remote-code sibling"
        else:
            top = target.split(".")[0]
            assert top in REMOTE_CODE_ALLOWED or top in sys.stdlib_module_names, (
                f"{name} imports {target!r}: remote code may import only torch, transformers, "
                "huggingface_hub and the standard library"
            )


def _python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_package_never_imports_scripts_or_research():
    for path in _python_files(PACKAGE):
        for level, module in _imports(path):
            top = _absolute(path, level, module).split(".")[0]
            assert top not in {"scripts", "research", "tests"}, f"{path} imports {module!r}"


def test_the_recipe_and_publishing_never_import_the_cli():
    for folder in ("recipe", "publishing"):
        for path in _python_files(PACKAGE / folder):
            for level, module in _imports(path):
                target = _absolute(path, level, module)
                assert not target.startswith("vanilla_transformer.cli"), f"{path} imports {target}"


def test_research_depends_on_the_recipe_not_the_reverse():
    research = _python_files(REPO / "research")
    assert research, "research/ has no Python files"
    uses_recipe = any(
        _absolute(p, lvl, m).startswith("vanilla_transformer.recipe")
        for p in research
        for lvl, m in _imports(p)
    )
    assert uses_recipe, "research/ no longer uses the recipe: is the wall test still needed?"


FLOORS_ABOVE_THE_PRODUCT = ("recipe", "publishing", "cli", "export", "engines")


def test_the_product_imports_nothing_from_the_floors_above_it():
    upward = set()
    for path in sorted(PACKAGE.glob("*.py")):
        for level, module in _imports(path):
            target = _absolute(path, level, module)
            if target.split(".")[:2][-1] in FLOORS_ABOVE_THE_PRODUCT and target.startswith(
                "vanilla_transformer."
            ):
                upward.add((path.name, target))
    assert not upward, f"the product imports upward: {upward}"


def test_every_subpackage_has_its_init_file():
    # A folder holding only `<folder>.py` is an `evaluate` metric script, loaded by its path.
    folders = {p.parent for p in _python_files(PACKAGE) if p.stem != p.parent.name}
    missing = sorted(str(f.relative_to(REPO)) for f in folders if not (f / "__init__.py").is_file())
    assert not missing, f"folders of modules without an __init__.py: {missing}"


# cli/average.py still imports cli/evaluate.py's `corpus_of_run` on this branch (moved elsewhere
# on another); every other tool already stands alone.
TOOLS_NOT_YET_APART: set[str] = set()


def test_no_command_line_tool_imports_another():
    for path in _python_files(PACKAGE / "cli"):
        if path.name in TOOLS_NOT_YET_APART:
            continue
        for level, module in _imports(path):
            target = _absolute(path, level, module)
            assert not target.startswith("vanilla_transformer.cli."), (
                f"{path.name} imports {target}"
            )
