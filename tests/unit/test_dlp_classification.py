"""Classification pieces: rules (with their time limit), source labels, fingerprints, compliance presets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chamberlain.audit.settings import ClassificationRule
from chamberlain.dlp.compliance import effective, retention_days
from chamberlain.dlp.config import DetectorSetting, DlpConfig, SourceLabels
from chamberlain.dlp.fingerprints import SHINGLE_WORDS, Fingerprints
from chamberlain.dlp.labels import LabelReader
from chamberlain.dlp.levels import Level
from chamberlain.dlp.rules import ContentRules


def rule(pattern: str, classification: str, *, external: bool = False) -> ClassificationRule:
    return ClassificationRule(
        pattern=pattern, classification=classification, external_lookup=external, retention_days=30
    )


def test_the_levels_are_ordered_and_parsed_by_name() -> None:
    assert Level.PUBLIC < Level.INTERNAL < Level.CONFIDENTIAL < Level.RESTRICTED
    assert Level.parse(" Confidential ") is Level.CONFIDENTIAL
    with pytest.raises(ValueError, match="use one of public, internal, confidential, restricted"):
        Level.parse("secret")


def test_the_highest_matching_rule_wins_and_other_labels_are_ignored() -> None:
    rules = ContentRules(
        [
            rule("customer_data", "confidential"),
            rule("m&a", "restricted"),
            rule("wiki", "public", external=True),
            rule("anything", "pii-retention-only"),  # not a level: it only drives audit retention
        ],
        timeout=0.05,
    )
    assert rules.level_of(["wiki page about customer_data"]).level is Level.CONFIDENTIAL
    assert rules.level_of(["customer_data", "m&a plans"]).level is Level.RESTRICTED
    assert rules.level_of(["nothing relevant", "anything"]).level is Level.PUBLIC
    assert rules.external == frozenset({Level.PUBLIC})


def test_a_rule_that_backtracks_catastrophically_times_out_as_restricted() -> None:
    rules = ContentRules([rule("(x+x+)+y", "internal")], timeout=0.02)
    match = rules.level_of(["x" * 5000])
    assert match.failed
    assert match.level is Level.RESTRICTED


def test_labels_from_the_item_or_its_meta_map_to_levels() -> None:
    reader = LabelReader(SourceLabels())
    assert reader.level_of({"_meta": {"sensitivityLabel": "General"}}) is Level.INTERNAL
    assert reader.level_of({"sensitivityLabel": {"displayName": "Highly Confidential"}}) is Level.RESTRICTED
    assert reader.level_of({"classification": "public", "_meta": {"classification": "confidential"}}) is (
        Level.CONFIDENTIAL
    )
    assert reader.level_of({"title": "no label"}) is None


@pytest.mark.parametrize("label", ["Top Secret Squirrel", 42, ["confidential"], {"id": "x"}])
def test_an_unknown_label_counts_as_restricted(label: object) -> None:
    assert LabelReader(SourceLabels()).level_of({"classification": label}) is Level.RESTRICTED


DOCUMENT = "the quarterly review shows Globex doubling its order volume before the summer holidays begin"


def test_a_run_of_words_from_delivered_content_is_recognised_elsewhere() -> None:
    prints = Fingerprints(ttl=60)
    prints.remember(DOCUMENT, Level.CONFIDENTIAL)
    words = DOCUMENT.split()
    assert prints.level_of("FYI: " + " ".join(words[3 : 3 + SHINGLE_WORDS]) + "!") is Level.CONFIDENTIAL
    assert prints.level_of(" ".join(words[: SHINGLE_WORDS - 1])) is None  # too short to be distinctive
    assert prints.level_of("an unrelated sentence about the weather in Paris this week") is None


def test_internal_content_is_not_fingerprinted_and_expired_prints_are_forgotten() -> None:
    prints = Fingerprints(ttl=60)
    prints.remember(DOCUMENT, Level.INTERNAL)
    assert prints.level_of(DOCUMENT) is None
    expired = Fingerprints(ttl=0)
    expired.remember(DOCUMENT, Level.RESTRICTED)
    assert expired.level_of(DOCUMENT) is None


def test_fingerprints_are_bounded() -> None:
    prints = Fingerprints(ttl=60, max_entries=10)
    for index in range(50):
        prints.remember(f"{DOCUMENT} {index}", Level.RESTRICTED)
    assert len(prints._seen) == 10


@given(st.text(max_size=300))
def test_fingerprinting_any_text_never_fails(text: str) -> None:
    prints = Fingerprints(ttl=60)
    prints.remember(text, Level.CONFIDENTIAL)
    found = prints.level_of(text)
    assert found in (None, Level.CONFIDENTIAL)


def test_compliance_presets_combine_to_the_strictest_and_yield_to_explicit_settings() -> None:
    config = effective(
        DlpConfig(
            compliance=("pci", "hipaa", "gdpr"),
            detectors={"us_ssn": DetectorSetting(action="alert"), "iban": DetectorSetting(classification="restricted")},
        )
    )
    assert config.detectors["credit_card"].action == "block"  # PCI
    assert config.detectors["email_address"].action == "redact"  # HIPAA's redact beats GDPR's alert
    assert config.detectors["us_ssn"].action == "alert"  # the administrator's own choice wins
    assert config.detectors["iban"].action == "redact"
    assert config.detectors["iban"].classification == "restricted"
    assert config.level_actions == {"restricted": "block"}
    assert retention_days(("gdpr", "hipaa")) == 6 * 365
    assert retention_days(()) is None
    assert effective(DlpConfig()) == DlpConfig()
