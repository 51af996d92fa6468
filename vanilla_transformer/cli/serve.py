"""Serve a model over HTTP with LibreTranslate's API (docs/serving.md).

Examples:
    vanilla-transformer-serve runs/cpu-small/hub                       # http://127.0.0.1:5000
    vanilla-transformer-serve runs/cpu-small/hub --engine ctranslate2 --quantization int8
    vanilla-transformer-serve MODEL --host 0.0.0.0 --port 8080 --source_lang en --target_lang es
    curl -s localhost:5000/translate -H 'Content-Type: application/json' \\
        -d '{"q": "In the beginning", "source": "en", "target": "es"}'

MODEL is a model folder, a training run folder or a Hub id. The decoding flags (--num_beams,
--length_penalty, ...) are those of POST /translate and the defaults of POST /v1/translate.
Concurrent requests are gathered into one engine call (--max_batch_sentences, --max_batch_tokens,
--max_wait_ms). SIGTERM or Ctrl-C: the requests in flight are answered, then the server exits.
"""

from __future__ import annotations

import logging
import signal
import sys
from dataclasses import dataclass

from vanilla_transformer.engines import ALL_QUANTIZATIONS, ENGINE_HELP, ENGINES, QUANTIZATION_HELP
from vanilla_transformer.errors import UserError, console_tool
from vanilla_transformer.recipe.options import option, parse_model_cli
from vanilla_transformer.translation import DecodingOptions

logger = logging.getLogger("vanilla_transformer.serve")


@dataclass
class ServeOptions:
    host: str = option("127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
    port: int = option(5000, "Port (default: %(default)s, LibreTranslate's).")
    engine: str = option("torch", ENGINE_HELP, choices=list(ENGINES))
    quantization: str | None = option(None, QUANTIZATION_HELP, choices=list(ALL_QUANTIZATIONS))
    device: str | None = option(None, "cpu or cuda (default: the engine's).")
    source_lang: str | None = option(
        None, "Source language code (default: from the model's config, tokenizer or card)."
    )
    target_lang: str | None = option(None, "Target language code (default: as --source_lang).")
    char_limit: int = option(5000, "Characters per text, at most (-1: no limit).")
    batch_limit: int = option(64, "Texts per request, at most (-1: no limit).")
    alternatives_limit: int = option(4, "Alternatives per text, at most (-1: no limit).")
    api_keys: str | None = option(
        None, "Comma-separated API keys: a request must carry one (default: none needed)."
    )
    max_batch_sentences: int = option(64, "Lines per engine call, at most.")
    max_batch_tokens: int = option(8192, "Padded source tokens per engine call, at most.")
    max_wait_ms: float = option(10.0, "How long a request waits for others to join its call.")
    graceful_timeout: float = option(
        60.0, "On SIGTERM, seconds to finish the requests in flight before closing them."
    )


def parse_args(argv: list[str] | None = None):
    return parse_model_cli([DecodingOptions, ServeOptions], argv, __doc__)


def build_app(model: str, decoding: DecodingOptions, options: ServeOptions):
    """Load `model` on the chosen engine and build the server's app."""
    try:
        from vanilla_transformer.serving import BatchLimits, RequestLimits, serve_model
    except ImportError as err:
        raise UserError(
            f"the server needs {err.name}: pip install 'vanilla-transformer[serve]'."
        ) from None
    keys = frozenset(k.strip() for k in (options.api_keys or "").split(",") if k.strip())
    try:
        limits = RequestLimits(
            options.char_limit, options.batch_limit, options.alternatives_limit, keys
        )
        batch_limits = BatchLimits(
            options.max_batch_sentences, options.max_batch_tokens, options.max_wait_ms
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    return serve_model(
        model,
        options.engine,
        options.quantization,
        options.device,
        options.source_lang,
        options.target_lang,
        decoding,
        limits,
        batch_limits,
    )


@console_tool
def main(argv: list[str]) -> int:
    decoding, options, model = parse_args(argv)
    app = build_app(model, decoding, options)
    import uvicorn

    # uvicorn finishes the requests in flight on SIGTERM, then raises the signal again with the
    # handler it found: ours, so that a requested stop exits 0 instead of dying by the signal.
    signal.signal(signal.SIGTERM, lambda *_: logger.info("stopped by SIGTERM"))
    pair = app.state.pair
    logger.info(
        "serving %s -> %s on http://%s:%d", pair.source, pair.target, options.host, options.port
    )
    uvicorn.run(
        app,
        host=options.host,
        port=options.port,
        timeout_graceful_shutdown=options.graceful_timeout,
        log_level="info",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
