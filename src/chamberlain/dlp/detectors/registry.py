"""Every built-in detector, with the entity type it reports and that type's default level and action.

Defaults: provider secrets, private keys, JWTs and high-entropy secrets are restricted and redacted; payment cards,
SSNs and national ids confidential and redacted; IBANs confidential and allowed (they are shared to be paid);
email addresses, phone numbers and IP addresses internal and allowed. A tenant's `dlp.detectors` overrides them per
entity type, and `dlp.level_actions` raises the action per level (scanner.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from chamberlain.dlp.detection import Action
from chamberlain.dlp.detectors import Detector
from chamberlain.dlp.detectors.bank_accounts import IbanDetector
from chamberlain.dlp.detectors.contact import EmailDetector, PhoneDetector
from chamberlain.dlp.detectors.entropy import HighEntropyDetector
from chamberlain.dlp.detectors.national_ids import NATIONAL_ID_DETECTORS, SSN_DETECTORS
from chamberlain.dlp.detectors.network import IpAddressDetector
from chamberlain.dlp.detectors.payment_cards import CardDetector
from chamberlain.dlp.detectors.secrets import SECRET_DETECTORS
from chamberlain.dlp.levels import Level

__all__ = ["BUILTIN_TYPES", "DEFAULTS", "Builtin", "builtin_detectors"]


@dataclass(frozen=True, slots=True)
class Builtin:
    classification: Level
    action: Action


_SECRET = Builtin(Level.RESTRICTED, "redact")
_PERSONAL = Builtin(Level.CONFIDENTIAL, "redact")

# Entity type -> its defaults.
DEFAULTS: dict[str, Builtin] = {
    "credit_card": _PERSONAL,
    "iban": Builtin(Level.CONFIDENTIAL, "allow"),
    "us_ssn": _PERSONAL,
    "national_id": _PERSONAL,
    "email_address": Builtin(Level.INTERNAL, "allow"),
    "phone_number": Builtin(Level.INTERNAL, "allow"),
    "ip_address": Builtin(Level.INTERNAL, "allow"),
    "aws_access_key": _SECRET,
    "aws_secret_key": _SECRET,
    "github_token": _SECRET,
    "slack_token": _SECRET,
    "google_api_key": _SECRET,
    "stripe_key": _SECRET,
    "anthropic_api_key": _SECRET,
    "openai_api_key": _SECRET,
    "private_key": _SECRET,
    "jwt": _SECRET,
    "high_entropy_secret": _SECRET,
}
BUILTIN_TYPES = frozenset(DEFAULTS)
SECRET_TYPES = frozenset(entity for entity, defaults in DEFAULTS.items() if defaults is _SECRET)  # credentials


def builtin_detectors(phone_regions: tuple[str, ...] = ("US",)) -> tuple[Detector, ...]:
    """Every built-in detector; `phone_regions` are where numbers written without +country code are dialled."""
    return (
        CardDetector(),
        IbanDetector(),
        *SSN_DETECTORS,
        *NATIONAL_ID_DETECTORS,
        EmailDetector(),
        PhoneDetector(regions=phone_regions),
        IpAddressDetector(),
        *SECRET_DETECTORS,
        HighEntropyDetector(),
    )
