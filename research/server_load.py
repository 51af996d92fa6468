"""Load test of the translation server (`vanilla-transformer-serve`) on localhost.

    python scripts/benchmark.py --parts server --model runs/cpu-small/hub --server-clients 16

1. Starts the server tool on a free port in a child process (the real tool: uvicorn, micro-batcher).
2. One request at a time over the texts: the single-request translation of each text, and the
   latency and throughput without batching (bounded by `requests` and `seconds`).
3. The same texts again from `clients` concurrent asyncio/httpx clients plus `libretranslate_clients`
   threads running LibreTranslate's own Python client (`libretranslatepy`), bounded the same way.
4. Reports throughput, p50/p99 latency of both phases, the errors (any status but 200, any
   exception), the answers that differ from the single-request translation of their input, the
   mean lines per engine call of the concurrent phase (the server's /metrics), and stops the server with SIGTERM (it must
   exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["format_load_report", "load_test", "running_server"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(
    model: str, flags: Sequence[str] = (), start_timeout: float = 300
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`vanilla-transformer-serve model --port <free> flags` in a child process until it answers
    /health; yields (base URL, process). Stopped with SIGTERM on exit (the caller reads the
    process's return code)."""
    port = _free_port()
    command = [sys.executable, "-m", "vanilla_transformer.cli.serve", model, "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(
        [*command, *flags], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(process.stdout), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log, start_timeout)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(5)


def _wait_healthy(url: str, process, log: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            time.sleep(0.2)
            raise RuntimeError("the server exited at start:\n" + "".join(log)[-3000:])
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer /health within {timeout:.0f} s")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)


def _body(text: str, source: str, target: str) -> dict:
    return {"q": text, "source": source, "target": target}


def _stats(latencies: list[float], seconds: float) -> dict:
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {
        "requests": len(latencies),
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(latencies) / seconds, 2) if seconds > 0 else None,
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def one_at_a_time(url: str, texts, source: str, target: str, seconds: float):
    """Each text alone (stops issuing after `seconds`): {text: answer}, stats, errors."""
    answers, latencies, errors = {}, [], []
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=120) as client:
        for text in texts:
            if time.perf_counter() - start > seconds:
                break
            began = time.perf_counter()
            try:
                reply = client.post("/translate", json=_body(text, source, target))
            except httpx.HTTPError as err:
                errors.append(f"{type(err).__name__}: {err}")
                continue
            latencies.append(time.perf_counter() - began)
            if reply.status_code != 200:
                errors.append(f"{reply.status_code}: {reply.text[:200]}")
                continue
            answers[text] = reply.json()["translatedText"]
    return answers, _stats(latencies, time.perf_counter() - start), errors


async def _concurrent(url, texts, source, target, clients, lt_clients, seconds):
    """`clients` httpx clients and `lt_clients` libretranslatepy threads drain one queue of texts:
    [(text, answer, latency, via)], errors, wall time."""
    from libretranslatepy import LibreTranslateAPI

    queue = deque(texts)  # popleft is atomic: shared by the coroutines and the threads
    results, errors = [], []
    start = time.perf_counter()

    def take() -> str | None:
        """The next text, or None once the queue is empty or the time is up."""
        if time.perf_counter() - start > seconds:
            return None
        try:
            return queue.popleft()
        except IndexError:
            return None

    async def httpx_client(client: httpx.AsyncClient) -> None:
        while (text := take()) is not None:
            began = time.perf_counter()
            try:
                reply = await client.post("/translate", json=_body(text, source, target))
            except httpx.HTTPError as err:
                errors.append(f"{type(err).__name__}: {err}")
                continue
            if reply.status_code != 200:
                errors.append(f"{reply.status_code}: {reply.text[:200]}")
                continue
            latency = time.perf_counter() - began
            results.append((text, reply.json()["translatedText"], latency, "httpx"))

    def libretranslate_client() -> None:
        api = LibreTranslateAPI(url)
        while (text := take()) is not None:
            began = time.perf_counter()
            try:
                answer = api.translate(text, source, target, timeout=120)
            except Exception as err:  # urllib's HTTPError, URLError, a bad answer
                errors.append(f"libretranslatepy {type(err).__name__}: {err}")
                continue
            results.append((text, answer, time.perf_counter() - began, "libretranslatepy"))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await asyncio.gather(
            *(httpx_client(client) for _ in range(clients)),
            *(asyncio.to_thread(libretranslate_client) for _ in range(lt_clients)),
        )
    return results, errors, time.perf_counter() - start


def _batch_totals(url: str) -> tuple[float, float]:
    """(lines, engine calls) so far, from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    name = "translation_batch_sentences"
    return values.get(f"{name}_sum", 0.0), values.get(f"{name}_count", 0.0)


def load_test(
    model: str,
    texts: Sequence[str],
    source: str,
    target: str,
    clients: int = 16,
    libretranslate_clients: int = 2,
    requests: int = 200,
    seconds: float = 120.0,
    server_flags: Sequence[str] = (),
) -> dict:
    """The load test (module docstring) of `model` over the first `requests` of `texts`; each
    phase stops issuing requests after `seconds`. `server_flags`: more flags of the server tool
    (e.g. `--engine ctranslate2 --num_beams 4`)."""
    texts = list(dict.fromkeys(t for t in texts if t.strip()))[:requests]
    flags = ["--source_lang", source, "--target_lang", target, *server_flags]
    with running_server(model, flags) as (url, process):
        alone, sequential, errors = one_at_a_time(url, texts, source, target, seconds)
        batched = [t for t in texts if t in alone]  # those with a single-request answer
        lines_before, calls_before = _batch_totals(url)  # the first phase's
        results, more_errors, wall = asyncio.run(
            _concurrent(url, batched, source, target, clients, libretranslate_clients, seconds)
        )
        lines, calls = _batch_totals(url)
        lines, calls = lines - lines_before, calls - calls_before
        mean_batch = round(lines / calls, 2) if calls else None
    concurrent = _stats([r[2] for r in results], wall)
    concurrent["clients"] = clients
    concurrent["libretranslatepy_clients"] = libretranslate_clients
    concurrent["libretranslatepy_requests"] = sum(r[3] == "libretranslatepy" for r in results)
    mismatches = [(t, a, alone[t]) for t, a, _, _ in results if a != alone[t]]
    speedup = None
    if sequential["requests_per_s"] and concurrent["requests_per_s"]:
        speedup = round(concurrent["requests_per_s"] / sequential["requests_per_s"], 2)
    return {
        "model": model,
        "server_flags": list(server_flags),
        "one_at_a_time": sequential,
        "concurrent": concurrent,
        "speedup": speedup,
        "mean_lines_per_engine_call": mean_batch,  # in the concurrent phase
        "errors": len(errors) + len(more_errors),
        "error_samples": (errors + more_errors)[:5],
        "mismatches": len(mismatches),
        "mismatch_samples": mismatches[:5],
        "unanswered": len(batched) - len(results) - len(more_errors),
        "server_exit_code": process.returncode,
    }


def format_load_report(report: dict) -> str:
    """The load test as a Markdown table."""
    seq, con = report["one_at_a_time"], report["concurrent"]
    lines = [
        f"Server load test: {report['model']} {' '.join(report['server_flags'])}".rstrip(),
        "",
        "| phase | requests | requests/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
        f"| one at a time | {seq['requests']} | {seq['requests_per_s']} | {seq['p50_ms']} | "
        f"{seq['p99_ms']} |",
        f"| {con['clients']} httpx + {con['libretranslatepy_clients']} libretranslatepy clients "
        f"| {con['requests']} | {con['requests_per_s']} | {con['p50_ms']} | {con['p99_ms']} |",
        "",
        f"Speed-up {report['speedup']}x; {report['mean_lines_per_engine_call']} lines per engine "
        f"call; errors {report['errors']}; answers unlike the single-request translation "
        f"{report['mismatches']}; unanswered {report['unanswered']}; libretranslatepy requests "
        f"{con['libretranslatepy_requests']}; server exit code {report['server_exit_code']}.",
    ]
    return "\n".join(lines)
