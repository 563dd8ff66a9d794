"""The `dlp:` section of a tenant's configuration (tenancy/config.py `TenantConfig.dlp`).

Everything is on by default: the built-in detectors with their default level and action (detectors/registry.py),
clearance enforcement on results, and the external lookup gate on arguments sent to external servers and tools.
`compliance` presets (compliance.py) switch on stricter actions for GDPR, HIPAA, SOX or PCI DSS; what is written
under `detectors` and `level_actions` overrides a preset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from chamberlain.cost.budgets import webhook_url
from chamberlain.dlp.detection import Action
from chamberlain.dlp.levels import LevelName
from chamberlain.gateway.server_config import VaultReference

ComplianceMode = Literal["gdpr", "hipaa", "sox", "pci"]
EntityType = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectorSetting(_Section):
    """Overrides for one built-in detector (by entity type) or custom pattern; unset fields keep its defaults."""

    enabled: bool = True
    classification: LevelName | None = None
    action: Action | None = None


_DEFAULT_LABEL_NAMES: dict[str, LevelName] = {
    "public": "public",
    "general": "internal",
    "internal": "internal",
    "confidential": "confidential",
    "highly confidential": "restricted",
    "restricted": "restricted",
    "secret": "restricted",
}


class SourceLabels(_Section):
    """Labels the upstream puts on what it returns (an item's `_meta`, or the result's), mapped to levels.

    Microsoft Purview's default sensitivity labels (SharePoint, OneDrive) and Confluence's space and page
    classifications come as plain names; the names are compared case-insensitively."""

    fields: tuple[str, ...] = ("classification", "sensitivityLabel", "sensitivity_label", "confidentiality")
    names: dict[str, LevelName] = Field(default_factory=lambda: dict(_DEFAULT_LABEL_NAMES))


class DlpAlerts(_Section):
    """Where `alert` actions go: a Standard Webhooks POST signed with a vault secret, naming the compliance contact."""

    webhook: Annotated[str, AfterValidator(webhook_url)] | None = None
    webhook_secret: VaultReference | None = Field(None, description="SOURCE/NAME: a whsec_ secret in the vault")
    compliance_contact: str | None = Field(None, min_length=3, max_length=320)

    @model_validator(mode="after")
    def _secret_with_webhook(self) -> Self:
        if (self.webhook is None) != (self.webhook_secret is None):
            raise ValueError("a webhook needs a webhook_secret to sign its alerts, and a secret needs a webhook")
        return self


class DlpConfig(_Section):
    enabled: bool = True
    compliance: tuple[ComplianceMode, ...] = ()
    detectors: dict[EntityType, DetectorSetting] = Field(default_factory=dict)
    patterns_file: Path | None = Field(None, description="custom patterns (pii_patterns.json)")
    # The least action for any detection at a level, e.g. {restricted: block}; the stricter of it and the detector's.
    level_actions: dict[LevelName, Action] = Field(default_factory=dict)
    phone_regions: tuple[Annotated[str, Field(pattern=r"^[A-Z]{2}$")], ...] = Field(
        ("US",), description="regions whose numbers may be written without +country code"
    )
    redaction: Literal["mask", "hash"] = Field("mask", description="hash: a keyed hash, so equal values stay joinable")
    detector_timeout_ms: float = Field(50.0, gt=0, le=10_000, description="custom patterns' time per message")
    # The level of content nothing classifies (no declared level, label, rule or detection).
    default_level: LevelName = "public"
    # Levels external servers and tools may receive; unset: the levels whose classification rule says
    # external_lookup: true, and public.
    external_levels: tuple[LevelName, ...] | None = None
    llm_gate: bool = Field(False, description="apply the external lookup gate to what is sent to the LLM proxy")
    source_labels: SourceLabels = SourceLabels()
    alerts: DlpAlerts = DlpAlerts()
    fingerprint_ttl: int = Field(
        3600, ge=0, le=30 * 86_400, description="seconds content delivered at confidential or above is recognised"
    )
