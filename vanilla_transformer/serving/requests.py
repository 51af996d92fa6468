"""Reading and checking the requests: LibreTranslate's `POST /translate` fields and our
`POST /v1/translate` options. Every problem is a `RequestError` (a 4xx status and a message that
says what was wrong), answered as LibreTranslate answers errors: `{"error": message}`. The messages
of the checks LibreTranslate makes are LibreTranslate's own."""

from __future__ import annotations

import dataclasses

from ..translation import DecodingOptions
from .languages import LanguagePair, language_name

__all__ = ["RequestError", "RequestLimits", "TextRequest", "decoding_options", "read_request"]

# The request options of `POST /v1/translate` and the types each accepts.
V1_OPTIONS = {
    "num_beams": int,
    "length_penalty": float,
    "num_return_sequences": int,
    "max_new_tokens": int,
    "do_sample": bool,
    "temperature": float,
    "top_k": int,
    "top_p": float,
}
COMMON_FIELDS = {"q", "source", "target", "format", "api_key", "alternatives"}


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """Per request: characters per text (LibreTranslate's `--char-limit`), texts per request
    (`--batch-limit`), alternatives (`--alternatives-limit`); `api_keys`: if any, a request must
    carry one of them (LibreTranslate's `--api-keys`)."""

    char_limit: int = 5000
    batch_limit: int = 64
    alternatives_limit: int = 4
    api_keys: frozenset[str] = frozenset()

    def __post_init__(self):
        for name, least in (("char_limit", 1), ("batch_limit", 1), ("alternatives_limit", 0)):
            value = getattr(self, name)
            if value != -1 and value < least:
                raise ValueError(f"{name} must be -1 (no limit) or >= {least}, got {value}.")


@dataclasses.dataclass
class TextRequest:
    texts: list[str]
    batch: bool  # `q` was a list: the answer is a list too
    alternatives: int
    auto: bool  # source "auto": answered with `detectedLanguage`
    options: dict  # /v1/translate's decoding options given in the request


def _invalid(message: str) -> RequestError:
    return RequestError(400, f"Invalid request: {message}")


def read_request(
    payload: dict, pair: LanguagePair, limits: RequestLimits, v1: bool = False
) -> TextRequest:
    """The checked request (LibreTranslate's order of checks: q, source, target, limits, pair)."""
    _check_api_key(payload.get("api_key"), limits)
    if v1:
        unknown = sorted(set(payload) - COMMON_FIELDS - set(V1_OPTIONS))
        if unknown:
            raise _invalid(f"unknown field(s) {unknown}; options: {sorted(V1_OPTIONS)}")
    q = payload.get("q")
    for name in ("q", "source", "target"):
        if not payload.get(name):
            raise _invalid(f"missing {name} parameter")
    texts = _texts(q, limits)
    auto = _check_pair(payload["source"], payload["target"], pair)
    text_format = payload.get("format") or "text"
    if text_format != "text":
        raise RequestError(400, f"{text_format} format is not supported (only text)")
    alternatives = _alternatives(payload.get("alternatives", 0), limits)
    options = {k: _typed(k, payload[k]) for k in V1_OPTIONS if payload.get(k) is not None}
    return TextRequest(texts, isinstance(q, list), alternatives, auto, options)


def _check_api_key(key, limits: RequestLimits) -> None:
    if not limits.api_keys:
        return  # no keys configured: api_key is ignored, as by LibreTranslate without --api-keys
    if key and key not in limits.api_keys:
        raise RequestError(403, "Invalid API key")
    if not key:
        raise RequestError(400, "Please contact the server operator to get an API key")


def _texts(q, limits: RequestLimits) -> list[str]:
    if isinstance(q, str):
        texts = [q]
    elif isinstance(q, list) and all(isinstance(t, str) for t in q):
        texts = q
        if limits.batch_limit != -1 and len(q) > limits.batch_limit:
            raise _invalid(f"request ({len(q)}) exceeds text limit ({limits.batch_limit})")
    else:
        raise _invalid(f"q must be a string or a list of strings, got {_kind(q)}")
    for text in texts:
        if limits.char_limit != -1 and len(text) > limits.char_limit:
            raise _invalid(f"request ({len(text)}) exceeds text limit ({limits.char_limit})")
    return texts


def _kind(value) -> str:
    if isinstance(value, list):
        bad = next(v for v in value if not isinstance(v, str))
        return f"a list holding {type(bad).__name__}"
    return type(value).__name__


def _check_pair(source: str, target: str, pair: LanguagePair) -> bool:
    codes = {pair.source, pair.target}
    if source != "auto" and source not in codes:
        raise RequestError(400, f"{source} is not supported")
    if target not in codes:
        raise RequestError(400, f"{target} is not supported")
    if (source if source != "auto" else pair.source) != pair.source or target != pair.target:
        src = pair.source if source == "auto" else source
        raise RequestError(
            400,
            f"{language_name(target)} ({target}) is not available as a target language from "
            f"{language_name(src)} ({src})",
        )
    return source == "auto"


def _alternatives(value, limits: RequestLimits) -> int:
    try:
        count = max(0, int(value))
    except (TypeError, ValueError):
        raise _invalid("alternatives parameter is not a number") from None
    if limits.alternatives_limit != -1 and count > limits.alternatives_limit:
        raise _invalid(f"alternatives parameter must be <= {limits.alternatives_limit}")
    return count


def _typed(name: str, value):
    kind = V1_OPTIONS[name]
    if kind is bool:
        ok = isinstance(value, bool)
    else:  # a JSON true is not a number here
        ok = isinstance(value, int | float if kind is float else int) and not isinstance(
            value, bool
        )
    if not ok:
        raise _invalid(f"{name} must be {'a number' if kind is float else kind.__name__}")
    return kind(value)


def decoding_options(base: DecodingOptions, request: TextRequest) -> DecodingOptions:
    """The server's decoding options with the request's (alternatives: n-best of the beams)."""
    changes = dict(request.options)
    if request.alternatives:
        n = request.alternatives + 1
        changes["num_return_sequences"] = n
        changes["num_beams"] = max(changes.get("num_beams", base.num_beams), n)
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as err:
        raise _invalid(str(err)) from None
