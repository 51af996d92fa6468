"""The batching translator as a Ray Serve deployment, on a local Ray cluster: LibreTranslate's API
answered by two replicas, each answer the translation of its own input."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.serve", reason="the ray extra is not installed")

import httpx  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402

from tests.conftest import word_tokenizer  # noqa: E402
from tests.toy_translation import save_toy_model, toy_pairs, trained_toy_model  # noqa: E402
from vanilla_transformer.serving.ray_serve import translation_app  # noqa: E402
from vanilla_transformer.translation import DecodingOptions, translate_lines  # noqa: E402

from .conftest import free_port  # noqa: E402


@pytest.mark.slow  # a local Ray cluster starts and stops (30 s or more)
def test_ray_serve_replicas_answer_libretranslate_requests(tmp_path):
    folder = tmp_path / "model"
    save_toy_model(folder)
    greedy = DecodingOptions(num_beams=1)
    texts = [source for source, _ in toy_pairs(6, seed=3)]
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = translation_app(
            str(folder), source_lang="en", target_lang="es", decoding=greedy, num_replicas=2,
            ray_actor_options={"num_cpus": 0.5},
        )  # fmt: skip
        serve.run(app, name="translate", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/languages", timeout=60).json()[0]["targets"] == ["es"]
        reply = httpx.post(
            f"{url}/translate", json={"q": texts, "source": "en", "target": "es"}, timeout=60
        )
        bad = httpx.post(f"{url}/translate", json={"q": "", "source": "en", "target": "es"})
        status = serve.status().applications["translate"]
    finally:
        serve.shutdown()
        ray.shutdown()
    wanted = translate_lines(trained_toy_model(), word_tokenizer(), texts, greedy)
    assert reply.status_code == 200
    assert reply.json()["translatedText"] == [w[0] for w in wanted]
    assert bad.status_code == 400 and "missing q" in bad.json()["error"]
    replicas = status.deployments["TranslationServer"].replica_states
    assert replicas.get("RUNNING") == 2
