"""What a detector reports, and what is done about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from chamberlain.dlp.levels import Level

# allow: pass (the level still counts); redact: mask or keyed-hash the span; block: refuse the message (or withhold
# the item); alert: pass, and send a signed webhook to the compliance contact. Every detection is audited.
Action = Literal["allow", "redact", "block", "alert"]
ACTION_SEVERITY: dict[Action, int] = {"allow": 0, "alert": 1, "redact": 2, "block": 3}


def stricter(first: Action | None, second: Action | None) -> Action | None:
    """The more severe of two actions; None only when both are."""
    if first is None or (second is not None and ACTION_SEVERITY[second] > ACTION_SEVERITY[first]):
        return second
    return first


# Where the detected text was found: as written, inside a JSON string's escapes, or inside a base64 run.
Encoding = Literal["raw", "json", "base64"]


@dataclass(frozen=True, slots=True)
class Detection:
    type: str  # entity type: "credit_card", "iban", "us_ssn", "email_address", "aws_access_key", a custom name...
    start: int  # character offsets into the scanned text, half-open: text[start:end] is what was found
    end: int
    score: float  # confidence, 0..1 (validated by a checksum: 1.0)
    classification: Level
    action: Action
    encoding: Encoding = "raw"


@dataclass(frozen=True, slots=True)
class DetectorFailure:
    """A detector that raised or ran out of time on some input: the input is then treated as restricted."""

    detector: str
    reason: Literal["timeout", "error"]


@dataclass(frozen=True, slots=True)
class ScanReport:
    detections: tuple[Detection, ...] = ()
    failures: tuple[DetectorFailure, ...] = ()

    @property
    def level(self) -> Level:
        """The highest level found; restricted when a detector failed (fail closed)."""
        if self.failures:
            return Level.RESTRICTED
        return max((detection.classification for detection in self.detections), default=Level.PUBLIC)
