"""Email addresses and phone numbers.

Email: the common dot-atom form of RFC 5322 §3.4.1 (local part up to 64 characters, RFC 5321 §4.5.3.1.1) at a domain
of LDH labels (RFC 1035 §2.3.1) ending in an alphabetic top-level label. Quoted local parts and address literals are
not looked for: they are vanishingly rare in text that people or tools write.

Phone: a linear candidate pattern (digit groups with the separators people print, an optional +country code and
parenthesised area code), then libphonenumber decides: `phonenumbers.parse` with the tenant's `phone_regions` for
numbers written without +country code, and `is_valid_number` (a number of a real numbering plan's length and ranges).
A candidate must show it is written as a phone number: a leading "+", a parenthesised area code, or separators;
a bare run of digits is a phone number only with a word such as "phone" or "tel" just before it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from chamberlain.dlp.detectors import CONTEXT_WINDOW, DIGIT, Span, Trigger, context_pattern, glued
from chamberlain.dlp.detectors.bank_accounts import continues_iban

__all__ = ["EmailDetector", "PhoneDetector"]

# Found from each "@" (str.find): the local part ending there, searched for within the 64 characters before it (the
# lookbehind makes it start where its run does; a longer run is no local part), then the domain after it. Labels
# are separated by a literal ".", so the domain pattern cannot split a label two ways.
_LOCAL_PART = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}\Z")
_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])")


def _in_url(text: str, start: int) -> bool:
    """True when the local part starts right after "//" or ":" of a URL: userinfo (user:password@host), no address.

    "mailto:" is the exception: what follows it is an address."""
    return start > 0 and text[start - 1] in "/:" and not text.endswith("mailto:", 0, start)


@dataclass(frozen=True, slots=True)
class EmailDetector:
    trigger: ClassVar[Trigger] = Trigger(("@",))
    name: str = "email_address"
    type: str = "email_address"
    max_length: int = 320
    score: float = 0.9

    def find(self, text: str) -> Iterator[Span]:
        at = text.find("@")
        while at >= 0:
            local = _LOCAL_PART.search(text, max(0, at - 64), at)
            domain = _DOMAIN.match(text, at + 1) if local is not None else None
            if local is not None and domain is not None and not _in_url(text, local.start()):
                yield Span(local.start(), domain.end(), self.score)
                at = text.find("@", domain.end())
            else:
                at = text.find("@", at + 1)


# An optional +country code and (area code), then digit groups separated by one space, dot or dash, or a "(...)"
# group. Each repetition starts with a separator or "(", so the pattern cannot split a run of digits two ways. A
# candidate does not start right after "digit:": that is the next field of a clock time ("12:12:08.717850", ISO 8601
# §4.2.2, whose seconds and fraction would otherwise read as a German or British number) or of a ratio.
_PHONE = re.compile(
    r"(?=[0-9(+])(?<![\w+.-])(?<!\d:)(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\) ?)?\d{1,14}"
    r"(?:[ .-]\d{1,14}|[ ]?\(\d{1,5}\)[ ]?\d{1,14}){0,6}"
)
_PHONE_CONTEXT = context_pattern("phone", "tel", "telephone", "mobile", "cell", "fax", "call", "sms", "whatsapp")
_DIGIT_GROUP = re.compile(r"\d+")
_GROUP_END = re.compile(r"[^0-9]*\d+\)?")  # up to the end of the next digit group (and its closing parenthesis)
_MIN_DIGITS = 7
_MAX_DIGITS = 15  # ITU-T E.164 §6: at most 15 digits including the country code
# Shapes that are never the start of a phone number though their digits may be: ISO dates ("2027-01-01 08:30" would
# otherwise read as a Washington DC number) and dotted dates. (Nor are IPv4 addresses, or the later groups of an IBAN.)
_NOT_PHONE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}\.\d{1,2}\.\d{2,4}")


@dataclass(frozen=True, slots=True)
class PhoneDetector:
    trigger: ClassVar[Trigger] = DIGIT
    regions: tuple[str, ...] = ("US",)
    name: str = "phone_number"
    type: str = "phone_number"
    max_length: int = 32
    score: float = 0.75

    def find(self, text: str) -> Iterator[Span]:
        position = 0
        while (match := _PHONE.search(text, position)) is not None:
            end = self._number_in(text, match) if match.end() - match.start() >= _MIN_DIGITS else None
            if end is not None:
                yield Span(match.start(), end, self.score)
                position = end
            else:
                position = match.end()

    def _number_in(self, text: str, match: re.Match[str]) -> int | None:
        """Where the phone number starting the candidate ends, if there is one.

        The candidate may run on into more digit groups: another number ("(415) 555-2671 (650) 555-0100"), an
        extension, a count. Its prefixes ending after a group are tried, longest first, a few at most. (A number
        after other digit groups in the same run, "ref 12 415-555-2671", is not looked for: trying every group of a
        long run as a start would make hostile input slow.)"""
        candidate = match.group()
        if max(len(group) for group in _DIGIT_GROUP.findall(candidate)) < 2:
            return None  # "1 2 3 4 5 6 7" is a list: numbers are printed in groups of two digits or more
        ends = [group.end() for group in _GROUP_END.finditer(candidate)]
        if glued(text, match.end()):
            ends.pop()  # the last group runs into a word
        attempts = 0
        for end in reversed(ends):
            prefix = candidate[:end]
            digit_count = sum(char.isdigit() for char in prefix)
            if digit_count > _MAX_DIGITS:
                continue
            if digit_count < _MIN_DIGITS or attempts == 3:
                return None
            if self._shaped(text, match.start(), prefix):
                attempts += 1
                if self._valid(prefix):
                    return match.start() + end
        return None

    @staticmethod
    def _shaped(text: str, start: int, candidate: str) -> bool:
        if candidate.startswith("+") or "(" in candidate:
            return True
        if continues_iban(text, start) or _NOT_PHONE.match(candidate) or _is_ipv4(candidate):
            return False
        if any(separator in candidate for separator in " .-"):
            return True
        return _PHONE_CONTEXT.search(text, max(0, start - CONTEXT_WINDOW), start) is not None

    def _valid(self, candidate: str) -> bool:
        return _valid_number(candidate, (None,) if candidate.startswith("+") else self.regions)


@functools.lru_cache(maxsize=4096)  # libphonenumber's parse costs tens of microseconds; texts repeat numbers
def _valid_number(candidate: str, regions: tuple[str | None, ...]) -> bool:
    # Imported on the first candidate: libphonenumber's module tables cost every gateway process some megabytes
    # of memory, and many never see a phone number.
    import phonenumbers

    for region in regions:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


def _is_ipv4(candidate: str) -> bool:
    try:
        ipaddress.IPv4Address(candidate)
    except ValueError:
        return False
    return True
