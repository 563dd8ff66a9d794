"""High-entropy values assigned to keys that name a secret: `password=...`, `"api_key": "..."`, `token: ...`.

A value qualifies when it has at least MIN_LENGTH characters and a Shannon entropy of at least MIN_BITS_PER_CHAR
bits per character over its own characters. Short samples have less than their alphabet's: a random 32-digit hex
string has 3.6 bits on median and falls under 3.1 one time in a thousand; 16 random base62 characters 3.75, under
3.15 one time in a thousand; a run of one repeated character has next to none. English words and identifiers have
3-3.6, so what is not random is refused by its shape instead: numbers, names (`settings.SECRET_KEY_NAME`,
`getTokenFromEnvironment`), calls (`get_token()`), references to other values (`${DB_PASSWORD}`, `{{ secret }}`,
`<your-token-here>`, `%(token)s`), type annotations and templates (anything with brackets or braces), lower-case
paths and vault references (`alerts/dlp-webhook`), URLs and URNs, and tokens like a provider's whose own detector
refuses them (a GitHub token with a wrong checksum is made up).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from chamberlain.dlp.detectors import Span, Trigger
from chamberlain.dlp.detectors.assignments import ascii_lower, assignments

__all__ = ["HighEntropyDetector", "shannon_entropy"]

MIN_LENGTH = 16
MAX_LENGTH = 256
MIN_BITS_PER_CHAR = 3.0

_KEYWORDS = (
    "password", "passwd", "passphrase", "pwd", "secret", "api_key", "api-key", "apikey", "access_key", "access-key",
    "auth_key", "private_key", "token", "credential",
)  # fmt: skip
# The value: up to a quote, whitespace, comma, semicolon, parenthesis, or the "@" after a URL's user:password.
_VALUE = re.compile(rf"[^\s\"'`,;()@]{{{MIN_LENGTH},{MAX_LENGTH}}}(?![^\s\"'`,;()@])")
_NOT_A_SECRET = re.compile(
    r"\d+|[$%{<\[*].*|/?[a-z0-9_.-]+(?:/[a-z0-9_.-]+)+/?|urn:.*|.*(?:://|[\[\]{}]).*|gh[pousr]_[A-Za-z0-9]{36}",
    re.DOTALL,
)
_LETTERS_ONLY = re.compile(r"[A-Za-z_.-]+")
_NAME_SEPARATORS = re.compile(r"[_.-]+")


def _looks_like_a_name(value: str) -> bool:
    """Letters without digits, each part (between "_", "." and "-") cased as names are: all lower or all upper case,
    or camelCase with few capitals. Random letters are about half capitals (kBrONhLpCEmcxQZPsRfeW);
    getTokenFromEnvironment has three in 23, settings.SECRET_KEY_NAME none out of place."""
    if not _LETTERS_ONLY.fullmatch(value):
        return False
    return all(
        part.islower() or part.isupper() or sum(char.isupper() for char in part) * 4 <= len(part)
        for part in _NAME_SEPARATORS.split(value)
        if part
    )


def shannon_entropy(value: str) -> float:
    """Bits per character of `value`'s own character distribution."""
    total = len(value)
    return -sum(count / total * math.log2(count / total) for count in Counter(value).values())


@dataclass(frozen=True, slots=True)
class HighEntropyDetector:
    trigger: ClassVar[Trigger] = Trigger(_KEYWORDS, folded=True)  # `assignments` starts from these
    name: str = "high_entropy_secret"
    type: str = "high_entropy_secret"
    max_length: int = MAX_LENGTH
    score: float = 0.6

    def find(self, text: str) -> Iterator[Span]:
        for assignment in assignments(text, ascii_lower(text), _KEYWORDS):
            match = _VALUE.match(text, assignment.value)
            if match is None or text.startswith("(", match.end()):
                continue
            value = match.group()
            if (
                _NOT_A_SECRET.fullmatch(value)
                or _looks_like_a_name(value)
                or shannon_entropy(value) < MIN_BITS_PER_CHAR
            ):
                continue
            yield Span(match.start(), match.end(), self.score)
