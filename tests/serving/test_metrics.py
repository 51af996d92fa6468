"""GET /metrics exposes Prometheus counters of requests and errors, latency, and batch sizes."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from .conftest import make_app


def samples(text: str) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_errors_latency_and_batch_sizes(translator):
    with TestClient(make_app(translator)) as client:
        good = {"q": ["the dog", "a red cat"], "source": "en", "target": "es"}
        assert client.post("/translate", json=good).status_code == 200
        assert client.post("/translate", json={**good, "q": ""}).status_code == 400
        reply = client.get("/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    found = samples(reply.text)
    ok = (("endpoint", "/translate"), ("status", "200"))
    bad = (("endpoint", "/translate"), ("status", "400"))
    assert found[("translation_requests_total", ok)] == 1
    assert found[("translation_request_errors_total", bad)] == 1
    assert ("translation_request_errors_total", ok) not in found
    assert found[("translation_request_seconds_count", (("endpoint", "/translate"),))] == 2
    assert found[("translation_batch_sentences_sum", ())] == 2
    assert found[("translation_batch_requests_count", ())] == 1
