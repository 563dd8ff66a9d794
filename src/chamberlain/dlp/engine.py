"""One tenant's data protection: its detectors, classification rules, source labels and fingerprints, built from
its `dlp:` configuration, and the two questions the gateway asks of them: what level is this, and what is left
of it once the detectors' actions are applied."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from chamberlain.audit.settings import ClassificationRule
from chamberlain.dlp.compliance import effective
from chamberlain.dlp.config import DlpConfig
from chamberlain.dlp.detection import Detection, DetectorFailure
from chamberlain.dlp.fingerprints import Fingerprints
from chamberlain.dlp.labels import LabelReader
from chamberlain.dlp.levels import Level
from chamberlain.dlp.patterns_file import CustomPattern, load_patterns
from chamberlain.dlp.rules import ContentRules
from chamberlain.dlp.scanner import build_scanner

logger = logging.getLogger(__name__)

MIN_SCANNED = 5  # shorter strings hold nothing a detector finds (the shortest, an IPv4 address, is 7 characters)


@dataclass(slots=True)
class Grade:
    """A level and what raised it to there: "label", "rule", "fingerprint", "server", or entity types."""

    level: Level
    sources: set[str] = field(default_factory=set)

    def raise_to(self, level: Level, source: str) -> None:
        if level > self.level:
            self.level = level
            self.sources.add(source)
        elif level == self.level and level > Level.PUBLIC:
            self.sources.add(source)


@dataclass(slots=True)
class Inspection:
    """What was found in a group of strings (one item of a result, or one request's arguments)."""

    whole: Grade  # everything found
    sent: Grade  # what is left once the `redact` actions are applied: what leaves if the content is sent on
    detections: list[tuple[int, Detection]] = field(default_factory=list)  # (index of the string, detection)
    failures: list[DetectorFailure] = field(default_factory=list)

    @classmethod
    def at(cls, level: Level) -> Inspection:
        return cls(Grade(level), Grade(level))

    @property
    def level(self) -> Level:
        return self.whole.level

    @property
    def sources(self) -> set[str]:
        return self.whole.sources

    def raise_to(self, level: Level | None, source: str, *, redacted: bool = False) -> None:
        if level is None:
            return
        self.whole.raise_to(level, source)
        if not redacted:
            self.sent.raise_to(level, source)


class DlpEngine:
    def __init__(self, config: DlpConfig, rules: Sequence[ClassificationRule], redaction_key: bytes) -> None:
        self.config = effective(config)
        self.enabled = config.enabled
        # A patterns file that cannot be read or is invalid fails closed: the tenant's own detectors cannot run,
        # so everything is treated as restricted until it is fixed (and every inspection says why).
        self.unusable: str | None = None
        patterns: tuple[CustomPattern, ...] = ()
        if config.patterns_file is not None:
            try:
                patterns = load_patterns(config.patterns_file)
            except (OSError, ValueError) as problem:
                self.unusable = str(problem)
                logger.error("data protection: custom patterns not loaded, content treated as restricted: %s", problem)
        self.scanner = build_scanner(self.config, patterns)
        self.rules = ContentRules(rules, timeout=self.config.detector_timeout_ms / 1000)
        self.labels = LabelReader(self.config.source_labels)
        self.fingerprints = Fingerprints(ttl=self.config.fingerprint_ttl)
        self.default_level = Level.parse(self.config.default_level)
        if self.config.external_levels is not None:
            self.external_levels = frozenset(Level.parse(name) for name in self.config.external_levels)
        else:
            self.external_levels = frozenset({Level.PUBLIC}) | self.rules.external
        self._redaction_key = redaction_key

    def inspect(self, strings: Sequence[str], names: Iterable[str] = (), *, fingerprints: bool = False) -> Inspection:
        """The level of `strings` (content) and `names` (tool names, URIs): the highest of the default level, the
        rules, the detectors (a failed detector counts as restricted) and, when asked, the fingerprints of content
        delivered earlier."""
        found = Inspection.at(self.default_level)
        if self.unusable is not None:
            found.failures.append(DetectorFailure("patterns_file", "error"))
            found.raise_to(Level.RESTRICTED, "detector_failure")
        if self.rules:
            match = self.rules.level_of([*names, *strings])
            found.raise_to(match.level, "rule")
            if match.failed:
                found.failures.append(DetectorFailure("classification_rules", "timeout"))
        for index, text in enumerate(strings):
            if len(text) < MIN_SCANNED:
                continue
            report = self.scanner.scan(text)
            for detection in report.detections:
                found.detections.append((index, detection))
                found.raise_to(detection.classification, detection.type, redacted=detection.action == "redact")
            if report.failures:
                found.failures.extend(report.failures)
                found.raise_to(Level.RESTRICTED, "detector_failure")
            if fingerprints:
                found.raise_to(self.fingerprints.level_of(text), "fingerprint")
        return found

    def external_permits(self, level: Level) -> bool:
        return level in self.external_levels

    def redacted(self, text: str, detections: Iterable[Detection]) -> str:
        """`text` with each span to redact replaced: by its type, or (redaction: hash) by its type and a keyed hash
        of the value, so the same value is recognisable across messages without being readable."""
        pieces: list[str] = []
        position = 0
        for detection in sorted(detections, key=lambda found: found.start):
            if detection.start < position:
                continue  # overlapping spans: the first one covers it
            pieces.append(text[position : detection.start])
            pieces.append(self._replacement(detection.type, text[detection.start : detection.end]))
            position = detection.end
        pieces.append(text[position:])
        return "".join(pieces)

    def _replacement(self, entity: str, value: str) -> str:
        if self.config.redaction == "hash":
            digest = hmac.new(self._redaction_key, value.encode(), hashlib.sha256).hexdigest()[:16]
            return f"[{entity}:{digest}]"
        return f"[REDACTED:{entity}]"
