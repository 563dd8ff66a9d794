"""What the proxy reads from a Messages API request body, and the one change it may make to it (the model).

The body goes upstream as the client sent it, byte for byte, except when a route rewrites `model`: then only the
top-level `model` value's bytes are replaced, so every other field (and its formatting) is untouched. The proxy reads
`model` (policy, routing, pricing), `stream`, `max_tokens` (budget and token-rate estimates) and whether the request
offers `tools` (routing). A body whose top level names `model` twice is refused: JSON parsers disagree on which one
wins (RFC 8259 §4: names SHOULD be unique), and the proxy must check the model the upstream will serve.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from json.decoder import scanstring  # type: ignore[attr-defined]

import orjson

from chamberlain.llm.errors import LlmError

# An input estimate from the body's size, before any tokenizer has seen it: Anthropic counts roughly 3.5 characters
# of English per token, and the JSON around the text only adds bytes, so this errs on the high side for budgets.
BYTES_PER_TOKEN = 4
_MODEL_KEY = b'"model"'
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # RFC 8259 §2
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    model: str
    stream: bool
    max_tokens: int  # 0 for count_tokens, which takes none
    tools: bool  # the request offers tools
    input_estimate: int  # tokens, from the body's size


def parse_request(body: bytes, *, needs_max_tokens: bool) -> MessagesRequest:
    """Raises LlmError (invalid_request_error) for a body the proxy cannot decide on."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _invalid("the request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise _invalid("the request body must be a JSON object")
    model = document.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model: a model id is required")
    if body.count(_MODEL_KEY) > 1 and len(model_spans(body)) > 1:
        raise _invalid("model: given more than once")
    stream = document.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("stream: must be a boolean")
    max_tokens = document.get("max_tokens", 0)
    if needs_max_tokens and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise _invalid("max_tokens: a positive integer is required")
    tools = document.get("tools")
    return MessagesRequest(
        model=model,
        stream=stream,
        max_tokens=max_tokens if needs_max_tokens else 0,
        tools=isinstance(tools, list) and bool(tools),
        input_estimate=len(body) // BYTES_PER_TOKEN,
    )


def with_model(body: bytes, model: str) -> bytes:
    """The body with its top-level `model` replaced and every other byte as it was (a body parse_request took)."""
    text = body.decode("utf-8")
    ((start, end),) = model_spans(body)
    return (text[:start] + json.dumps(model) + text[end:]).encode("utf-8")


def model_spans(body: bytes) -> list[tuple[int, int]]:
    """Where the values of the top-level object's `model` members are, as character offsets in the decoded text.

    Walks the top level only: nested values are skipped whole by the standard library's scanner, so a `"model"` key
    inside a tool's schema or a message is never taken for the request's."""
    text = body.decode("utf-8")
    spans: list[tuple[int, int]] = []
    at = _skip(text, 0)
    if text[at : at + 1] != "{":
        raise _invalid("the request body must be a JSON object")
    at = _skip(text, at + 1)
    if text[at : at + 1] == "}":
        return spans
    try:
        while True:
            if text[at : at + 1] != '"':
                raise ValueError
            key, at = scanstring(text, at + 1)
            at = _skip(text, at)
            if text[at : at + 1] != ":":
                raise ValueError
            start = _skip(text, at + 1)
            _, end = _DECODER.raw_decode(text, start)
            if key == "model":
                spans.append((start, end))
            at = _skip(text, end)
            separator = text[at : at + 1]
            if separator == "}":
                return spans
            if separator != ",":
                raise ValueError
            at = _skip(text, at + 1)
    except ValueError:  # json.JSONDecodeError is one
        raise _invalid("the request body is not valid JSON") from None


def _skip(text: str, at: int) -> int:
    match = _WHITESPACE.match(text, at)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _invalid(message: str) -> LlmError:
    return LlmError("invalid_request_error", message)
