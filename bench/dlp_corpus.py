"""A labelled DLP corpus, generated offline from a seed: the same seed gives the same documents on every machine.

Used by bench/dlp_bench.py (issue 8, acceptance 3 and 4). Every document carries the exact character span of each
entity written into it (`Label`), and the spans of look-alikes that are not entities (`decoys`: a Luhn-invalid card
number, a UUID, an SSN-shaped number with a reserved area...), so a scanner's findings can be scored per entity type.

Values are made to the issuers' published formats and checksums, and nothing else: card numbers per ISO/IEC 7812-1
(IIN ranges, Luhn check digit), IBANs per ISO 13616 (mod 97-10 per ISO 7064), US SSNs per the SSA's area/group/serial
rules, national ids with their check characters, phone numbers checked valid by libphonenumber (`phonenumbers`,
already a dependency of Chamberlain), GitHub tokens with their CRC32 checksum ("Behind GitHub's new authentication
token formats", GitHub blog, 2021-04-05). None is a real credential or person: secrets are drawn from a seeded
`random.Random`, so they authenticate nowhere.

Document kinds (`Document.kind`), the adversarial ones being the last four:
  prose    plain text: sentences, log lines, `KEY=value` configuration, CSV rows;
  json     a JSON record whose string values carry the entities, as written on the wire; some values have every
           punctuation character written as a \\uXXXX escape (`jane\\u0040example.com`);
  base64   an entity inside a base64 run (an attachment, a `data` field, a Basic credential); the label spans the run;
  mcp      MCP JSON-RPC: a `tools/call` result whose text content carries the entities, or a `tools/call` request
           carrying them in its arguments;
  stream   a document of any of the kinds above with `cuts`: where the bench splits it into chunks fed to a stream
           scanner, with at least one cut inside every labelled value (inside a \\u escape, a base64 run...).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import itertools
import json
import random
import string
import textwrap
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers


@dataclass(frozen=True, slots=True)
class Label:
    """`text[start:end]` holds an entity of `type` (our entity type names); `variant` says which format of it."""

    type: str
    start: int
    end: int
    variant: str


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    kind: str
    text: str
    labels: tuple[Label, ...]
    decoys: tuple[Label, ...] = ()  # look-alikes that are no entity: `type` names the kind of look-alike
    cuts: tuple[int, ...] = ()  # stream documents: chunk boundaries, ascending, inside (0, len(text))

    def chunks(self) -> list[str]:
        bounds = [0, *self.cuts, len(self.text)]
        return [self.text[a:b] for a, b in itertools.pairwise(bounds)]


# -- checksums --------------------------------------------------------------------------------------------------------


def luhn_check_digit(payload: str) -> str:
    """ISO/IEC 7812-1 Annex B (Luhn): the digit that makes payload+digit pass."""
    total = 0
    for index, char in enumerate(reversed(payload)):
        digit = int(char)
        if index % 2 == 0:  # doubled: these sit at odd positions once the check digit is appended
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return str((10 - total % 10) % 10)


def iban_check_digits(country: str, bban: str) -> str:
    """ISO 13616-1: 98 - (BBAN + country + "00", letters as 10..35) mod 97 (ISO 7064 MOD 97-10)."""
    numeric = "".join(str(int(char, 36)) for char in bban + country + "00")
    return f"{98 - int(numeric) % 97:02d}"


_VERHOEFF_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_VERHOEFF_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]
_VERHOEFF_INV = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9]


def verhoeff_check_digit(payload: str) -> str:
    """Verhoeff's dihedral-group check digit (used by India's Aadhaar, UIDAI)."""
    check = 0
    for index, char in enumerate(reversed(payload)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[(index + 1) % 8][int(char)]]
    return str(_VERHOEFF_INV[check])


BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def github_checksum(entropy: str) -> str:
    """GitHub's token checksum: CRC32 of the random part, in base62 (0-9A-Za-z), left-padded to six characters."""
    value = binascii.crc32(entropy.encode())
    digits = ""
    while value:
        value, rest = divmod(value, 62)
        digits = BASE62[rest] + digits
    return digits.rjust(6, "0")


# -- entity generators ------------------------------------------------------------------------------------------------

Generated = tuple[str, str]  # (value, variant)
Generator = Callable[[random.Random], Generated]


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(count))


def _chars(rng: random.Random, alphabet: str, count: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(count))


ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"

# (brand, IIN prefixes, lengths): ISO/IEC 7812 issuer ranges as the card networks publish them.
CARD_BRANDS: tuple[tuple[str, tuple[str, ...], tuple[int, ...]], ...] = (
    ("visa", ("4",), (16, 16, 16, 19)),
    ("mastercard", tuple(str(p) for p in range(51, 56)), (16,)),
    ("mastercard_2series", tuple(str(p) for p in range(2221, 2721)), (16,)),
    ("amex", ("34", "37"), (15,)),
    ("discover", ("6011", "644", "645", "646", "647", "648", "649", "65"), (16, 19)),
    ("jcb", tuple(str(p) for p in range(3528, 3590)), (16, 19)),
    ("diners", ("300", "301", "302", "303", "304", "305", "36"), (14,)),
    ("unionpay", ("62",), (16, 19)),
    ("maestro", ("5018", "5020", "5038", "6304", "6759", "6761"), (16, 19)),
)


def card_brand(digits: str) -> str | None:
    """The brand whose IIN prefixes and lengths (CARD_BRANDS) `digits` fits; None for numbers outside them all."""
    for brand, prefixes, lengths in CARD_BRANDS:
        if len(digits) in lengths and digits.startswith(prefixes):
            return brand
    return None


def _card_groups(length: int, brand: str) -> tuple[int, ...]:
    if brand == "amex":
        return (4, 6, 5)
    if length == 14:
        return (4, 6, 4)
    groups = [4] * (length // 4)
    if length % 4:
        groups.append(length % 4)
    return tuple(groups)


def _format_groups(number: str, groups: Sequence[int], separator: str) -> str:
    parts, at = [], 0
    for size in groups:
        parts.append(number[at : at + size])
        at += size
    return separator.join(parts)


def credit_card(rng: random.Random) -> Generated:
    brand, prefixes, lengths = rng.choice(CARD_BRANDS)
    length = rng.choice(lengths)
    payload = rng.choice(prefixes)
    payload += _digits(rng, length - 1 - len(payload))
    number = payload + luhn_check_digit(payload)
    style = rng.choice(("plain", "spaces", "dashes"))
    separator = {"plain": "", "spaces": " ", "dashes": "-"}[style]
    return _format_groups(number, _card_groups(length, brand), separator), f"{brand}/{length}/{style}"


# Country: BBAN layout as (kind, count) runs, n = digits, a = upper-case letters, c = either (the ISO 13616 registry).
IBAN_LAYOUTS: dict[str, tuple[tuple[str, int], ...]] = {
    "DE": (("n", 18),),
    "GB": (("a", 4), ("n", 14)),
    "FR": (("n", 10), ("c", 11), ("n", 2)),
    "ES": (("n", 20),),
    "IT": (("a", 1), ("n", 10), ("c", 12)),
    "NL": (("a", 4), ("n", 10)),
    "CH": (("n", 5), ("c", 12)),
    "BE": (("n", 12),),
    "PL": (("n", 24),),
    "AT": (("n", 16),),
    "IE": (("a", 4), ("n", 14)),
    "SE": (("n", 20),),
    "NO": (("n", 11),),
    "SA": (("n", 2), ("c", 18)),
}


def _bban(rng: random.Random, layout: Iterable[tuple[str, int]]) -> str:
    alphabets = {"n": string.digits, "a": string.ascii_uppercase, "c": string.ascii_uppercase + string.digits}
    return "".join(_chars(rng, alphabets[kind], count) for kind, count in layout)


def iban(rng: random.Random) -> Generated:
    country = rng.choice(sorted(IBAN_LAYOUTS))
    bban = _bban(rng, IBAN_LAYOUTS[country])
    compact = country + iban_check_digits(country, bban) + bban
    spaced = rng.random() < 0.5
    value = " ".join(compact[i : i + 4] for i in range(0, len(compact), 4)) if spaced else compact
    return value, f"{country}/{'spaces' if spaced else 'compact'}"


def us_ssn(rng: random.Random) -> Generated:
    """SSA rules: area 001-899 except 666, group 01-99, serial 0001-9999."""
    area = rng.choice([a for a in range(1, 900) if a != 666])
    number = f"{area:03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"
    style = rng.choice(("dashes", "dashes", "dashes", "spaces"))
    return (" " if style == "spaces" else "-").join(number), style


def uk_nino(rng: random.Random) -> Generated:
    """HMRC NIM39110: prefix letters exclude D F I Q U V (and O second); BG GB KN NK NT TN ZZ are never issued."""
    first = "ABCEGHJKLMNOPRSTWXYZ"
    second = "ABCEGHJKLMNPRSTWXYZ"
    while (prefix := rng.choice(first) + rng.choice(second)) in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
        pass
    digits = _digits(rng, 6)
    suffix = rng.choice("ABCD")
    if rng.random() < 0.5:
        return f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} {suffix}", "uk_nino/spaces"
    return f"{prefix}{digits}{suffix}", "uk_nino/compact"


def es_dni(rng: random.Random) -> Generated:
    """Spain's DNI (8 digits) or NIE (X/Y/Z + 7 digits) with the mod 23 control letter (Real Decreto 1553/2005)."""
    letters = "TRWAGMYFPDXBNJZSQVHLCKE"
    if rng.random() < 0.7:
        digits = _digits(rng, 8)
        return digits + letters[int(digits) % 23], "es_dni/dni"
    lead = rng.choice("XYZ")
    digits = _digits(rng, 7)
    return lead + digits + letters[int(str("XYZ".index(lead)) + digits) % 23], "es_dni/nie"


def nl_bsn(rng: random.Random) -> Generated:
    """The Netherlands' BSN: nine digits passing the "elfproef" (weights 9..2 and -1, sum divisible by 11)."""
    while True:
        digits = str(rng.randint(1, 9)) + _digits(rng, 7)
        rest = sum(int(d) * w for d, w in zip(digits, range(9, 1, -1), strict=True)) % 11
        if rest < 10:
            return digits + str(rest), "nl_bsn"


def in_aadhaar(rng: random.Random) -> Generated:
    """India's Aadhaar (UIDAI): 12 digits, first 2-9, Verhoeff check digit; usually written 4-4-4."""
    payload = str(rng.randint(2, 9)) + _digits(rng, 10)
    number = payload + verhoeff_check_digit(payload)
    if rng.random() < 0.6:
        return f"{number[:4]} {number[4:8]} {number[8:]}", "in_aadhaar/spaces"
    return number, "in_aadhaar/compact"


def fr_nir(rng: random.Random) -> Generated:
    """France's NIR (INSEE): sex, year, month, department, commune, order, and key = 97 - NIR mod 97, where Corsica's
    departments 2A and 2B count as 19 and 18."""
    department = rng.choice((f"{rng.randint(1, 95):02d}", f"{rng.randint(1, 95):02d}", "2A", "2B"))
    parts = [
        rng.choice("12"),
        f"{rng.randint(0, 99):02d}",
        f"{rng.randint(1, 12):02d}",
        department,
        f"{rng.randint(1, 990):03d}",
        f"{rng.randint(1, 999):03d}",
    ]
    body = "".join(parts)
    numeric = (
        body.replace("2A", "19") if department == "2A" else body.replace("2B", "18") if department == "2B" else body
    )
    parts.append(f"{97 - int(numeric) % 97:02d}")
    spaced = rng.random() < 0.5
    return (" " if spaced else "").join(parts), f"fr_nir/{'spaces' if spaced else 'compact'}"


def national_id(rng: random.Random) -> Generated:
    return rng.choice((uk_nino, es_dni, fr_nir, nl_bsn, in_aadhaar))(rng)


FIRST_NAMES = ("jane", "john", "maria", "wei", "olga", "ahmed", "priya", "lucas", "emma", "kenji", "fatima", "noah")
LAST_NAMES = ("doe", "smith", "garcia", "chen", "ivanova", "hassan", "patel", "martin", "muller", "sato", "okafor")
DOMAINS = ("example.com", "corp.example.org", "mail.acme.io", "example.co.uk", "dept.uni-example.edu", "acme.de")


def email_address(rng: random.Random) -> Generated:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    local = rng.choice(
        (
            f"{first}.{last}",
            f"{first[0]}{last}",
            f"{first}_{last}{rng.randint(1, 99)}",
            f"{first}+{rng.choice(('news', 'billing', 'dev'))}",
        )
    )
    domain = rng.choice(DOMAINS)
    if rng.random() < 0.1:
        return f"{local.capitalize()}@{domain.upper()}", "email/upper"
    return f"{local}@{domain}", "email"


PHONE_REGIONS = ("US", "US", "US", "GB", "DE", "FR", "IN", "JP", "AU", "BR", "CA", "ES")


def phone_number(rng: random.Random) -> Generated:
    """A number libphonenumber calls valid: its region's example number with the subscriber digits redrawn."""
    region = rng.choice(PHONE_REGIONS)
    example = phonenumbers.example_number_for_type(region, rng.choice((0, 1)))  # FIXED_LINE or MOBILE
    assert example is not None
    national = str(example.national_number)
    while True:
        keep = max(2, len(national) - 6)
        candidate = phonenumbers.parse(f"+{example.country_code}{national[:keep]}{_digits(rng, len(national) - keep)}")
        if phonenumbers.is_valid_number(candidate):
            break
    if region == "US":
        style = rng.choice(("national", "national", "dashes", "dots", "one_dashes", "international", "e164", "uri"))
    else:
        style = rng.choice(("international", "international", "e164", "uri"))
    digits = str(candidate.national_number)
    if style == "national":
        value = phonenumbers.format_number(candidate, phonenumbers.PhoneNumberFormat.NATIONAL)
    elif style in ("dashes", "dots"):
        separator = "-" if style == "dashes" else "."
        value = separator.join((digits[:3], digits[3:6], digits[6:]))
    elif style == "one_dashes":
        value = f"1-{digits[:3]}-{digits[3:6]}-{digits[6:]}"
    elif style == "uri":  # RFC 3966
        value = phonenumbers.format_number(candidate, phonenumbers.PhoneNumberFormat.RFC3966)
    elif style == "international":
        value = phonenumbers.format_number(candidate, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    else:
        value = phonenumbers.format_number(candidate, phonenumbers.PhoneNumberFormat.E164)
    return value, f"{region}/{style}"


def ip_address(rng: random.Random) -> Generated:
    """The address alone: a port or prefix length written after it is context (see IP_SUFFIXES), not the value."""
    kind = rng.choice(("v4", "v4", "v4_documentation", "v6", "v6_full"))
    if kind == "v4":
        return f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}", kind
    if kind == "v4_documentation":  # RFC 5737's ranges: reserved, like the internal addresses a leak would show
        return rng.choice(
            (
                f"198.51.100.{rng.randint(1, 254)}",
                f"203.0.113.{rng.randint(1, 254)}",
            )
        ), kind
    groups = [rng.randint(0, 0xFFFF) for _ in range(8)]
    if kind == "v6":
        groups[rng.randint(2, 5)] = 0
        groups[rng.randint(2, 5)] = 0
        groups[0], groups[1] = 0x2001, 0x0DB8
        return ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups)).compressed, kind
    return ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups)).exploded, kind


def aws_access_key(rng: random.Random) -> Generated:
    prefix = rng.choice(("AKIA", "AKIA", "AKIA", "ASIA"))
    return prefix + _chars(rng, string.ascii_uppercase + "234567", 16), prefix


def aws_secret_key(rng: random.Random) -> Generated:
    return _chars(rng, ALNUM + "/+", 40), "secret"


def github_token(rng: random.Random) -> Generated:
    prefix = rng.choice(("ghp", "ghp", "gho", "ghu", "ghs", "ghr", "github_pat"))
    if prefix == "github_pat":  # fine-grained: 22 + "_" + 59 characters
        return f"github_pat_{_chars(rng, ALNUM, 22)}_{_chars(rng, ALNUM + '_', 59)}", prefix
    entropy = _chars(rng, ALNUM, 30)
    return f"{prefix}_{entropy}{github_checksum(entropy)}", prefix


def slack_token(rng: random.Random) -> Generated:
    kind = rng.choice(("xoxb", "xoxp", "xapp", "webhook"))
    if kind == "xoxb":
        return f"xoxb-{_digits(rng, 11)}-{_digits(rng, 13)}-{_chars(rng, ALNUM, 24)}", kind
    if kind == "xoxp":
        return (
            f"xoxp-{_digits(rng, 11)}-{_digits(rng, 11)}-{_digits(rng, 13)}-{_chars(rng, '0123456789abcdef', 32)}",
            kind,
        )
    if kind == "xapp":
        return (
            f"xapp-1-A{_chars(rng, string.ascii_uppercase + string.digits, 10)}-{_digits(rng, 13)}-"
            + _chars(rng, "0123456789abcdef", 64),
            kind,
        )
    upper = string.ascii_uppercase + string.digits
    return (
        f"https://hooks.slack.com/services/T{_chars(rng, upper, 8)}/B{_chars(rng, upper, 10)}/{_chars(rng, ALNUM, 24)}",
        kind,
    )


def google_api_key(rng: random.Random) -> Generated:
    return "AIza" + _chars(rng, URLSAFE, 35), "AIza"


def stripe_key(rng: random.Random) -> Generated:
    prefix = rng.choice(("sk_live", "sk_live", "rk_live", "sk_test"))
    length = rng.choice((24, 99))
    body = ("51" + _chars(rng, ALNUM, length - 2)) if length == 99 else _chars(rng, ALNUM, length)
    return f"{prefix}_{body}", f"{prefix}/{length}"


def anthropic_api_key(rng: random.Random) -> Generated:
    kind = rng.choice(("api03", "api03", "api03", "admin01"))
    return f"sk-ant-{kind}-{_chars(rng, URLSAFE, 93)}AA", kind


def openai_api_key(rng: random.Random) -> Generated:
    kind = rng.choice(("proj", "proj", "svcacct", "legacy"))
    if kind == "legacy":
        return f"sk-{_chars(rng, ALNUM, 20)}T3BlbkFJ{_chars(rng, ALNUM, 20)}", kind
    return f"sk-{kind}-{_chars(rng, URLSAFE, 74)}T3BlbkFJ{_chars(rng, URLSAFE, 74)}", kind


# DER prefixes of each PEM kind, so the bodies start as real ones do (the rest is random: no usable key).
PEM_KINDS = {
    "RSA PRIVATE KEY": (bytes.fromhex("308204a40201000282010100"), 1190),
    "PRIVATE KEY": (bytes.fromhex("308204bd020100300d06092a864886f70d0101010500"), 1217),
    "EC PRIVATE KEY": (bytes.fromhex("30770201010420"), 121),
    "OPENSSH PRIVATE KEY": (b"openssh-key-v1\x00\x00\x00\x00\x04none", 400),
}


def private_key(rng: random.Random) -> Generated:
    kind = rng.choice(sorted(PEM_KINDS))
    prefix, size = PEM_KINDS[kind]
    body = base64.b64encode(prefix + rng.randbytes(size - len(prefix))).decode()
    width = 70 if kind.startswith("OPENSSH") else 64  # ssh-keygen wraps at 70, OpenSSL at 64
    lines = "\n".join(body[i : i + width] for i in range(0, len(body), width))
    return f"-----BEGIN {kind}-----\n{lines}\n-----END {kind}-----", kind.lower().replace(" ", "_")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(rng: random.Random) -> Generated:
    alg, signature_size = rng.choice((("HS256", 32), ("RS256", 256), ("ES256", 64)))
    header = {"alg": alg, "typ": "JWT", **({"kid": _chars(rng, ALNUM, 8)} if alg != "HS256" else {})}
    claims = {
        "sub": f"user-{rng.randint(1000, 99999)}",
        "iss": "https://login.example.com",
        "aud": "api://inventory",
        "iat": 1764300000 + rng.randint(0, 10**6),
        "exp": 1764303600 + rng.randint(0, 10**6),
        "scope": rng.choice(("read", "read write", "admin")),
    }
    parts = [_b64url(json.dumps(p, separators=(",", ":")).encode()) for p in (header, claims)]
    return ".".join([*parts, _b64url(rng.randbytes(signature_size))]), alg


SECRET_ALPHABET = ALNUM + "!#$%^*-_+=~"


def high_entropy_secret(rng: random.Random) -> Generated:
    kind = rng.choice(("symbols", "alnum", "hex", "base64"))
    length = rng.randint(20, 40)
    if kind == "symbols":  # not starting with "$": "$NAME" reads as a variable reference, not as a value
        return rng.choice(ALNUM) + _chars(rng, SECRET_ALPHABET, length - 1), kind
    if kind == "alnum":
        return _chars(rng, ALNUM, length), kind
    if kind == "hex":
        return _chars(rng, "0123456789abcdef", 32 if length < 30 else 40), kind
    return base64.b64encode(rng.randbytes(24)).decode(), kind


GENERATORS: dict[str, Generator] = {
    "credit_card": credit_card,
    "iban": iban,
    "us_ssn": us_ssn,
    "national_id": national_id,
    "email_address": email_address,
    "phone_number": phone_number,
    "ip_address": ip_address,
    "aws_access_key": aws_access_key,
    "aws_secret_key": aws_secret_key,
    "github_token": github_token,
    "slack_token": slack_token,
    "google_api_key": google_api_key,
    "stripe_key": stripe_key,
    "anthropic_api_key": anthropic_api_key,
    "openai_api_key": openai_api_key,
    "private_key": private_key,
    "jwt": jwt,
    "high_entropy_secret": high_entropy_secret,
}
ENTITY_TYPES = tuple(GENERATORS)

# How each entity is introduced in prose; "{}" is the value. A secret in a key context is how it leaks in practice.
CONTEXTS: dict[str, tuple[str, ...]] = {
    "credit_card": (
        "Card on file: {}.",
        "Please charge {} for the renewal.",
        "cc={} exp=09/29",
        "The customer paid with {} yesterday.",
        "Jane Doe,{},09/29,Gold",
        "| 2026-11-02 | {} | 120.00 EUR |",
        "{}",
    ),
    "iban": (
        "Wire the refund to IBAN {} today.",
        "Bank account: {}",
        "iban={}",
        "Beneficiary account {} (SEPA).",
        "Supplier;{};EUR;1200.00",
        "{}",
    ),
    "us_ssn": (
        "SSN: {}",
        "Social security number {} on the W-2.",
        "ssn={}",
        "Employee SSN {} verified.",
        "name,ssn,dob\nJane Doe,{},1984-03-02",
    ),
    "national_id": (
        "National ID: {}",
        "Identity document {} was checked.",
        "id_number={}",
        "Citizen number {} on the form.",
        "employee,national id\nJ. Doe,{}",
    ),
    "email_address": (
        "Contact {} for access.",
        "From: {}",
        "email={}",
        "Escalate to {} before Friday.",
        "Reply-To: Jane Doe <{}>",
        "[mail us](mailto:{})",
        "{}",
    ),
    "phone_number": (
        "Call me at {} after 5pm.",
        "Phone: {}",
        "tel={}",
        "Her mobile is {} if urgent.",
        "Jane Doe | Sales | {}",
        "Dial {}, then press 2.",
    ),
    "ip_address": (
        "Connection from {} refused.",
        "client_ip={}",
        "Allowed host {} in the firewall.",
        "GET /health from {} 200",
        "upstream: {}:8443",
        "route add {}/32 via eth0",
        '{} - - [28/Nov/2026:04:10:30 +0000] "GET / HTTP/1.1" 200',
    ),
    "aws_access_key": (
        "aws_access_key_id = {}",
        "AWS_ACCESS_KEY_ID={}",
        "The key {} was rotated.",
        "Access key {} is attached to the CI user.",
        "{}",
    ),
    "aws_secret_key": (
        "aws_secret_access_key = {}",
        "AWS_SECRET_ACCESS_KEY={}",
        '"SecretAccessKey": "{}"',
        "export AWS_SECRET_ACCESS_KEY={}",
        "aws_secret_access_key: '{}'",
    ),
    "github_token": (
        "GITHUB_TOKEN={}",
        "git clone https://x-access-token:{}@github.com/acme/app.git",
        "Use token {} for the bot.",
        "Authorization: token {}",
        "{}",
    ),
    "slack_token": ("SLACK_BOT_TOKEN={}", "Post alerts with {}.", "slack: {}", "{}"),
    "google_api_key": (
        "GOOGLE_API_KEY={}",
        "https://maps.googleapis.com/maps/api/geocode/json?key={}",
        "Maps key {} is restricted.",
        "{}",
    ),
    "stripe_key": ("STRIPE_SECRET_KEY={}", 'stripe.api_key = "{}"', "Billing uses {} in production.", "{}"),
    "anthropic_api_key": ("ANTHROPIC_API_KEY={}", "x-api-key: {}", "The assistant key is {}.", "{}"),
    "openai_api_key": ("OPENAI_API_KEY={}", "Authorization: Bearer {}", "openai key {}", "{}"),
    "private_key": ("Deploy key:\n{}\n", "ssh_key: |\n{}\n", "{}\n"),
    "jwt": (
        "Authorization: Bearer {}",
        "id_token={}",
        "The session cookie was {}.",
        "Cookie: session={}; Path=/; HttpOnly",
        "{}",
    ),
    "high_entropy_secret": (
        "password={}",
        "DB_PASSWORD={}",
        "client_secret: {}",
        'api_key = "{}"',
        "passwd: {}",
        "secret_key={}",
        "export DB_PASSWORD='{}'",
        '"password": "{}"',
        "smtp_password: {}",
    ),
}


def context(rng: random.Random, kind: str, value: str) -> str:
    """One of the type's contexts; an IPv6 address before a port goes in brackets (RFC 3986 section 3.2.2)."""
    template = rng.choice(CONTEXTS[kind])
    if kind == "ip_address" and ":" in value:
        template = template.replace("{}:", "[{}]:")
    return template


# Look-alikes that are not entities. A detector that flags them loses precision.
def _luhn_invalid(rng: random.Random) -> Generated:
    prefix = rng.choice(("4", "51", "37", "6011"))
    payload = prefix + _digits(rng, 15 - len(prefix))
    wrong = str((int(luhn_check_digit(payload)) + rng.randint(1, 9)) % 10)
    number = payload + wrong
    return (" ".join(number[i : i + 4] for i in range(0, 16, 4)) if rng.random() < 0.5 else number), "luhn_invalid"


def _bad_iban(rng: random.Random) -> Generated:
    value, _ = iban(rng)
    check = value[2:4]
    return value[:2] + f"{(int(check) + rng.randint(1, 50)) % 97 + 2:02d}" + value[4:], "iban_bad_check"


def _invalid_ssn(rng: random.Random) -> Generated:
    area = rng.choice(("000", "666", str(rng.randint(900, 999))))
    if rng.random() < 0.3:
        return f"{rng.randint(100, 665):03d}-00-{rng.randint(1, 9999):04d}", "ssn_group_00"
    return (
        f"{area}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}",
        f"ssn_area_{area[0] if area[0] == '9' else area}",
    )


def _bad_github(rng: random.Random) -> Generated:
    entropy = _chars(rng, ALNUM, 30)
    checksum = github_checksum(entropy)
    wrong = checksum[:-1] + BASE62[(BASE62.index(checksum[-1]) + 1) % 62]
    return f"ghp_{entropy}{wrong}", "github_bad_checksum"


DECOYS: dict[str, tuple[Generator, tuple[str, ...]]] = {
    "luhn_invalid": (_luhn_invalid, ("Card on file: {}.", "Reference {} (not a card).", "tracking {}")),
    "iban_bad_check": (_bad_iban, ("Account {} was rejected: bad check digits.", "iban={}")),
    "ssn_invalid": (_invalid_ssn, ("Form field: {}", "ssn={} (test value)", "Case {} closed.")),
    "github_bad_checksum": (_bad_github, ("example token {} from the docs", "GITHUB_TOKEN={}")),
    "order_id": (
        lambda r: (f"ORD-{_chars(r, string.ascii_uppercase, 2)}{_digits(r, 6)}", "order_id"),
        ("Order {} shipped.", "order_id={}"),
    ),
    "timestamp": (
        lambda r: (
            f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
            f"T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}.{_digits(r, 3)}Z",
            "iso8601",
        ),
        ("at {} the job finished", "ts={}"),
    ),
    "epoch": (
        lambda r: (str(r.randint(1_700_000_000_000, 1_799_999_999_999)), "epoch_ms"),
        ("created_at={}", "timestamp {}"),
    ),
    "uuid": (
        lambda r: (str(uuid.UUID(int=r.getrandbits(128), version=4)), "uuid4"),
        ("request_id={}", "trace {} done"),
    ),
    "git_sha": (lambda r: (_chars(r, "0123456789abcdef", 40), "sha1"), ("commit {}", "Merged {} into main.", "rev={}")),
    "version": (
        lambda r: (f"{r.randint(0, 9)}.{r.randint(0, 30)}.{r.randint(0, 20)}", "semver"),
        ("Upgraded to v{}.", "version: {}"),
    ),
    "date": (
        lambda r: (
            r.choice(
                (
                    f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
                    f"{r.randint(1, 12):02d}/{r.randint(1, 28):02d}/2026",
                )
            ),
            "date",
        ),
        ("Due {}.", "Meeting moved to {}."),
    ),
    "mac_address": (
        lambda r: (":".join(f"{r.randint(0, 255):02x}" for _ in range(6)), "mac"),
        ("NIC {} came up.", "hwaddr={}"),
    ),
    "placeholder_secret": (
        lambda r: (
            r.choice(
                ("changeme", "********", "${DB_PASSWORD}", "<your-token-here>", "REDACTED", "null", "password123")
            ),
            "placeholder",
        ),
        ("password={}", "api_key: {}", "secret_key = {}"),
    ),
    "sha256": (lambda r: (_chars(r, "0123456789abcdef", 64), "sha256"), ("sha256:{}", "checksum {} OK")),
    "tracking_number": (  # USPS: 22 digits printed in groups of four, card-length windows inside
        lambda r: (" ".join(textwrap.wrap("9400" + _digits(r, 18), 4)), "usps"),
        ("Tracking number {} (USPS).", "tracking={}"),
    ),
    "isbn": (
        lambda r: (f"978-{r.randint(0, 9)}-{_digits(r, 2)}-{_digits(r, 6)}-{r.randint(0, 9)}", "isbn13"),
        ("ISBN {}",),
    ),
    "coordinates": (
        lambda r: (f"{r.uniform(-80, 80):.4f}, {r.uniform(-179, 179):.4f}", "latlon"),
        ("Site at {} (WGS84).", "geo={}"),
    ),
    "amount": (
        lambda r: (f"{r.randint(1, 999)},{_digits(r, 3)},{_digits(r, 3)}.{_digits(r, 2)}", "money"),
        ("Total USD {}.",),
    ),
    "dotted_id": (
        lambda r: (
            r.choice((f"6.0.{r.randint(10000, 22999)}.{r.randint(1, 9999)}", f"1.2.840.{_digits(r, 6)}.1.1")),
            "dotted",
        ),
        ("Windows build {}", "oid={}"),
    ),
    "image_blob": (
        lambda r: (base64.b64encode(b"\x89PNG\r\n\x1a\n" + r.randbytes(r.randint(200, 600))).decode(), "png"),
        ('"image": "data:image/png;base64,{}"', "thumbnail={}"),
    ),
    "secret_word_key": (  # secret-sounding keys whose values are no secret
        lambda r: (
            r.choice(
                (
                    "token_type=Bearer",
                    "password_min_length=12",
                    "secret_name=prod-db-credentials",
                    "api_key_header=X-Api-Key",
                    "require_token=true",
                )
            ),
            "benign_value",
        ),
        ("{}",),
    ),
}

WORDS = (
    *("the", "quarterly", "report", "shows", "revenue", "grew", "while", "churn", "fell", "in", "northern", "region"),
    *("and", "team", "plans", "to", "hire", "two", "engineers", "review", "incident", "timeline", "before"),
    *("postmortem", "meeting", "deploy", "finished", "without", "errors", "customers", "asked", "about", "new"),
    *("pricing", "tiers", "migration", "guide", "please", "update", "ticket", "with", "notes"),
)


def sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(6, 16))
    return " ".join(words).capitalize() + "."


# -- documents --------------------------------------------------------------------------------------------------------

Escape = Callable[[str], str]


def _raw(text: str) -> str:
    return text


def json_escape(text: str) -> str:
    """The inside of a JSON string (RFC 8259 section 7); character by character, so pieces escape independently."""
    return json.dumps(text)[1:-1]


def json_escape_punctuation(text: str) -> str:
    """Every character that is not a letter or digit written as \\uXXXX: legal JSON, as some encoders write it."""
    return "".join(char if char.isalnum() and char.isascii() else f"\\u{ord(char):04x}" for char in text)


@dataclass
class _Builder:
    """Text built piece by piece, each piece escaped on its own, recording where entities and look-alikes land."""

    escape: Escape = _raw
    pieces: list[str] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    decoys: list[Label] = field(default_factory=list)
    length: int = 0

    def text(self, text: str, escape: Escape | None = None) -> None:
        written = (escape or self.escape)(text)
        self.pieces.append(written)
        self.length += len(written)

    def mark(
        self, into: list[Label], kind: str, variant: str, value: str, template: str, escape: Escape | None = None
    ) -> None:
        before, after = template.split("{}", 1)
        self.text(before)
        start = self.length
        self.text(value, escape)
        into.append(Label(kind, start, self.length, variant))
        self.text(after)

    def entity(self, rng: random.Random, kind: str, escape: Escape | None = None) -> None:
        value, variant = GENERATORS[kind](rng)
        self.mark(self.labels, kind, variant, value, context(rng, kind, value), escape)

    def decoy(self, rng: random.Random, kind: str) -> None:
        make, templates = DECOYS[kind]
        value, variant = make(rng)
        self.mark(self.decoys, kind, variant, value, rng.choice(templates))

    def result(self) -> str:
        return "".join(self.pieces)


def _fill(
    builder: _Builder, rng: random.Random, kinds: Sequence[str], decoys: Sequence[str], escape: Escape | None = None
) -> None:
    """Sentences with the entities and look-alikes in random order between them."""
    items = [("entity", kind) for kind in kinds] + [("decoy", kind) for kind in decoys]
    rng.shuffle(items)
    for role, kind in items:
        builder.text(sentence(rng) + rng.choice((" ", "\n")))
        if role == "entity":
            builder.entity(rng, kind, escape)
        else:
            builder.decoy(rng, kind)
        builder.text(rng.choice((" ", "\n")))
    builder.text(sentence(rng))


def prose(rng: random.Random, kinds: Sequence[str], decoys: Sequence[str]) -> _Builder:
    builder = _Builder()
    _fill(builder, rng, kinds, decoys)
    return builder


def json_record(rng: random.Random, kinds: Sequence[str], decoys: Sequence[str]) -> _Builder:
    """A record as an API returns it: one field per entity, some with every punctuation mark \\u-escaped."""
    builder = _Builder(json_escape)
    builder.text(f'{{"id": {rng.randint(1, 10**6)}, "status": "active", "fields": {{', _raw)
    items = [("entity", kind) for kind in kinds] + [("decoy", kind) for kind in decoys]
    rng.shuffle(items)
    for index, (role, kind) in enumerate(items):
        builder.text(f'"{role}_{index}": "', _raw)
        if role == "entity":
            escape = json_escape_punctuation if rng.random() < 0.35 else None
            builder.entity(rng, kind, escape)
        else:
            builder.decoy(rng, kind)
        builder.text('", ', _raw)
    builder.text('"note": "', _raw)
    builder.text(sentence(rng))
    builder.text('"}}', _raw)
    return builder


def base64_wrapped(rng: random.Random, kinds: Sequence[str], decoys: Sequence[str]) -> _Builder:
    """Each entity alone in a base64 run (with its context line), the runs in prose or JSON."""
    builder = _Builder()
    in_json = rng.random() < 0.5
    if in_json:
        builder.text('{"attachments": [')
    for index, kind in enumerate(kinds):
        value, variant = GENERATORS[kind](rng)
        inner = context(rng, kind, value).replace("{}", value)
        encoded = base64.b64encode(inner.encode()).decode()
        if in_json:
            template = '{"name": "part' + str(index) + '.txt", "data": "{}"}'
            builder.mark(builder.labels, kind, f"base64/{variant}", encoded, template)
            builder.text(", " if index < len(kinds) - 1 else "")
        else:
            builder.text(sentence(rng) + "\n")
            builder.mark(
                builder.labels,
                kind,
                f"base64/{variant}",
                encoded,
                rng.choice(("attachment (base64): {}\n", "Authorization: Basic {}\n", "payload={}\n")),
            )
    if in_json:
        builder.text("]}")
    for kind in decoys:
        builder.text(" ")
        builder.decoy(rng, kind)
    return builder


def mcp_message(rng: random.Random, kinds: Sequence[str], decoys: Sequence[str]) -> _Builder:
    """MCP JSON-RPC: a tools/call result (entities in its text content) or a tools/call request (in arguments)."""
    builder = _Builder(json_escape)
    if rng.random() < 0.6:
        builder.text(
            f'{{"jsonrpc": "2.0", "id": {rng.randint(1, 999)}, "result": {{"content": [{{"type": "text", "text": "',
            _raw,
        )
        _fill(builder, rng, kinds, decoys)
        builder.text('"}], "isError": false}}', _raw)
        return builder
    builder.text(
        f'{{"jsonrpc": "2.0", "id": {rng.randint(1, 999)}, "method": "tools/call", '
        '"params": {"name": "send_email", "arguments": {',
        _raw,
    )
    builder.text('"subject": "', _raw)
    builder.text(sentence(rng))
    builder.text('", "body": "', _raw)
    _fill(builder, rng, kinds, decoys)
    builder.text('"}}}', _raw)
    return builder


def _cuts(rng: random.Random, text: str, labels: Sequence[Label]) -> tuple[int, ...]:
    """A cut strictly inside every labelled value, plus random cuts: chunks from one character to a few hundred."""
    cuts = {rng.randint(label.start + 1, label.end - 1) for label in labels if label.end - label.start > 1}
    cuts |= {rng.randint(1, len(text) - 1) for _ in range(max(1, len(text) // 200))}
    return tuple(sorted(cut for cut in cuts if 0 < cut < len(text)))


KINDS = ("prose", "json", "base64", "mcp", "stream")
_BUILDERS = {"prose": prose, "json": json_record, "base64": base64_wrapped, "mcp": mcp_message}


def generate(seed: int, documents: int) -> list[Document]:
    """`documents` documents, each with 2-5 entities and 0-3 look-alikes; every entity type about equally often."""
    rng = random.Random(seed)
    cycle: list[str] = []
    corpus = []
    for index in range(documents):
        kind = KINDS[index % len(KINDS)]
        kinds = []
        for _ in range(rng.randint(2, 5)):
            if not cycle:
                cycle = list(ENTITY_TYPES)
                rng.shuffle(cycle)
            kinds.append(cycle.pop())
        decoys = rng.sample(sorted(DECOYS), rng.randint(0, 3))
        if kind == "stream":
            builder = _BUILDERS[rng.choice(("prose", "mcp", "json", "base64"))](rng, kinds, decoys)
        else:
            builder = _BUILDERS[kind](rng, kinds, decoys)
        text = builder.result()
        labels = tuple(builder.labels)
        cuts = _cuts(rng, text, labels) if kind == "stream" else ()
        corpus.append(Document(f"{kind}-{index}", kind, text, labels, tuple(builder.decoys), cuts))
    return corpus


def message(seed: int, size: int) -> str:
    """A tools/call result of about `size` characters: prose with an entity or look-alike every few hundred."""
    rng = random.Random(seed)
    builder = _Builder(json_escape)
    builder.text('{"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "', _raw)
    while builder.length < size - 40:
        builder.text(sentence(rng) + " ")
        roll = rng.random()
        if roll < 0.25:
            builder.entity(rng, rng.choice(ENTITY_TYPES))
        elif roll < 0.4:
            builder.decoy(rng, rng.choice(sorted(DECOYS)))
        builder.text(" ")
    builder.text('"}], "isError": false}}', _raw)
    return builder.result()


# -- the file handed to the peer --------------------------------------------------------------------------------------


def dump(documents: Sequence[Document], messages: dict[str, list[str]], rounds: int) -> dict[str, Any]:
    """What bench/_presidio_run.py reads: the documents (streamed ones with their chunks) and the timed messages."""
    return {
        "documents": [{"id": d.id, "text": d.text, "chunks": d.chunks() if d.cuts else None} for d in documents],
        "messages": messages,
        "rounds": rounds,
    }
