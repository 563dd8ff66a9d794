"""`chamberlain dlp scan` and `dlp classify`: the tenant's detectors, rules and custom patterns over a file or
standard input, one JSON line per detection with character offsets, then a summary; mistakes as one clear line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from chamberlain.cli.main import app

CARD = "5555 5555 5555 4444"  # a 51-55 Mastercard test number (Luhn-valid)
CONFIG = """
audit:
  classification_rules:
    - {pattern: "customer_data", classification: confidential, retention_days: 30}
dlp:
  patterns_file: PATTERNS
  # These tests are about what a scan reports, not the time limit (tests/unit/test_dlp_scanner.py covers it): a
  # loaded CI machine must not turn a 10 µs match into a timeout.
  detector_timeout_ms: 5000
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("dlp-cli")
    patterns = directory / "pii_patterns.json"
    patterns.write_text(json.dumps([{"name": "employee_id", "regex": r"\bEMP-\d{6}\b", "classification": "internal"}]))
    (directory / "chamberlain.yaml").write_text(CONFIG.replace("PATTERNS", str(patterns)))
    assert CliRunner().invoke(app, ["init", "--data-dir", str(directory)]).exit_code == 0
    return directory


def cli(data_dir: Path, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, ["dlp", *args, "--data-dir", str(data_dir)], input=stdin)


def lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_scan_prints_each_detection_with_character_offsets_then_a_summary(data_dir: Path) -> None:
    text = f"Müller's card: {CARD}; badge EMP-123456; mail ops@example.com"
    *found, summary = lines(cli(data_dir, "scan", "-", stdin=text))
    by_type = {line["type"]: line for line in found}
    for entity, value in (("credit_card", CARD), ("employee_id", "EMP-123456"), ("email_address", "ops@example.com")):
        line = by_type[entity]
        assert text[line["start"] : line["end"]] == value  # offsets count characters (ü is one), not bytes
    assert by_type["credit_card"]["classification"] == "confidential"
    assert by_type["credit_card"]["action"] == "redact"
    assert by_type["employee_id"]["classification"] == "internal"
    assert summary == {
        "summary": {
            "detections": 3,
            "by_type": {"credit_card": 1, "email_address": 1, "employee_id": 1},
            "classification": "confidential",
            "failed_detectors": [],
        }
    }


def test_scan_reads_a_file_and_finds_a_value_across_its_read_boundary(data_dir: Path, tmp_path: Path) -> None:
    from chamberlain.cli.dlp import CHUNK_BYTES

    padding = "x " * ((CHUNK_BYTES - 8) // 2)
    path = tmp_path / "big.txt"
    path.write_text(padding + CARD + " end")
    *found, summary = lines(cli(data_dir, "scan", str(path)))
    assert [(line["type"], line["start"]) for line in found] == [("credit_card", len(padding))]
    assert summary["summary"]["detections"] == 1


def test_scan_sees_through_json_escapes_and_base64(data_dir: Path) -> None:
    import base64

    payload = json.dumps({"note": "write to ops\u0040example.com"}, ensure_ascii=True).replace("@", "\\u0040")
    encoded = base64.b64encode(f"card {CARD} on file".encode()).decode()
    found = lines(cli(data_dir, "scan", "-", stdin=payload + "\n" + encoded))[:-1]
    assert {(line["type"], line["encoding"]) for line in found} >= {
        ("email_address", "json"),
        ("credit_card", "base64"),
    }


def test_classify_prints_the_level_and_what_decided_it(data_dir: Path) -> None:
    result = cli(data_dir, "classify", "-", stdin="customer_data for the board")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "confidential"
    assert "rule" in result.stderr
    plain = cli(data_dir, "classify", "-", stdin="the weather is fine")
    assert plain.stdout.strip() == "public"


def test_mistakes_are_one_clear_line(data_dir: Path, tmp_path: Path) -> None:
    missing = cli(data_dir, "scan", str(tmp_path / "nope.txt"))
    assert missing.exit_code == 1
    assert "nope.txt: No such file or directory" in missing.output
    assert "Traceback" not in missing.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "patterns.json").write_text(json.dumps([{"name": "x", "regex": "("}]))
    (broken / "chamberlain.yaml").write_text(f"dlp:\n  patterns_file: {broken / 'patterns.json'}\n")
    assert CliRunner().invoke(app, ["init", "--data-dir", str(broken)]).exit_code == 0
    bad = cli(broken, "scan", "-", stdin="hello")
    assert bad.exit_code == 1
    assert "patterns.json" in bad.output
    assert "regex" in bad.output
    assert "Traceback" not in bad.output
