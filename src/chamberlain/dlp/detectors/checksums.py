"""Check-digit algorithms shared by the detectors and by custom patterns' `validator`."""

from __future__ import annotations

import string

__all__ = ["iban_mod97", "luhn", "verhoeff"]

# Luhn (ISO/IEC 7812-1 Annex B): from the right, every second digit is doubled (minus 9 when over 9).
_LUHN_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn(digits: str) -> bool:
    """True when the last digit of `digits` (ASCII digits only, at least two) is its Luhn check digit."""
    if len(digits) < 2 or not (digits.isascii() and digits.isdigit()):
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        total += _LUHN_DOUBLED[digit] if position % 2 else digit
    return total % 10 == 0


# ISO 7064 MOD 97-10 as ISO 13616 applies it to an IBAN: the first four characters move to the end, each letter
# becomes two digits (A=10 ... Z=35) and the resulting number must be 1 modulo 97.
_MOD97_TRANSLATION = str.maketrans({letter: str(10 + index) for index, letter in enumerate(string.ascii_uppercase)})


def iban_mod97(value: str) -> bool:
    """True when `value` (letters and digits, no spaces) passes ISO 13616's MOD 97-10 check."""
    if len(value) < 5 or not (value.isascii() and value.isalnum()):
        return False
    rearranged = (value[4:] + value[:4]).upper().translate(_MOD97_TRANSLATION)
    return int(rearranged) % 97 == 1


# Verhoeff's dihedral-group check (J. Verhoeff, 1969), as UIDAI uses it for Aadhaar numbers.
_VERHOEFF_MULTIPLY = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_PERMUTE = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def verhoeff(digits: str) -> bool:
    """True when the last digit of `digits` is its Verhoeff check digit."""
    if len(digits) < 2 or not (digits.isascii() and digits.isdigit()):
        return False
    check = 0
    for position, char in enumerate(reversed(digits)):
        check = _VERHOEFF_MULTIPLY[check][_VERHOEFF_PERMUTE[position % 8][ord(char) - 48]]
    return check == 0
