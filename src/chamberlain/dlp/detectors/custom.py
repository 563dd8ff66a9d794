"""A tenant's own patterns (pii_patterns.json, patterns_file.py), run with a time limit.

An administrator's regular expression may backtrack catastrophically (`(a|aa)+$` on a long run of "a"), and nothing
short of running it tells. So custom patterns run on the `regex` module, whose matcher checks a deadline while it
works and raises TimeoutError past it: the scanner gives all of a message's custom patterns one budget
(`detector_timeout_ms`), and a pattern that exhausts it is reported as a failure (fail closed: the message counts as
restricted) instead of hanging the request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import regex  # type: ignore[import-untyped, unused-ignore]  # stubs: types-regex, if installed

from chamberlain.dlp.detectors import Span
from chamberlain.dlp.detectors.checksums import iban_mod97, luhn, verhoeff

__all__ = ["MAX_CUSTOM_LENGTH", "VALIDATORS", "CustomDetector", "RegexError", "compile_custom"]

RegexError: type[Exception] = regex.error

# The longest match a custom pattern may report (longer ones are ignored): what lets a stream bound its hold-back.
MAX_CUSTOM_LENGTH = 1024


def _digits(value: str) -> str:
    return "".join(char for char in value if char.isdigit())


def _alphanumerics(value: str) -> str:
    return "".join(char for char in value if char.isalnum()).upper()


# A validator is applied to the characters of a match that its check digit covers (other characters, such as
# separators, are dropped). "mod97" is ISO 7064 MOD 97-10 as ISO 13616 (IBAN) and ISO 11649 (RF creditor reference)
# apply it: the first four characters move to the end.
VALIDATORS: dict[str, Callable[[str], bool]] = {
    "luhn": lambda value: luhn(_digits(value)),
    "mod97": lambda value: iban_mod97(_alphanumerics(value)),
    "verhoeff": lambda value: verhoeff(_digits(value)),
}


def compile_custom(source: str) -> Any:
    """The `regex` module's compiled pattern (raises regex.error on a bad pattern)."""
    return regex.compile(source)


@dataclass(frozen=True, slots=True)
class CustomDetector:
    name: str
    pattern: Any  # regex.Pattern
    score: float
    validate: Callable[[str], bool] | None = None
    max_length: int = MAX_CUSTOM_LENGTH

    @property
    def type(self) -> str:
        return self.name

    def find(self, text: str, timeout: float) -> list[Span]:
        """Every validated match, or TimeoutError once `timeout` seconds are spent (matching and validating)."""
        deadline = time.monotonic() + timeout
        spans = []
        for match in self.pattern.finditer(text, timeout=timeout):
            start, end = match.span()
            valid = self.validate is None or self.validate(match.group())
            if 0 < end - start <= self.max_length and valid:
                spans.append(Span(start, end, self.score))
            if time.monotonic() > deadline:
                raise TimeoutError(f"custom pattern {self.name} ran out of time")
        return spans
