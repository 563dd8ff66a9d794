"""The leak guard (issue 6, "Leak guard"): a remembered credential value is found in a relayed message however it
is written (raw, base64 or URL-safe base64 at any alignment, percent-encoded, JSON-escaped) and wherever a stream
splits it; it is replaced so that JSON stays valid; everything else passes byte for byte; prefixes of a value and
short values are never taken for it."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import string
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chamberlain.audit.events import Actor
from chamberlain.vault.leak_guard import (
    MARKER,
    MIN_VALUE_BYTES,
    Finding,
    LeakGuard,
    ScanResult,
    findings_event,
)

TENANT = "acme"
LABEL = "acme/github/token"
TOKEN = "ghp_Zq8rT2vLmN4xK7pW/9sB+dYc3hJ0fE=="  # base64 and URL encoding both change it

# -- strategies ------------------------------------------------------------------------------------------------------

TOKEN_ALPHABET = string.ascii_letters + string.digits + "-._~+/="
token_values = st.text(TOKEN_ALPHABET, min_size=MIN_VALUE_BYTES, max_size=80).map(str.encode)
text_values = st.text(min_size=MIN_VALUE_BYTES, max_size=40).map(str.encode).filter(lambda v: len(v) >= 8)
binary_values = st.binary(min_size=MIN_VALUE_BYTES, max_size=48)


def _apart_from_marker(value: bytes) -> bool:
    """A value written like a piece of the marker would be "found" again in the redacted output, overlapping the
    marker that replaced it; no real credential reads "[REDACTED:", so such values are left out."""
    pieces = (MARKER[start : start + 3] for start in range(len(MARKER) - 2))
    edges = range(1, len(MARKER) + 1)
    return (
        not any(piece in value for piece in pieces)
        and not any(value.startswith(MARKER[-size:]) for size in edges)
        and not any(value.endswith(MARKER[:size]) for size in edges)
    )


values = st.one_of(token_values, text_values, binary_values).filter(_apart_from_marker)
utf8_values = st.one_of(token_values, text_values).filter(_apart_from_marker)
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30))
documents = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15,
)
surroundings = st.binary(max_size=60)
text_surroundings = st.text(max_size=40)


def guard_with(value: bytes, label: str = LABEL) -> LeakGuard:
    guard = LeakGuard()
    assert guard.remember(TENANT, value, label)
    return guard


# Independent encoders, as real software writes values: the guard must recognise each.
def base64_in_blob(value: bytes, before: bytes, after: bytes, *, urlsafe: bool) -> bytes:
    blob = before + value + after
    return base64.urlsafe_b64encode(blob).rstrip(b"=") if urlsafe else base64.b64encode(blob)


PERCENT_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "quote-all": lambda value: quote(value, safe="").encode(),
    "quote-path": lambda value: quote(value).encode(),  # leaves "/"
    "quote-reserved": lambda value: quote(value, safe="/:@!$&'()*+,;=").encode(),  # RFC 3986 sub-delims kept
    "quote-plus": lambda value: quote_plus(value).encode(),
    "lowercase-hex": lambda value: re.sub(rb"%[0-9A-F]{2}", lambda h: h[0].lower(), quote(value, safe="").encode()),
}


def json_escaped(value: bytes, *, ascii_only: bool, slash: bool) -> bytes:
    escaped = json.dumps(value.decode(), ensure_ascii=ascii_only)[1:-1].encode()
    return escaped.replace(b"/", b"\\/") if slash else escaped


@st.composite
def written_values(draw: st.DrawFn) -> tuple[bytes, bytes, str]:
    """(value, one way of writing it, the form the guard must report)."""
    value = draw(values)
    kind = draw(st.sampled_from(["raw", "base64", "base64url", "percent", "json"]))
    if kind == "raw":
        return value, value, "raw"
    if kind in ("base64", "base64url"):
        before = draw(st.binary(max_size=5))  # every alignment of the value inside the blob
        after = draw(st.binary(max_size=5))
        return value, base64_in_blob(value, before, after, urlsafe=kind == "base64url"), "base64"
    if kind == "percent":
        encoder = draw(st.sampled_from(sorted(PERCENT_ENCODERS)))
        return value, PERCENT_ENCODERS[encoder](value), "raw"
    assume(is_utf8(value))
    escaped = json_escaped(value, ascii_only=draw(st.booleans()), slash=draw(st.booleans()))
    return value, escaped, "raw"


def is_utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def stream(
    guard: LeakGuard, data: bytes, cuts: list[int], *, across_line_breaks: bool = True
) -> tuple[bytes, list[Finding]]:
    scanner = guard.stream(TENANT, across_line_breaks=across_line_breaks)
    out = b""
    position = 0
    for cut in sorted({min(cut, len(data)) for cut in cuts}):
        out += scanner.feed(data[position:cut]).data
        position = cut
    out += scanner.feed(data[position:]).data
    out += scanner.close().data
    return out, scanner.findings


# -- found however it is written, wherever it is split ---------------------------------------------------------------


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(written_values(), surroundings, surroundings, st.lists(st.integers(0, 400), max_size=6))
def test_a_value_in_any_encoding_anywhere_in_bytes_is_found_and_redacted(
    written: tuple[bytes, bytes, str], before: bytes, after: bytes, cuts: list[int]
) -> None:
    value, encoded, form = written
    guard = guard_with(value)
    data = before + encoded + after
    result = guard.scan(TENANT, data)
    assert result.findings, "the value was not found"
    assert {finding.label for finding in result.findings} == {LABEL}
    assert any(finding.encoding.startswith(form) for finding in result.findings)
    assert MARKER in result.data
    assert encoded not in result.data
    assert value not in result.data
    assert guard.scan(TENANT, result.data).findings == ()  # nothing of it left to find
    # Streamed in pieces cut anywhere: the same bytes out, the same findings.
    streamed, findings = stream(guard, data, cuts)
    assert streamed == result.data
    assert findings == list(result.findings)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    utf8_values,
    st.sampled_from(["raw", "base64", "base64url", "percent"]),
    documents,
    documents,
    text_surroundings,
    text_surroundings,
    st.booleans(),
    st.booleans(),
    st.lists(st.integers(0, 600), max_size=6),
)
def test_a_value_inside_a_json_document_is_redacted_and_the_document_still_parses(
    value: bytes,
    kind: str,
    first: Any,
    last: Any,
    before: str,
    after: str,
    ascii_only: bool,
    slash: bool,
    cuts: list[int],
) -> None:
    if kind == "raw":
        inner = value.decode()  # json.dumps escapes it as JSON requires (and \\uXXXX when ascii_only)
    elif kind == "percent":
        inner = quote(value, safe="")
    else:
        inner = base64_in_blob(value, before.encode()[:2], b"", urlsafe=kind == "base64url").decode()
    document = {"first": first, "leak": before + inner + after, "last": last}
    data = json.dumps(document, ensure_ascii=ascii_only).encode()
    if slash:
        data = data.replace(b"/", b"\\/")  # still the same JSON (RFC 8259 §7)
    guard = guard_with(value)
    # Hypothesis likes to draw the same string twice: the other parts must not hold the value themselves.
    assume(not guard.scan(TENANT, json.dumps([first, last], ensure_ascii=ascii_only).encode()).findings)
    result = guard.scan(TENANT, data)
    assert result.findings
    parsed = json.loads(result.data)
    assert parsed["first"] == first  # everything else untouched
    assert parsed["last"] == last
    assert MARKER.decode() in parsed["leak"]
    assert inner not in parsed["leak"]
    streamed, findings = stream(guard, data, cuts)
    assert streamed == result.data
    assert findings == list(result.findings)


@settings(max_examples=200)
@given(utf8_values, st.lists(st.text(max_size=20), min_size=1, max_size=4), st.integers(1, 200))
def test_a_value_split_between_two_server_sent_events_is_found(value: bytes, others: list[str], split: int) -> None:
    # An upstream could cut a value across two events; the stream scanner sees across the boundary.
    text = value.decode()
    split = split % len(text) or 1
    events = [f"data: {json.dumps(other)}\n\n".encode() for other in others]
    data = b"".join(events) + f"data: {text[:split]}".encode() + f"{text[split:]}\n\n".encode()
    guard = guard_with(value)
    boundary = len(b"".join(events)) + len(f"data: {text[:split]}".encode())
    out, findings = stream(guard, data, [boundary])
    assert findings
    assert value not in out
    assert out == guard.scan(TENANT, data).data


# -- nothing else is touched -----------------------------------------------------------------------------------------

high_entropy = st.binary(min_size=16, max_size=48).filter(lambda value: len(set(value)) >= 10)


@settings(max_examples=300)
@given(high_entropy, st.one_of(st.binary(max_size=2000), st.text(max_size=500).map(str.encode)))
def test_content_without_the_value_passes_byte_for_byte(value: bytes, content: bytes) -> None:
    assume(value not in content)  # Hypothesis reuses what it drew; any other form of it by chance: about 2^-60
    guard = guard_with(value)
    result = guard.scan(TENANT, content)
    assert result == ScanResult(content)
    assert result.data is content  # not even copied
    streamed, findings = stream(guard, content, [len(content) // 3, len(content) // 2])
    assert streamed == content
    assert findings == []


@settings(max_examples=200)
@given(documents, st.booleans())
def test_json_without_the_value_passes_byte_for_byte(document: Any, ascii_only: bool) -> None:
    data = json.dumps(document, ensure_ascii=ascii_only).encode()
    assert guard_with(TOKEN.encode()).scan(TENANT, data).data is data


@settings(max_examples=300)
@given(utf8_values, st.data())
def test_a_strict_prefix_of_a_value_is_not_the_value(value: bytes, data: st.DataObject) -> None:
    text = value.decode()
    prefix = text[: data.draw(st.integers(1, len(text) - 1), label="prefix length")]
    raw = prefix.encode()
    assume(not value.startswith(raw + raw[:0]) or raw != value)
    guard = guard_with(value)
    delimiter = b'"'  # ends the written prefix: nothing follows that could complete the value
    for written in (
        raw,
        quote(raw, safe="").encode(),
        json_escaped(raw, ascii_only=True, slash=True),
        json_escaped(raw, ascii_only=False, slash=False),
    ):
        assert guard.scan(TENANT, b"x " + written + delimiter).findings == (), written
    # In base64 the value's last byte is only partly pinned by the characters it shares with what follows it (the
    # module docstring says so); a prefix two bytes short never matches.
    if len(value) - len(raw) >= 2:
        for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
            assert guard.scan(TENANT, b"x " + encoded + delimiter).findings == (), encoded


def test_values_shorter_than_eight_bytes_are_not_guarded() -> None:
    guard = LeakGuard()
    assert not guard.remember(TENANT, "hunter2", "acme/legacy/pin")  # 7 bytes: would redact ordinary words
    assert not guard.watching(TENANT)
    message = b'{"text": "hunter2 aGVudGVyMg== hunter2"}'
    assert guard.scan(TENANT, message).data is message
    assert guard.remember(TENANT, "hunter22", "acme/legacy/pin")
    assert guard.scan(TENANT, b'{"text": "hunter22"}').data == b'{"text": "[REDACTED:credential]"}'


def test_tenants_are_scanned_for_their_own_values_only() -> None:
    guard = LeakGuard()
    guard.remember("acme", TOKEN, "acme/github/token")
    message = json.dumps({"echo": TOKEN}).encode()
    assert guard.scan("globex", message).data is message
    assert guard.scan("acme", message).findings[0].label == "acme/github/token"


# -- what is reported --------------------------------------------------------------------------------------------------


def test_each_occurrence_is_reported_with_its_encoding_and_offset() -> None:
    guard = guard_with(TOKEN.encode())
    raw = TOKEN.encode()
    parts = [
        b'{"a": "',
        raw,
        b'", "b": "',
        base64.b64encode(b"user:" + raw),
        b'", "c": "',
        quote(raw, safe="").encode(),
        b'", "d": "',
        raw.replace(b"/", b"\\/"),
        b'", "e": "',
        base64.urlsafe_b64encode(b"x" + raw).rstrip(b"="),
        b'"}',
    ]
    data = b"".join(parts)
    result = guard.scan(TENANT, data)
    assert [finding.encoding for finding in result.findings] == [
        "raw",
        "base64",
        "raw+percent",
        "raw+json",
        "base64",  # this token's URL-safe base64 has no "-" or "_": the same text as the standard alphabet's
    ]
    first = result.findings[0]
    assert (first.offset, first.length) == (len(parts[0]), len(raw))
    assert data[result.findings[2].offset :].startswith(quote(raw, safe="").encode())
    assert json.loads(result.data) == {key: MARKER.decode() for key in "abcde"} | {
        "b": json.loads(result.data)["b"],
        "e": json.loads(result.data)["e"],
    }
    for key in "be":  # inside base64 blobs: the characters the neighbours share are kept, the value is gone
        assert MARKER.decode() in json.loads(result.data)[key]


def test_url_safe_base64_is_told_apart_from_the_standard_alphabet() -> None:
    value = b"\xfb\xef\xbe\xff\xff\xff\xfb\xef\xbe\x00"  # "++++////" in the standard alphabet
    guard = guard_with(value)
    for encode, encoding in ((base64.b64encode, "base64"), (base64.urlsafe_b64encode, "base64url")):
        for before in (b"", b"a", b"ab"):
            found = guard.scan(TENANT, b"<" + encode(before + value) + b">").findings
            assert [finding.encoding for finding in found] == [encoding]


def test_escapes_mixed_within_one_occurrence_are_still_the_value() -> None:
    guard = guard_with(TOKEN.encode())
    mixed = TOKEN.replace("/", "\\/").replace("+", "%2b").replace("=", "\\u003D")
    result = guard.scan(TENANT, f'{{"x": "{mixed}"}}'.encode())
    assert result.data == b'{"x": "[REDACTED:credential]"}'
    assert result.findings[0].encoding == "raw+percent+json"


def test_a_value_starting_inside_an_escape_takes_the_whole_escape_with_it() -> None:
    # The raw bytes "u0041..." inside "\\u0041...": redacting them alone would leave a lone backslash.
    value = b"u0041bcdefgh"
    guard = guard_with(value)
    data = b'{"x": "\\u0041bcdefgh!"}'
    result = guard.scan(TENANT, data)
    assert result.findings
    assert json.loads(result.data) == {"x": "[REDACTED:credential]!"}


def test_overlapping_occurrences_become_one_marker() -> None:
    guard = LeakGuard()
    guard.remember(TENANT, "abcdefgh12", "acme/a/one")
    guard.remember(TENANT, "gh12XYZWVU", "acme/b/two")
    result = guard.scan(TENANT, b"<abcdefgh12XYZWVU>")
    assert result.data == b"<[REDACTED:credential]>"
    assert sorted(finding.label for finding in result.findings) == ["acme/a/one", "acme/b/two"]


def test_the_audit_event_names_credentials_never_values() -> None:
    guard = guard_with(TOKEN.encode())
    result = guard.scan(TENANT, json.dumps({"echo": TOKEN, "again": TOKEN}).encode())
    event = findings_event(
        TENANT, result.findings, upstream="github", direction="response", actor=Actor("user", "u1"), request_id="r1"
    )
    assert event.details["credentials"] == [LABEL]
    assert event.details["count"] == 2
    assert event.details["findings"][0] == {"label": LABEL, "encoding": "raw", "offset": 10, "length": len(TOKEN)}
    assert event.target == "mcp:github"
    assert TOKEN not in repr(event.public_fields())
    assert TOKEN not in repr(event)


def test_a_label_that_contains_the_value_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="must not contain its value") as refused:
        LeakGuard().remember(TENANT, TOKEN, f"acme/github/{TOKEN}")
    assert TOKEN not in str(refused.value)


# -- header values ---------------------------------------------------------------------------------------------------


def test_a_bearer_header_guards_the_token_alone() -> None:
    guard = LeakGuard()
    guard.remember_header(TENANT, f"Bearer {TOKEN}", "upstream:github")
    assert guard.scan(TENANT, f"token was {TOKEN}".encode()).data == b"token was [REDACTED:credential]"


def test_a_basic_header_guards_the_password_too() -> None:
    guard = LeakGuard()
    password = "s3cr3t-p4ssw0rd"
    header = "Basic " + base64.b64encode(f"gateway:{password}".encode()).decode()
    guard.remember_header(TENANT, header, "upstream:jira")
    assert guard.scan(TENANT, f"login gateway / {password}".encode()).findings[0].label == "upstream:jira"


# -- streams -----------------------------------------------------------------------------------------------------------


def test_a_complete_event_is_never_held_back() -> None:
    guard = guard_with(TOKEN.encode())
    scanner = guard.stream(TENANT)
    event = b'data: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}\n\n'
    assert scanner.feed(event).data == event
    leaking = f'data: {{"jsonrpc":"2.0","id":1,"result":{{"text":"{TOKEN}"}}}}\n\n'.encode()
    sent = scanner.feed(leaking)
    assert sent.data == b'data: {"jsonrpc":"2.0","id":1,"result":{"text":"[REDACTED:credential]"}}\n\n'
    assert sent.findings[0].offset == len(event) + leaking.index(TOKEN.encode())
    assert scanner.close().data == b""


def test_a_chunk_ending_in_a_possible_value_start_is_held_until_the_next() -> None:
    guard = guard_with(TOKEN.encode())
    scanner = guard.stream(TENANT)
    first = scanner.feed(b'{"text": "' + TOKEN[:10].encode())
    # The start of the token waits for what follows (with the quote before it: `"` can be part of an escape).
    assert first.data == b'{"text": '
    second = scanner.feed(TOKEN[10:].encode() + b'"}')
    assert second.data == b'"[REDACTED:credential]"}'
    assert scanner.close().data == b""


def test_a_stream_with_nothing_remembered_passes_everything_at_once() -> None:
    scanner = LeakGuard().stream(TENANT)
    assert scanner.feed(b"data: abcdefghijklmnop").data == b"data: abcdefghijklmnop"


# -- many values, memory bound ----------------------------------------------------------------------------------------


def test_hundreds_of_values_are_all_found() -> None:
    guard = LeakGuard()
    tokens = [base64.urlsafe_b64encode(hashlib.sha256(b"%d" % index).digest()).decode() for index in range(300)]
    for index, token in enumerate(tokens):
        guard.remember(TENANT, token, f"acme/source/{index}")
        if index % 50 == 0:
            guard.scan(TENANT, b"warm")  # rebuilds happen along the way, as in a running gateway
    message = json.dumps({"tokens": tokens[::7]}).encode()
    result = guard.scan(TENANT, message)
    assert sorted(finding.label for finding in result.findings) == sorted(f"acme/source/{i}" for i in range(0, 300, 7))
    assert all(token.encode() not in result.data for token in tokens)


def test_memory_is_bounded_and_the_most_recently_injected_are_kept() -> None:
    guard = LeakGuard(max_values_per_tenant=100)
    for index in range(250):
        guard.remember(TENANT, f"token-{index:04d}-abcdefgh", f"acme/s/{index}")
    assert guard.count(TENANT) == 100
    guard.remember(TENANT, "token-0150-abcdefgh", "acme/s/150")  # used again: now the most recent
    for index in range(251, 350):
        guard.remember(TENANT, f"token-{index:04d}-abcdefgh", f"acme/s/{index}")
    found = guard.scan(TENANT, b"token-0150-abcdefgh token-0349-abcdefgh").findings
    assert [finding.label for finding in found] == ["acme/s/150", "acme/s/349"]


def test_a_forgotten_value_is_no_longer_redacted() -> None:
    guard = guard_with(TOKEN.encode())
    guard.scan(TENANT, b"builds the automaton")
    assert guard.forget(TENANT, TOKEN)
    message = TOKEN.encode()
    assert guard.scan(TENANT, message).data is message
    assert not guard.forget(TENANT, TOKEN)
