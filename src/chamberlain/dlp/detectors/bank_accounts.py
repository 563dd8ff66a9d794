"""International Bank Account Numbers: ISO 13616 country code and length, ISO 7064 MOD 97-10 check digits.

Written compact ("DE89370400440532013000") or in the print format's groups of four ("DE89 3704 0044 0532 0130 00"),
upper case. A candidate's length comes from its country (the SWIFT IBAN registry), so an IBAN followed by more
letters or digits after a space ("... 0130 00 EUR") is cut at its own length, which must end at a group boundary.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from chamberlain.dlp.detectors import DIGIT, Span, Trigger, glued
from chamberlain.dlp.detectors.checksums import iban_mod97

__all__ = ["IBAN_LENGTHS", "IbanDetector", "continues_iban"]

# The SWIFT IBAN registry (ISO 13616-1 registration authority), lengths of the full IBAN by country.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip
_MAX_LENGTH = max(IBAN_LENGTHS.values())

# Country, check digits, then the BBAN in groups of four with optional single spaces. Bounded repetitions only.
_CANDIDATE = re.compile(r"([A-Z](?<![A-Za-z0-9].)[A-Z])\d{2}(?: ?[A-Z0-9]{4}){2,8}(?: ?[A-Z0-9]{1,3})?", re.DOTALL)


# The start of an IBAN in its print format, up to a point: its later groups are not numbers of their own.
_IBAN_HEAD = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: [A-Z0-9]{4}){0,7} \Z")


def continues_iban(text: str, start: int) -> bool:
    """True when `text[start:]` continues the groups of something printed like an IBAN ("NL52 ARFY 5326 ...")."""
    return _IBAN_HEAD.search(text, max(0, start - 40), start) is not None


@dataclass(frozen=True, slots=True)
class IbanDetector:
    trigger: ClassVar[Trigger] = DIGIT  # the check digits
    name: str = "iban"
    type: str = "iban"
    max_length: int = _MAX_LENGTH + _MAX_LENGTH // 4
    score: float = 1.0

    def find(self, text: str) -> Iterator[Span]:
        for match in _CANDIDATE.finditer(text):
            length = IBAN_LENGTHS.get(match.group(1))
            if length is None:
                continue
            end = _end_of(match.group(), length)
            if end is None or glued(text, match.start() + end):
                continue
            compact = match.group()[:end].replace(" ", "")
            if iban_mod97(compact):
                yield Span(match.start(), match.start() + end, self.score)


def _end_of(candidate: str, length: int) -> int | None:
    """Where the `length`-th letter or digit of `candidate` ends, if that is the end of a group; None otherwise."""
    seen = 0
    for index, char in enumerate(candidate):
        if char != " ":
            seen += 1
            if seen == length:
                end = index + 1
                return end if end == len(candidate) or candidate[end] == " " else None
    return None
