"""Credentials of the major providers, PEM private keys and JWTs, each by its documented format.

Every pattern starts with the provider's literal prefix, which the `required` prefilter looks for first, and is
bounded on both sides so that a token is not found inside a longer word. Where the format carries a checksum it is
verified: GitHub's classic tokens end in the CRC32 of their random part in base62 ("Behind GitHub's new
authentication token formats", GitHub blog, 2021-04-05). A JWT (RFC 7519) must have a header that decodes to a JSON
object naming its "alg" (RFC 7515 §4.1.1); a PEM private key (RFC 7468 §10-11, and OpenSSH's PROTOCOL.key) runs
from its BEGIN line to the matching END line, at most PEM_MAX_LENGTH characters (see there).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from chamberlain.dlp.detectors import RegexDetector, Span, Trigger
from chamberlain.dlp.detectors.assignments import ascii_lower, assignments

__all__ = ["PEM_MAX_LENGTH", "SECRET_DETECTORS"]

# A PEM block longer than this is reported as its first PEM_MAX_LENGTH characters (its BEGIN line and the start of
# its body, which is what must not leak first). 4096 characters hold an RSA-4096 key in PKCS#1 or PKCS#8 (about
# 3300), every EC and Ed25519 key, and OpenSSH keys up to RSA-4096. The bound keeps what a stream holds back small.
PEM_MAX_LENGTH = 4096
_PEM_BODY_MAX = PEM_MAX_LENGTH - 2 * 80  # room for the BEGIN and END lines
JWT_MAX_LENGTH = 4096

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def _github_checksum_ok(token: str) -> bool:
    random_part, checksum = token[4:34], token[34:]
    value = binascii.crc32(random_part.encode("ascii"))
    encoded = ""
    while value:
        value, digit = divmod(value, 62)
        encoded = _BASE62[digit] + encoded
    return encoded.rjust(6, "0") == checksum


def _jwt_header_ok(token: str) -> bool:
    header = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(decoded, dict) and isinstance(decoded.get("alg"), str)


_AWS_SECRET_KEY_NAME = re.compile(r"aws[_.-]?secret|secret[_.-]?access[_.-]?key")
_AWS_SECRET_VALUE = re.compile(r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


@dataclass(frozen=True, slots=True)
class AwsSecretKeyDetector:
    """An AWS secret access key is 40 base64 characters with no prefix: found only as the value of a key naming it
    (aws_secret_access_key, AWS_SECRET_ACCESS_KEY, SecretAccessKey as STS returns it, aws_secret). A bare
    `secret_key` is anybody's: its value is left to the high-entropy detector."""

    trigger: ClassVar[Trigger] = Trigger(("secret",), folded=True)  # the keyword `assignments` starts from
    name: str = "aws_secret_key"
    type: str = "aws_secret_key"
    max_length: int = 40
    score: float = 0.9

    def find(self, text: str) -> Iterator[Span]:
        lowered = ascii_lower(text)
        for assignment in assignments(text, lowered, ("secret",)):
            key_start = max(0, assignment.keyword - 4)
            if not _AWS_SECRET_KEY_NAME.search(lowered, key_start, assignment.key_end):
                continue
            match = _AWS_SECRET_VALUE.match(text, assignment.value)
            if match is not None:
                yield Span(match.start(), match.end(), self.score)


def _token(prefix: str, body: str) -> re.Pattern[str]:
    """The literal `prefix` + `body`, not inside a longer run of token characters on either side.

    The lookbehind follows the prefix (it looks back past it) so that the pattern starts with a literal, which the
    regular expression engine finds at memchr speed instead of trying every position of the text."""
    return re.compile(rf"{re.escape(prefix)}(?<![A-Za-z0-9_-].{{{len(prefix)}}}){body}(?![A-Za-z0-9_-])", re.DOTALL)


SECRET_DETECTORS = (
    # AWS IAM unique identifiers: AKIA (long-term access key), ASIA (STS temporary); 16 base32 characters follow.
    RegexDetector(
        "aws_access_key",
        "aws_access_key",
        re.compile(r"A(?<![A-Za-z0-9]A)(?:KIA|SIA)[A-Z2-7]{16}(?![A-Za-z0-9])"),
        score=0.95,
        max_length=20,
        required=("AKIA", "ASIA"),
    ),
    AwsSecretKeyDetector(),
    RegexDetector(
        "github_token",
        "github_token",
        _token("gh", "[pousr]_[A-Za-z0-9]{36}"),
        score=1.0,
        max_length=40,
        validate=_github_checksum_ok,
        required=("gh",),
    ),
    # Fine-grained personal access tokens: github_pat_, 22 characters, "_", 59 characters (no published checksum).
    RegexDetector(
        "github_token.fine_grained",
        "github_token",
        _token("github_pat_", "[A-Za-z0-9]{22}_[A-Za-z0-9_]{59}"),
        score=0.95,
        max_length=93,
        required=("github_pat_",),
    ),
    # Slack: xoxb (bot), xoxp (user), xoxa/xoxo/xoxs/xoxr, and app-level xapp tokens: dash-separated parts.
    RegexDetector(
        "slack_token",
        "slack_token",
        _token("x", "(?:ox[abposr]|app)-[0-9A-Za-z]{1,64}(?:-[0-9A-Za-z]{1,64}){2,5}"),
        score=0.95,
        max_length=256,
        required=("xox", "xapp-"),
    ),
    RegexDetector(
        "slack_token.webhook",
        "slack_token",
        re.compile(
            r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_]{1,64}(?:/[A-Za-z0-9_]{1,64}){1,4}"
        ),
        score=0.95,
        max_length=256,
        required=("hooks.slack.com",),
    ),
    RegexDetector(
        "google_api_key",
        "google_api_key",
        _token("AIza", "[0-9A-Za-z_-]{35}"),
        score=0.95,
        max_length=39,
        required=("AIza",),
    ),
    RegexDetector(
        "stripe_key",
        "stripe_key",
        _token("sk_", "(?:live|test)_[0-9A-Za-z]{24,247}"),
        score=0.95,
        max_length=255,
        required=("sk_live_", "sk_test_"),
    ),
    RegexDetector(
        "stripe_key.restricted",
        "stripe_key",
        _token("rk_", "(?:live|test)_[0-9A-Za-z]{24,247}"),
        score=0.95,
        max_length=255,
        required=("rk_live_", "rk_test_"),
    ),
    # Anthropic: sk-ant-api03-... (API keys) and sk-ant-admin01-... (Admin API keys), base64url bodies.
    RegexDetector(
        "anthropic_api_key",
        "anthropic_api_key",
        _token("sk-ant-", "(?:api|admin)[0-9]{2}-[A-Za-z0-9_-]{32,256}"),
        score=0.95,
        max_length=280,
        required=("sk-ant-",),
    ),
    # OpenAI: project (sk-proj-), service account (sk-svcacct-) and admin (sk-admin-) keys; older user keys hide
    # "T3BlbkFJ" (base64 of "OpenAI") between two 20-character halves.
    RegexDetector(
        "openai_api_key",
        "openai_api_key",
        _token("sk-", "(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,256}"),
        score=0.95,
        max_length=280,
        required=("sk-proj-", "sk-svcacct-", "sk-admin-"),
    ),
    RegexDetector(
        "openai_api_key.legacy",
        "openai_api_key",
        _token("sk-", "[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}"),
        score=0.95,
        max_length=51,
        required=("T3BlbkFJ",),
    ),
    # The body allows base64, line breaks, RFC 1421 headers (Proc-Type, DEK-Info) and the "\n" of a JSON-escaped key;
    # the lazy, bounded body stops at the first END line. Without an END within the bound, the BEGIN line and the
    # body up to the bound are reported.
    RegexDetector(
        "private_key",
        "private_key",
        re.compile(
            r"-----BEGIN (?P<kind>(?:[A-Z0-9]{1,16} ){0,3})PRIVATE KEY-----"
            rf"(?:[A-Za-z0-9+/=\s\\:,-]{{0,{_PEM_BODY_MAX}}}?-----END (?P=kind)PRIVATE KEY-----"
            rf"|[A-Za-z0-9+/=\s\\:,-]{{0,{_PEM_BODY_MAX}}})"
        ),
        score=1.0,
        max_length=PEM_MAX_LENGTH,
        required=("PRIVATE KEY-----",),
    ),
    RegexDetector(
        "jwt",
        "jwt",
        _token("eyJ", "[A-Za-z0-9_-]{8,1024}\\.eyJ[A-Za-z0-9_-]{4,2048}\\.[A-Za-z0-9_-]{0,1024}"),
        score=0.95,
        max_length=JWT_MAX_LENGTH,
        validate=_jwt_header_ok,
        required=("eyJ",),
    ),
)
