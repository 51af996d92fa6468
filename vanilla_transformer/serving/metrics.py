"""The server's Prometheus metrics, in a registry of its own (one per app, so that several apps in
one process, e.g. tests, do not collide in the global one).

- `translation_requests_total{endpoint,status}`: answered requests;
- `translation_request_errors_total{endpoint,status}`: those answered with a status >= 400;
- `translation_request_seconds{endpoint}`: latency histogram;
- `translation_batch_sentences` / `translation_batch_requests`: lines and requests per engine call;
- `translation_batch_seconds`: time of each engine call; `translation_batch_failures_total`.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        request = ["endpoint", "status"]
        self.requests = self._counter("translation_requests", "Answered requests.", request)
        self.errors = self._counter(
            "translation_request_errors",
            "Requests answered with an error status (>= 400).",
            request,
        )
        self.latency = self._histogram(
            "translation_request_seconds", "Request latency.", LATENCY_BUCKETS, ["endpoint"]
        )
        self.batch_sentences = self._histogram(
            "translation_batch_sentences", "Lines per engine call.", SIZE_BUCKETS
        )
        self.batch_requests = self._histogram(
            "translation_batch_requests", "Requests gathered into one engine call.", SIZE_BUCKETS
        )
        self.batch_seconds = self._histogram(
            "translation_batch_seconds", "Time of one engine call.", LATENCY_BUCKETS
        )
        self.batch_failures = self._counter(
            "translation_batch_failures", "Engine calls that raised."
        )

    def _counter(self, name: str, documentation: str, labels=()) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def _histogram(self, name: str, documentation: str, buckets, labels=()) -> Histogram:
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, requests: int, sentences: int, seconds: float, failed: bool) -> None:
        """A `MicroBatcher` observer (`on_batch`)."""
        self.batch_requests.observe(requests)
        self.batch_sentences.observe(sentences)
        self.batch_seconds.observe(seconds)
        if failed:
            self.batch_failures.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
