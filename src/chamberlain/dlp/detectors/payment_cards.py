"""Payment card numbers (PANs): an issuer's IIN range and length, and the Luhn check digit (ISO/IEC 7812-1).

A number is written plain ("4111111111111111") or in groups separated by single spaces or dashes, the same separator
throughout ("4111 1111 1111 1111", "3782-822463-10005"). Candidates are the maximal runs of digit groups; within a
run, windows of whole groups holding 12 to 19 digits are tried from the run's first group (and again after each card
found), so a card followed by more digits (an expiry "12 27", a CVV) is still found, but no card is read out of the
middle of a longer grouped number (a bank account). A window must start with a group of four digits (how every scheme
prints its numbers) unless it is a single plain group; its other groups have 3 to 7 digits, but the last, which may
be shorter (a 17-digit UnionPay number printed 4-4-4-4-1).

Runs touching a letter or a decimal point are not card numbers (hex digests, decimals, identifiers), nor are the
digit groups of something printed like an IBAN ("PL78 7579 2972 4761 ...", its check digits wrong or not).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from chamberlain.dlp.detectors import DIGIT, Span, Trigger, glued
from chamberlain.dlp.detectors.bank_accounts import continues_iban
from chamberlain.dlp.detectors.checksums import luhn

__all__ = ["CardDetector", "card_scheme"]

MIN_DIGITS = 12
MAX_DIGITS = 19
# Digit groups separated by one space or dash. The lookbehinds (after the first digit, looking back past it: the
# pattern then starts with a character class the engine scans for quickly) keep a run from being retried at each
# of its digits, and refuse a run that is part of something else: after a "+" it is an international phone number
# (ITU-T E.123 §2.5, "+4915123108776" passes Luhn one time in ten as a 13-digit Visa); after a "-" glued to a word
# it is a field of a token or identifier ("xapp-1-A0B1C2-4771660606890-..."). Dashes between the groups of a card
# ("4111-1111-1111-1111") are inside the run, never before it, so they are unaffected.
_RUN = re.compile(r"[0-9](?<![\w.+].)(?<!\w-.)\d{3,}(?:[ -]\d+)*", re.DOTALL)
_GROUP = re.compile(r"\d+")

# (scheme, lowest prefix, highest prefix, accepted lengths): the IIN ranges the card networks publish (Visa, Mastercard
# incl. the 2-series since 2017, American Express, Discover incl. the China UnionPay co-branded 622126-622925, JCB,
# Diners Club International, UnionPay, Maestro, Mir). Prefixes of unequal length are compared on that many digits.
_RANGES: tuple[tuple[str, str, str, frozenset[int]], ...] = (
    ("visa", "4", "4", frozenset({13, 16, 19})),
    ("mastercard", "51", "55", frozenset({16})),
    ("mastercard", "2221", "2720", frozenset({16})),
    ("amex", "34", "34", frozenset({15})),
    ("amex", "37", "37", frozenset({15})),
    ("discover", "6011", "6011", frozenset(range(16, 20))),
    ("discover", "644", "649", frozenset(range(16, 20))),
    ("discover", "65", "65", frozenset(range(16, 20))),
    ("discover", "622126", "622925", frozenset(range(16, 20))),
    ("jcb", "3528", "3589", frozenset(range(16, 20))),
    ("diners", "300", "305", frozenset(range(14, 20))),
    ("diners", "3095", "3095", frozenset(range(14, 20))),
    ("diners", "36", "36", frozenset(range(14, 20))),
    ("diners", "38", "39", frozenset(range(16, 20))),
    ("unionpay", "62", "62", frozenset(range(16, 20))),
    ("maestro", "5018", "5018", frozenset(range(12, 20))),
    ("maestro", "5020", "5020", frozenset(range(12, 20))),
    ("maestro", "5038", "5038", frozenset(range(12, 20))),
    ("maestro", "5893", "5893", frozenset(range(12, 20))),
    ("maestro", "6304", "6304", frozenset(range(12, 20))),
    ("maestro", "6759", "6759", frozenset(range(12, 20))),
    ("maestro", "6761", "6763", frozenset(range(12, 20))),
    ("mir", "2200", "2204", frozenset(range(16, 20))),
)


def card_scheme(digits: str) -> str | None:
    """The scheme whose IIN range and lengths `digits` fits, Luhn aside; None when none does."""
    for scheme, low, high, lengths in _RANGES:
        if len(digits) in lengths and low <= digits[: len(low)] <= high:
            return scheme
    return None


def _is_card(digits: str) -> bool:
    return card_scheme(digits) is not None and luhn(digits)


@dataclass(frozen=True, slots=True)
class CardDetector:
    trigger: ClassVar[Trigger] = DIGIT
    name: str = "credit_card"
    type: str = "credit_card"
    max_length: int = MAX_DIGITS + 6  # 19 digits in groups
    score: float = 1.0

    def find(self, text: str) -> Iterator[Span]:
        for run in _RUN.finditer(text):
            digits = run.group()
            if glued(text, run.end()):  # the last group runs into a word: it is not part of the number
                digits = digits[: max(digits.rfind(" "), digits.rfind("-"), 0)]
            if len(digits) >= MIN_DIGITS and not continues_iban(text, run.start()):
                yield from self._windows(digits, run.start())

    def _windows(self, run: str, offset: int) -> Iterator[Span]:
        groups = [(match.start(), match.end()) for match in _GROUP.finditer(run)]
        if len(groups) == 1:
            if MIN_DIGITS <= len(run) <= MAX_DIGITS and _is_card(run):
                yield Span(offset, offset + len(run), self.score)
            return
        first = 0
        # A window needs a group after its first (a single group of 4 digits is no card), so the last group never
        # starts one: its end may be the end of the run, with no separator after it to read.
        while first + 1 < len(groups) and groups[first][1] - groups[first][0] == 4:
            start = groups[first][0]
            separator = run[groups[first][1]]
            digits = run[start : groups[first][1]]
            found_end: int | None = None
            for last in range(first + 1, len(groups)):
                group_start, group_end = groups[last]
                if run[group_start - 1] != separator or not 1 <= group_end - group_start <= 7:
                    break
                digits += run[group_start:group_end]
                if len(digits) > MAX_DIGITS:
                    break
                if len(digits) >= MIN_DIGITS and _is_card(digits):
                    # The longest valid window wins: a 19-digit card is not also reported as its 16-digit prefix.
                    found_end, after = group_end, last + 1
                if group_end - group_start < 3:
                    break  # a short group ends a number (4-4-4-4-1); it does not sit in the middle of one
            if found_end is None:
                return
            yield Span(offset + start, offset + found_end, self.score)
            first = after
