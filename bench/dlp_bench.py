"""Detection quality and speed of Chamberlain's DLP scanner against Presidio's pattern recognizers, on this machine
(issue 8, acceptance 3 and 4).

    .venv/bin/python bench/dlp_bench.py                   # about a minute; Presidio installed on first use
    .venv/bin/python bench/dlp_bench.py --quick           # a smaller corpus, fewer timing rounds
    .venv/bin/python bench/dlp_bench.py --no-presidio     # ours only
    .venv/bin/python bench/dlp_bench.py --examples 10     # show up to 10 misses and false alarms per type

Quality: a labelled corpus generated offline from a seed (bench/dlp_corpus.py: prose, JSON records with \\u escapes,
base64-wrapped values, MCP JSON-RPC payloads, and documents fed to the stream scanner in chunks cut inside every
value), scanned by `build_scanner(DlpConfig())` with every default detector on. A detection is a true positive when
its type is the labelled type and its span overlaps the labelled span; recall is the share of labelled values some
detection of their type overlaps. A generic `high_entropy_secret` detection on a value labelled as a provider's
secret (an AWS secret key, a GitHub token...) counts neither way: both are right about it being a secret.

Presidio: `presidio-analyzer` (PyPI) in bench/.peers/presidio, a venv of its own (bench/peers/install_presidio.sh),
run by bench/_presidio_run.py over the same corpus file: `AnalyzerEngine` with its default recognizers for English
(plus the national id recognizers it ships for the corpus's countries but does not load for English) and its
`NoOpNlpEngine` (no spaCy model, no NER, fully offline), at its default score threshold (0). Its entity names
are mapped to ours (PRESIDIO_TYPES); the types it has no recognizer for show as "—". It has no stream API, so a
streamed document is given to it chunk by chunk, as a proxy relaying a stream would have to.

A second corpus, when presidio-evaluator installed there: its `PresidioSentenceFaker` sentences (Faker, its own
templates, seeded), written by Presidio's authors rather than by whoever tunes our detectors against the first one.
Its values of our types are scored the same way for both; its other entities (PERSON, STREET_ADDRESS...) are text.

Speed: CPU time (time.process_time, one thread) per message, for MCP tools/call results of about 1 KB and 100 KB
with entities and look-alikes in them, the same messages for both; p50 per message and MB/s per core (bytes of
UTF-8 over CPU seconds). Ours is also timed on the 100 KB messages fed to its stream scanner in 1 KB chunks.
Figures only: a benchmark never fails on a number.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: the `bench` package

from bench import dlp_corpus
from bench._common import REPO, num, table
from bench.dlp_corpus import ENTITY_TYPES, Document, Label

from chamberlain.dlp.config import DlpConfig
from chamberlain.dlp.detectors.registry import SECRET_TYPES
from chamberlain.dlp.engine import DlpEngine
from chamberlain.dlp.levels import Level
from chamberlain.dlp.messages import guard_outgoing, guard_result
from chamberlain.dlp.scanner import Scanner, build_scanner

PRESIDIO = REPO / "bench" / ".peers" / "presidio"
PRESIDIO_INSTALL = REPO / "bench" / "peers" / "install_presidio.sh"
PRESIDIO_RUN = REPO / "bench" / "_presidio_run.py"
EVALUATOR_SEED = 8
PRESIDIO_PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")  # its PhoneRecognizer's default regions

# Issue 8, acceptance 3: 0.99 precision and recall on checksum-validated types, 0.95 on the others. US SSNs have
# area/group/serial rules but no check digit; of the national ids only the UK NINO has none.
CHECKSUM_VALIDATED = frozenset({"credit_card", "iban", "national_id", "github_token"})
TARGETS = {kind: 0.99 if kind in CHECKSUM_VALIDATED else 0.95 for kind in ENTITY_TYPES}
# Acceptance 4: CPU per message with every default detector on.
SPEED_TARGET_MS = {"1 KB": 1.0, "100 KB": 50.0}

# Presidio's entity names (its English default recognizers) in our terms; the rest (URL, DATE_TIME, US_BANK_NUMBER,
# UUID, ...) name nothing we label and are left out of the scores.
PRESIDIO_TYPES = {
    "CREDIT_CARD": "credit_card",
    "IBAN_CODE": "iban",
    "US_SSN": "us_ssn",
    "EMAIL_ADDRESS": "email_address",
    "PHONE_NUMBER": "phone_number",
    "IP_ADDRESS": "ip_address",
    "UK_NINO": "national_id",
    "ES_NIF": "national_id",
    "ES_NIE": "national_id",
    "IN_AADHAAR": "national_id",
}


@dataclass(frozen=True, slots=True)
class Found:
    type: str  # in our terms (Presidio's through PRESIDIO_TYPES)
    start: int
    end: int


# -- scoring ----------------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """One system's figures for one entity type."""

    labels: int = 0
    recalled: int = 0
    true_positives: int = 0
    false_positives: int = 0
    misses: list[tuple[Document, Label]] = field(default_factory=list)
    false_alarms: list[tuple[Document, Found, str]] = field(default_factory=list)  # with what it overlapped

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else float("nan")

    @property
    def recall(self) -> float:
        return self.recalled / self.labels if self.labels else float("nan")


def _overlaps(a: Found | Label, b: Found | Label) -> bool:
    return a.start < b.end and b.start < a.end


def _what_is_there(document: Document, found: Found) -> str:
    for label in document.labels:
        if _overlaps(found, label):
            return f"on a {label.type} ({label.variant})"
    for decoy in document.decoys:
        if _overlaps(found, decoy):
            return f"on a look-alike: {decoy.type} ({decoy.variant})"
    return "unlabelled text"


def score(documents: Sequence[Document], found: Sequence[Sequence[Found]]) -> dict[str, Tally]:
    """Per entity type; a type no document labels (a custom pattern, say) gets its own row of false positives."""
    tallies: dict[str, Tally] = defaultdict(Tally)
    for document, detections in zip(documents, found, strict=True):
        recalled: set[Label] = set()
        for detection in detections:
            same_type = [
                label for label in document.labels if label.type == detection.type and _overlaps(label, detection)
            ]
            if same_type:
                tallies[detection.type].true_positives += 1
                recalled.update(same_type)
            elif detection.type == "high_entropy_secret" and any(
                label.type in SECRET_TYPES and _overlaps(label, detection) for label in document.labels
            ):
                continue  # a provider's secret seen as a generic one: neither right nor wrong
            else:
                tallies[detection.type].false_positives += 1
                tallies[detection.type].false_alarms.append((document, detection, _what_is_there(document, detection)))
        for label in document.labels:
            tally = tallies[label.type]
            tally.labels += 1
            if label in recalled:
                tally.recalled += 1
            else:
                tally.misses.append((document, label))
    return tallies


def recall_by_kind(
    documents: Sequence[Document], found: Sequence[Sequence[Found]], types: frozenset[str]
) -> dict[str, tuple[int, int]]:
    """Labelled values of `types` recalled / labelled, per document kind (prose, json, base64, mcp, stream)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for document, detections in zip(documents, found, strict=True):
        for label in document.labels:
            if label.type not in types:
                continue
            counts[document.kind][1] += 1
            if any(d.type == label.type and _overlaps(d, label) for d in detections):
                counts[document.kind][0] += 1
    return {kind: (hit, total) for kind, (hit, total) in counts.items()}


# -- our scanner ------------------------------------------------------------------------------------------------------


@dataclass
class OurRun:
    found: list[list[Found]]
    failures: Counter[str]
    build_seconds: float


def scan_all(scanner: Scanner, documents: Sequence[Document]) -> list[list[Found]]:
    """Each whole document through `scan` (no streaming)."""
    return [[Found(d.type, d.start, d.end) for d in scanner.scan(document.text).detections] for document in documents]


def run_ours(documents: Sequence[Document]) -> tuple[Scanner, OurRun]:
    began = time.perf_counter()
    scanner = build_scanner(DlpConfig())
    build_seconds = time.perf_counter() - began
    found: list[list[Found]] = []
    failures: Counter[str] = Counter()
    for document in documents:
        if document.cuts:
            stream = scanner.stream()
            reports = [stream.feed(chunk) for chunk in document.chunks()]
            reports.append(stream.close())
        else:
            reports = [scanner.scan(document.text)]
        found.append([Found(d.type, d.start, d.end) for report in reports for d in report.detections])
        failures.update(failure.detector for report in reports for failure in report.failures)
    return scanner, OurRun(found, failures, build_seconds)


# -- Presidio ---------------------------------------------------------------------------------------------------------


@dataclass
class PresidioRun:
    version: str
    entities: frozenset[str]  # our types it has a recognizer for
    found: list[list[Found]]
    timings: dict[str, list[float]]  # message size -> CPU seconds per message
    setup_seconds: float
    evaluator: EvaluatorCorpus | str | None  # its corpus, or why there is none


@dataclass
class EvaluatorCorpus:
    """presidio-evaluator's sentences (Faker, its own templates), as Documents, with Presidio's findings on them."""

    version: str
    documents: list[Document]
    presidio: list[list[Found]]


def _presidio_found(detections: list[list[Any]]) -> list[Found]:
    return [
        Found(PRESIDIO_TYPES[kind], start, end) for kind, start, end, _score in detections if kind in PRESIDIO_TYPES
    ]


def evaluator_corpus(result: dict[str, Any] | None) -> EvaluatorCorpus | str | None:
    """Its labels in our terms; the entities we have no type for (PERSON, STREET_ADDRESS...) become look-alikes, so
    a detection on one is reported with what it hit."""
    if result is None or "error" in result:
        return result["error"] if result else None
    documents = []
    for index, sample in enumerate(result["documents"]):
        ours = [
            Label(PRESIDIO_TYPES[kind], start, end, kind)
            for kind, start, end in sample["labels"]
            if kind in PRESIDIO_TYPES
        ]
        others = [Label(kind, start, end, kind) for kind, start, end in sample["labels"] if kind not in PRESIDIO_TYPES]
        documents.append(Document(f"evaluator-{index}", "evaluator", sample["text"], tuple(ours), tuple(others)))
    found = [_presidio_found(sample["detections"]) for sample in result["documents"]]
    return EvaluatorCorpus(result["version"], documents, found)


def ensure_presidio() -> str | None:
    """Installs Presidio once; None when it is there, else why it is not."""
    done = subprocess.run([str(PRESIDIO_INSTALL)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["no message"]
        return f"{PRESIDIO_INSTALL} failed: {last[0]}"
    return None


def run_presidio(corpus_file: Path, work: Path) -> PresidioRun | str:
    """Presidio over the corpus file in its own venv; a reason string when it could not run."""
    reason = ensure_presidio()
    if reason:
        return reason
    output = work / "presidio.json"
    log = work / "presidio.log"
    with log.open("w") as sink:
        done = subprocess.run(
            [str(PRESIDIO / "bin" / "python"), str(PRESIDIO_RUN), str(corpus_file), str(output)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        return f"bench/_presidio_run.py failed (exit {done.returncode}): {log.read_text()[-2000:]}"
    result = json.loads(output.read_text())
    found = [_presidio_found(detections) for detections in result["detections"]]
    entities = frozenset(PRESIDIO_TYPES[kind] for kind in result["entities"] if kind in PRESIDIO_TYPES)
    return PresidioRun(
        result["version"],
        entities,
        found,
        result["timings"],
        result["setup_seconds"],
        evaluator_corpus(result.get("evaluator")),
    )


# -- speed ------------------------------------------------------------------------------------------------------------


def cpu_per_call(work: Callable[[str], object], messages: Sequence[str], rounds: int) -> list[float]:
    """CPU seconds of each call, every message `rounds` times (after one untimed pass to warm caches)."""
    for message in messages[:3]:
        work(message)
    clock = time.process_time
    timings = []
    for _ in range(rounds):
        for message in messages:
            started = clock()
            work(message)
            timings.append(clock() - started)
    return timings


def streamed(scanner: Scanner, chunk: int) -> Callable[[str], object]:
    def feed(message: str) -> object:
        stream = scanner.stream()
        for at in range(0, len(message), chunk):
            stream.feed(message[at : at + chunk])
        return stream.close()

    return feed


@dataclass(frozen=True)
class Speed:
    p50_ms: float
    mb_per_s: float


def speed(timings: Sequence[float], messages: Sequence[str], rounds: int) -> Speed:
    size = sum(len(message.encode()) for message in messages) * rounds
    return Speed(1000 * statistics.median(timings), size / 1e6 / sum(timings) if sum(timings) else float("nan"))


# -- report -----------------------------------------------------------------------------------------------------------


def _fraction(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"


def quality_table(
    kinds: Sequence[str], ours: dict[str, Tally], peer: dict[str, Tally] | None, peer_entities: frozenset[str]
) -> str:
    """One row per type in `kinds`, then one per type found where nothing of it is labelled (false alarms only)."""
    headers = ["type", "labelled", "ours P", "ours R", "ours FP", "Presidio P", "Presidio R", "Presidio FP"]
    headers += ["target", "ours"]
    rows = []
    for kind in kinds:
        mine = ours[kind]
        target = TARGETS[kind]
        met = mine.precision >= target and mine.recall >= target
        if peer is None:
            theirs = ["(not run)", "", ""]
        elif kind in peer_entities:
            theirs = [_fraction(peer[kind].precision), _fraction(peer[kind].recall), str(peer[kind].false_positives)]
        else:
            theirs = ["—", "—", ""]
        figures = [_fraction(mine.precision), _fraction(mine.recall), str(mine.false_positives)]
        rows.append([kind, str(mine.labels), *figures, *theirs, f"{target:.2f}", "pass" if met else "MISS"])
    unlabelled = {kind for kind, tally in ours.items() if tally.false_positives} - set(kinds)
    if peer:
        unlabelled |= {kind for kind, tally in peer.items() if tally.false_positives} - set(kinds)
    for kind in sorted(unlabelled):
        peer_false = str(peer[kind].false_positives) if peer else ""
        rows.append([kind, "0", "-", "-", str(ours[kind].false_positives), "-", "-", peer_false, "-", "-"])
    return table(headers, rows)


def print_kinds(documents: Sequence[Document], ours: Sequence[Sequence[Found]], peer: PresidioRun | None) -> None:
    """Recall per document kind: ours over every type, then both over the types Presidio has recognizers for."""
    every = frozenset(ENTITY_TYPES)
    shared = peer.entities if peer else frozenset()
    columns = [recall_by_kind(documents, ours, every)]
    if peer:
        columns += [recall_by_kind(documents, ours, shared), recall_by_kind(documents, peer.found, shared)]
    rows = []
    for kind in dlp_corpus.KINDS:
        cells = [kind]
        for column in columns:
            hit, total = column.get(kind, (0, 0))
            cells.append(f"{_fraction(hit / total) if total else '-'} of {total}")
        rows.append(cells)
    headers = ["kind", "ours, all types"]
    if peer:
        headers += ["ours, Presidio's types", "Presidio, its types"]
    print("\nRecall by document kind")
    print(table(headers, rows))
    if peer:
        print(f"  Presidio's types: {', '.join(sorted(shared))}")


def print_examples(name: str, tallies: dict[str, Tally], limit: int) -> None:
    """The misses and false alarms of each type, with what was there: what helps tune a detector."""
    if limit <= 0:
        return
    print(f"\n{name}: misses and false alarms (up to {limit} of each per type; the corpus is synthetic)")
    for kind, tally in sorted(tallies.items()):
        if not tally.misses and not tally.false_alarms:
            continue
        missed_by_variant = Counter(label.variant.split("/")[0] for _, label in tally.misses)
        summary = ", ".join(f"{variant} {count}" for variant, count in missed_by_variant.most_common(6))
        print(f"  {kind}: {len(tally.misses)} missed ({summary or 'none'}), {len(tally.false_alarms)} false alarms")
        for document, label in tally.misses[:limit]:
            print(f"    miss  {document.id} [{label.variant}] {_excerpt(document.text, label.start, label.end)}")
        for document, found, what in tally.false_alarms[:limit]:
            print(f"    false {document.id} {what}: {_excerpt(document.text, found.start, found.end)}")


def _excerpt(text: str, start: int, end: int, context: int = 20) -> str:
    value = text[start:end]
    if len(value) > 90:
        value = value[:60] + "…" + value[-20:]
    return repr(text[max(0, start - context) : start] + "⟦" + value + "⟧" + text[end : end + context])


def print_speed(scanner: Scanner, messages: dict[str, list[str]], rounds: int, peer: PresidioRun | None) -> None:
    print(f"\nSpeed: CPU per message, one thread, {rounds} rounds; MCP tools/call results with values and look-alikes")
    rows = []
    for name, batch in messages.items():
        mine = speed(cpu_per_call(scanner.scan, batch, rounds), batch, rounds)
        theirs = speed(peer.timings[name], batch, rounds) if peer else None
        target = SPEED_TARGET_MS[name]
        peer_cells = ["-"] * 3
        if theirs:
            peer_cells = [num(theirs.p50_ms, 3), num(theirs.mb_per_s, 2), f"{theirs.p50_ms / mine.p50_ms:.1f}×"]
        verdict = [f"< {target:g} ms", "pass" if mine.p50_ms < target else "MISS"]
        rows.append([f"{name} × {len(batch)}", num(mine.p50_ms, 3), num(mine.mb_per_s, 2), *peer_cells, *verdict])
    batch = messages["100 KB"]
    chunked = speed(cpu_per_call(streamed(scanner, 1_000), batch, rounds), batch, rounds)
    rows.append([f"100 KB in 1 KB chunks × {len(batch)}", num(chunked.p50_ms, 3), num(chunked.mb_per_s, 2), *[""] * 5])
    headers = ["message", "ours p50 ms", "ours MB/s", "Presidio p50 ms", "Presidio MB/s", "Presidio/ours", "target"]
    print(table([*headers, "ours"], rows))
    print("  MB/s per core: UTF-8 bytes over CPU seconds.")


PROSE = (
    "The on-call rotation changes every Monday at nine; whoever holds the pager reviews the open incidents, "
    "hands over in the team channel and updates the runbook where a step was unclear. Escalations go to the "
    "duty manager after thirty minutes without progress."
)


def _gateway_exchanges() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """(tools/call request, its answer) pairs as the proxy sees them, decoded."""
    echo = "Summarise the on-call handbook for the new starters joining on Monday"

    def hits(text: Callable[[int], str]) -> dict[str, Any]:
        items = [
            {"type": "resource", "resource": {"uri": f"kb://wiki/page-{index}", "text": text(index)}}
            for index in range(10)
        ]
        return {"jsonrpc": "2.0", "id": 1, "result": {"content": items}}

    search = {"name": "search", "arguments": {"query": "on-call rotation"}}
    return {
        "echo": (
            {"name": "echo", "arguments": {"text": echo}},
            {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": echo}]}},
        ),
        "search, 10 hits of 300 B prose": (search, hits(lambda index: PROSE)),
        "search, 10 hits of 300 B dense with identifiers": (search, hits(lambda index: dlp_corpus.message(index, 300))),
    }


def print_gateway_path(rounds: int) -> None:
    """What data protection adds to one proxied tools/call: the arguments judged on the way out, the answer judged
    item by item on the way back, with the default detectors and a clearance of internal; beside the decoding of the
    same messages, which the proxy does anyway."""
    engine = DlpEngine(DlpConfig(), (), b"k" * 32)
    print("\nOn the gateway's path: CPU per tools/call (request arguments and answer), default detectors")
    rows = []
    for name, (params, answer) in _gateway_exchanges().items():
        encoded = (json.dumps(params), json.dumps(answer))

        def protect(_: str, encoded: tuple[str, str] = encoded) -> None:
            request, response = json.loads(encoded[0]), json.loads(encoded[1])
            guard_outgoing(engine, request, "arguments", what="the arguments", target="'x'", external=False)
            guard_result(engine, response, "tools/call", clearance=_up_to_internal, declared=Level.PUBLIC, tool="x")

        def floor(_: str, encoded: tuple[str, str] = encoded) -> None:
            json.loads(encoded[0])
            json.loads(encoded[1])

        work = ["x"] * 200
        with_dlp = 1e6 * statistics.median(cpu_per_call(protect, work, rounds))
        bare = 1e6 * statistics.median(cpu_per_call(floor, work, rounds))
        rows.append([name, num(with_dlp, 1), num(bare, 1), num(with_dlp - bare, 1)])
    print(table(["exchange", "decode + DLP µs", "decode alone µs", "DLP adds µs"], rows))


def _up_to_internal(level: Level) -> bool:
    return level <= Level.INTERNAL


def print_evaluator(scanner: Scanner, peer: PresidioRun, examples: int) -> None:
    """The second corpus, presidio-evaluator's: written by Presidio's authors, not tuned against by ours."""
    corpus = peer.evaluator
    if not isinstance(corpus, EvaluatorCorpus):
        print(f"\npresidio-evaluator corpus: skipped ({corpus or 'not asked for'})")
        return
    ours, theirs = (
        score(corpus.documents, scan_all(scanner, corpus.documents)),
        score(corpus.documents, corpus.presidio),
    )
    kinds = [kind for kind in ENTITY_TYPES if ours[kind].labels]
    labelled = sum(len(document.labels) for document in corpus.documents)
    print(
        f"\npresidio-evaluator {corpus.version} corpus: {len(corpus.documents):,} sentences (PresidioSentenceFaker, "
        f"en_US, seed {EVALUATOR_SEED}), {labelled:,} values of our types; its other entities (PERSON, "
        "STREET_ADDRESS...) are unlabelled text here"
    )
    print(quality_table(kinds, ours, theirs, peer.entities))
    outside = [
        label
        for document, label in ours["credit_card"].misses
        if dlp_corpus.card_brand(re.sub(r"\D", "", document.text[label.start : label.end])) is None
    ]
    print(
        f"  credit_card: {len(outside)} of our {len(ours['credit_card'].misses)} misses are outside today's IIN ranges"
        " (Faker draws JCB from all of 35xx, not 3528-3589, and has the retired 15-digit 1800/2131)."
    )
    # Faker writes phone numbers in many countries' national formats without a country code; both scanners parse
    # those against a list of regions: ours the tenant's `phone_regions` (US by default), Presidio eight regions.
    regional = build_scanner(DlpConfig(phone_regions=PRESIDIO_PHONE_REGIONS))
    phones = score(corpus.documents, scan_all(regional, corpus.documents))["phone_number"]
    print(
        f"  phone_number with phone_regions set to Presidio's ({', '.join(PRESIDIO_PHONE_REGIONS)}): ours P "
        f"{_fraction(phones.precision)} R {_fraction(phones.recall)} ({phones.false_positives} FP)."
    )
    print_examples("ours on presidio-evaluator's corpus", ours, examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller corpus and fewer timing rounds")
    parser.add_argument("--no-presidio", action="store_true", help="ours only")
    parser.add_argument("--seed", type=int, default=8, help="corpus seed (default 8)")
    parser.add_argument("--documents", type=int, help="corpus size (default 1,500; --quick 300)")
    parser.add_argument("--examples", type=int, default=3, help="misses and false alarms shown per type (default 3)")
    parser.add_argument("--corpus-out", type=Path, help="also write the corpus (JSON) here")
    args = parser.parse_args()

    documents_count = args.documents or (300 if args.quick else 1500)
    rounds = 2 if args.quick else 5
    counts = {"1 KB": 30 if args.quick else 200, "100 KB": 3 if args.quick else 10}
    sizes = {"1 KB": 1_000, "100 KB": 100_000}

    began = time.perf_counter()
    documents = dlp_corpus.generate(args.seed, documents_count)
    messages = {
        name: [dlp_corpus.message(args.seed * 1000 + index, sizes[name]) for index in range(counts[name])]
        for name in sizes
    }
    labelled = sum(len(document.labels) for document in documents)
    decoys = sum(len(document.decoys) for document in documents)
    characters = sum(len(document.text) for document in documents)
    print(
        f"corpus: {len(documents):,} documents (seed {args.seed}), {labelled:,} labelled values, {decoys:,} "
        f"look-alikes, {characters / 1e6:.2f} M characters; generated in {time.perf_counter() - began:.1f} s"
    )
    print(f"  by kind: {dict(Counter(document.kind for document in documents))}")

    scanner, ours = run_ours(documents)
    print(f"ours: scanner built in {1000 * ours.build_seconds:.0f} ms; types enabled: {len(scanner.types)}")
    if ours.failures:
        print(f"  detector failures (each makes its message restricted): {dict(ours.failures)}")
    ours_tallies = score(documents, ours.found)

    with tempfile.TemporaryDirectory(prefix="dlp-bench-") as temporary:
        work = Path(temporary)
        corpus_file = work / "corpus.json"
        request = dlp_corpus.dump(documents, messages, rounds)
        request["evaluator"] = {"seed": EVALUATOR_SEED, "samples": 1000 if args.quick else 3000}
        corpus_file.write_text(json.dumps(request))
        if args.corpus_out:
            args.corpus_out.write_text(corpus_file.read_text())
        peer: PresidioRun | str | None = None
        if not args.no_presidio:
            print("presidio: installing it if needed (a minute, once), then bench/_presidio_run.py ...", flush=True)
            peer = run_presidio(corpus_file, work)
    if isinstance(peer, str):
        print(f"presidio: not measured: {peer}")
        peer = None
    peer_tallies = score(documents, peer.found) if peer else None
    if peer:
        print(f"presidio-analyzer {peer.version}: set up in {peer.setup_seconds:.1f} s (no-op NLP engine, English)")

    print("\nDetection quality per entity type (P: precision, R: recall; FP: false positives)")
    print(quality_table(ENTITY_TYPES, ours_tallies, peer_tallies, peer.entities if peer else frozenset()))
    print("  Presidio: '—' where it has no recognizer for the type; its streamed documents are scanned chunk by chunk.")
    print_kinds(documents, ours.found, peer)
    print_examples("ours", ours_tallies, args.examples)
    if peer:
        print_evaluator(scanner, peer, args.examples)
    print_speed(scanner, messages, rounds, peer)
    print_gateway_path(rounds)
    print(f"\nTotal time {time.perf_counter() - began:.0f} s.")


if __name__ == "__main__":
    main()
