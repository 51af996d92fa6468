"""Bad input is a 4xx whose message says what was wrong (LibreTranslate's `{"error": ...}`), and the
server goes on answering afterwards."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from vanilla_transformer.serving import RequestLimits

from .conftest import make_app

OK = {"q": "the big dog", "source": "en", "target": "es"}

CASES = {
    "empty q": ({**OK, "q": ""}, 400, "Invalid request: missing q parameter"),
    "empty list": ({**OK, "q": []}, 400, "Invalid request: missing q parameter"),
    "no source": ({"q": "a", "target": "es"}, 400, "Invalid request: missing source parameter"),
    "no target": ({"q": "a", "source": "en"}, 400, "Invalid request: missing target parameter"),
    "too long": ({**OK, "q": "dog " * 60}, 400, "request (240) exceeds text limit (200)"),
    "too many": ({**OK, "q": ["dog"] * 9}, 400, "request (9) exceeds text limit (8)"),
    "number q": ({**OK, "q": 5}, 400, "q must be a string or a list of strings, got int"),
    "list of numbers": ({**OK, "q": ["a", 1]}, 400, "got a list holding int"),
    "unknown source": ({**OK, "source": "fr"}, 400, "fr is not supported"),
    "unknown target": ({**OK, "target": "de"}, 400, "de is not supported"),
    "reversed pair": (
        {**OK, "source": "es", "target": "en"},
        400,
        "English (en) is not available as a target language from Spanish (es)",
    ),
    "html": ({**OK, "format": "html"}, 400, "html format is not supported"),
    "alternatives": ({**OK, "alternatives": "x"}, 400, "alternatives parameter is not a number"),
    "many alternatives": ({**OK, "alternatives": 9}, 400, "alternatives parameter must be <= 4"),
}


@pytest.fixture(scope="module")
def client(translator):
    with TestClient(make_app(translator)) as test_client:
        yield test_client


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_request_is_a_4xx_that_says_what_was_wrong(client, case):
    body, status, message = CASES[case]
    reply = client.post("/translate", json=body)
    assert reply.status_code == status
    assert message in reply.json()["error"]
    assert client.post("/translate", json=OK).status_code == 200  # still serving


@pytest.mark.parametrize("body", ["{not json", "[1, 2]"])
def test_invalid_json_is_a_400(client, body):
    reply = client.post("/translate", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 400
    assert reply.json() == {"error": "Invalid JSON format"}


V1_CASES = {
    "unknown option": ({**OK, "beams": 4}, "unknown field(s) ['beams']"),
    "wrong type": ({**OK, "num_beams": "4"}, "num_beams must be int"),
    "bool for a number": ({**OK, "length_penalty": True}, "length_penalty must be a number"),
    "invalid options": (
        {**OK, "num_beams": 2, "num_return_sequences": 3},
        "num_return_sequences (3) must be <= num_beams (2)",
    ),
    "zero beams": ({**OK, "num_beams": 0}, "num_beams must be >= 1, got 0"),
}


@pytest.mark.parametrize("case", sorted(V1_CASES))
def test_each_bad_v1_option_is_a_400_that_names_it(client, case):
    body, message = V1_CASES[case]
    reply = client.post("/v1/translate", json=body)
    assert reply.status_code == 400
    assert message in reply.json()["error"]


def test_an_unknown_path_is_a_404_in_the_same_shape(client):
    reply = client.get("/nothing")
    assert reply.status_code == 404 and reply.json() == {"error": "Not Found"}


def test_with_api_keys_a_wrong_key_is_403_and_a_missing_one_400(translator):
    app = make_app(translator, limits=RequestLimits(api_keys=frozenset({"secret"})))
    with TestClient(app) as client:
        assert client.post("/translate", json={**OK, "api_key": "secret"}).status_code == 200
        wrong = client.post("/translate", json={**OK, "api_key": "guess"})
        assert wrong.status_code == 403 and wrong.json() == {"error": "Invalid API key"}
        missing = client.post("/translate", json=OK)
        assert missing.status_code == 400 and "API key" in missing.json()["error"]
