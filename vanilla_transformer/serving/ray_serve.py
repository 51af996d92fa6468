"""The same server as a Ray Serve deployment: beyond one machine (the `ray` extra).

    from ray import serve
    from vanilla_transformer.serving.ray_serve import translation_app

    serve.run(translation_app("runs/cpu-small/hub", autoscaling_config={
        "min_replicas": 1, "max_replicas": 8, "target_ongoing_requests": 32}), route_prefix="/")

Each replica loads the model on its engine and serves the app of `serving.app` (LibreTranslate's
API, `/v1/translate`, `/health`, `/metrics`) with its own `MicroBatcher`: Ray's HTTP proxy spreads
the requests over the replicas, and each replica gathers the requests it holds into engine calls.
Ray Serve adds replicas when the ongoing requests per replica pass `target_ongoing_requests` and
removes them when idle, on the machines of the Ray cluster (docs/serving.md: scaling out). On
shutdown a replica stops taking requests and its batcher answers the ones it holds.
"""

from __future__ import annotations

import inspect

from ray import serve

from .app import serve_model

__all__ = ["TranslationServer", "translation_app"]


@serve.deployment(max_ongoing_requests=128, graceful_shutdown_timeout_s=60)
@serve.ingress()
class TranslationServer:
    """One replica: `serving.app.serve_model`'s app for its arguments."""

    def __init__(self, model: str, **app_options):
        self._app = serve_model(model, **app_options)

    def __serve_build_asgi_app__(self):
        return self._app


def translation_app(
    model: str,
    num_replicas: int = 1,
    autoscaling_config: dict | None = None,
    ray_actor_options: dict | None = None,
    **app_options,
):
    """A Ray Serve application of `model` for `serve.run`: each replica serves
    `serving.app.serve_model(model, **app_options)` (the options are serve_model's; a wrong one
    fails here, before any replica starts). `num_replicas` replicas, or with `autoscaling_config`
    (Ray's: `min_replicas`, `max_replicas`, `target_ongoing_requests`, ...) as many as the load
    needs. `ray_actor_options`: each replica's resources (e.g. `{"num_cpus": 4}` for an engine with
    4 threads, `{"num_gpus": 1}`). The model path must be readable on every node (a shared folder)
    or be a Hub id; `cache_dir`: where each node keeps the engine's export (default: the engines'
    cache)."""
    inspect.signature(serve_model).bind(model, **app_options)  # TypeError naming a wrong option
    options: dict = {"ray_actor_options": ray_actor_options or {"num_cpus": 1}}
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
    else:
        options["num_replicas"] = num_replicas
    return TranslationServer.options(**options).bind(model, **app_options)
