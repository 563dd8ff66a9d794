"""Token usage as the Anthropic Messages API reports it, read from a response body or from its stream's events.

The wire format (Messages API reference and "Streaming Messages"):
- A non-streamed answer is a `message` object whose `usage` holds `input_tokens`, `output_tokens`,
  `cache_creation_input_tokens`, `cache_read_input_tokens`, `cache_creation` (the writes by cache lifetime:
  `ephemeral_5m_input_tokens`, `ephemeral_1h_input_tokens`), `server_tool_use` (`web_search_requests`) and
  `service_tier`.
- A streamed answer opens with `message_start`, whose `message.usage` has the input and cache figures and a first
  output count; each `message_delta` carries a `usage` whose counts are cumulative (`output_tokens` always, the
  input and cache counts in newer API versions, null when absent); `message_stop` ends it. `ping` and the content
  events carry no usage; an `error` event ends a stream that failed upstream.
A stream cut off before `message_stop` keeps the figures its events reported (`complete` is then False): what the
API had already counted is what it bills. Nothing malformed raises: the meter sits on the response path, and an
upstream's odd byte must not turn a delivered answer into an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from chamberlain.gateway.sse import event_data

# No request comes near this (a 1M-token context and 300K of output at most); a larger value is not a count.
MAX_COUNT = 1_000_000_000
_USAGE_EVENTS = frozenset({b"message_start", b"message_delta", b"message_stop"})
_CONTENT_EVENTS = (b"event: content_block_", b"event: ping")


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """One request's usage. Cache writes are counted whole in `cache_creation_input_tokens`; the part written for
    one hour (priced at twice the input rate, against 1.25 times for the default five minutes) is also in
    `cache_creation_1h_input_tokens`."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    web_search_requests: int = 0  # server-side web searches, priced per search on top of the tokens

    @property
    def cache_creation_5m_input_tokens(self) -> int:
        return self.cache_creation_input_tokens - self.cache_creation_1h_input_tokens

    @property
    def prompt_tokens(self) -> int:
        """Every input token the request carried, cached or not: what long-context pricing thresholds count."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_creation_1h_input_tokens + other.cache_creation_1h_input_tokens,
            self.web_search_requests + other.web_search_requests,
        )


class UsageMeter:
    """What one Messages API response reported, fed the body (`from_body`) or the stream's events (`feed_event`)."""

    __slots__ = (
        "_cache_1h",
        "_cache_5m",
        "_cache_creation",
        "_cache_read",
        "_complete",
        "_input",
        "_model",
        "_output",
        "_service_tier",
        "_started",
        "_web_searches",
    )

    def __init__(self) -> None:
        self._input = 0
        self._output = 0
        self._cache_creation = 0
        self._cache_read = 0
        self._cache_5m = 0
        self._cache_1h = 0
        self._web_searches = 0
        self._model: str | None = None
        self._service_tier: str | None = None
        self._started = False
        self._complete = False

    @property
    def usage(self) -> TokenUsage:
        # The breakdown by lifetime never exceeds the total it breaks down; if an upstream says otherwise, the
        # larger figure is the one billed.
        written = max(self._cache_creation, self._cache_5m + self._cache_1h)
        return TokenUsage(self._input, self._output, written, self._cache_read, self._cache_1h, self._web_searches)

    @property
    def model(self) -> str | None:
        return self._model

    @property
    def service_tier(self) -> str | None:
        """ "standard", "priority" or "batch", as the API reported it."""
        return self._service_tier

    @property
    def complete(self) -> bool:
        """The whole message was seen: a parsed body, or a stream up to `message_stop`."""
        return self._complete

    def from_body(self, body: bytes) -> None:
        message = _json(body)
        if not isinstance(message, dict) or message.get("type") != "message":
            return  # an error document, or not the Messages API: nothing was used
        self._read_message(message)
        self._complete = self._started

    def feed_event(self, event: bytes) -> None:
        """One server-sent event as it came (`event: …` and `data: …` lines), or its data alone."""
        if event.startswith(b"event:"):
            if event.startswith(_CONTENT_EVENTS):
                return  # the bulk of a stream, dismissed in one comparison
            # Names are short: a bounded slice, cut at the line's end (CRLF, LF or CR), never a copy of the event.
            name = event[6:64].split(b"\n", 1)[0].split(b"\r", 1)[0].strip()
            if name not in _USAGE_EVENTS:
                return  # content deltas, pings and errors: no usage, and most of a stream's events
        data = event if event.lstrip().startswith(b"{") else event_data(event)
        if data is None:
            return
        payload = _json(data)
        if not isinstance(payload, dict):
            return
        kind = payload.get("type")
        if kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                self._read_message(message)
        elif kind == "message_delta" and self._started:
            usage = payload.get("usage")
            if isinstance(usage, dict):
                self._read_usage(usage)
        elif kind == "message_stop" and self._started:
            self._complete = True

    def _read_message(self, message: dict[str, Any]) -> None:
        self._started = True
        model = message.get("model")
        if isinstance(model, str) and model:
            self._model = model
        usage = message.get("usage")
        if isinstance(usage, dict):
            self._read_usage(usage)

    def _read_usage(self, usage: dict[str, Any]) -> None:
        """Takes every count present: the API's figures are cumulative, so the latest one stands."""
        if (value := _count(usage.get("input_tokens"))) is not None:
            self._input = value
        if (value := _count(usage.get("output_tokens"))) is not None:
            self._output = value
        if (value := _count(usage.get("cache_creation_input_tokens"))) is not None:
            self._cache_creation = value
        if (value := _count(usage.get("cache_read_input_tokens"))) is not None:
            self._cache_read = value
        by_lifetime = usage.get("cache_creation")
        if isinstance(by_lifetime, dict):
            if (value := _count(by_lifetime.get("ephemeral_5m_input_tokens"))) is not None:
                self._cache_5m = value
            if (value := _count(by_lifetime.get("ephemeral_1h_input_tokens"))) is not None:
                self._cache_1h = value
        server_tools = usage.get("server_tool_use")
        if isinstance(server_tools, dict) and (value := _count(server_tools.get("web_search_requests"))) is not None:
            self._web_searches = value
        tier = usage.get("service_tier")
        if isinstance(tier, str):
            self._service_tier = tier


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # also what orjson raises for nesting deeper than it parses
        return None


def _count(value: Any) -> int | None:
    if type(value) is int and 0 <= value <= MAX_COUNT:  # not bool (an int subclass), not float
        return value
    return None
