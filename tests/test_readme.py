"""The README is what a newcomer reads first: at most 250 lines, and its Python usage example runs
as printed (on a tiny saved model in place of the main job's `runs/cpu-small/hub`)."""

import ast
from pathlib import Path

from tests.conftest import save_tiny_model, word_tokenizer
from tests.export.readme_examples import README, readme_python_example, run_example
from tests.toy_translation import SENTENCES
from vanilla_transformer import translation_pipeline

VERSE = "In the beginning God created the heaven and the earth."


def test_the_readme_is_at_most_250_lines_and_links_each_doc_it_names():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    for doc in ("recipe", "performance", "reliability", "compatibility", "deployment", "data"):
        assert f"](docs/{doc}.md)" in text, doc
    for name in ("recipe", "performance", "compatibility", "deployment", "data"):
        assert (README.parent / "docs" / f"{name}.md").is_file(), name


def test_the_readme_usage_example_translates_like_the_pipeline(tmp_path):
    folder = save_tiny_model(tmp_path / "hub", word_tokenizer())
    printed = run_example(
        readme_python_example("Usage"), {"runs/cpu-small/hub": str(folder), VERSE: SENTENCES[1]}
    )
    # The example's model.generate() uses the saved generation config, as the pipeline does.
    expected = translation_pipeline(str(folder))(SENTENCES[1])[0]["translation_text"]
    assert ast.literal_eval(printed.strip()) == [expected]


def test_the_readme_table_lists_every_console_tool():
    import tomllib

    scripts = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]["scripts"]
    text = README.read_text()
    assert all(f"| `{tool}` |" in text for tool in scripts), sorted(scripts)
    assert Path(README.parent / "model_cards" / "model_card.md").is_file()
