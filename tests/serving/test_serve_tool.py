"""The console tool: it serves a model folder, says what to do when the model does not record its
languages, and on SIGTERM answers every request in flight, then exits 0."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, word_tokenizer
from tests.toy_translation import save_toy_model, toy_pairs, trained_toy_model
from vanilla_transformer.cli.serve import main
from vanilla_transformer.translation import DecodingOptions, translate_lines

from .conftest import free_port


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return save_toy_model(tmp_path_factory.mktemp("toy") / "model")


def test_a_model_without_languages_is_a_user_error_naming_the_options(model_folder, capsys):
    assert main([str(model_folder), "--port", "1"]) == 2
    assert "pass --source_lang and --target_lang" in capsys.readouterr().err


def test_a_missing_model_is_a_user_error(tmp_path, capsys):
    assert main([str(tmp_path / "none"), "--source_lang", "en", "--target_lang", "es"]) == 2
    assert "error:" in capsys.readouterr().err


def start_server(model_folder: Path, port: int, *flags) -> subprocess.Popen:
    command = [sys.executable, "-m", "vanilla_transformer.cli.serve", str(model_folder)]
    command += ["--port", str(port), "--source_lang", "en", "--target_lang", "es", *flags]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the server did not start"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)


@pytest.mark.slow  # a server process started and stopped (about 20 s)
def test_sigterm_answers_every_request_in_flight_then_exits_0(model_folder):
    port = free_port()
    # Requests wait up to 3 s for others to join them: they are in flight when SIGTERM comes.
    process = start_server(model_folder, port, "--num_beams", "1", "--max_wait_ms", "3000")
    texts = [source for source, _ in toy_pairs(16, seed=2)]
    replies: dict[int, httpx.Response | Exception] = {}

    def ask(i: int) -> None:
        body = {"q": texts[i], "source": "en", "target": "es"}
        try:
            replies[i] = httpx.post(f"http://127.0.0.1:{port}/translate", json=body, timeout=60)
        except Exception as err:  # reported by the assertion below
            replies[i] = err

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(60)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output[-3000:]
    wanted = translate_lines(
        trained_toy_model(), word_tokenizer(), texts, DecodingOptions(num_beams=1)
    )
    got = [replies[i] for i in range(len(texts))]
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in got), got
    assert [r.json()["translatedText"] for r in got] == [w[0] for w in wanted]


@pytest.mark.skipif(
    importlib.util.find_spec("ctranslate2") is None, reason="the export extra is not installed"
)
def test_on_ctranslate2_the_server_answers_the_engines_translations_with_scores(
    model_folder, tmp_path
):
    from fastapi.testclient import TestClient

    from vanilla_transformer.engines import load_translator
    from vanilla_transformer.serving import serve_model

    cache = tmp_path / "cache"
    translator = load_translator(model_folder, "ctranslate2", cache_dir=cache)
    app = serve_model(
        str(model_folder), "ctranslate2", source_lang="en", target_lang="es", cache_dir=cache
    )
    texts = [source for source, _ in toy_pairs(4, seed=5)]
    body = {"q": texts, "source": "en", "target": "es", "num_return_sequences": 2}
    with TestClient(app) as client:
        reply = client.post("/v1/translate", json=body).json()
    wanted = translator.translate_hypotheses(texts, DecodingOptions(num_return_sequences=2))
    assert reply["translatedText"] == [w[0].text for w in wanted]
    got = [[(h["text"], round(h["score"], 4)) for h in hs] for hs in reply["hypotheses"]]
    assert got == [[(h.text, round(h.score, 4)) for h in w] for w in wanted]
