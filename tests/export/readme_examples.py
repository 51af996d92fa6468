"""The README's code examples, read from README.md so that the tests run exactly what users copy."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_python_example(section: str) -> str:
    """The first ```python block under the `## {section}` heading."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match and "\n## " not in text[start + 1 : match.start()], (
        f"no python example in {section}"
    )
    return match.group(1)


def run_example(code: str, replacements: dict[str, str]) -> str:
    """Run `code` with each key replaced by its value (paths, inputs); returns what it printed."""
    for old, new in replacements.items():
        assert old in code, f"{old!r} is no longer in the README example"
        code = code.replace(old, new)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    return out.getvalue()
