"""The server speaks LibreTranslate's API: its request shapes (a string, a list, a form), its
answers, and its own Python client (`libretranslatepy`) against a live server."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from libretranslatepy import LibreTranslateAPI

from tests.toy_translation import SENTENCES

from .conftest import GREEDY, live_server, make_app


@pytest.fixture(scope="module")
def client(translator):
    with TestClient(make_app(translator)) as test_client:
        yield test_client


def expected(translator, texts, options=GREEDY):
    return [outputs[0] for outputs in translator.translate(list(texts), options)]


def test_a_string_q_is_answered_with_its_translation_as_a_string(client, translator):
    reply = client.post("/translate", json={"q": SENTENCES[0], "source": "en", "target": "es"})
    assert reply.status_code == 200
    assert reply.json() == {"translatedText": expected(translator, SENTENCES[:1])[0]}
    assert reply.json()["translatedText"]  # the toy model translates it


def test_a_list_q_is_answered_with_a_list_in_its_order(client, translator):
    reply = client.post("/translate", json={"q": SENTENCES, "source": "en", "target": "es"})
    assert reply.status_code == 200
    assert reply.json() == {"translatedText": expected(translator, SENTENCES)}


def test_a_form_request_is_answered_as_json(client, translator):
    form = {"q": SENTENCES[1], "source": "en", "target": "es", "api_key": "ignored"}
    reply = client.post("/translate", data=form)
    assert reply.status_code == 200
    assert reply.json() == {"translatedText": expected(translator, SENTENCES[1:2])[0]}


def test_an_empty_text_in_a_list_keeps_its_place(client, translator):
    q = [SENTENCES[0], "", SENTENCES[2]]
    reply = client.post("/translate", json={"q": q, "source": "en", "target": "es"})
    assert reply.json()["translatedText"] == expected(translator, q)
    assert reply.json()["translatedText"][1] == ""


def test_each_line_of_a_text_is_translated_and_the_line_breaks_kept(client, translator):
    reply = client.post(
        "/translate", data={"q": "the big dog\r\na red cat", "source": "en", "target": "es"}
    )
    assert reply.json()["translatedText"] == "\n".join(
        expected(translator, ["the big dog", "a red cat"])
    )


def test_source_auto_is_the_models_source_and_is_reported(client, translator):
    reply = client.post("/translate", json={"q": SENTENCES[0], "source": "auto", "target": "es"})
    assert reply.json()["translatedText"] == expected(translator, SENTENCES[:1])[0]
    assert reply.json()["detectedLanguage"] == {"confidence": 100.0, "language": "en"}


def test_alternatives_are_the_other_beams(client, translator):
    body = {"q": SENTENCES[0], "source": "en", "target": "es", "alternatives": 2}
    reply = client.post("/translate", json=body).json()
    from vanilla_transformer.translation import DecodingOptions

    beams = translator.translate(
        [SENTENCES[0]], DecodingOptions(num_beams=3, num_return_sequences=3)
    )
    assert reply["translatedText"] == beams[0][0]
    assert reply["alternatives"] == [t for t in dict.fromkeys(beams[0][1:]) if t != beams[0][0]]


def test_languages_lists_the_models_pair_with_its_target(client):
    reply = client.get("/languages")
    assert reply.status_code == 200
    assert reply.json() == [
        {"code": "en", "name": "English", "targets": ["es"]},
        {"code": "es", "name": "Spanish", "targets": []},
    ]


def test_health_answers_ok(client):
    assert client.get("/health").json() == {"status": "ok"}


def test_v1_gives_each_text_its_n_best_hypotheses(client, translator):
    body = {"q": SENTENCES[:2], "source": "en", "target": "es"}
    body |= {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 1.0}
    reply = client.post("/v1/translate", json=body)
    assert reply.status_code == 200
    from vanilla_transformer.translation import DecodingOptions

    options = DecodingOptions(num_beams=4, num_return_sequences=2, length_penalty=1.0)
    beams = translator.translate(SENTENCES[:2], options)
    assert reply.json()["translatedText"] == [b[0] for b in beams]
    assert [[h["text"] for h in hs] for hs in reply.json()["hypotheses"]] == beams
    assert all(set(h) == {"text", "score"} for hs in reply.json()["hypotheses"] for h in hs)


def test_libretranslatepy_gets_the_translations_unchanged(translator):
    with live_server(make_app(translator)) as url:
        api = LibreTranslateAPI(url)
        for text in SENTENCES:
            assert api.translate(text, "en", "es", timeout=60) == expected(translator, [text])[0]
        assert api.languages(timeout=60)[0]["code"] == "en"
