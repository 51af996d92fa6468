"""The demo page (demo/app.py) in a real browser: Debian's Chromium, headless, driven by
playwright. On a small trained model the page shows exactly what the translation pipeline returns
for the same input, with the paper's beam and with the fast CPU path."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from conftest import int8_on_any_cpu
from toy_translation import SENTENCES, save_toy_model

from vanilla_transformer import inference, optimize_for_cpu_inference, translation_pipeline

DEMO = Path(__file__).resolve().parents[2] / "demo"
CHROMIUM = "/usr/bin/chromium"
MISSING = [m for m in ("gradio", "playwright") if importlib.util.find_spec(m) is None]
needs_gradio = pytest.mark.skipif(
    bool(MISSING), reason=f"{MISSING} not installed (pip install -e '.[demo,dev]')"
)
needs_browser = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium (scripts/setup.sh does it "
    "when run as root)",
)
pytestmark = needs_gradio


@pytest.fixture(scope="module")
def demo_modules():
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    sys.path.insert(0, str(DEMO))
    import app
    import screenshot

    yield app, screenshot
    sys.path.remove(str(DEMO))


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return str(save_toy_model(tmp_path_factory.mktemp("demo-model")))


@pytest.fixture(scope="module")
def page(demo_modules, model_folder):
    """The app served on 127.0.0.1 (a free port) and open in headless Chromium; closed after."""
    app, screenshot = demo_modules
    with int8_on_any_cpu():  # the fast path's checkbox on every CPU (its arithmetic is tested)
        demo = app.build_demo(model_folder)
    with screenshot.serve(demo) as url, screenshot.browser_page() as page:
        screenshot.open_app(page, url)
        yield page


def expected_texts(pipe, texts, **kwargs):
    expected = [pipe(text, **kwargs)[0]["translation_text"] for text in texts]
    # The page is read when its output changes: consecutive outputs must differ and be non-empty.
    consecutive = zip(expected, expected[1:], strict=False)
    assert all(expected) and all(a != b for a, b in consecutive), expected
    return expected


@needs_browser
def test_page_shows_exactly_what_the_pipeline_returns_with_the_paper_beam(
    page, demo_modules, model_folder
):
    _, screenshot = demo_modules
    texts = SENTENCES[:3]
    expected = expected_texts(translation_pipeline(model_folder), texts, num_beams=4)
    shown = [screenshot.translate_on_page(page, t, beam_size=4, fast=False) for t in texts]
    assert shown == expected


@pytest.mark.slow  # two int8 compilations and a browser (~90 s on an AVX2 CPU)
@needs_browser
def test_fast_path_shows_what_the_int8_model_returns_greedily(
    page, demo_modules, model_folder, int8_anywhere
):
    _, screenshot = demo_modules
    pipe = translation_pipeline(model_folder)
    fast = translation_pipeline(optimize_for_cpu_inference(pipe.model, "int8"), pipe.tokenizer)
    texts = [SENTENCES[1], SENTENCES[0]]
    expected = expected_texts(fast, texts, num_beams=1)
    shown = [screenshot.translate_on_page(page, t, beam_size=1, fast=True) for t in texts]
    assert shown == expected


def test_the_page_offers_int8_only_on_a_cpu_where_it_is_faster_than_float32(
    demo_modules, model_folder, monkeypatch
):
    """Without VNNI or AMX torch's int8 is slower than float32: the page then has no fast path
    (its checkbox hidden) instead of failing to start."""
    app, _ = demo_modules
    monkeypatch.setattr(inference, "cpu_has_fast_int8", lambda: False)
    pipe, fast = app.load_pipelines(model_folder)
    assert fast is None
    assert app.translate(pipe, fast, SENTENCES[0], 1, True) == app.translate(
        pipe, None, SENTENCES[0], 1, False
    )
    monkeypatch.setattr(inference, "cpu_has_fast_int8", lambda: True)
    assert app.load_pipelines(model_folder)[1] is not None


def test_blank_input_is_not_translated(demo_modules, model_folder):
    app, _ = demo_modules
    pipe, fast = app.load_pipelines(model_folder)
    assert app.translate(pipe, fast, "   ", 4, False) == ""


def test_app_without_the_package_falls_back_to_transformers_and_translates_the_same(
    demo_modules, model_folder, monkeypatch
):
    """A Space installs transformers, not this package: the app then builds transformers'
    `pipeline(..., trust_remote_code=True)`, translates as the package's pipeline does, and offers
    no fast path (its int8 layers live in the package; no deprecated `torch.ao` stand-in). (Loading
    the saved code in a process without the package: tests/test_modeling.py.)"""
    app, _ = demo_modules
    with_package = app.load_pipelines(model_folder)
    monkeypatch.setitem(sys.modules, "vanilla_transformer", None)  # `import` now fails
    pipe, fast = app.load_pipelines(model_folder)
    assert fast is None
    for fast_path in (False, True):  # the checkbox is hidden; a stray True falls back to float32
        shown = [app.translate(pipe, fast, t, 1, fast_path) for t in SENTENCES]
        assert shown == [app.translate(*with_package, t, 1, False) for t in SENTENCES]


def test_each_input_line_gets_its_own_output_line(demo_modules, model_folder):
    app, _ = demo_modules
    pipe, fast = app.load_pipelines(model_folder)
    one_by_one = [app.translate(pipe, fast, t, 4, False) for t in SENTENCES[:2]]
    text = f"{SENTENCES[0]}\r\n\n{SENTENCES[1]}"  # a CRLF and a blank line between
    assert app.translate(pipe, fast, text, 4, False).split("\n") == [
        one_by_one[0],
        "",
        one_by_one[1],
    ]


@pytest.mark.parametrize("value", [None, 42, ["a list"]])
def test_non_string_input_is_read_as_text_not_an_attribute_error(demo_modules, model_folder, value):
    app, _ = demo_modules
    pipe, fast = app.load_pipelines(model_folder)
    expected = "" if value is None else app.translate(pipe, fast, str(value), 1, False)
    assert app.translate(pipe, fast, value, 1, False) == expected


@pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None, reason="no ctranslate2")
@pytest.mark.parametrize("beams", [1, 4])
def test_the_page_on_ctranslate2_shows_torchs_translations(
    demo_modules, model_folder, tmp_path, monkeypatch, beams
):
    app, _ = demo_modules
    monkeypatch.setenv("VANILLA_TRANSFORMER_CACHE", str(tmp_path))
    pipe, fast = app.load_engine(model_folder, "ctranslate2")
    assert fast is None and pipe.engine == "ctranslate2"
    text = "\n".join(SENTENCES)
    assert app.translate(pipe, fast, text, beams, False) == app.translate(
        *app.load_pipelines(model_folder), text, beams, False
    )
