"""Built-in detectors: one module per family, each detector a validated pattern, not a bare regex.

payment_cards.py   credit_card: ISO/IEC 7812 IIN ranges and lengths, Luhn check digit
bank_accounts.py   iban: ISO 13616 country lengths, ISO 7064 MOD 97-10
national_ids.py    us_ssn (SSA area/group/serial rules) and national_id (UK NINO, Spanish DNI/NIE, French NIR,
                   Dutch BSN, Indian Aadhaar: each with its check digit or allocation rules)
contact.py         email_address, phone_number (libphonenumber's metadata)
network.py         ip_address (IPv4 and IPv6, validated with `ipaddress`)
secrets.py         provider credentials (AWS, GitHub, Slack, Google, Stripe, Anthropic, OpenAI), PEM private keys, JWTs
entropy.py         high_entropy_secret: random-looking values assigned to password/secret/token-like keys
custom.py          a tenant's own patterns (pii_patterns.json), run with a time limit
registry.py        every built-in detector with its entity type, default classification and default action
checksums.py       Luhn, ISO 7064 MOD 97-10, Verhoeff; assignments.py: `key = value` contexts

A detector finds `Span`s in a text. Built-in patterns are written to run in linear time: no nested quantifiers (a
repeated group always starts with a separator, so a run cannot be split two ways), and a lookbehind on every pattern
that could otherwise be retried at each position inside one long run (the hostile inputs in
tests/unit/test_dlp_detectors.py check this). For speed, each pattern begins with a literal where it can (a token's
prefix, the "@" of an email, the dots of an IPv4 address), which the engine finds at memchr speed, or with one
character class and the lookbehind after it, looking back past that character: a lookbehind in first place keeps the
engine from scanning ahead for the pattern's first character. Each detector declares `max_length`, the longest span
it reports; all are within the scanner's MAX_SPAN, which bounds what a stream holds back (scanner.TextStream).

A detector may also declare a `trigger` (a `Trigger`, as a class or instance attribute): something every text it
finds anything in contains, such as a digit, an "@" or its token's prefix. Most texts the scanner sees are short
strings with nothing in them, where running ~30 detectors costs far more in Python call overhead than in matching;
the scanner tests all its detectors' triggers in one regular expression search and runs only those whose trigger
holds (`trigger_of`). A trigger must never be absent from a text the detector would find something in: it may only
skip work, never change a result (tests/unit/test_dlp_scanner.py checks this against running every detector).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "CONTEXT_WINDOW",
    "DIGIT",
    "Detector",
    "RegexDetector",
    "Span",
    "Trigger",
    "context_pattern",
    "glued",
    "trigger_of",
]

# How far before a value its context (a keyword such as "SSN" or "BSN") is looked for, in characters.
CONTEXT_WINDOW = 48


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    score: float


@dataclass(frozen=True, slots=True)
class Trigger:
    """What a text must contain for a detector to find anything in it: a decimal digit (when `digit`; any script, as
    the patterns' `\\d` matches), or one of `literals`. With `folded`, the literals are lower case and found in the
    text whatever its ASCII case (for detectors that look for key names in an ASCII-lowered copy)."""

    literals: tuple[str, ...] = ()
    folded: bool = False
    digit: bool = False


# Every detector of numbers: each pattern needs at least one `\d` or [0-9] to match.
DIGIT = Trigger(digit=True)


class Detector(Protocol):
    @property
    def name(self) -> str:
        """Unique among the built-ins; what a `DetectorFailure` names (several detectors may share a type)."""
        ...

    @property
    def type(self) -> str:
        """The entity type it reports."""
        ...

    @property
    def max_length(self) -> int: ...

    def find(self, text: str) -> Iterator[Span]: ...


def glued(text: str, end: int) -> bool:
    """True when a candidate ending at `end` runs straight into a word character (part of an identifier or digest)."""
    return end < len(text) and (text[end].isalnum() or text[end] == "_")


def context_pattern(*keywords: str) -> re.Pattern[str]:
    """A case-insensitive pattern finding any of `keywords` as whole words."""
    return re.compile(r"(?<![^\W_])(?:" + "|".join(keywords) + r")(?![^\W_])", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RegexDetector:
    """A compiled pattern, its candidates confirmed by `validate` (a check digit, a decoded header...).

    `group` is the part of a match that is reported (a value without the key naming it); `context`, when set, must
    occur within CONTEXT_WINDOW characters before the value: for formats whose check digit alone is too weak to tell
    an identifier from any number of that many digits. `required` lists substrings of which one must be in the text
    for the pattern to be worth running at all (a literal prefix), which skips most texts at C speed; they are also
    its scanner trigger, unless `trigger` is given (see the module's docstring)."""

    name: str
    type: str
    pattern: re.Pattern[str]
    score: float
    max_length: int
    validate: Callable[[str], bool] | None = None
    group: int | str = 0
    context: re.Pattern[str] | None = None
    required: tuple[str, ...] = ()
    trigger: Trigger | None = None

    def find(self, text: str) -> Iterator[Span]:
        if self.required and not any(literal in text for literal in self.required):
            return
        for match in self.pattern.finditer(text):
            start, end = match.span(self.group)
            if start < 0 or end - start > self.max_length:
                continue
            if self.validate is not None and not self.validate(text[start:end]):
                continue
            if self.context is not None and not self.context.search(text, max(0, start - CONTEXT_WINDOW), start):
                continue
            yield Span(start, end, self.score)


def trigger_of(detector: object) -> Trigger | None:
    """The trigger `detector` declares (a RegexDetector's `required` literals, if it declares none), or None: a
    detector without one is run on every text."""
    trigger = getattr(detector, "trigger", None)
    if isinstance(trigger, Trigger):
        return trigger
    if isinstance(detector, RegexDetector) and detector.required:
        return Trigger(detector.required)
    return None
