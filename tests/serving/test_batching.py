"""Concurrent requests are gathered into fewer engine calls and each gets its own answer; an engine
failure fails only the request that caused it; closing the batcher answers what was submitted."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.toy_translation import SENTENCES, toy_pairs
from vanilla_transformer.serving import BatcherClosed, BatchLimits, MicroBatcher
from vanilla_transformer.translation import InputTooLongError

from .conftest import GREEDY, FailingOn, make_app

TEXTS = [source for source, _ in toy_pairs(12, seed=1)]


async def post_all(app, bodies, path="/translate"):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
        return await asyncio.gather(*(client.post(path, json=body) for body in bodies))


def body(q, **extra):
    return {"q": q, "source": "en", "target": "es", **extra}


def test_concurrent_requests_share_engine_calls_and_each_gets_its_own_answer(translator):
    app = make_app(translator, max_wait_ms=500)
    replies = asyncio.run(post_all(app, [body(text) for text in TEXTS]))
    alone = [translator.translate([text], GREEDY)[0][0] for text in TEXTS]
    assert [r.json()["translatedText"] for r in replies] == alone
    assert app.state.batcher.calls < len(TEXTS)
    app.state.batcher.close()


@pytest.mark.parametrize("limit", [{"max_batch_sentences": 4}, {"max_batch_tokens": 24}])
def test_each_call_stays_within_its_limits_and_answers_everyone(translator, limit, monkeypatch):
    calls = []
    batcher = MicroBatcher(
        translator,
        BatchLimits(max_wait_ms=300, **limit),
        on_batch=lambda requests, sentences, seconds, failed: calls.append(sentences),
    )
    seen = []
    original = translator.translate

    def recording(lines, options=None, progress=None):
        lengths = [len(ids) for ids in translator.tokenizer(lines)["input_ids"]]
        seen.append(len(lines) * max(lengths))
        return original(lines, options, progress)

    monkeypatch.setattr(translator, "translate", recording)  # the engine calls, recorded
    futures = [batcher.submit([text], GREEDY) for text in TEXTS]
    answers = [f.result(60)[0][0].text for f in futures]
    batcher.close()
    assert answers == [original([t], GREEDY)[0][0] for t in TEXTS]
    assert sum(calls) == len(TEXTS) and 1 < len(calls) < len(TEXTS)
    assert max(calls) <= limit.get("max_batch_sentences", len(TEXTS))
    assert max(seen) <= limit.get("max_batch_tokens", 10**9)


def test_requests_with_other_options_are_not_mixed(translator):
    app = make_app(translator, max_wait_ms=300)
    bodies = [body(t) for t in TEXTS[:4]] + [body(t, num_beams=3) for t in TEXTS[:4]]
    replies = asyncio.run(post_all(app, bodies, "/v1/translate"))
    from vanilla_transformer.translation import DecodingOptions

    beam3 = DecodingOptions(num_beams=3)
    wanted = [translator.translate([t], GREEDY)[0][0] for t in TEXTS[:4]]
    wanted += [translator.translate([t], beam3)[0][0] for t in TEXTS[:4]]
    assert [r.json()["translatedText"] for r in replies] == wanted
    assert app.state.batcher.calls == 2
    app.state.batcher.close()


def test_an_engine_failure_fails_only_its_calls_requests():
    app = make_app(FailingOn("boom"), max_wait_ms=300)
    # The failing request asks for other options: a call of its own, beside the good ones'.
    bodies = [body(t) for t in SENTENCES] + [body("the boom dog", num_beams=2)]
    replies = asyncio.run(post_all(app, bodies, "/v1/translate"))
    assert [r.status_code for r in replies] == [200] * len(SENTENCES) + [500]
    assert replies[-1].json() == {
        "error": "Cannot translate text: RuntimeError: the engine failed on 'boom'"
    }
    after = asyncio.run(post_all(app, [body(SENTENCES[0])]))  # the worker lives on
    assert after[0].status_code == 200 and after[0].json()["translatedText"]
    assert app.state.batcher.calls == 3
    app.state.batcher.close()


def test_a_bad_request_batched_with_good_ones_fails_alone(translator):
    """A line the engine refuses (as a model refuses a line longer than its positions) fails its
    own request with a 400; the requests that shared its engine call get their translations."""
    app = make_app(FailingOn("boom", InputTooLongError), max_wait_ms=500)
    bodies = [body(t) for t in SENTENCES] + [body("the boom dog")]  # same options: one call
    replies = asyncio.run(post_all(app, bodies))
    assert [r.status_code for r in replies] == [200] * len(SENTENCES) + [400]
    assert replies[-1].json() == {"error": "Invalid request: the engine failed on 'boom'"}
    alone = [translator.translate([t], GREEDY)[0][0] for t in SENTENCES]
    assert [r.json()["translatedText"] for r in replies[:-1]] == alone
    app.state.batcher.close()


def test_close_answers_every_submitted_request_then_refuses_new_ones(translator):
    batcher = MicroBatcher(translator, BatchLimits(max_wait_ms=60_000))
    futures = [batcher.submit([text], GREEDY) for text in TEXTS]
    batcher.close(timeout=60)
    assert [f.result(0)[0][0].text for f in futures] == [
        translator.translate([t], GREEDY)[0][0] for t in TEXTS
    ]
    with pytest.raises(BatcherClosed, match="shutting down"):
        batcher.submit(["dog"], GREEDY)


def test_a_closing_server_answers_503(translator):
    app = make_app(translator)
    app.state.batcher.close()
    (reply,) = asyncio.run(post_all(app, [body("dog")]))
    assert reply.status_code == 503 and "shutting down" in reply.json()["error"]
