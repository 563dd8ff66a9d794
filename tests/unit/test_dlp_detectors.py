"""The built-in DLP detectors (issue 8, "Detectors"): each finds its entity written the ways people write it, refuses
look-alikes (a wrong check digit, a reserved range, a version string, a date), and completes on hostile input."""

from __future__ import annotations

import base64
import json
import string
import zlib

import pytest

from chamberlain.dlp.config import DlpConfig
from chamberlain.dlp.detectors.checksums import iban_mod97, luhn, verhoeff
from chamberlain.dlp.detectors.entropy import shannon_entropy
from chamberlain.dlp.detectors.payment_cards import CardDetector, card_scheme
from chamberlain.dlp.scanner import Scanner, build_scanner

SCANNER = build_scanner(DlpConfig())


def found(text: str, scanner: Scanner = SCANNER) -> list[tuple[str, str]]:
    report = scanner.scan(text)
    assert report.failures == ()
    return [(detection.type, text[detection.start : detection.end]) for detection in report.detections]


def types_found(text: str) -> set[str]:
    return {kind for kind, _ in found(text)}


def with_luhn(payload: str) -> str:
    """`payload` and the check digit that makes it pass Luhn (ISO/IEC 7812-1 Annex B)."""
    return next(payload + digit for digit in string.digits if luhn(payload + digit))


def card(prefix: str, length: int) -> str:
    return with_luhn((prefix + "7" * length)[: length - 1])


def grouped(number: str, sizes: tuple[int, ...], separator: str) -> str:
    parts, at = [], 0
    for size in sizes:
        parts.append(number[at : at + size])
        at += size
    return separator.join(parts)


# -- check digits ----------------------------------------------------------------------------------------------------


def test_check_digit_algorithms_accept_published_examples_and_refuse_a_changed_digit() -> None:
    assert luhn("79927398713")  # the Luhn example of ISO/IEC 7812-1
    assert not luhn("79927398710")
    assert iban_mod97("GB82WEST12345698765432")  # ISO 13616's example
    assert not iban_mod97("GB82WEST12345698765433")
    assert verhoeff("2363")  # Verhoeff's example: 236 with check digit 3
    assert not verhoeff("2364")
    assert not any((luhn(""), luhn("4"), verhoeff("12a")))


# -- payment cards ---------------------------------------------------------------------------------------------------

VALID_CARDS = [
    ("visa", card("4", 16)),
    ("visa", card("4", 13)),
    ("visa", card("4", 19)),
    ("mastercard", card("51", 16)),
    ("mastercard", card("55", 16)),
    ("mastercard", card("2221", 16)),  # the 2-series, since 2017
    ("mastercard", card("2720", 16)),
    ("amex", "378282246310005"),
    ("amex", card("34", 15)),
    ("discover", "6011111111111117"),
    ("discover", card("644", 16)),
    ("discover", card("65", 19)),
    ("discover", card("622126", 16)),
    ("jcb", card("3528", 16)),
    ("jcb", card("3589", 19)),
    ("diners", card("300", 14)),
    ("diners", card("36", 14)),
    ("diners", card("38", 16)),
    ("unionpay", card("62", 17)),
    ("maestro", card("6759", 19)),
    ("maestro", card("5018", 12)),
]


@pytest.mark.parametrize(("scheme", "number"), VALID_CARDS)
def test_card_numbers_of_every_scheme_are_found_plain_and_grouped(scheme: str, number: str) -> None:
    assert card_scheme(number) == scheme or (scheme == "discover" and card_scheme(number) in {"discover", "unionpay"})
    sizes = {15: (4, 6, 5), 14: (4, 6, 4), 13: (4, 3, 3, 3)}.get(
        len(number), (4,) * (len(number) // 4) + (len(number) % 4,)
    )
    sizes = tuple(size for size in sizes if size)
    for written in (number, grouped(number, sizes, " "), grouped(number, sizes, "-")):
        assert found(f"Card on file: {written}.") == [("credit_card", written)]


def test_card_look_alikes_are_refused() -> None:
    visa = card("4", 16)
    wrong = visa[:-1] + str((int(visa[-1]) + 1) % 10)
    assert "credit_card" not in types_found(f"ref {wrong} closed")  # Luhn-invalid
    assert "credit_card" not in types_found(f"id {card('1234', 16)} x")  # no issuer has IIN 1
    assert "credit_card" not in types_found(f"amex? {card('37', 16)}")  # Amex numbers have 15 digits
    assert "credit_card" not in types_found(f"hash a{visa}f")  # inside a hex digest
    assert "credit_card" not in types_found(f"pi 3.{visa}")  # decimals
    assert "credit_card" not in types_found("4111 1111-1111 1111")  # mixed separators
    assert "credit_card" not in types_found(f"account PL78 {grouped(visa, (4, 4, 4, 4), ' ')} 1234")


def test_a_card_followed_by_more_digit_groups_is_found_alone() -> None:
    visa = grouped(card("4", 16), (4, 4, 4, 4), " ")
    assert found(f"cc {visa} 12 27 cvv 123") == [("credit_card", visa)]


# -- IBAN -------------------------------------------------------------------------------------------------------------

VALID_IBANS = [
    "GB82WEST12345698765432",
    "DE89370400440532013000",
    "FR1420041010050500013M02606",
    "NL91ABNA0417164300",
    "NO9386011117947",  # the shortest: 15
    "MT84MALT011000012345MTLCAST001S",  # 31
    "BE68539007547034",
    "CH9300762011623852957",
]


@pytest.mark.parametrize("iban", VALID_IBANS)
def test_ibans_of_several_countries_are_found_compact_and_in_print_format(iban: str) -> None:
    spaced = " ".join(iban[at : at + 4] for at in range(0, len(iban), 4))
    assert found(f"Wire to {iban} today") == [("iban", iban)]
    assert found(f"Wire to {spaced} EUR today") == [("iban", spaced)]


def test_iban_look_alikes_are_refused() -> None:
    assert "iban" not in types_found("GB83WEST12345698765432")  # check digits off by one
    assert "iban" not in types_found("GB82WEST1234569876543")  # one character short for GB
    assert "iban" not in types_found("QQ82WEST12345698765432")  # no such country
    assert "iban" not in types_found("GB82WEST12345698765432X")  # runs on into a word


# -- US SSN and national ids ----------------------------------------------------------------------------------------


def test_ssns_follow_the_ssa_allocation_rules() -> None:
    assert found("SSN 536-22-1234 on file") == [("us_ssn", "536-22-1234")]
    assert found("SSN 536 22 1234 on file") == [("us_ssn", "536 22 1234")]
    for refused in ("000-12-3456", "666-12-3456", "912-12-3456", "536-00-1234", "536-22-0000", "078-05-1120"):
        assert "us_ssn" not in types_found(f"SSN {refused}"), refused
    assert "us_ssn" not in types_found("SSN 536-22 1234")  # mixed separators


def test_a_plain_nine_digit_ssn_needs_its_name_nearby() -> None:
    assert found("ssn: 536221234") == [("us_ssn", "536221234")]
    assert "us_ssn" not in types_found("order 536221234 shipped")


def nir(body: str) -> str:
    number = int(body.replace("2A", "19").replace("2B", "18"))
    return f"{body}{97 - number % 97:02d}"


@pytest.mark.parametrize(
    "value",
    [
        "AB 12 34 56 C",  # UK NINO, printed in pairs
        "AB123456C",
        "12345678Z",  # Spanish DNI: 12345678 mod 23 = 14 -> Z
        "X1234567L",  # NIE: X -> 0, 01234567 mod 23 = 19 -> L
        nir("1850578006084"),  # French NIR
        nir("285022A006084"),  # Corsica
        "2345 6789 0124",  # Aadhaar 4-4-4 (Verhoeff)
    ],
)
def test_national_ids_with_valid_check_characters_are_found(value: str) -> None:
    if value.startswith("2345"):
        assert verhoeff(value.replace(" ", ""))
    assert found(f"National ID: {value}.") == [("national_id", value)]


@pytest.mark.parametrize(
    "value",
    [
        "GB 12 34 56 C",  # GB is never a NINO prefix
        "DA123456C",  # D is never a first letter
        "AB123456E",  # suffix A-D only
        "12345678A",  # wrong DNI letter
        "X1234567A",
        "2345 6789 0123",  # wrong Verhoeff digit
    ],
)
def test_national_id_look_alikes_are_refused(value: str) -> None:
    assert "national_id" not in types_found(f"Document: {value}.")


def test_weakly_checked_ids_written_plain_need_a_keyword_nearby() -> None:
    assert found("BSN: 111222333") == [("national_id", "111222333")]  # 11-proof
    assert "national_id" not in types_found("invoice 111222333")
    assert "national_id" not in types_found("BSN: 111222334")
    assert found("Aadhaar no. 234567890124") == [("national_id", "234567890124")]
    assert "national_id" not in types_found("tracking 234567890124")


# -- email, phone ----------------------------------------------------------------------------------------------------


def test_email_addresses_but_not_url_userinfo() -> None:
    assert found("From: Jane.Doe+news@corp.example.co.uk, ok") == [
        ("email_address", "Jane.Doe+news@corp.example.co.uk")
    ]
    assert found("mailto:jane@example.com") == [("email_address", "jane@example.com")]
    assert "email_address" not in types_found("https://user:pass@vault.example.com/")
    assert "email_address" not in types_found("https://good.example@evil.example/")
    assert "email_address" not in types_found("jane@localhost and @mentions")


@pytest.mark.parametrize(
    "number", ["(415) 555-2671", "415-555-2671", "+1 415-555-2671", "+14155552671", "+44 20 7946 0958"]
)
def test_phone_numbers_valid_for_libphonenumber_are_found(number: str) -> None:
    assert found(f"Call me at {number} after 5pm.") == [("phone_number", number)]


def test_phone_look_alikes_are_refused() -> None:
    for text in ("Due 2026-10-12.", "at 2027-01-01 08:30", "host 203.0.113.200 up", "v 1.2.3", "+1 555 000 0000"):
        assert "phone_number" not in types_found(text), text
    assert "phone_number" not in types_found("order 4155552671 shipped")  # bare digits, no context
    assert found("tel 4155552671") == [("phone_number", "4155552671")]


def test_phone_regions_decide_how_numbers_without_a_country_code_are_read() -> None:
    german = build_scanner(DlpConfig(phone_regions=("DE",)))
    assert found("Telefon: 030 901820", german) == [("phone_number", "030 901820")]
    assert "phone_number" not in types_found("Telefon: 030 901820")  # not a US number


# -- IP addresses ----------------------------------------------------------------------------------------------------


def test_ip_addresses_and_their_look_alikes() -> None:
    assert found("from 203.0.113.7 refused") == [("ip_address", "203.0.113.7")]
    assert found("upstream 2001:db8::8a2e:370:7334 ok") == [("ip_address", "2001:db8::8a2e:370:7334")]
    assert found("peer ::ffff:192.0.2.1 ok") == [("ip_address", "::ffff:192.0.2.1")]
    full = "2001:0db8:0000:0000:0000:ff00:0042:8329"
    assert found(f"upstream: {full}:8443") == [("ip_address", full)]
    for text in ("v1.2.3.4", "1.2.3.4.5", "RFC 6749 §4.1.2.1", "256.1.1.1", "12.03.2024", "at 12:30:45", "std::vector"):
        assert "ip_address" not in types_found(text), text
    assert "ip_address" not in types_found("NIC 0a:1b:2c:3d:4e:5f up")  # a MAC address


# -- secrets ---------------------------------------------------------------------------------------------------------

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def github_token(prefix: str, entropy: str) -> str:
    value, encoded = zlib.crc32(entropy.encode()), ""
    while value:
        value, digit = divmod(value, 62)
        encoded = BASE62[digit] + encoded
    return f"{prefix}_{entropy}{encoded.rjust(6, '0')}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


JWT = ".".join(
    [b64url(b'{"alg":"HS256","typ":"JWT"}'), b64url(b'{"sub":"user-1234","iat":1764300000}'), b64url(bytes(range(32)))]
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    + "\n".join(["MIIEowIBAAKCAQEA" + "x" * 48] * 20)
    + "\n-----END RSA PRIVATE KEY-----"
)

SECRETS = [
    ("aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_access_key", "ASIAY34FZKBOKMUTVV7A"),
    ("github_token", github_token("ghp", "Zq8rT2vLmN4xK7pW9sBdYc3hJ0fEab")),
    ("github_token", github_token("ghs", "A" * 29 + "b")),
    ("github_token", "github_pat_11ABCDEFG0123456789abc_" + "x" * 59),
    ("slack_token", "xoxb-12345678901-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("slack_token", "https://hooks.slack.com/services/T01234567/B0123456789/AbCdEfGhIjKlMnOpQrStUvWx"),
    ("google_api_key", "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"[:35]),
    ("stripe_key", "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"),
    ("stripe_key", "rk_live_" + "a" * 99),
    ("anthropic_api_key", "sk-ant-api03-" + "Ab_-" * 23 + "xAA"),
    ("anthropic_api_key", "sk-ant-admin01-" + "Zy9-" * 23 + "xAA"),
    ("openai_api_key", "sk-proj-" + "Ab12-_" * 12 + "T3BlbkFJ" + "Cd34" * 10),
    ("openai_api_key", "sk-" + "a1B2" * 5 + "T3BlbkFJ" + "c3D4" * 5),
    ("jwt", JWT),
    ("private_key", PEM),
]


@pytest.mark.parametrize(("kind", "secret"), SECRETS)
def test_provider_secrets_are_found_by_their_format(kind: str, secret: str) -> None:
    assert found(f"value: {secret}\n") == [(kind, secret)]


def test_a_token_in_a_urls_userinfo_is_found_as_itself() -> None:
    token = github_token("ghs", "vkKnbqMAA9Uz2AnNkYFlfm2KoGbPJ3")
    assert found(f"git clone https://x-access-token:{token}@github.com/acme/app.git") == [("github_token", token)]


def test_github_tokens_need_their_checksum() -> None:
    token = github_token("ghp", "Zq8rT2vLmN4xK7pW9sBdYc3hJ0fEab")
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert found(f"token {wrong}") == []
    assert found(f"GITHUB_TOKEN={wrong}") == []  # not a high-entropy secret either: a made-up token


def test_secret_look_alikes_are_refused() -> None:
    assert found("XAKIAIOSFODNN7EXAMPLE") == []  # inside a longer word
    assert found("AKIAIOSFODNN7EXAMPL") == []  # one short
    header = b64url(b"not json at all")
    assert "jwt" not in types_found(f"{header}.eyJzdWIiOiIxIn0.c2ln")
    assert found("-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----") == []


def test_an_aws_secret_key_is_found_only_as_the_value_of_a_key_naming_it() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    for written in (
        f"aws_secret_access_key = {secret}",
        f'"SecretAccessKey": "{secret}"',
        f"AWS_SECRET_ACCESS_KEY={secret}",
    ):
        assert found(written) == [("aws_secret_key", secret)], written
    assert "aws_secret_key" not in types_found(f"checksum {secret}")


def test_a_private_key_longer_than_the_bound_is_reported_from_its_begin_line() -> None:
    long_key = "-----BEGIN PRIVATE KEY-----\n" + "A" * 9000 + "\n-----END PRIVATE KEY-----"
    [(kind, value)] = found(long_key)
    assert kind == "private_key"
    assert long_key.startswith(value)
    assert len(value) <= 4096


# -- high-entropy secrets -------------------------------------------------------------------------------------------


def test_high_entropy_values_in_key_contexts() -> None:
    for written in (
        "password=Xk9#mP2$vL8qR4tZ",
        'api_key = "fde86f61bc65cb11626b160a1e1b651e"',
        "client_secret: q8Zr2Lm4Xk7Pw9sBd3",
        "passwd: /C4HFfgunm10HgurlhgZsPLoVRJcmx7Q",  # base64 may start with "/": no path
        "DB_PASSWORD=kBrONhLpCEmcxQZPsRfeW",  # random letters, no digit
    ):
        value = written.split("=")[-1].split(": ")[-1].strip(' "')
        assert found(written) == [("high_entropy_secret", value)], written
    assert shannon_entropy("aaaa") == 0.0


@pytest.mark.parametrize(
    "written",
    [
        "password=${DB_PASSWORD_FROM_ENV}",
        "password=<your-password-here-please>",
        "token = get_token_from_environment(name)",
        "token_type: urn:ietf:params:oauth:token-type:jwt",
        "secret: settings.SECRET_KEY_FROM_ENV",
        "tokens: Final[frozenset[str]] = x",
        "password=aaaaaaaaaaaaaaaaaaaaaaaa",
        "token = getTokenFromEnvironment",
        "path_to_secret: /etc/app/secrets/db_password.txt",
        "the password is Xk9#mP2$vL8qR4tZ",  # no assignment
    ],
)
def test_non_secrets_in_key_contexts_are_refused(written: str) -> None:
    assert "high_entropy_secret" not in types_found(written)


# -- hostile inputs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hostile",
    [
        "1" * 100_000,
        "a" * 100_000 + "@",
        "a" * 50_000 + "@" + "a." * 25_000,
        "QUJD" * 25_000,
        "1 " * 50_000,
        "1." * 50_000,
        ":" * 100_000,
        "@a" * 50_000,
        "-----BEGIN PRIVATE KEY-----" * 3_000,
        "password=" * 10_000,
        "\\u0040" * 20_000,
        "eyJ" + "a" * 100_000,
    ],
    ids=lambda text: repr(text[:12]),
)
def test_hostile_inputs_complete_without_failures(hostile: str) -> None:
    report = SCANNER.scan(hostile)
    assert report.failures == ()
    assert all(0 <= d.start < d.end <= len(hostile) for d in report.detections)


def test_json_payload_of_every_type_round_trips_through_the_scanner() -> None:
    """Each secret inside a JSON document (as a tool's arguments carry it) is found at its place in the document."""
    document = json.dumps({"fields": [secret for _, secret in SECRETS]})
    kinds = [kind for kind, _ in found(document)]
    assert sorted(kinds) == sorted(kind for kind, _ in SECRETS)


# -- regressions found by bench/dlp_bench.py --------------------------------------------------------------------------


def test_an_international_phone_number_is_no_card_though_it_passes_luhn() -> None:
    number = "+" + with_luhn("491512310877")  # 13 digits starting 4: a Visa, were it not for its "+"
    assert card_scheme(number[1:]) == "visa"
    assert found(f"Dial {number}, then press 2.") == [("phone_number", number)]
    assert found(f"tel={number}") == [("phone_number", number)]


def test_card_digits_glued_to_a_dash_inside_a_token_are_no_card() -> None:
    visa13 = with_luhn("477166060689")
    assert "credit_card" not in types_found(f"ref AC8NMFH9B3P-{visa13}-x9 done")
    assert "credit_card" not in types_found(f"build_7-{card('4', 16)} ok")
    # Dashes between a card's own groups, and a dash set off by spaces, still leave it a card.
    visa = card("4", 16)
    assert found(f"card {grouped(visa, (4, 4, 4, 4), '-')} ok") == [("credit_card", grouped(visa, (4, 4, 4, 4), "-"))]
    assert found(f"Total - {visa}") == [("credit_card", visa)]


@pytest.mark.parametrize(
    "text",
    ["2420 6074 3636 3634 0882 x", "se29 2420 6074 3636 3634 0882 (sepa)", "5555 5555 5555 4444 1234"],
)
def test_a_card_followed_by_one_last_group_of_four_digits_does_not_crash(text: str) -> None:
    """The group after a card was read as the start of a window, and the separator after it past the run's end."""
    assert luhn("2420607436363634")
    assert luhn("5555555555554444")
    card_text = text.removeprefix("se29 ")[:19]
    assert [(span.start, span.end) for span in CardDetector().find(text)] == [
        (text.index(card_text), text.index(card_text) + 19)
    ]
    found(text)  # and the scanner reports no detector failure


def test_a_nir_needs_a_keyword_nearby() -> None:
    """A 15-digit number starting 1 or 2 passes the NIR key one time in 97: an order number is not a NIR."""
    value = nir("1800898677554")
    assert value == "180089867755402"
    assert "national_id" not in types_found(f"Number is {value}")
    for written in (f"NIR {value}", f"N° de sécurité sociale : {value}", f"numero de securite sociale {value}"):
        assert found(written) == [("national_id", value)], written
    assert found(f"INSEE: {value[:1]} {value[1:3]} {value[3:5]} {value[5:7]} {value[7:10]} {value[10:13]} {value[13:]}")


@pytest.mark.parametrize("region", ["GB", "DE", "FR"])
def test_the_fraction_of_a_clock_time_is_no_phone_number(region: str) -> None:
    scanner = build_scanner(DlpConfig(phone_regions=("US", region)))
    for text in ("at 12:12:08.717850 ok", "ts=2026-11-28T12:12:08.717850Z", "took 00:01:30.123456"):
        assert "phone_number" not in {kind for kind, _ in found(text, scanner)}, text
    assert found("Phone: +44 20 7946 0958", scanner) == [("phone_number", "+44 20 7946 0958")]
