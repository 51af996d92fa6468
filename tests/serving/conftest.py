"""Shared by the server tests: a real translator over the toy model (trained in seconds to translate
word by word), and a live uvicorn server on a free port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
import uvicorn

from tests.conftest import word_tokenizer
from tests.toy_translation import trained_toy_model
from vanilla_transformer.engines.torch_engine import TorchTranslator
from vanilla_transformer.serving import BatchLimits, LanguagePair, RequestLimits, create_app
from vanilla_transformer.translation import DecodingOptions

PAIR = LanguagePair("en", "es")
GREEDY = DecodingOptions(num_beams=1)


class ToyTranslator(TorchTranslator):
    """The torch engine over the toy model."""

    def __init__(self):
        super().__init__(trained_toy_model(), word_tokenizer())


class FailingOn(ToyTranslator):
    """The toy translator, except that an engine call holding `word` raises (a fault injected
    into a real translator)."""

    def __init__(self, word: str, error=RuntimeError):
        super().__init__()
        self.word, self.error = word, error

    def _decode(self, lines, options, prefixes, progress, scores):
        if any(self.word in line.split() for line in lines):
            raise self.error(f"the engine failed on {self.word!r}")
        return super()._decode(lines, options, prefixes, progress, scores)


@pytest.fixture(scope="session")
def translator():
    return ToyTranslator()


def make_app(translator, decoding=GREEDY, limits=None, max_wait_ms=5.0, **batch):
    return create_app(
        translator,
        PAIR,
        decoding,
        limits or RequestLimits(char_limit=200, batch_limit=8),
        BatchLimits(max_wait_ms=max_wait_ms, **batch),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def live_server(app):
    """`app` on uvicorn in a thread at http://127.0.0.1:<free port>; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
