"""IP addresses: IPv4 dotted quads and IPv6 (RFC 4291 §2.2 text forms), each confirmed by the `ipaddress` module.

IPv4 look-alikes are refused by shape: a quad that is part of a longer dotted run ("1.2.3.4.5", OIDs, versions with
four parts and more), is glued to a letter ("v1.2.3.4"), follows a section sign ("§4.1.2.1"), or has octets with
leading zeros (the `ipaddress` module rejects those: they are octal to some parsers). Dates (12.03.2024) and
three-part versions (1.2.3) have too few parts.
IPv6 needs two colons at least and a digit, so clock times (12:30:45) and C++ scopes (std::vector) are not taken for
addresses; MAC addresses (six groups, no "::") are not valid IPv6 and are refused.

Both are found from a literal anchor (".digits.digits.digits" for IPv4; "::" or ":hex:" for IPv6) which the regular
expression engine scans for quickly, then matched in full from where the address can start.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from chamberlain.dlp.detectors import DIGIT, Span, Trigger

__all__ = ["IpAddressDetector"]

_IPV4_TAIL = re.compile(r"\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![\w]|\.\d)")
_IPV4 = re.compile(r"(?<![\w.])[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![\w]|\.\d)")
_IPV6_HINT = re.compile(r"::|:[0-9A-Fa-f]{1,4}:")
# Hex groups and colons, and an optional trailing dotted quad (::ffff:192.0.2.1). Bounded repetitions only. It may
# be followed by a port written without the brackets RFC 3986 §3.2.2 asks for ("2001:db8::1:8443" then reads as
# the address, as RFC 5952 §6 warns it will).
_IPV6 = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.[0-9]{1,3}){0,3}"
    r"(?:(?![\w:]|\.\d)|(?=:[0-9]{1,5}(?![\w:.])))"
)
_IPV6_CHARACTERS = frozenset("0123456789abcdefABCDEF:.")
_IPV6_RUN = re.compile(r"[0-9A-Fa-f:.]*")
MAX_IPV6_LENGTH = 45  # the longest text form, with an embedded IPv4 address


@dataclass(frozen=True, slots=True)
class IpAddressDetector:
    trigger: ClassVar[Trigger] = DIGIT  # an IPv6 candidate without one is refused too
    name: str = "ip_address"
    type: str = "ip_address"
    max_length: int = MAX_IPV6_LENGTH
    score: float = 0.8

    def find(self, text: str) -> Iterator[Span]:
        yield from self._ipv4(text)
        yield from self._ipv6(text)

    def _ipv4(self, text: str) -> Iterator[Span]:
        for tail in _IPV4_TAIL.finditer(text):
            for first_octet in (3, 2, 1):  # the first octet's digits before the tail
                match = _IPV4.match(text, max(0, tail.start() - first_octet), tail.end())
                if match is not None and match.end() == tail.end():
                    if not _section_number(text, match.start()) and _valid(match.group(), ipaddress.IPv4Address):
                        yield Span(match.start(), match.end(), self.score)
                    break

    def _ipv6(self, text: str) -> Iterator[Span]:
        """From each hint, the whole run of hex digits, colons and dots around it is tried once, then skipped."""
        searched = 0
        while (hint := _IPV6_HINT.search(text, searched)) is not None:
            start = hint.start()
            while start > 0 and text[start - 1] in _IPV6_CHARACTERS and hint.start() - start <= MAX_IPV6_LENGTH:
                start -= 1
            run = _IPV6_RUN.match(text, hint.start())  # matches always: the hint itself is such a run
            run_end = run.end() if run is not None else hint.end()
            searched = run_end
            if run_end - start > MAX_IPV6_LENGTH + 6:  # longer than any address, and the port after it
                continue
            match = _IPV6.match(text, start)
            if match is None:
                continue
            candidate = match.group()
            if any(char.isdigit() for char in candidate) and _valid(candidate, ipaddress.IPv6Address):
                yield Span(match.start(), match.end(), self.score)


def _section_number(text: str, start: int) -> bool:
    """True after "§": "RFC 6749 §4.1.2.1" numbers a section, it addresses no host."""
    return text.endswith("§", 0, start) or text.endswith("§ ", 0, start)


def _valid(candidate: str, parse: type[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
    try:
        parse(candidate)
    except ValueError:
        return False
    return True
