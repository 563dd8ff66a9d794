"""US Social Security numbers and national identity numbers with check digits or allocation rules.

Reported types: "us_ssn" for the SSN; "national_id" for every other country's number (one type, so a tenant switches
them on or off together; the detector's name, e.g. "national_id.es_dni", says which format matched, in failures).

Formats whose check is weak against any number of the same length (a 9-digit BSN passes its 11-proof one time in
eleven; a 12-digit Aadhaar its Verhoeff digit one time in ten; a 15-digit NIR its key one time in 97; a 9-digit SSN
has no check at all) are reported (the NIR always, the others when written plain) only with a keyword naming an
identity number shortly before them (CONTEXT_WINDOW characters).
"""

from __future__ import annotations

import re

from chamberlain.dlp.detectors import DIGIT, RegexDetector, context_pattern
from chamberlain.dlp.detectors.checksums import verhoeff

__all__ = ["NATIONAL_ID_DETECTORS", "SSN_DETECTORS"]

_IDENTITY_WORDS = (
    r"national[ _-]?id",
    r"id[ _-]?(?:number|no|nr|card)",
    r"identity",
    r"identification",
    r"citizen",
    r"personal[ _-]?number",
)

# -- US SSN (SSA, "Social Security Number Randomization", 2011) -------------------------------------------------------
# Never issued: area 000, 666 or 900-999; group 00; serial 0000. Also refused: numbers the SSA lists as used in
# advertising (078-05-1120 from the Woolworth wallet, 219-09-9999, 457-55-5462), the 123-45-6789 of every sample
# form, and the same digit nine times.
_SSN_NEVER_ISSUED = frozenset({"078051120", "219099999", "457555462", "123456789"})
# Each pattern starts with a character class and looks back past it, not before it: see payment_cards._RUN.
_SSN_SEPARATED = re.compile(r"[0-9](?<![\w.-].)(?<!\d[ -].)\d{2}([- ])\d{2}\1\d{4}(?![\w]|[-.]\d)", re.DOTALL)
_SSN_PLAIN = re.compile(r"[0-9](?<![\w.-].)\d{8}(?![\w]|[-.]\d)", re.DOTALL)


def valid_ssn(value: str) -> bool:
    digits = value.replace("-", "").replace(" ", "")
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return (
        area not in ("000", "666")
        and not area.startswith("9")
        and group != "00"
        and serial != "0000"
        and digits not in _SSN_NEVER_ISSUED
        and len(set(digits)) > 1
    )


SSN_DETECTORS = (
    RegexDetector("us_ssn", "us_ssn", _SSN_SEPARATED, score=0.85, max_length=11, validate=valid_ssn, trigger=DIGIT),
    RegexDetector(
        "us_ssn.plain",
        "us_ssn",
        _SSN_PLAIN,
        score=0.85,
        max_length=9,
        validate=valid_ssn,
        trigger=DIGIT,
        context=context_pattern(r"ssn", r"ssns", r"social[ _-]?security(?:[ _-]?(?:number|no))?", r"ss[ _-]?n[o#]"),
    ),
)

# -- UK National Insurance number (HMRC National Insurance Manual NIM39110) ------------------------------------------
# Two prefix letters (neither D, F, I, Q, U nor V; O not second; BG, GB, KN, NK, NT, TN and ZZ never allocated), six
# digits, suffix A-D; commonly printed in pairs "AB 12 34 56 C".
_NINO = re.compile(
    r"[A-CEGHJ-PR-TW-Z](?<![A-Za-z0-9].)[A-CEGHJ-NPR-TW-Z](?<!BG|GB|KN|NK|NT|TN|ZZ)"
    r"(?:\d{6}|( )\d{2}\1\d{2}\1\d{2}\1?)[A-D](?![A-Za-z0-9])",
    re.DOTALL,
)

# -- Spain: DNI and NIE (Real Decreto 1553/2005, art. 11; Orden INT/2058/2008 for the NIE) ---------------------------
# Eight digits (a NIE: X, Y or Z standing for 0, 1, 2, then seven digits) and a control letter: the number mod 23
# indexes "TRWAGMYFPDXBNJZSQVHLCKE".
_DNI = re.compile(r"[0-9XYZ](?<![A-Za-z0-9].)(?:(?<=[0-9])\d{7}|(?<=[XYZ])-?\d{7})-?[A-Z](?![A-Za-z0-9])", re.DOTALL)
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def valid_dni(value: str) -> bool:
    compact = value.replace("-", "")
    number = compact[:-1]
    if number[0] in "XYZ":
        number = str("XYZ".index(number[0])) + number[1:]
    return _DNI_LETTERS[int(number) % 23] == compact[-1]


# -- France: NIR, the social security number (INSEE; key = 97 - NIR mod 97, Corsica's 2A/2B read as 19/18) ----------
# Sex (1, 2; 3, 4, 7, 8 for provisional numbers), year, month (01-12, or 20-42/50-99 when unknown), department (2A and
# 2B for Corsica), commune, order number, two-digit key; spaces between the parts or none.
_NIR = re.compile(
    r"[1-478](?<![\w.-].)( ?)\d{2}\1(?:0[1-9]|1[0-2]|[2-9]\d)\1(?:\d{2}|2[AB])\1\d{3}\1\d{3}\1\d{2}(?![\w]|[-.]\d)",
    re.DOTALL,
)


# The key is one of 97 values: any 15-digit number starting 1 or 2 with a plausible month passes about one time in
# 97, too often for an order, invoice or tracking number to be read as a NIR without a word naming it.
_NIR_CONTEXT = context_pattern(
    r"nir",
    r"insee",
    r"s[ée]cu(?:rit[ée])?[ _-]?sociale",
    r"num[ée]ro[ _-]de[ _-]s[ée]cu(?:rit[ée])?",
    r"social[ _-]?security(?:[ _-]?(?:number|no))?",
    r"carte[ _-]vitale",
    *_IDENTITY_WORDS,
)


def valid_nir(value: str) -> bool:
    compact = value.replace(" ", "")
    body = compact[:13].replace("2A", "19", 1).replace("2B", "18", 1) if compact[5:7] in ("2A", "2B") else compact[:13]
    return 97 - int(body) % 97 == int(compact[13:])


# -- Netherlands: BSN, burgerservicenummer (Wet algemene bepalingen burgerservicenummer; the "elfproef") -------------
# Nine digits d1..d9 with 9*d1 + 8*d2 + ... + 2*d8 - d9 divisible by 11; written plain or as 1234.56.789.
_BSN = re.compile(r"[0-9](?<![\w.-].)(?:\d{8}|\d{3}\.\d{2}\.\d{3})(?![\w]|[-.]\d)", re.DOTALL)


def valid_bsn(value: str) -> bool:
    digits = value.replace(".", "")
    total = sum(int(digit) * weight for digit, weight in zip(digits[:8], range(9, 1, -1), strict=True))
    return digits[0] != "0" and (total - int(digits[8])) % 11 == 0


# -- India: Aadhaar (UIDAI): 12 digits, the first 2-9, the last a Verhoeff check digit; printed 4-4-4 -----------------
_AADHAAR_GROUPED = re.compile(r"[2-9](?<![\w.-].)(?<!\d[ -].)\d{3}([ -])\d{4}\1\d{4}(?![\w]|[ .-]\d)", re.DOTALL)
_AADHAAR_PLAIN = re.compile(r"[2-9](?<![\w.-].)\d{11}(?![\w]|[-.]\d)", re.DOTALL)


def valid_aadhaar(value: str) -> bool:
    return verhoeff(value.replace(" ", "").replace("-", ""))


NATIONAL_ID_DETECTORS = (
    RegexDetector("national_id.uk_nino", "national_id", _NINO, score=0.85, max_length=13, trigger=DIGIT),
    RegexDetector(
        "national_id.es_dni", "national_id", _DNI, score=0.95, max_length=11, validate=valid_dni, trigger=DIGIT
    ),
    RegexDetector(
        "national_id.fr_nir",
        "national_id",
        _NIR,
        score=0.95,
        max_length=21,
        validate=valid_nir,
        trigger=DIGIT,
        context=_NIR_CONTEXT,
    ),
    RegexDetector(
        "national_id.nl_bsn",
        "national_id",
        _BSN,
        score=0.9,
        max_length=11,
        validate=valid_bsn,
        trigger=DIGIT,
        context=context_pattern(r"bsn", r"burgerservicenummer", r"sofi[ _-]?nummer", *_IDENTITY_WORDS),
    ),
    RegexDetector(
        "national_id.in_aadhaar",
        "national_id",
        _AADHAAR_GROUPED,
        score=0.9,
        max_length=14,
        validate=valid_aadhaar,
        trigger=DIGIT,
    ),
    RegexDetector(
        "national_id.in_aadhaar.plain",
        "national_id",
        _AADHAAR_PLAIN,
        score=0.9,
        max_length=12,
        validate=valid_aadhaar,
        trigger=DIGIT,
        context=context_pattern(r"aadhaa?r", r"uidai", r"uid", *_IDENTITY_WORDS),
    ),
)
