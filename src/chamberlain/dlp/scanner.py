"""The scanner: a tenant's detectors run over a text, seeing through JSON escapes, base64 and split chunks.

`build_scanner(config, patterns)` resolves each detector's level and action once (its defaults in
detectors/registry.py, then `config.detectors[type]`, then `config.level_actions`, of which the stricter action
wins) and compiles everything; `Scanner.scan(text)` returns a `ScanReport` with detections sorted by start, their
offsets character indices into `text`.

What a scan sees:
  - JSON string escapes (RFC 8259 §7). When the text has any, it is scanned as decoded: every escape (`\\n`,
    `\\"`, `\\/`, `\\u0040`, surrogate pairs) replaced by its character, two levels deep (a JSON document inside a
    JSON string), so `jane\\u0040example.com` is an email and a card after a `\\n` starts a number. Spans map back to
    the text as written; a detection whose span held an escape is marked encoding="json".
  - Base64 (RFC 4648 §4 and §5): every run of BASE64_MIN_LENGTH (padding included) to BASE64_MAX_LENGTH characters
    of either alphabet that decodes to UTF-8 text, nearly all of it printable, is scanned in turn (a base64 run inside
    that too, once); what is found inside is reported over the whole run, encoding="base64", at 0.9 of its score (the
    decoding may be a coincidence; and a JWT stays one detection, not the email in its payload). Longer runs
    (attachments) are not decoded, nor are JSON escapes inside a decoded run.
  - Split chunks: `TextStream` (below).

Overlapping detections: one inside a longer, confident one of the same or a higher level is part of it (the digits
in a Slack token, the email in a JWT's payload); otherwise the highest score wins, then the longest span, then the one
as written; so a card number (checksum-validated, score 1.0) is not also a phone number (0.75), and a JWT (0.95) not
also a high-entropy secret (0.6). No detection is longer than MAX_SPAN characters.

Triggers: most scans are of short strings with nothing in them (each string value of an MCP message is scanned on its
own), where what costs is calling ~30 detectors, not matching. So a text of up to GATE_MAX_LENGTH characters is first
searched once for every detector's trigger at the same time (a digit, an "@", a token prefix, a key name:
detectors/__init__.py), and only detectors whose trigger it holds are run; a clean text costs one search. Triggers
only skip detectors that would find nothing, so results are the same as running them all (`Scanner(triggers=False)`,
which the tests compare against). Longer texts run every detector: there the matching dominates, and a digit is
nearly always present anyway.

Failing closed: every detector call is guarded. A detector that raises, or a custom pattern that runs out of its time
(all custom patterns share `config.detector_timeout_ms` per scan), becomes a `DetectorFailure` in the report, whose
level is then restricted, and the scan goes on with the other detectors. The failure is logged at warning level with
the detector's name only, never the text. Built-in detectors are linear-time by construction (detectors/__init__.py).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, Literal, TypeVar

from chamberlain.dlp.config import DetectorSetting, DlpConfig
from chamberlain.dlp.detection import Action, Detection, DetectorFailure, ScanReport, stricter
from chamberlain.dlp.detectors import Detector, Span, Trigger, trigger_of
from chamberlain.dlp.detectors.custom import VALIDATORS, CustomDetector, compile_custom
from chamberlain.dlp.detectors.registry import DEFAULTS, builtin_detectors
from chamberlain.dlp.levels import Level, LevelName
from chamberlain.dlp.patterns_file import CustomPattern

__all__ = ["MAX_SPAN", "Scanner", "TextStream", "build_scanner"]

logger = logging.getLogger(__name__)

MAX_SPAN = 8192  # the longest detection, in characters of the text as written
JSON_LEVELS = 2  # JSON escapes decoded this many times over
BASE64_LEVELS = 2  # base64 decoded this many times over
# 16 characters encode 12 bytes (RFC 4648 §4: 4 characters per 3 bytes), room for a short email address
# ("wdoe@acme.de"); shorter runs decode to too little to hold a value of any type. Lowered from 20 with the
# bench's precision unchanged (1.000 on seeds 1, 2, 3, 8, 9) and its cost flat.
BASE64_MIN_LENGTH = 16
BASE64_MAX_LENGTH = 4096
BASE64_SCORE_FACTOR = 0.9
CONTAINER_MIN_SCORE = 0.8
# Texts up to this long are searched for the detectors' triggers before any runs. The search (a few tens of ns per
# character when it finds nothing) is wasted when a trigger comes only at the end; bounding the length bounds that.
GATE_MAX_LENGTH = 4096

_DIGIT = re.compile(r"\d")  # as the detectors' `\d`: a decimal digit of any script
_NOTHING = ScanReport()  # immutable, so one instance serves every clean scan

# RFC 8259 §7: a surrogate pair, any other \uXXXX, or a two-character escape.
_JSON_ESCAPE = re.compile(
    r"\\(?:u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|([\"\\/bfnrt]))"
)
_SHORT_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_BASE64_RUN = re.compile(
    rf"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{{{BASE64_MIN_LENGTH - 2},{BASE64_MAX_LENGTH}}}={{0,2}}(?![A-Za-z0-9+/_=-])"
)
D = TypeVar("D", Detector, CustomDetector)
# Control characters other than whitespace: binary data decoded as text is full of them.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\ufffd]")


@dataclass(frozen=True, slots=True)
class _Active(Generic[D]):
    """A detector (built-in or custom) with the level and action the tenant's configuration gives what it finds."""

    detector: D
    classification: Level
    action: Action


@dataclass(slots=True)
class _Run:
    """One scan's state: its custom patterns' deadline and the failures so far (one per detector and reason)."""

    deadline: float
    failures: dict[tuple[str, str], DetectorFailure] = field(default_factory=dict)

    def fail(self, detector: str, reason: Literal["timeout", "error"]) -> None:
        if (detector, reason) not in self.failures:
            logger.warning("DLP detector %s failed: %s", detector, reason)
            self.failures[detector, reason] = DetectorFailure(detector, reason)


@dataclass(frozen=True, slots=True)
class _Check:
    """One distinct trigger, ready to test: its literals lowered when it is tested on the lowered text."""

    digit: bool
    literals: tuple[str, ...]
    folded: bool

    @classmethod
    def of(cls, trigger: Trigger) -> _Check:
        literals = tuple(literal.lower() for literal in trigger.literals) if trigger.folded else trigger.literals
        return cls(trigger.digit, literals, trigger.folded)

    def holds(self, text: str, lowered: str) -> bool:
        """True when `text` (`lowered`: text.lower()) has the trigger: a superset of ASCII-lowered matches, as
        lower() lowers ASCII letters in place."""
        if self.digit and _DIGIT.search(text) is not None:
            return True
        haystack = lowered if self.folded else text
        return any(literal in haystack for literal in self.literals)


class Scanner:
    """A tenant's detectors, ready to run; made by `build_scanner`. Immutable, so one may serve many requests.

    `triggers=False` runs every detector on every text: the reference the trigger fast path is tested against."""

    def __init__(
        self,
        detectors: Sequence[_Active[Detector]],
        customs: Sequence[_Active[CustomDetector]],
        timeout_s: float,
        *,
        triggers: bool = True,
    ) -> None:
        self._detectors = tuple(detectors)
        self._customs = tuple(customs)
        self._timeout_s = timeout_s
        self._types = frozenset(a.detector.type for a in self._detectors) | {c.detector.type for c in self._customs}
        declared = [_usable(trigger_of(a.detector)) if triggers else None for a in self._detectors]
        distinct = list(dict.fromkeys(trigger for trigger in declared if trigger is not None))
        index = {trigger: number for number, trigger in enumerate(distinct)}
        self._checks = tuple(_Check.of(trigger) for trigger in distinct)
        # Each detector with its trigger's index in _checks, -1 when it has none; in the configured order, which
        # decides among otherwise equal overlapping detections.
        self._plan = tuple(
            (active, -1 if trigger is None else index[trigger])
            for active, trigger in zip(self._detectors, declared, strict=True)
        )
        self._untriggered = tuple(active for active, number in self._plan if number < 0)
        self._gate = _gate(distinct) if distinct else None

    @property
    def types(self) -> frozenset[str]:
        """The entity types this scanner reports."""
        return self._types

    def stream(self) -> TextStream:
        """A stream scanner for text that arrives in chunks (a streamed response)."""
        return TextStream(self)

    def scan(self, text: str) -> ScanReport:
        run = _Run(time.monotonic() + self._timeout_s)
        if "\\" not in text:
            # No JSON escapes (nearly every text): offsets are the text's own and every detection is as written.
            found = [d for d in self._detect(text, run, BASE64_LEVELS) if d.end - d.start <= MAX_SPAN]
            if not found and not run.failures:
                return _NOTHING
            return ScanReport(_resolve_overlaps(found), tuple(run.failures.values()))
        view = _Unescaped.of(text)
        found = []
        for detection in self._detect(view.text, run, BASE64_LEVELS):
            start, end = view.to_raw(detection.start, detection.end)
            if end - start > MAX_SPAN:
                continue
            encoding = detection.encoding
            if encoding == "raw" and view.escaped(detection.start, detection.end):
                encoding = "json"
            found.append(replace(detection, start=start, end=end, encoding=encoding))
        return ScanReport(_resolve_overlaps(found), tuple(run.failures.values()))

    def _detect(self, text: str, run: _Run, base64_levels: int) -> list[Detection]:
        """Detections in `text`, and inside its base64 runs while `base64_levels` remain."""
        found: list[Detection] = []
        for active in self._worth_running(text):
            try:
                spans = list(active.detector.find(text))
            except Exception:  # fail closed on any detector bug: reported, the others still run
                run.fail(active.detector.name, "error")
                continue
            if spans:
                found.extend(_detections(spans, active.detector.type, active.classification, active.action))
        for custom in self._customs:
            remaining = run.deadline - time.monotonic()
            if remaining <= 0:
                run.fail(custom.detector.name, "timeout")
                continue
            try:
                spans = custom.detector.find(text, remaining)
            except TimeoutError:
                run.fail(custom.detector.name, "timeout")
                continue
            except Exception:
                run.fail(custom.detector.name, "error")
                continue
            found.extend(_detections(spans, custom.detector.type, custom.classification, custom.action))
        if base64_levels and len(text) >= BASE64_MIN_LENGTH:  # a shorter text holds no run long enough
            found.extend(self._inside_base64(text, run, base64_levels - 1))
        return found

    def _worth_running(self, text: str) -> Sequence[_Active[Detector]]:
        """The detectors that may find something in `text`, in their order: those whose trigger it holds."""
        if self._gate is None or len(text) > GATE_MAX_LENGTH:
            return self._detectors
        lowered = text.lower()
        if self._gate.search(lowered) is None:
            return self._untriggered
        holds = [check.holds(text, lowered) for check in self._checks]
        return [active for active, number in self._plan if number < 0 or holds[number]]

    def _inside_base64(self, text: str, run: _Run, base64_levels: int) -> list[Detection]:
        found: list[Detection] = []
        for match in _BASE64_RUN.finditer(text):
            if match.end() - match.start() < BASE64_MIN_LENGTH:
                continue
            decoded = _decode_base64(match.group())
            if decoded is None:
                continue
            # The decoded text's detections overlap as a text's do (card digits inside a Slack token); they are
            # resolved as the decoded text's own scan would resolve them, before each is widened to the whole run,
            # where they would all overlap alike and the containment that decides among them is lost.
            strongest: dict[str, Detection] = {}
            for inner in _resolve_overlaps(self._detect(decoded, run, base64_levels)):
                if inner.type not in strongest or inner.score > strongest[inner.type].score:
                    strongest[inner.type] = inner
            found.extend(
                replace(
                    inner,
                    start=match.start(),
                    end=match.end(),
                    score=round(inner.score * BASE64_SCORE_FACTOR, 6),
                    encoding="base64",
                )
                for inner in strongest.values()
            )
        return found


def _usable(trigger: Trigger | None) -> Trigger | None:
    """`trigger`, unless it could never hold or always would (declared with nothing, or with an empty literal): the
    detector is then run on every text, as one without a trigger."""
    if trigger is None or "" in trigger.literals or not (trigger.digit or trigger.literals):
        return None
    return trigger


def _gate(triggers: Sequence[Trigger]) -> re.Pattern[str]:
    """One pattern that finds, in a lower-cased text, something whenever any of `triggers` holds in the text (and at
    times when none does: it only spares the per-trigger tests on the texts it finds nothing in)."""
    literals = {literal.lower() for trigger in triggers for literal in trigger.literals}
    alternatives = [_alternation(sorted(literals))] if literals else []
    if any(trigger.digit for trigger in triggers):
        alternatives.append(r"\d")
    return re.compile("|".join(alternatives))


def _alternation(words: Sequence[str]) -> str:
    """A regular expression for any of `words` (none empty), factored by first character: the engine then tries one
    branch per position instead of every word, about twice as fast on text that holds none."""
    by_first: dict[str, list[str]] = {}
    for word in words:
        by_first.setdefault(word[0], []).append(word[1:])
    branches = []
    for first, rests in by_first.items():
        if "" in rests:  # the character alone is a word: the longer ones add nothing to what is found
            branches.append(re.escape(first))
        elif len(rests) == 1:
            branches.append(re.escape(first + rests[0]))
        else:
            branches.append(f"{re.escape(first)}(?:{_alternation(rests)})")
    return "|".join(branches)


def _detections(spans: Sequence[Span], type_: str, classification: Level, action: Action) -> list[Detection]:
    return [Detection(type_, span.start, span.end, span.score, classification, action) for span in spans]


def _decode_base64(run: str) -> str | None:
    """The UTF-8 text a base64 or base64url run encodes, if it is nearly all printable; None otherwise."""
    body = run.rstrip("=")
    urlsafe = "-" in body or "_" in body
    if (urlsafe and ("+" in body or "/" in body)) or len(body) % 4 == 1:
        return None
    try:
        data = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_" if urlsafe else None, validate=True)
        decoded = data.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if len(_CONTROL.findall(decoded)) * 20 > len(decoded):
        return None
    return decoded


def _resolve_overlaps(found: Sequence[Detection]) -> tuple[Detection, ...]:
    """One detection per stretch of text, sorted by start.

    A detection inside a longer, confident one of at least its level is part of it (digits inside a Slack token or an
    IBAN are no card number) and goes first; of what still overlaps, the strongest wins: score, then length, then the
    one as written."""
    unique = {(d.type, d.start, d.end): d for d in sorted(found, key=lambda d: (d.score, d.encoding == "raw"))}
    ranked = sorted(
        _outermost(unique.values()), key=lambda d: (-d.score, d.start - d.end, d.encoding != "raw", d.start)
    )
    starts: list[int] = []
    kept: list[Detection] = []  # non-overlapping, in order of start
    for detection in ranked:
        index = bisect_left(starts, detection.start)
        if index > 0 and kept[index - 1].end > detection.start:
            continue
        if index < len(kept) and kept[index].start < detection.end:
            continue
        starts.insert(index, detection.start)
        kept.insert(index, detection)
    return tuple(kept)


def _outermost(detections: Iterable[Detection]) -> list[Detection]:
    """`detections` without those strictly inside a confident one (CONTAINER_MIN_SCORE: a recognised structure, not a
    generic high-entropy value) of the same or a higher level."""
    by_start = sorted(detections, key=lambda d: (d.start, -d.end))
    kept: list[Detection] = []
    open_: list[Detection] = []  # earlier detections still reaching past the current start
    for detection in by_start:
        open_ = [other for other in open_ if other.end > detection.start]
        inside = any(
            other.end >= detection.end
            and (other.start, other.end) != (detection.start, detection.end)
            and other.classification >= detection.classification
            and other.score >= CONTAINER_MIN_SCORE
            for other in open_
        )
        if not inside:
            kept.append(detection)
        open_.append(detection)
    return kept


@dataclass(frozen=True, slots=True)
class _Unescaped:
    """A text with its JSON escapes decoded, and the way back to where each character was written.

    `escapes` lists, in order, the decoded index of each character that came from an escape, `written` where that
    escape starts in the source, `lengths` how long it is there. `inner` is the source's own _Unescaped view when
    the source was itself decoded from JSON (two levels of escaping)."""

    text: str
    escapes: tuple[int, ...] = ()
    written: tuple[int, ...] = ()
    lengths: tuple[int, ...] = ()
    inner: _Unescaped | None = None

    @classmethod
    def of(cls, text: str, levels: int = JSON_LEVELS) -> _Unescaped:
        view = cls(text)
        for _ in range(levels):
            decoded = view._decoded()
            if decoded is None:
                break
            view = decoded
        return view

    def _decoded(self) -> _Unescaped | None:
        if "\\" not in self.text:
            return None
        pieces: list[str] = []
        escapes: list[int] = []
        written: list[int] = []
        lengths: list[int] = []
        at = 0
        size = 0
        for match in _JSON_ESCAPE.finditer(self.text):
            pieces.append(self.text[at : match.start()])
            size += match.start() - at
            escapes.append(size)
            written.append(match.start())
            lengths.append(match.end() - match.start())
            pieces.append(_unescape(match))
            size += 1
            at = match.end()
        if not escapes:
            return None
        pieces.append(self.text[at:])
        return _Unescaped("".join(pieces), tuple(escapes), tuple(written), tuple(lengths), self)

    def _source_span(self, start: int, end: int) -> tuple[int, int]:
        """Where the decoded span [start, end) was written in the source (an escape counts whole)."""
        if end <= start:
            return self._source_start(start), self._source_start(start)
        last = end - 1
        source_last = self._source_start(last)
        index = bisect_right(self.escapes, last) - 1
        width = self.lengths[index] if index >= 0 and self.escapes[index] == last else 1
        return self._source_start(start), source_last + width

    def _source_start(self, index: int) -> int:
        """Where the decoded character at `index` (or the end, at len(text)) starts in the source."""
        last = bisect_right(self.escapes, index) - 1
        if last < 0:
            return index
        if self.escapes[last] == index:
            return self.written[last]
        return self.written[last] + self.lengths[last] + index - self.escapes[last] - 1

    def to_raw(self, start: int, end: int) -> tuple[int, int]:
        """The span of the text as written that the decoded span [start, end) came from."""
        if self.inner is None:
            return start, end
        return self.inner.to_raw(*self._source_span(start, end))

    def escaped(self, start: int, end: int) -> bool:
        """True when some character of the decoded span [start, end) was written as an escape, at any level."""
        if self.inner is None:
            return False
        if bisect_left(self.escapes, start) < bisect_left(self.escapes, end):
            return True
        return self.inner.escaped(*self._source_span(start, end))


def _unescape(match: re.Match[str]) -> str:
    high, low, code, short = match.groups()
    if high is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00))
    if code is not None:
        value = int(code, 16)
        return "\ufffd" if 0xD800 <= value <= 0xDFFF else chr(value)  # a lone surrogate is no character
    return _SHORT_ESCAPES[short]


class TextStream:
    """Detections in a text that arrives in chunks: each found once, at its absolute offsets, wherever the cuts are.

    The stream keeps a buffer and scans it whenever enough new text has arrived (`step` characters past what was
    settled). A detection is settled, and reported, once its end lies `holdback` characters before the buffer's end:
    no detection is longer than `max_span`, and no detector looks more than HOLD_MARGIN characters past a span to
    decide it, so later text can neither change nor outrank it. After each scan the buffer is trimmed to the last
    `context` characters before the settled point: the left context a pending detection may need (a key name before
    a value, the "SSN" before a number), and detections starting within LEFT_MARGIN of a trimmed buffer's start are
    ignored there (they were settled earlier). `close()` settles everything left.

    So `feed()` reports lag the input: by up to `holdback` + `step` characters (about 24 KB with the default
    `max_span`), and a text shorter than that is reported whole by `close()`. Each scan covers at most
    `context` + `step` + `holdback` characters, so a long stream costs about twice a single scan of it.

    A private key longer than secrets.PEM_MAX_LENGTH is reported as its first PEM_MAX_LENGTH characters, in a stream
    as in one scan; base64 runs longer than BASE64_MAX_LENGTH are not decoded, either way.
    """

    HOLD_MARGIN = 64
    LEFT_MARGIN = 256

    def __init__(self, scanner: Scanner, max_span: int = MAX_SPAN) -> None:
        self._scanner = scanner
        self._holdback = max_span + self.HOLD_MARGIN
        self._context = max_span + self.LEFT_MARGIN
        self._step = 2 * max_span
        self._chunks: list[str] = []
        self._buffered = 0
        self._base = 0  # absolute offset of the buffer's first character
        self._settled = 0  # absolute offset up to which every detection ending there has been reported
        self._closed = False

    def feed(self, chunk: str) -> ScanReport:
        if self._closed:
            raise ValueError("the stream is closed")
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._base + self._buffered - self._holdback - self._settled < self._step:
            return ScanReport()
        return self._scan(final=False)

    def close(self) -> ScanReport:
        if self._closed:
            return ScanReport()
        report = self._scan(final=True)
        self._closed = True
        return report

    def _scan(self, final: bool) -> ScanReport:
        buffer = "".join(self._chunks)
        report = self._scanner.scan(buffer)
        cut = len(buffer) if final else len(buffer) - self._holdback
        settled_before = self._settled - self._base
        earliest_start = self.LEFT_MARGIN if self._base else 0
        settled = tuple(
            replace(detection, start=detection.start + self._base, end=detection.end + self._base)
            for detection in report.detections
            if settled_before < detection.end <= cut and detection.start >= earliest_start
        )
        self._settled = self._base + cut
        keep_from = max(0, cut - self._context)
        self._chunks = [buffer[keep_from:]]
        self._buffered = len(buffer) - keep_from
        self._base += keep_from
        return ScanReport(settled, report.failures)


def _configured(
    setting: DetectorSetting | None, level: Level, action: Action, level_actions: Mapping[LevelName, Action]
) -> tuple[Level, Action] | None:
    """The level and action of a detector whose defaults are `level` and `action`, as the tenant's setting for it
    overrides them, raised to the least action its level requires; None when the setting disables it."""
    if setting is not None:
        if not setting.enabled:
            return None
        level = Level.parse(setting.classification) if setting.classification is not None else level
        action = setting.action or action
    return level, stricter(action, level_actions.get(level.label)) or action


def build_scanner(config: DlpConfig, patterns: Sequence[CustomPattern] = ()) -> Scanner:
    """A scanner with the built-in detectors and `patterns`, as `config` enables and sets them."""
    if not config.enabled:
        return Scanner((), (), config.detector_timeout_ms / 1000)
    actives: list[_Active[Detector]] = []
    for detector in builtin_detectors(config.phone_regions):
        default = DEFAULTS[detector.type]
        chosen = _configured(
            config.detectors.get(detector.type), default.classification, default.action, config.level_actions
        )
        if chosen is not None:
            actives.append(_Active(detector, *chosen))
    customs: list[_Active[CustomDetector]] = []
    for pattern in patterns:
        setting = config.detectors.get(pattern.name)
        chosen = _configured(setting, Level.parse(pattern.classification), pattern.action, config.level_actions)
        if chosen is not None:
            validator = VALIDATORS[pattern.validator] if pattern.validator else None
            custom = CustomDetector(pattern.name, compile_custom(pattern.regex), pattern.score, validator)
            customs.append(_Active(custom, *chosen))
    return Scanner(actives, customs, config.detector_timeout_ms / 1000)
