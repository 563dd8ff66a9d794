"""The leak guard: credential values the gateway injected, found and redacted wherever they come back.

The gateway knows every secret it sends upstream (a static header's value, an access token it obtained). An upstream
that echoes one, in a debug dump or an error quoting the header it got, would hand it to the client and from there to
a model's context; a client passing one in a tool's arguments would hand it to another upstream. So the proxy
`remember`s each value it injects, per tenant, and scans what it relays: every occurrence is replaced by `MARKER` and
reported as a `Finding` (the credential's label, the encoding, the offset: never the value) for the audit log.

What is found, for each remembered value:
  - the value itself ("raw"), and its standard and URL-safe base64 ("base64", "base64url"; RFC 4648 §4, §5) at
    each of the three alignments a value can have inside a larger base64 text (Basic credentials, a base64 dump of a
    request): only the characters the value alone determines are matched, so a match proves at least the value's
    first len-1 bytes and the leading bits of its last;
  - each of those three written with escapes, in any mix: percent-encoding (RFC 3986 §2.1, either case of hex
    digits; "+" for a space as forms write it) and JSON string escapes (RFC 8259 §7: `\\/`, `\\"`, `\\\\`, `\\n`
    and the other short forms, `\\uXXXX` in either case, surrogate pairs for characters beyond the BMP). Characters
    that no encoder escapes (RFC 3986 unreserved: letters, digits, `-._~`) are matched only as themselves.
Not found: values shorter than MIN_VALUE_BYTES (8 bytes; any eight-character string turns up in ordinary text, so
shorter ones would redact innocent content; real credentials are longer) or longer than MAX_VALUE_BYTES; base64
split by line breaks (MIME); encodings nested in one another (percent-encoded JSON escapes); and deliberate
transformations (reversal, splitting a value across fields). The guard catches accidents and careless upstreams;
an upstream set on exfiltration can always transform a value first.

Redaction keeps JSON valid: the marker has no character JSON escapes, and a span that would begin or end inside a
JSON escape is widened to the whole escape, so a redacted string is still a string.

How it is fast: two stages. Every form has an anchor, the longest run of letters and digits in its plain writing
(at most MAX_ANCHOR bytes), which every escaped writing of the form contains unchanged. One Aho-Corasick automaton
per tenant finds all anchors in one pass over the bytes (the `ahocorasick-rs` package: bench/leak_guard_bench.py
measures it against one compiled regex alternation and against `pyahocorasick`); only around an anchor hit does a
regex of the form, with each character's accepted writings, decide whether the value is there and where it starts
and ends. A response with no anchor in it costs the automaton pass and nothing else. A form whose runs are all
shorter than MIN_ANCHOR (a value made mostly of punctuation) has its regex run over the whole message instead:
slower (bench/leak_guard_bench.py measures it), but such values are rare and found all the same.

Memory is bounded per tenant (MAX_VALUES_PER_TENANT, least recently injected dropped first: an upstream is likeliest
to echo what it received last). New values go to a small automaton rebuilt at the next scan; the large one is rebuilt
only when FRESH_VALUES have accumulated, so token renewals do not rebuild everything each time.

Streams (server-sent events relayed event by event) go through `StreamScanner`, which holds back the end of a chunk
that might be the start of a value continuing in the next one: at most the longest possible match minus one byte, and
only the trailing run of bytes that can occur in a match, so an event ending in its blank line goes out whole. Its
output is byte for byte what `scan` makes of the whole stream, wherever the chunks are cut.

Not thread-safe: one guard belongs to one event loop.
"""

from __future__ import annotations

import base64
import functools
import re
from collections import OrderedDict
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ahocorasick_rs

from chamberlain.audit.events import Action, Actor, AuditEvent

__all__ = [
    "MARKER",
    "MAX_VALUES_PER_TENANT",
    "MIN_VALUE_BYTES",
    "Finding",
    "LeakGuard",
    "ScanResult",
    "StreamScanner",
    "findings_event",
]

MARKER = b"[REDACTED:credential]"  # no character JSON or percent-encoding would escape
MIN_VALUE_BYTES = 8
MAX_VALUE_BYTES = 16 * 1024  # a large JWT is a few kilobytes; past this a value is not a credential
MAX_VALUES_PER_TENANT = 1024
FRESH_VALUES = 64  # values kept in the small automaton before the large one is rebuilt with them
MIN_ANCHOR = 6
DFA_ANCHORS = 512  # see _Automaton
MAX_ANCHOR = 16
MAX_FINDINGS_RECORDED = 100  # per audit event; the count is always complete
_MAX_HELD = 256 * 1024  # bytes a stream may hold back while a redacted span keeps growing

_DIGITS = b"0123456789"
_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_UNRESERVED = frozenset(_DIGITS + _LETTERS + b"-._~")  # RFC 3986 §2.3: never percent-encoded, never JSON-escaped
# RFC 8259 §7: the two-character escapes; "/" may be escaped and some encoders (PHP, Java) do.
_SHORT_ESCAPES = {
    0x22: b'\\"',
    0x5C: b"\\\\",
    0x2F: b"\\/",
    0x08: b"\\b",
    0x0C: b"\\f",
    0x0A: b"\\n",
    0x0D: b"\\r",
    0x09: b"\\t",
}
_LINE_BREAKS = frozenset(b"\r\n")  # end the hold-back of a stream unless told otherwise (see StreamScanner)
# Always held back at the end of a stream chunk, whatever the values: a JSON escape must stay with the match after
# it, so that redaction can take the escape along (see _widened).
_ALWAYS_HELD = b"\\0123456789ABCDEFabcdefu"
_BACKSLASH = 0x5C


# -- results --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One occurrence of a remembered value: which credential (its label), how it was written, where."""

    label: str
    encoding: str  # "raw", "base64" or "base64url", with "+percent" and/or "+json" when escapes were used
    offset: int  # of the occurrence's first byte in the scanned bytes (in the whole stream for StreamScanner)
    length: int  # of the occurrence as written


@dataclass(frozen=True, slots=True)
class ScanResult:
    data: bytes  # the bytes to send on: the input itself when nothing was found
    findings: tuple[Finding, ...] = ()

    @property
    def redacted(self) -> bool:
        return bool(self.findings)


# -- how a value may be written ---------------------------------------------------------------------------------------


def _hex_digit(nibble: int) -> bytes:
    """A regex class matching one hex digit in either case (RFC 3986 §2.1 and RFC 8259 §7 allow both)."""
    upper = b"%X" % nibble
    return upper if upper in _DIGITS else b"[" + upper + upper.lower() + b"]"


def _percent_pattern(octet: int) -> bytes:
    return b"%" + _hex_digit(octet >> 4) + _hex_digit(octet & 0xF)


def _json_u_pattern(code_unit: int) -> bytes:
    return b"\\\\u" + b"".join(_hex_digit(code_unit >> shift & 0xF) for shift in (12, 8, 4, 0))


@functools.lru_cache(maxsize=4096)  # ASCII characters recur in every value: built once each
def _writings(literal: bytes, code_point: int | None) -> bytes:
    """A regex of every accepted writing of one character: `literal` is its UTF-8 bytes, or, in a value that is not
    UTF-8, one byte (code_point None: JSON cannot carry it)."""
    if len(literal) == 1 and literal[0] in _UNRESERVED:
        return re.escape(literal)
    writings = [re.escape(literal), b"".join(_percent_pattern(octet) for octet in literal)]
    if code_point is not None:
        if code_point < 0x10000:
            writings.append(_json_u_pattern(code_point))
        else:  # RFC 8259 §7: a UTF-16 surrogate pair
            high, low = 0xD800 + ((code_point - 0x10000) >> 10), 0xDC00 + ((code_point - 0x10000) & 0x3FF)
            writings.append(_json_u_pattern(high) + _json_u_pattern(low))
        short = _SHORT_ESCAPES.get(code_point)
        if short is not None:
            writings.append(re.escape(short))
    if literal == b" ":
        writings.append(rb"\+")  # application/x-www-form-urlencoded
    return b"(?:" + b"|".join(writings) + b")"


def _pattern(literal: bytes) -> bytes:
    try:
        text = literal.decode("utf-8")
    except UnicodeDecodeError:
        return b"".join(_writings(bytes([octet]), None) for octet in literal)
    return b"".join(_writings(character.encode("utf-8"), ord(character)) for character in text)


_UNRESERVED_BYTES = bytes(sorted(_UNRESERVED))
_ASCII = bytes(range(128))


def _longest(literal: bytes) -> int:
    """An upper bound of the length of any accepted writing of `literal`: per byte, 1 for an unreserved character,
    6 for another ASCII one (\\u00XX), 3 for a byte of a multi-byte character or of a value that is not UTF-8 (%XX; its
    \\uXXXX or surrogate pair is never longer than 3 bytes of writing per UTF-8 byte)."""
    unreserved = len(literal) - len(literal.translate(None, _UNRESERVED_BYTES))
    other_ascii = len(literal) - len(literal.translate(None, _ASCII)) - unreserved
    return unreserved + 6 * other_ascii + 3 * (len(literal) - unreserved - other_ascii)


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _base64_inner(value: bytes, alignment: int) -> bytes:
    """The base64 characters that `value` alone determines when it starts `alignment` bytes (0-2) into a 3-byte
    group of a larger base64 text: character i covers bits 6i..6i+5 of the text, so those inside the value's bits
    are kept and the ones shared with unknown neighbouring bytes are dropped (RFC 4648 §4)."""
    encoded = base64.b64encode(bytes(alignment) + value + bytes(2))
    first = -(-8 * alignment // 6)  # ceil
    last = 8 * (alignment + len(value)) // 6  # exclusive
    return encoded[first:last]


@dataclass(eq=False, slots=True)
class _Anchor:
    """An anchor's place in its form: the most bytes a match of the form can have before and after it."""

    form: _Form
    needle: bytes
    before: int
    after: int


@dataclass(eq=False, slots=True)
class _Form:
    """One way the value appears before escaping: the value itself, or its base64 at one alignment."""

    value: _Value
    encoding: str
    literal: bytes
    longest: int
    anchors: list[_Anchor] = field(default_factory=list)
    _compiled: re.Pattern[bytes] | None = None

    def pattern(self) -> re.Pattern[bytes]:
        # Built on first use: most forms never meet their anchor.
        if self._compiled is None:
            self._compiled = re.compile(_pattern(self.literal))
        return self._compiled


_RUNS = re.compile(rb"[A-Za-z0-9]+")


def _anchor_window(literal: bytes, taken: Container[bytes]) -> tuple[int, int] | None:
    """Where the form's anchor lies: in a run of letters and digits (every writing of the form contains it
    unchanged), the longest runs first, and within a run as far from its start as possible. Values of one kind share
    their beginnings (a token prefix such as "ghp_", the header and first claims of every JWT): an anchor there would
    send each hit to the regexes of all of them. A window another value already anchors on is passed over too."""
    runs = sorted(
        (run.span() for run in _RUNS.finditer(literal) if run.end() - run.start() >= MIN_ANCHOR),
        key=lambda span: span[0] - span[1],
    )
    for run_start, run_end in runs:
        size = min(MAX_ANCHOR, run_end - run_start)
        for end in range(run_end, run_start + size - 1, -1):
            if literal[end - size : end] not in taken:
                return end - size, end
    if runs:  # every window is some other value's anchor too: share one
        run_start, run_end = runs[0]
        return max(run_start, run_end - MAX_ANCHOR), run_end
    return None  # mostly punctuation: its regex scans the whole message instead (see _TenantValues.find)


def _form(value: _Value, encoding: str, literal: bytes, taken: Container[bytes]) -> _Form:
    form = _Form(value, encoding, literal, _longest(literal))
    window = _anchor_window(literal, taken)
    if window is not None:
        start, end = window
        form.anchors.append(_Anchor(form, literal[start:end], _longest(literal[:start]), _longest(literal[end:])))
    return form


@dataclass(eq=False, slots=True)
class _Value:
    label: str
    forms: list[_Form] = field(default_factory=list)
    longest: int = 0
    alphabet: frozenset[int] = frozenset()

    @property
    def unanchored(self) -> list[_Form]:
        return [form for form in self.forms if not form.anchors]


_ESCAPE_BYTES = frozenset(b'%0123456789ABCDEFabcdef\\u+"/bfnrt')


def _value(raw: bytes, label: str, taken: Container[bytes] = frozenset()) -> _Value:
    """A value's forms and their anchors (`taken`: the anchors other values of the tenant already have)."""
    value = _Value(label)
    value.forms.append(_form(value, "raw", raw, taken))
    for alignment in range(3):
        standard = _base64_inner(raw, alignment)
        value.forms.append(_form(value, "base64", standard, taken))
        urlsafe = standard.translate(_URLSAFE)
        if urlsafe != standard:
            value.forms.append(_form(value, "base64url", urlsafe, taken))
    value.longest = max(form.longest for form in value.forms)
    alphabet: set[int] = set()
    for form in value.forms:
        # The bytes a writing of the form may contain: its own, and those of escapes when it has a byte to escape.
        alphabet.update(form.literal)
        if form.literal.translate(None, _UNRESERVED_BYTES):
            alphabet |= _ESCAPE_BYTES
    value.alphabet = frozenset(alphabet)
    return value


# -- matching --------------------------------------------------------------------------------------------------------


class _Automaton:
    """Every anchor of a set of values, found in one pass (overlapping: one anchor must not hide another).

    The implementation is chosen by size (bench/leak_guard_bench.py): a DFA scans two to four times faster than the
    NFAs but costs 20-35 µs per anchor to build, against 2-5 µs. The large automaton, rebuilt once per FRESH_VALUES
    new values, is a DFA up to DFA_ANCHORS anchors (a rebuild of a few milliseconds) and a contiguous NFA beyond;
    the small one, rebuilt at the first scan after each new value, is a DFA only while it is tiny and otherwise the
    non-contiguous NFA, the cheapest to build."""

    def __init__(self, values: Iterable[_Value], *, large: bool) -> None:
        targets: dict[bytes, list[_Anchor]] = {}
        for value in values:
            for form in value.forms:
                for anchor in form.anchors:
                    targets.setdefault(anchor.needle, []).append(anchor)
        self.targets = list(targets.values())
        if len(targets) <= (DFA_ANCHORS if large else DFA_ANCHORS // 10):
            implementation = ahocorasick_rs.Implementation.DFA
        elif large:
            implementation = ahocorasick_rs.Implementation.ContiguousNFA
        else:
            implementation = ahocorasick_rs.Implementation.NoncontiguousNFA
        self._automaton = (
            ahocorasick_rs.BytesAhoCorasick(list(targets), implementation=implementation) if targets else None
        )

    def hits(self, data: bytes) -> list[tuple[int, int, int]]:
        if self._automaton is None:
            return []
        return self._automaton.find_matches_as_indexes(data, overlapping=True)


@dataclass(frozen=True, slots=True)
class _Match:
    start: int
    end: int
    form: _Form


class _TenantValues:
    """One tenant's remembered values and the automata over them."""

    def __init__(self, max_values: int) -> None:
        self.max_values = max_values
        self.values: OrderedDict[bytes, _Value] = OrderedDict()  # least recently injected first
        self.stable: _Automaton | None = None
        self.stale = 0  # values dropped since the stable automaton was built (it still finds them)
        self.fresh: dict[bytes, _Value] = {}
        self.fresh_automaton: _Automaton | None = None
        self.fresh_dirty = False
        self.current: tuple[_Automaton, ...] = ()
        self.unanchored: dict[bytes, list[_Form]] = {}  # forms without an anchor, by value
        self.header_parts: dict[bytes, tuple[bytes, ...]] = {}  # remember_header's split, kept for the next time
        self.anchors: dict[bytes, int] = {}  # anchor -> how many live forms use it
        self.longest = 0
        self.alphabet = frozenset(_ALWAYS_HELD)  # every byte a match may contain
        self.held = _ALWAYS_HELD  # the same, as bytes for rstrip, without line breaks
        self.held_with_line_breaks = _ALWAYS_HELD

    def remember(self, raw: bytes, label: str) -> None:
        if raw in self.values:
            self.values.move_to_end(raw)  # the common case: the same header on every request; its first label stays
            return
        value = _value(raw, label, self.anchors)
        for form in value.forms:
            for anchor in form.anchors:
                self.anchors[anchor.needle] = self.anchors.get(anchor.needle, 0) + 1
        self.values[raw] = value
        self.fresh[raw] = value
        self.fresh_dirty = True
        if value.unanchored:
            self.unanchored[raw] = value.unanchored
        self.longest = max(self.longest, value.longest)
        if not value.alphabet <= self.alphabet:
            self.alphabet |= value.alphabet
            self.held_with_line_breaks = bytes(sorted(self.alphabet))
            self.held = bytes(sorted(self.alphabet - _LINE_BREAKS))
        while len(self.values) > self.max_values:
            dropped_raw, dropped = self.values.popitem(last=False)
            self._release(dropped)
            self.unanchored.pop(dropped_raw, None)
            if self.fresh.pop(dropped_raw, None) is not None:
                self.fresh_dirty = True
            else:
                self.stale += 1

    def forget(self, raw: bytes) -> bool:
        value = self.values.pop(raw, None)
        if value is None:
            return False
        self._release(value)
        self.unanchored.pop(raw, None)
        if self.fresh.pop(raw, None) is not None:
            self.fresh_dirty = True
        else:
            self.stale += 1
            # A forgotten value must stop being redacted now, not at the next rebuild.
            self.stable = None
        return True

    def _release(self, value: _Value) -> None:
        for form in value.forms:
            for anchor in form.anchors:
                remaining = self.anchors.pop(anchor.needle, 1) - 1
                if remaining:
                    self.anchors[anchor.needle] = remaining

    def automata(self) -> tuple[_Automaton, ...]:
        if self.stable is None or len(self.fresh) > FRESH_VALUES or self.stale > FRESH_VALUES:
            self.stable = _Automaton(self.values.values(), large=True)
            self.fresh.clear()
            self.fresh_automaton = None
            self.fresh_dirty = False
            self.stale = 0
            self.longest = max((value.longest for value in self.values.values()), default=0)
            self.current = (self.stable,)
        elif self.fresh_dirty:
            self.fresh_automaton = _Automaton(self.fresh.values(), large=False)
            self.fresh_dirty = False
            self.current = (self.stable, self.fresh_automaton) if self.fresh else (self.stable,)
        return self.current

    def find(self, data: bytes) -> list[_Match]:
        """Every occurrence of every value in `data`, by start."""
        found: dict[tuple[int, int, int], _Match] = {}
        size = len(data)
        for automaton in self.automata():
            hits = automaton.hits(data)
            if not hits:
                continue
            for index, start, end in hits:
                for anchor in automaton.targets[index]:
                    form = anchor.form
                    low, high = max(0, start - anchor.before), min(size, end + anchor.after)
                    for match in form.pattern().finditer(data, low, high):
                        if match.start() <= start and end <= match.end():  # this anchor's occurrence
                            found.setdefault((match.start(), match.end(), id(form)), _Match(*match.span(), form))
        if self.unanchored:
            for forms in self.unanchored.values():
                for form in forms:
                    for match in form.pattern().finditer(data):
                        found.setdefault((match.start(), match.end(), id(form)), _Match(*match.span(), form))
        if not found:
            return []
        return sorted(found.values(), key=lambda match: (match.start, -match.end))


_AUTH_SCHEME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2 token


def _header_parts(header: bytes) -> tuple[bytes, ...]:
    """What of a header value to guard: the value; after an authentication scheme, its credentials; for Basic, the
    decoded user-id:password pair and the password."""
    parts = [header]
    scheme, space, credentials = header.strip().partition(b" ")
    credentials = credentials.strip()
    if space and credentials and _AUTH_SCHEME.fullmatch(scheme):
        parts.append(credentials)
        if scheme.lower() == b"basic":
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except ValueError:
                decoded = b""
            if decoded:
                parts += [decoded, decoded.partition(b":")[2]]
    return tuple(parts)


def _introduces_escape(data: bytes, index: int) -> bool:
    """Whether the backslash at `index` starts a JSON escape (an odd run of backslashes ends there)."""
    run = 0
    while index - run >= 0 and data[index - run] == _BACKSLASH:
        run += 1
    return run % 2 == 1


def _escape_end(data: bytes, index: int) -> int:
    return index + (6 if data[index + 1 : index + 2] == b"u" else 2)


def _widened(data: bytes, start: int, end: int) -> tuple[int, int]:
    """The span grown to whole JSON escapes at both ends: cutting one in half would leave a stray backslash (or
    half a \\uXXXX) beside the marker, and the JSON string around it would no longer parse."""
    backslash = data.rfind(b"\\", max(0, start - 5), start)
    if backslash >= 0 and _introduces_escape(data, backslash) and _escape_end(data, backslash) > start:
        start = backslash
    backslash = data.rfind(b"\\", max(start, end - 5), end)
    if backslash >= 0 and _introduces_escape(data, backslash):
        end = max(end, min(len(data), _escape_end(data, backslash)))
    return start, end


def _encoding(form: _Form, written: bytes) -> str:
    if written == form.literal:
        return form.encoding
    encoding = form.encoding
    if written.count(b"%") > form.literal.count(b"%") or written.count(b"+") > form.literal.count(b"+"):
        encoding += "+percent"
    if written.count(b"\\") > form.literal.count(b"\\"):
        encoding += "+json"
    return encoding


@dataclass(slots=True)
class _Span:
    """Bytes to replace by one marker: overlapping matches (one value inside another, a repeated value) merged."""

    start: int
    end: int
    matches: list[_Match]


def _spans(data: bytes, matches: list[_Match]) -> list[_Span]:
    spans: list[_Span] = []
    for match in matches:
        start, end = _widened(data, match.start, match.end)
        if spans and start < spans[-1].end:  # overlap only: touching matches get a marker each
            spans[-1].end = max(spans[-1].end, end)
            spans[-1].matches.append(match)
        else:
            spans.append(_Span(start, end, [match]))
    return spans


def _redact(data: bytes, spans: list[_Span], end: int, offset: int, marker: bytes) -> tuple[bytes, list[Finding]]:
    """`data[:end]` with the spans (all inside it) replaced, and their findings (offsets shifted by `offset`)."""
    pieces: list[bytes] = []
    findings: list[Finding] = []
    position = 0
    for span in spans:
        pieces += [data[position : span.start], marker]
        position = span.end
        for match in span.matches:
            written = data[match.start : match.end]
            label = match.form.value.label
            findings.append(Finding(label, _encoding(match.form, written), offset + match.start, len(written)))
    pieces.append(data[position:end])
    return b"".join(pieces), findings


# -- the guard -------------------------------------------------------------------------------------------------------


class LeakGuard:
    """Remembers the credential values injected for each tenant and finds them in what the gateway relays."""

    def __init__(self, *, max_values_per_tenant: int = MAX_VALUES_PER_TENANT, marker: bytes = MARKER) -> None:
        if max_values_per_tenant < 1:
            raise ValueError("max_values_per_tenant must be at least 1")
        self._max_values = max_values_per_tenant
        self._marker = marker
        self._tenants: dict[str, _TenantValues] = {}

    def remember(self, tenant: str, value: bytes | str, label: str) -> bool:
        """Scans for `value` in `tenant`'s traffic from now on. `label` names the credential (its reference, such as
        "acme/github/token" or "upstream:github"), never its value. Returns False for a value too short or too long
        to guard (see MIN_VALUE_BYTES). Cheap for a value already remembered (a dictionary lookup: call it on every
        injection, which also keeps the value among the most recently used); such a value keeps its first label."""
        raw = value.encode("utf-8") if isinstance(value, str) else value
        if not MIN_VALUE_BYTES <= len(raw) <= MAX_VALUE_BYTES:
            return False
        values = self._tenants.get(tenant)
        if values is None:
            values = self._tenants[tenant] = _TenantValues(self._max_values)
        elif raw in values.values:
            values.values.move_to_end(raw)
            return True
        if raw in label.encode("utf-8", "replace"):
            raise ValueError("a label names a credential and must not contain its value")
        values.remember(bytes(raw), label)
        return True

    def remember_header(self, tenant: str, value: bytes | str, label: str) -> bool:
        """An Authorization-style header value: the whole value, and its credentials after the scheme
        ("Bearer <token>": the token, which is what an upstream would echo; RFC 9110 §11.4); for Basic (RFC 7617
        §2) also the decoded "user-id:password" and the password alone. As cheap as `remember` when seen before."""
        raw = value.encode("latin-1") if isinstance(value, str) else value
        values = self._tenants.get(tenant)
        parts = values.header_parts.get(raw) if values is not None else None
        if values is None or parts is None:
            parts = _header_parts(raw)
        remembered = False
        for part in parts:
            remembered = self.remember(tenant, part, label) or remembered
        values = self._tenants.get(tenant)
        if values is not None and raw not in values.header_parts:
            values.header_parts[raw] = parts
            while len(values.header_parts) > values.max_values:
                values.header_parts.pop(next(iter(values.header_parts)))
        return remembered

    def forget(self, tenant: str, value: bytes | str) -> bool:
        """Stops scanning for a value (a credential deleted for good). Rarely needed: old values age out."""
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        values = self._tenants.get(tenant)
        return values is not None and values.forget(raw)

    def watching(self, tenant: str) -> bool:
        """Whether anything is remembered for the tenant (when not, scanning is a no-op)."""
        values = self._tenants.get(tenant)
        return values is not None and bool(values.values)

    def count(self, tenant: str) -> int:
        values = self._tenants.get(tenant)
        return len(values.values) if values is not None else 0

    def scan(self, tenant: str, data: bytes) -> ScanResult:
        """`data` with every remembered value of the tenant replaced by the marker, and what was found."""
        values = self._tenants.get(tenant)
        if values is None or not values.values:
            return ScanResult(data)
        matches = values.find(data)
        if not matches:
            return ScanResult(data)
        redacted, findings = _redact(data, _spans(data, matches), len(data), 0, self._marker)
        return ScanResult(redacted, tuple(findings))

    def stream(self, tenant: str, *, across_line_breaks: bool = False) -> StreamScanner:
        """A scanner for one relayed stream of the tenant: values split across chunks are found too."""
        return StreamScanner(self, tenant, across_line_breaks=across_line_breaks)

    def _values(self, tenant: str) -> _TenantValues | None:
        values = self._tenants.get(tenant)
        return values if values is not None and values.values else None


class StreamScanner:
    """Scans a byte stream chunk by chunk. `feed` returns what may be sent now: the chunk, redacted, less a held-back
    tail that might begin a value the next chunk completes: at most the longest match less one byte (plus the five
    bytes an escape before it may take), and only the trailing run of bytes that can occur in a match. Line breaks
    end that run unless `across_line_breaks`: an SSE event ends in a blank line and must reach the client whole and
    at once, and no value can straddle one there (a raw line break inside a data field starts a new field). For
    other streams, `across_line_breaks=True` also finds a value with raw line breaks (a PEM key) that a chunk
    boundary splits after one of them. `close` returns the rest. Findings carry offsets in the whole stream."""

    def __init__(self, guard: LeakGuard, tenant: str, *, across_line_breaks: bool = False) -> None:
        self._guard = guard
        self._tenant = tenant
        self._across_line_breaks = across_line_breaks
        self._held = b""
        self._offset = 0  # stream offset of the first held byte
        self.findings: list[Finding] = []

    def feed(self, chunk: bytes) -> ScanResult:
        data = self._held + chunk if self._held else chunk
        values = self._guard._values(self._tenant)
        if values is None:
            return self._emit(data, len(data), [])
        # +5: a match may start just after an escape's backslash, which redaction must be able to take along.
        limit = min(len(data), values.longest - 1 + 5)
        tail = data[len(data) - limit :]
        held = values.held_with_line_breaks if self._across_line_breaks else values.held
        hold = len(tail) - len(tail.rstrip(held))
        return self._emit(data, len(data) - hold, values.find(data))

    def close(self) -> ScanResult:
        data, self._held = self._held, b""
        values = self._guard._values(self._tenant)
        return self._emit(data, len(data), values.find(data) if values is not None and data else [])

    def _emit(self, data: bytes, cut: int, matches: list[_Match]) -> ScanResult:
        # Bytes before the cut go out now, those after are held. A span reaching across the cut is held whole (a
        # longer value overlapping it may still be completed by the next chunk), unless holding it would make the
        # held bytes grow without bound (a value repeated back to back): then it goes out redacted.
        spans = _spans(data, matches)
        sent: list[_Span] = []
        for span in spans:
            if span.end <= cut:
                sent.append(span)
            elif span.start < cut:
                if len(data) - span.start <= _MAX_HELD:
                    cut = span.start
                else:
                    sent.append(span)
                    cut = span.end
                break
            else:
                break
        out, findings = _redact(data, sent, cut, self._offset, self._guard._marker)
        self._held = data[cut:]
        self._offset += cut
        self.findings += findings
        return ScanResult(out, tuple(findings))


# -- the audit record ------------------------------------------------------------------------------------------------


def findings_event(
    tenant: str,
    findings: Iterable[Finding],
    *,
    upstream: str,
    direction: str,
    actor: Actor,
    request_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """The audit event for what one relayed message had redacted: which credentials (labels), how they were
    written, where; never a value. `direction` is "response" (from the upstream) or "request" (the client's
    arguments on their way to the upstream)."""
    listed = list(findings)
    details: dict[str, Any] = {
        "detector": "leak_guard",
        "upstream": upstream,
        "direction": direction,
        "count": len(listed),
        "credentials": sorted({finding.label for finding in listed}),
        "findings": [
            {"label": f.label, "encoding": f.encoding, "offset": f.offset, "length": f.length}
            for f in listed[:MAX_FINDINGS_RECORDED]
        ],
        **(extra or {}),
    }
    return AuditEvent(
        action=Action.DLP_DETECTION,
        outcome="denied",
        tenant=tenant,
        actor=actor,
        target=f"mcp:{upstream}",
        reason="a credential the gateway injected was redacted from the " + direction,
        request_id=request_id,
        details=details,
    )
