"""The FastAPI application: LibreTranslate's API over a `MicroBatcher`, plus our options.

- `POST /translate` (JSON, or a form as `libretranslatepy` sends): `q` a string or a list of
  strings, `source`, `target`, `format` ("text"), `alternatives`, `api_key` -> `{"translatedText":
  str | list}` (`alternatives` and `detectedLanguage` as LibreTranslate adds them);
- `GET /languages`: the model's pair, `[{"code", "name", "targets"}]`;
- `POST /v1/translate` (JSON): the same fields plus decoding options (`num_beams`,
  `length_penalty`, `num_return_sequences`, `max_new_tokens`, sampling) -> `translatedText` and,
  per text, its n-best `hypotheses` `[{"text", "score"}]`;
- `GET /health` -> `{"status": "ok"}`; `GET /metrics`: Prometheus (`serving.metrics`).

Errors are LibreTranslate's `{"error": message}`: 400 for a bad request (403 a wrong API key),
503 while shutting down, 500 when the engine fails (that call's requests only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from ..errors import UserError
from ..translation import DecodingOptions, Hypothesis
from .batching import BatcherClosed, BatchLimits, MicroBatcher
from .languages import LanguagePair, resolve_language_pair
from .metrics import CONTENT_TYPE, ServerMetrics
from .requests import RequestError, RequestLimits, TextRequest, decoding_options, read_request

__all__ = ["create_app", "serve_model"]

logger = logging.getLogger("vanilla_transformer.serving")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def create_app(
    translator,
    pair: LanguagePair,
    decoding: DecodingOptions | None = None,
    limits: RequestLimits | None = None,
    batch_limits: BatchLimits | None = None,
) -> FastAPI:
    """The app serving `translator` (an `engines.Translator`) for `pair`; `decoding`: the
    options of `/translate` and the defaults of `/v1/translate`. The batcher's worker starts now
    and is drained and stopped when the app shuts down (`app.state.batcher`)."""
    decoding = decoding or DecodingOptions()
    limits = limits or RequestLimits()
    metrics = ServerMetrics()
    batcher = MicroBatcher(translator, batch_limits, on_batch=metrics.observe_batch)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        # uvicorn has finished the requests in flight: finish the batcher's, off the loop.
        await asyncio.to_thread(batcher.close)

    app = FastAPI(title="vanilla-transformer translation server", lifespan=lifespan)
    app.state.batcher, app.state.metrics, app.state.pair = batcher, metrics, pair
    _add_error_handlers(app)
    _add_metrics_middleware(app, metrics)

    async def answer(request: Request, v1: bool) -> dict:
        text_request = read_request(await _payload(request, v1), pair, limits, v1)
        options = decoding_options(decoding, text_request)
        lines, counts = _split_lines(text_request.texts)
        hypotheses = _joined(await _translated(batcher, lines, options, scores=v1), counts)
        return _response(text_request, hypotheses, pair, v1)

    @app.post("/translate")
    async def translate(request: Request):
        return await answer(request, v1=False)

    @app.post("/v1/translate")
    async def translate_v1(request: Request):
        return await answer(request, v1=True)

    @app.get("/languages")
    async def languages():
        return pair.languages()

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    return app


def serve_model(
    model: str,
    engine: str = "torch",
    quantization: str | None = None,
    device: str | None = None,
    source_lang: str | None = None,
    target_lang: str | None = None,
    decoding: DecodingOptions | None = None,
    limits: RequestLimits | None = None,
    batch_limits: BatchLimits | None = None,
    cache_dir: str | None = None,
) -> FastAPI:
    """The app for `model` (a model folder, run folder or Hub id) loaded on `engine` by
    `engines.load_translator` (exports in `cache_dir`, default the engines' cache); the language
    pair by `resolve_language_pair`."""
    from ..engines import load_translator

    translator = load_translator(model, engine, quantization, device, cache_dir)
    pair = resolve_language_pair(translator, model, source_lang, target_lang)
    return create_app(translator, pair, decoding, limits, batch_limits)


async def _payload(request: Request, json_only: bool) -> dict:
    """The request's fields: a JSON object, else the query string and the form (LibreTranslate's
    `request.values`), a form's line ends made "\\n" as LibreTranslate does."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or json_only:
        try:
            data = json.loads(await request.body())
        except ValueError:
            raise RequestError(400, "Invalid JSON format") from None
        if not isinstance(data, dict):
            raise RequestError(400, "Invalid JSON format")
        return data
    data = dict(request.query_params)
    if content_type in FORM_TYPES:
        form = await request.form()
        data.update({k: v for k, v in form.items() if isinstance(v, str)})
    if isinstance(data.get("q"), str):
        data["q"] = "\n".join(data["q"].splitlines())
    return data


async def _translated(
    batcher: MicroBatcher, texts: list[str], options: DecodingOptions, scores: bool
):
    """The batcher's hypotheses; an engine error is this request's 400 (an option the engine
    lacks, a `UserError`) or 500, never the server's."""
    try:
        return await batcher.translate(texts, options, scores)
    except (BatcherClosed, RequestError):
        raise
    except UserError as err:
        raise RequestError(400, f"Invalid request: {err}") from None
    except Exception as err:
        raise RequestError(500, f"Cannot translate text: {type(err).__name__}: {err}") from None


def _split_lines(texts: list[str]) -> tuple[list[str], list[int]]:
    """Every line of every text (the model translates sentences; a text's line breaks are kept),
    and how many lines each text has."""
    lines: list[str] = []
    counts = []
    for text in texts:
        parts = text.split("\n")
        lines += parts
        counts.append(len(parts))
    return lines, counts


def _joined(hypotheses: list[list[Hypothesis]], counts: list[int]) -> list[list[Hypothesis]]:
    """Per text, its lines' k-th hypotheses joined by line breaks (the score only of a one-line
    text: a sum over lines normalised per line would compare with nothing)."""
    joined, at = [], 0
    for n in counts:
        group, at = hypotheses[at : at + n], at + n
        if n == 1:
            joined.append(group[0])
            continue
        ranks = range(len(group[0]))
        joined.append([Hypothesis("\n".join(h[k].text for h in group)) for k in ranks])
    return joined


def _response(
    request: TextRequest, hypotheses: list[list[Hypothesis]], pair: LanguagePair, v1: bool
) -> dict:
    best = [h[0].text for h in hypotheses]
    shape = (lambda items: items) if request.batch else (lambda items: items[0])
    result: dict = {"translatedText": shape(best)}
    if request.alternatives:
        others = [
            list(dict.fromkeys(x.text for x in h[1:] if x.text != h[0].text)) for h in hypotheses
        ]
        result["alternatives"] = shape(others)
    if request.auto:
        result["detectedLanguage"] = shape(
            [{"confidence": 100.0, "language": pair.source}] * len(best)
        )
    if v1:
        result["hypotheses"] = shape(
            [[{"text": x.text, "score": x.score} for x in h] for h in hypotheses]
        )
    return result


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def bad_request(request, err: RequestError):
        return _error(err.status, err.message)

    @app.exception_handler(BatcherClosed)
    async def closing(request, err: BatcherClosed):
        return _error(503, str(err))

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):  # 404, 405: in the same shape
        return _error(err.status_code, str(err.detail))


def _add_metrics_middleware(app: FastAPI, metrics: ServerMetrics) -> None:
    @app.middleware("http")
    async def measure(request: Request, call_next):
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            endpoint = getattr(route, "path", "other")
            metrics.observe_request(endpoint, status, time.perf_counter() - start)
