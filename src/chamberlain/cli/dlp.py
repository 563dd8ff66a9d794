"""`chamberlain dlp`: try a tenant's data protection on a file before it meets real traffic.

`scan FILE|-` runs the tenant's detectors (built-in, as configured, and its custom patterns) over the input and
prints one JSON line per detection, then one summary line; offsets are character offsets into the input. The input
is read in chunks and scanned as a stream, so a value split between two reads is found as the gateway finds one
split between two network packets. `classify FILE|-` prints the level the gateway would give the input: the
highest of the tenant's default level, its classification rules and its detectors.
"""

from __future__ import annotations

import codecs
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from chamberlain.cli.common import (
    ConfigFile,
    DataDir,
    Tenant,
    console,
    errors,
    fail,
    run,
    settings_from,
    tenant_store,
)
from chamberlain.cli.group import Commands
from chamberlain.crypto.master_key import load_master_key
from chamberlain.dlp.detection import Detection, ScanReport
from chamberlain.dlp.engine import DlpEngine
from chamberlain.dlp.levels import Level
from chamberlain.settings import Settings
from chamberlain.tenancy.effective import load_effective_config

app = typer.Typer(cls=Commands, help="Try the tenant's data protection on a file or standard input.")

CHUNK_BYTES = 64 * 1024
Input = Annotated[str, typer.Argument(help="A file to read, or - for standard input.", metavar="FILE|-")]


def _engine(settings: Settings, tenant: str | None) -> DlpEngine:
    async def build() -> DlpEngine:
        async with tenant_store(settings, tenant) as (database, tenant_id):
            config = await load_effective_config(database, settings, tenant_id)
        key = load_master_key(settings.data_dir).derive(f"dlp-redaction:{tenant_id}")
        engine = DlpEngine(config.dlp, settings.audit.classification_rules, key)
        if engine.unusable is not None:  # the gateway would treat everything as restricted: say why instead
            fail(engine.unusable)
        return engine

    return run(build())


def _opened(source: str) -> BinaryIO:
    if source == "-":
        return sys.stdin.buffer
    try:
        return Path(source).open("rb")
    except OSError as problem:
        fail(f"{source}: {problem.strerror}")


def _chunks(source: str) -> Iterator[str]:
    """The input as text, in chunks; invalid UTF-8 is read as U+FFFD (one character each), not refused."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with _opened(source) as stream:
        while block := stream.read(CHUNK_BYTES):
            yield decoder.decode(block)
    yield decoder.decode(b"", final=True)


def _line(detection: Detection) -> str:
    return json.dumps(
        {
            "type": detection.type,
            "start": detection.start,
            "end": detection.end,
            "score": round(detection.score, 3),
            "classification": detection.classification.label,
            "action": detection.action,
            "encoding": detection.encoding,
        }
    )


@app.command("scan")
def scan(source: Input, tenant: Tenant = None, data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Print one JSON line per detection in FILE (or standard input), then a summary line."""
    engine = _engine(settings_from(data_dir, config), tenant)
    stream = engine.scanner.stream()
    by_type: Counter[str] = Counter()
    failed: set[str] = set()
    level = Level.PUBLIC

    def emit(report: ScanReport) -> None:
        nonlocal level
        level = max(level, report.level)
        failed.update(failure.detector for failure in report.failures)
        for detection in report.detections:
            by_type[detection.type] += 1
            print(_line(detection))

    for chunk in _chunks(source):
        emit(stream.feed(chunk))
    emit(stream.close())
    summary = {"summary": {"detections": sum(by_type.values()), "by_type": dict(sorted(by_type.items()))}}
    summary["summary"]["classification"] = level.label
    summary["summary"]["failed_detectors"] = sorted(failed)
    print(json.dumps(summary))


@app.command("classify")
def classify(source: Input, tenant: Tenant = None, data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Print the classification the gateway would give FILE (or standard input), and what decided it."""
    engine = _engine(settings_from(data_dir, config), tenant)
    text = "".join(_chunks(source))
    inspection = engine.inspect([text])
    console.print(inspection.level.label, highlight=False)
    reasons = sorted(inspection.sources) or ["the tenant's default level"]
    errors.print(f"from: {', '.join(reasons)}", highlight=False)
