"""A translation server: LibreTranslate's HTTP API over any engine, with micro-batching.

    from vanilla_transformer.engines import load_translator
    from vanilla_transformer.serving import LanguagePair, create_app

    app = create_app(load_translator("runs/cpu-small/hub"), LanguagePair("en", "es"))
    # uvicorn.run(app) -- or the console tool: vanilla-transformer-serve runs/cpu-small/hub

- `batching.MicroBatcher`: concurrent requests gathered into one engine call on one worker thread;
- `app.create_app`: the FastAPI app (`POST /translate`, `GET /languages`, `POST /v1/translate`,
  `GET /health`, `GET /metrics`);
- `ray_serve`: the same batching translator as a Ray Serve deployment (the `ray` extra).

See docs/serving.md. Needs the `serve` extra (fastapi, uvicorn, python-multipart, prometheus-client).
"""

from .app import create_app, serve_model
from .batching import BatcherClosed, BatchLimits, MicroBatcher
from .languages import LanguagePair, resolve_language_pair
from .requests import RequestLimits

__all__ = [
    "BatchLimits",
    "BatcherClosed",
    "LanguagePair",
    "MicroBatcher",
    "RequestLimits",
    "create_app",
    "resolve_language_pair",
    "serve_model",
]
