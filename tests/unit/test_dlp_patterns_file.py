"""Custom DLP patterns, pii_patterns.json (issue 8, "Detectors"): both file shapes load, the shipped example works
with the scanner, and every error names the file, the entry (index and name) and the key at fault."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chamberlain.dlp.config import DlpConfig
from chamberlain.dlp.detection import Detection
from chamberlain.dlp.levels import Level
from chamberlain.dlp.patterns_file import CustomPattern, PatternsFileError, load_patterns
from chamberlain.dlp.scanner import build_scanner

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pii_patterns.json"


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "pii_patterns.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


def test_a_list_and_an_object_with_patterns_load_alike(tmp_path: Path) -> None:
    entry = {"name": "employee_id", "regex": r"\bEMP-\d{6}\b"}
    from_list = load_patterns(write(tmp_path, [entry]))
    from_object = load_patterns(write(tmp_path, {"patterns": [entry]}))
    assert from_list == from_object == (CustomPattern(name="employee_id", regex=r"\bEMP-\d{6}\b"),)
    [pattern] = from_list
    assert (pattern.validator, pattern.classification, pattern.action, pattern.score) == (
        None,
        "confidential",
        "alert",
        0.8,
    )


def test_the_example_file_loads_and_its_patterns_detect() -> None:
    patterns = load_patterns(EXAMPLE)
    scanner = build_scanner(DlpConfig(), patterns)
    text = "EMP-004211 joined Project Kestrel; loyalty LC-4111-0000-0008 and LC-4111-0000-0009; ref RF18539007547034"
    found = [(d.type, text[d.start : d.end], d.classification) for d in scanner.scan(text).detections]

    assert found == [
        ("employee_id", "EMP-004211", Level.INTERNAL),
        ("project_codename", "Project Kestrel", Level.RESTRICTED),
        ("loyalty_card", "LC-4111-0000-0008", Level.CONFIDENTIAL),
        ("creditor_reference", "RF18539007547034", Level.CONFIDENTIAL),
    ]


def error_for(tmp_path: Path, document: Any) -> str:
    path = write(tmp_path, document)
    with pytest.raises(PatternsFileError) as caught:
        load_patterns(path)
    assert str(path) in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([{"name": "a_b", "regex": "x", "colour": "red"}], "pattern #0 (a_b): colour"),
        ([{"name": "ok", "regex": "x"}, {"name": "bad", "regex": "(unclosed"}], "pattern #1 (bad): regex"),
        ([{"name": "v", "regex": "x", "validator": "crc"}], "pattern #0 (v): validator"),
        ([{"name": "s", "regex": "x", "score": 1.5}], "pattern #0 (s): score"),
        ([{"name": "c", "regex": "x", "classification": "secret"}], "pattern #0 (c): classification"),
        ([{"name": "a", "regex": "x", "action": "delete"}], "pattern #0 (a): action"),
        ([{"name": "Bad Name", "regex": "x"}], "pattern #0 (Bad Name): name"),
        ([{"name": "credit_card", "regex": "x"}], "pattern #0 (credit_card): name"),
        ([{"regex": "x"}], "pattern #0: name"),
        ([{"name": "twice", "regex": "x"}, {"name": "twice", "regex": "y"}], "pattern #1 (twice): name"),
        (["not an object"], "pattern #0"),
    ],
)
def test_errors_name_the_entry_and_the_key(tmp_path: Path, entries: list[Any], expected: str) -> None:
    assert expected in error_for(tmp_path, entries)


def test_file_level_errors_name_the_file(tmp_path: Path) -> None:
    assert "not JSON" in error_for(tmp_path, "{nope")
    assert "list of patterns" in error_for(tmp_path, {"patterns": {"name": "x"}})
    assert "unknown key 'extra'" in error_for(tmp_path, {"patterns": [], "extra": 1})
    with pytest.raises(PatternsFileError, match="cannot read"):
        load_patterns(tmp_path / "missing.json")


def test_detections_from_custom_patterns_are_plain_detections() -> None:
    scanner = build_scanner(DlpConfig(), [CustomPattern(name="ticket", regex=r"TCK-\d+", action="allow")])
    assert scanner.scan("see TCK-42").detections == (Detection("ticket", 4, 10, 0.8, Level.CONFIDENTIAL, "allow"),)
