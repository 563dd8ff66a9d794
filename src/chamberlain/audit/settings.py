"""The `audit:` section of chamberlain.yaml: levels and retention by classification, what must be durable first."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chamberlain.audit.events import FAIL_CLOSED_BY_DEFAULT, Action, AuditLevel
from chamberlain.audit.export.settings import Sinks

# Retention presets, in days: PCI DSS 10.5.1 (one year), HIPAA §164.316(b)(2)(i) (six years), SOX §802 / SEC
# Rule 2-06 (seven years); GDPR Art. 5(1)(e) keeps no longer than needed, and erases by crypto-shredding.
RETENTION_PRESETS: dict[str, int] = {"pci_dss": 365, "hipaa": 6 * 365, "sox": 7 * 365, "gdpr": 90}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassificationRule(_Model):
    """Data whose name matches `pattern` has this classification, is kept this long and audited at this level."""

    pattern: str
    classification: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    external_lookup: bool = False
    retention_days: int = Field(ge=1, le=36_500)
    audit_level: AuditLevel = "summary"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as problem:
            raise ValueError(f"not a regular expression: {problem}") from None
        return pattern


class AuditSettings(_Model):
    enabled: bool = True
    batch_size: int = Field(1000, ge=1, le=100_000, description="events written per group commit at most")
    queue_limit: int = Field(1_000_000, ge=1000, description="events waiting to be written before new ones are refused")
    commit_delay: float = Field(
        0.02, ge=0, le=1, description="seconds a trickle of events may wait to share a commit (durable ones never do)"
    )
    checkpoint_interval: float = Field(300.0, gt=0, description="seconds between signed checkpoints")
    # Actions whose record must be committed before the action is acknowledged; refused when the log is down.
    fail_closed: tuple[Action, ...] = tuple(sorted(FAIL_CLOSED_BY_DEFAULT))
    default_level: AuditLevel = "detailed"
    default_retention_days: int = Field(365, ge=1, le=36_500)
    retention_preset: Literal["pci_dss", "hipaa", "sox", "gdpr"] | None = None
    classification_rules: tuple[ClassificationRule, ...] = ()
    sinks: Sinks = ()  # SIEM exports (audit/export/): syslog (CEF), webhook and file (OCSF)

    def retained_for(self, days: int | None) -> AuditSettings:
        """These settings with `days` as the retention of events no rule covers (a tenant's compliance modes);
        unchanged when None."""
        if days is None:
            return self
        return self.model_copy(update={"default_retention_days": days, "retention_preset": None})

    def level_for(self, classification: str) -> AuditLevel:
        for rule in self.classification_rules:
            if rule.classification == classification:
                return rule.audit_level
        return self.default_level

    def retention_days_for(self, classification: str) -> int:
        for rule in self.classification_rules:
            if rule.classification == classification:
                return rule.retention_days
        if self.retention_preset is not None:
            return RETENTION_PRESETS[self.retention_preset]
        return self.default_retention_days
