"""demo/screenshot.py: the script that puts a picture of the page in the README. (A module of its
own: playwright's sync API allows one running instance per thread, and test_demo_app.py keeps one
open for its whole module.)"""

import importlib.util
from pathlib import Path

import pytest
from toy_translation import SENTENCES, save_toy_model

from vanilla_transformer import translation_pipeline

DEMO = Path(__file__).resolve().parents[2] / "demo"
CHROMIUM = "/usr/bin/chromium"
MISSING = [m for m in ("gradio", "playwright") if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(bool(MISSING), reason=f"{MISSING} not installed (pip install -e '.[demo,dev]')")
@pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium (scripts/setup.sh does it "
    "when run as root)",
)
def test_screenshot_script_writes_a_png_of_the_page_showing_the_translation(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.syspath_prepend(str(DEMO))
    import screenshot

    folder = tmp_path / "model"
    save_toy_model(folder)
    output = tmp_path / "demo.png"
    screenshot.main([str(folder), SENTENCES[0], str(output), "--beam_size", "1"])
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    expected = translation_pipeline(str(folder))(SENTENCES[0], num_beams=1)[0]["translation_text"]
    assert f"-> {expected!r}" in capsys.readouterr().out
