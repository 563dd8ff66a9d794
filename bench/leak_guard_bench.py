"""The leak guard's cost on the relay path (src/chamberlain/vault/leak_guard.py), measured in process on this machine.

    .venv/bin/python bench/leak_guard_bench.py            # 1, 10, 100 and 1,000 remembered values
    .venv/bin/python bench/leak_guard_bench.py --quick    # shorter timings

Messages: MCP tool results as JSON-RPC (prose with URLs, code, non-ASCII text written as \\uXXXX, a base64 image),
of 1 KB and 100 KB. Remembered values: a mix of what the gateway injects (GitHub-style tokens, base64 API keys with
"+/=", JWT access tokens of a few hundred bytes), all of one tenant.

Reported, per number of values:
  - `LeakGuard.scan` of a clean message (the common case: nothing found, nothing copied), in µs per message and
    MB/s, against `json.loads` of the same message, which the proxy already pays on every answer;
  - the same with the values written into the message (raw, base64 inside a blob, percent-encoded): the redaction
    path;
  - a 100 KB answer relayed as 100 server-sent events of 1 KB through `StreamScanner`, in µs per event;
  - the first stage alone (finding the anchors) with three matchers over the same anchors: `ahocorasick-rs` (what
    the guard uses), one compiled Python `re` alternation, and `pyahocorasick` when it is installed (it works on str:
    the latin-1 decode it needs is included);
  - building: the automaton over all values (the rebuild every FRESH_VALUES new values), and a new value's cost
    (the small automaton rebuilt at the next scan).
Figures only: a benchmark never fails on a number.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import functools
import hashlib
import json
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: the `bench` package

import ahocorasick_rs
from bench._common import num, table

from chamberlain.vault.leak_guard import FRESH_VALUES, LeakGuard, _Automaton

TENANT = "acme"
WORDS = (
    *("the", "gateway", "relays", "each", "answer", "from", "upstream", "server", "and", "policy", "decides"),
    *("which", "tools", "a", "role", "may", "call", "während", "café", "naïve", "日本語", "データ", "résumé"),
)
SNIPPETS = (
    "https://wiki.example.com/pages/viewpage.action?pageId=12345&src=search#section-2",
    'def handler(event):\n    return {"status": 200, "body": json.dumps(event)}',
    "SELECT id, name FROM users WHERE org_id = 42 ORDER BY created_at DESC LIMIT 50;",
)


def make_values(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    values: list[bytes] = []
    for index in range(count):
        digest = hashlib.sha256(b"%d-%d" % (seed, index)).digest()
        kind = index % 3
        if kind == 0:  # a GitHub-style token
            values.append(b"ghp_" + base64.b32encode(digest).rstrip(b"=")[:36])
        elif kind == 1:  # an API key in standard base64
            values.append(base64.b64encode(digest + digest[:9]))
        else:  # an access token (JWT): header.payload.signature, a few hundred bytes
            payload = {
                "sub": f"user-{index}",
                "aud": "https://mcp.example.com",
                "scope": "read write",
                "n": rng.random(),
            }
            parts = [{"alg": "ES256", "typ": "at+jwt"}, payload]
            encoded = [base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=") for part in parts]
            values.append(b".".join([*encoded, base64.urlsafe_b64encode(digest * 2).rstrip(b"=")]))
    return values


def make_message(size: int, seed: int, leaks: tuple[bytes, ...] = ()) -> bytes:
    """A tools/call result of `size` bytes (to a few bytes), with `leaks` written into its text."""
    rng = random.Random(seed)
    pieces: list[str] = []
    length = 0
    while length < size:
        piece = rng.choice(SNIPPETS) if rng.random() < 0.1 else " ".join(rng.choices(WORDS, k=12))
        pieces.append(piece)
        length += len(piece) + 1
    text = "\n".join(pieces)
    image = base64.b64encode(rng.randbytes(size // 12)).decode()
    written = [  # one raw, one inside a base64 blob (Basic credentials), one percent-encoded, ...
        [leak.decode(), base64.b64encode(b"user:" + leak).decode(), quote(leak, safe="")][index % 3]
        for index, leak in enumerate(leaks)
    ]

    def encoded(text: str) -> bytes:
        with_leaks = text
        for index, leak in reversed(list(enumerate(written))):  # from the end: earlier places stay where they are
            at = len(text) * (index + 1) // (len(written) + 1)
            with_leaks = with_leaks[:at] + f" {leak} " + with_leaks[at:]
        content = [{"type": "text", "text": with_leaks}, {"type": "image", "mimeType": "image/png", "data": image}]
        return json.dumps({"jsonrpc": "2.0", "id": 7, "result": {"content": content}}).encode()

    message = encoded(text)
    while len(message) > size and text:  # trim the prose until the message fits (non-ASCII counts six bytes)
        text = text[: max(0, len(text) - max(1, (len(message) - size) // 2))]
        message = encoded(text)
    return message


def timed(work: Callable[[], Any], seconds: float) -> float:
    """Seconds per call: the median of five batches, each long enough to time."""
    work()
    calls = 1
    while True:
        started = time.perf_counter()
        for _ in range(calls):
            work()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds / 5:
            break
        calls *= 2
    batches = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            work()
        batches.append((time.perf_counter() - started) / calls)
    return statistics.median(batches)


def first_stage_matchers(needles: list[bytes]) -> dict[str, tuple[Callable[[bytes], object], float]]:
    """Each matcher over the anchors, with the seconds it took to build."""
    matchers: dict[str, tuple[Callable[[bytes], object], float]] = {}
    for name, implementation in (
        ("DFA", ahocorasick_rs.Implementation.DFA),
        ("contiguous NFA", ahocorasick_rs.Implementation.ContiguousNFA),
        ("non-contiguous NFA", ahocorasick_rs.Implementation.NoncontiguousNFA),
    ):
        started = time.perf_counter()
        automaton = ahocorasick_rs.BytesAhoCorasick(needles, implementation=implementation)
        built = time.perf_counter() - started
        matchers[f"ahocorasick-rs {name}"] = (
            functools.partial(automaton.find_matches_as_indexes, overlapping=True),
            built,
        )
    started = time.perf_counter()
    alternation = re.compile(b"|".join(re.escape(needle) for needle in sorted(needles, key=len, reverse=True)))
    matchers["re alternation"] = (lambda data: list(alternation.finditer(data)), time.perf_counter() - started)
    try:
        import ahocorasick  # type: ignore[import-not-found]
    except ImportError:
        print("(pyahocorasick is not installed: pip install pyahocorasick to compare it)")
        return matchers
    started = time.perf_counter()
    pyac = ahocorasick.Automaton()
    for index, needle in enumerate(needles):
        pyac.add_word(needle.decode("latin-1"), index)
    pyac.make_automaton()
    matchers["pyahocorasick"] = (lambda data: list(pyac.iter(data.decode("latin-1"))), time.perf_counter() - started)
    return matchers


def per_message(seconds: float, size: int) -> tuple[str, str]:
    return num(seconds * 1e6, 1 if seconds < 1e-4 else 0), num(size / seconds / 1e6, 0)


@dataclasses.dataclass
class Rows:
    scan: list[list[str]] = dataclasses.field(default_factory=list)
    leak: list[list[str]] = dataclasses.field(default_factory=list)
    stream: list[list[str]] = dataclasses.field(default_factory=list)
    stage: list[list[str]] = dataclasses.field(default_factory=list)
    build: list[list[str]] = dataclasses.field(default_factory=list)


def measure(count: int, small: bytes, large: bytes, budget: float, rows: Rows) -> None:
    """Every figure for one number of remembered values."""
    values = make_values(count, count)
    guard = LeakGuard()
    for index, value in enumerate(values):
        guard.remember(TENANT, value, f"{TENANT}/source/{index}")
    started = time.perf_counter()
    guard.scan(TENANT, b"")  # the first scan builds the automaton
    first_build = time.perf_counter() - started
    assert not guard.scan(TENANT, large).findings
    assert not guard.scan(TENANT, small).findings

    clean_small = timed(lambda: guard.scan(TENANT, small), budget)
    clean_large = timed(lambda: guard.scan(TENANT, large), budget)
    rows.scan.append([f"{count:,}", *per_message(clean_small, len(small)), *per_message(clean_large, len(large))])

    leaky_small = make_message(1024, 3, tuple(values[:3]))
    leaky_large = make_message(100 * 1024, 4, tuple(values[:3]))
    found = guard.scan(TENANT, leaky_large).findings
    leak_small = timed(lambda: guard.scan(TENANT, leaky_small), budget)
    leak_large = timed(lambda: guard.scan(TENANT, leaky_large), budget)
    rows.leak.append(
        [
            f"{count:,}",
            str(len(found)),
            *per_message(leak_small, len(leaky_small)),
            *per_message(leak_large, len(leaky_large)),
        ]
    )

    events = [b"data: " + large[offset : offset + 1024] + b"\n\n" for offset in range(0, len(large), 1024)]

    def relay() -> None:
        scanner = guard.stream(TENANT)
        for event in events:
            scanner.feed(event)
        scanner.close()

    streamed = timed(relay, budget)
    rows.stream.append(
        [f"{count:,}", str(len(events)), num(streamed / len(events) * 1e6, 1), num(len(large) / streamed / 1e6)]
    )

    needles = list(guard._tenants[TENANT].anchors)  # the anchors the guard chose
    for name, (matcher, built) in first_stage_matchers(needles).items():
        seconds_small = timed(functools.partial(matcher, small), budget)
        seconds_large = timed(functools.partial(matcher, large), budget / 2)
        rows.stage.append(
            [
                f"{count:,}",
                str(len(needles)),
                name,
                num(built * 1e3, 2),
                *per_message(seconds_small, len(small)),
                *per_message(seconds_large, len(large)),
            ]
        )

    tenant_values = list(guard._tenants[TENANT].values.values())
    rebuild = timed(lambda: _Automaton(tenant_values, large=True), budget)
    extra = make_values(64, 10_000 + count)
    added_values = iter(range(10**9))

    def new_value_then_scan() -> None:
        position = next(added_values)
        guard.remember(TENANT, extra[position % len(extra)] + b"%d" % position, "acme/new/value")
        guard.scan(TENANT, small)

    added = timed(new_value_then_scan, budget)
    rows.build.append(
        [
            f"{count:,}",
            str(len(needles)),
            num(first_build * 1e3, 2),
            num(rebuild * 1e3, 2),
            num(added * 1e6, 0),
            num(rebuild / FRESH_VALUES * 1e6, 0),
        ]
    )


def measure_extras(small: bytes, large: bytes, budget: float) -> list[str]:
    """The request path's `remember` of a value already known, and a value with no anchor (its regex scans all)."""
    guard = LeakGuard()
    token, header = b"ghp_" + b"Zq8rT2vLmN4xK7pW9sBdYc3hJ0fE1234ab", b"Bearer ghp_Zq8rT2vLmN4xK7pW9sBdYc3hJ0fE1234ab"
    guard.remember_header(TENANT, header, "acme/github/token")
    guard.scan(TENANT, small)
    remember = timed(lambda: guard.remember(TENANT, token, "acme/github/token"), budget)
    remember_header = timed(lambda: guard.remember_header(TENANT, header, "acme/github/token"), budget)
    punctuation = LeakGuard()
    punctuation.remember(TENANT, b"a/b+c=d/e+f=g/h+i=j/k", "acme/odd/secret")
    punctuation.remember(TENANT, token, "acme/github/token")
    unanchored_small = timed(lambda: punctuation.scan(TENANT, small), budget)
    unanchored_large = timed(lambda: punctuation.scan(TENANT, large), budget)
    return [
        f"remember of a value already remembered: {num(remember * 1e6, 2)} µs; remember_header of a Bearer header "
        f"already seen: {num(remember_header * 1e6, 2)} µs (both on every injection)",
        f"a value with no anchor ('a/b+c=d/e+f=g/h+i=j/k') next to one token: "
        f"{num(unanchored_small * 1e6, 1)} µs / 1 KB, {num(unanchored_large * 1e6, 0)} µs / 100 KB "
        f"({num(len(large) / unanchored_large / 1e6)} MB/s)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter timings")
    parser.add_argument("--counts", default="1,10,100,1000", help="numbers of remembered values")
    args = parser.parse_args()
    budget = 0.1 if args.quick else 0.5

    small, large = make_message(1024, 1), make_message(100 * 1024, 2)
    print(f"messages: {len(small):,} and {len(large):,} bytes of MCP tool result (JSON-RPC)\n")
    json_small, json_large = timed(lambda: json.loads(small), budget), timed(lambda: json.loads(large), budget)
    rows = Rows()
    for count in (int(count) for count in args.counts.split(",")):
        measure(count, small, large, budget, rows)
    extras = measure_extras(small, large, budget)

    print(
        f"json.loads of the same messages (already paid by the proxy): {num(json_small * 1e6, 1)} µs per 1 KB, "
        f"{num(json_large * 1e6, 0)} µs per 100 KB\n"
    )
    print("LeakGuard.scan, clean message (nothing found: the input is returned as is)")
    print(table(["values", "µs / 1 KB", "MB/s", "µs / 100 KB", "MB/s"], rows.scan), "\n")
    print("LeakGuard.scan, message with 3 values written in (raw, base64 in a blob, percent-encoded)")
    print(table(["values", "found", "µs / 1 KB", "MB/s", "µs / 100 KB", "MB/s"], rows.leak), "\n")
    print("StreamScanner: the 100 KB answer as server-sent events of 1 KB")
    print(table(["values", "events", "µs / event", "MB/s"], rows.stream), "\n")
    print("First stage alone: the anchors found by each matcher")
    print(table(["values", "anchors", "matcher", "build ms", "µs / 1 KB", "MB/s", "µs / 100 KB", "MB/s"], rows.stage))
    print()
    print(f"Building (the large automaton is rebuilt once per {FRESH_VALUES} new values)")
    print(
        table(
            ["values", "anchors", "first build ms", "rebuild ms", "new value + scan µs", "rebuild share µs"],
            rows.build,
        )
    )
    print()
    for line in extras:
        print(line)


if __name__ == "__main__":
    main()
