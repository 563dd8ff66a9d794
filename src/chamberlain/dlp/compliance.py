"""Compliance modes: presets that switch on the detectors, actions and retention a regime asks for.

Several modes combine to the strictest of each; what the tenant writes under `dlp.detectors` and `dlp.level_actions`
overrides the presets (an administrator's explicit choice wins over a default).
- GDPR (Art. 5(1)(c) data minimisation, Art. 32): personal identifiers and bank accounts redacted, contact details
  alerted on; audit kept 90 days unless a rule says otherwise (Art. 5(1)(e)).
- HIPAA (45 CFR §164.514(b)(2), the Safe Harbor identifiers): SSNs blocked, contact details redacted, restricted
  content blocked; six years of audit (§164.316(b)(2)(i)).
- SOX (§802): credentials blocked, bank accounts alerted on, restricted content blocked; seven years of audit.
- PCI DSS v4.0 (req. 3.4.1: the PAN is unreadable wherever it is displayed): card numbers blocked; one year of audit
  (req. 10.5.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chamberlain.audit.settings import RETENTION_PRESETS
from chamberlain.dlp.config import ComplianceMode, DetectorSetting, DlpConfig
from chamberlain.dlp.detection import Action, stricter
from chamberlain.dlp.detectors.registry import SECRET_TYPES
from chamberlain.dlp.levels import LevelName


@dataclass(frozen=True)
class Preset:
    actions: dict[str, Action]
    level_actions: dict[LevelName, Action] = field(default_factory=dict)
    retention_days: int = 365


_BLOCK: Action = "block"
PRESETS: dict[ComplianceMode, Preset] = {
    "gdpr": Preset(
        {"national_id": "redact", "iban": "redact", "email_address": "alert", "phone_number": "alert"},
        retention_days=RETENTION_PRESETS["gdpr"],
    ),
    "hipaa": Preset(
        {"us_ssn": "block", "email_address": "redact", "phone_number": "redact"},
        {"restricted": "block"},
        RETENTION_PRESETS["hipaa"],
    ),
    "sox": Preset(
        {**dict.fromkeys(sorted(SECRET_TYPES), _BLOCK), "iban": "alert"},
        {"restricted": "block"},
        RETENTION_PRESETS["sox"],
    ),
    "pci": Preset({"credit_card": "block"}, retention_days=RETENTION_PRESETS["pci_dss"]),
}


def effective(config: DlpConfig) -> DlpConfig:
    """`config` with its compliance modes' presets applied under what it sets itself."""
    if not config.compliance:
        return config
    actions: dict[str, Action] = {}
    level_actions: dict[LevelName, Action] = {}
    for mode in config.compliance:
        preset = PRESETS[mode]
        for entity, action in preset.actions.items():
            actions[entity] = stricter(actions.get(entity), action) or action
        for level, action in preset.level_actions.items():
            level_actions[level] = stricter(level_actions.get(level), action) or action
    detectors = {entity: DetectorSetting(action=action) for entity, action in actions.items()}
    for entity, setting in config.detectors.items():
        preset_action = detectors.get(entity, DetectorSetting()).action
        chosen = setting if setting.action is not None else setting.model_copy(update={"action": preset_action})
        detectors[entity] = chosen
    return config.model_copy(
        update={"detectors": detectors, "level_actions": level_actions | dict(config.level_actions)}
    )


def retention_days(modes: tuple[ComplianceMode, ...]) -> int | None:
    """The longest audit retention the modes ask for; None without a mode."""
    return max((PRESETS[mode].retention_days for mode in modes), default=None)
