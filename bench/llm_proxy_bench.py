"""Anthropic Messages API calls through Chamberlain's LLM proxy and through LiteLLM's proxy, against the same stand-in
upstream called directly, on this machine (issue 9, acceptance 5).

    .venv/bin/python bench/llm_proxy_bench.py                 # about 3 minutes, LiteLLM installed on first use
    .venv/bin/python bench/llm_proxy_bench.py --quick         # 2 s per level
    .venv/bin/python bench/llm_proxy_bench.py --no-litellm

The upstream is tests/support/anthropic_upstream.py in a process of its own: it replays a Messages API answer with
tool use and cache tokens (tests/fixtures/anthropic/), as one JSON body or as its 15 SSE events. Three targets:
  - direct: the stand-in itself;
  - chamberlain: `chamberlain serve` with `llm:` pointing at the stand-in, its API key in the vault, a monthly budget
    per user (so every request is reserved and settled), usage records written to its store; called with a user's
    access token for {issuer}/llm obtained through the real OAuth flow (sign-in, consent, code with PKCE);
  - litellm: LiteLLM's proxy (PyPI `litellm[proxy]`, installed by this script into bench/.peers/litellm, a venv of its
    own), one worker, the stand-in as an `anthropic/` model with `api_base`, called at its Anthropic-format
    `/v1/messages` with its master key. It runs without a database: no virtual keys or budgets of its own (which
    need PostgreSQL), so its figures are a floor of what it costs with those on; its cost tracking runs regardless.
Each target is loaded at 1, 16 and 64 concurrent clients, non-streamed and streamed: each client one keep-alive
connection sending requests one after another (no SDK in the loop), a request counting only when its whole answer
came (the usage for a body, `message_stop` for a stream). The CPU per request is the measured server's process tree
(utime + stime from /proc, as bench/mcp_proxy_bench.py measures it): the stand-in for the direct rows, the gateway
for the others (the stand-in's CPU then shows in "others").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: `bench` and `tests` packages

from bench._common import (
    REPO,
    Gateway,
    PhaseResult,
    RawConnection,
    Request,
    free_port,
    http_request,
    num,
    run_phase,
    table,
)
from bench.mcp_proxy_bench import Server, start_server, stop, user_access_token

from chamberlain.audit.log import AuditLog
from chamberlain.crypto.master_key import load_master_key
from chamberlain.settings import load_settings
from chamberlain.store.database import create_database
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.envelope import EnvelopeBackend
from chamberlain.vault.kek import load_kek_ring
from chamberlain.vault.service import Vault
from chamberlain.vault.settings import CredentialKind

LEVELS = (1, 16, 64)
MODES = ("non-streamed", "streamed")
USER, USER_PASSWORD = "bench", "bench password, long enough"
MODEL = "claude-sonnet-4-5"
UPSTREAM_KEY = "sk-ant-api03-bench-key-for-the-stand-in"
LITELLM = REPO / "bench" / ".peers" / "litellm"
LITELLM_STAMP = LITELLM / ".installed"
REQUEST_TIMEOUT = 20.0

# Issue 9, acceptance 5: Chamberlain's targets, with authentication, accounting and budgets on.
CPU_TARGET_MS = {"non-streamed": 1.0, "streamed": 2.0}
ADDED_P50_TARGET_MS = 1.0  # at one client


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per target, mode and level [5]")
    parser.add_argument("--warmup-seconds", type=float, default=1.0, help="warm-up before each level [1]")
    parser.add_argument("--quick", action="store_true", help="2 s per level, 0.5 s warm-up")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server logs)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup_seconds = 2.0, 0.5
    return args


# -- the targets ------------------------------------------------------------------------------------------------------


@dataclass
class Target:
    label: str
    server: Server
    port: int
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, mode: str) -> bytes:
        body = {"model": MODEL, "max_tokens": 1024, "messages": [{"role": "user", "content": "Weather in SF?"}]}
        if mode == "streamed":
            body["stream"] = True
        headers = {"Content-Type": "application/json", "anthropic-version": "2023-06-01", **self.headers}
        return http_request("POST", "/v1/messages", f"127.0.0.1:{self.port}", headers, json.dumps(body).encode())


def start_upstream(work: Path) -> Target:
    port = free_port()
    command = [sys.executable, "-m", "tests.support.anthropic_upstream", "--port", str(port)]
    return Target("direct (stand-in)", start_server("upstream", command, port, work / "upstream.log"), port)


async def store_api_key(data_dir: Path) -> None:
    """The upstream API key into the gateway's vault, bound to the LLM proxy, as an administrator would put it."""
    settings = load_settings(data_dir=data_dir, environ={})
    database = create_database(settings.effective_database_url)
    master_key = load_master_key(data_dir, environ={})
    log = AuditLog(database, master_key, settings.audit)
    await log.start()
    try:
        keks = load_kek_ring(settings.vault, data_dir=data_dir, master_key=master_key)
        vault = Vault(database, EnvelopeBackend(database, keks), log, settings.vault)
        ref = SecretRef(settings.tenant, "anthropic", "main")
        await vault.store(ref, UPSTREAM_KEY.encode(), kind=CredentialKind.API_KEY, bindings=("llm",))
    finally:
        await log.aclose()
        await database.dispose()


def start_chamberlain(work: Path, upstream: Target) -> tuple[Gateway, Target]:
    gateway = Gateway(work / "chamberlain")
    gateway.data_dir.mkdir()
    admin = {"mcp_servers": "*", "data_classification_access": "*", "administrative_functions": True}
    llm = {
        "upstream_url": f"http://127.0.0.1:{upstream.port}",
        "keys": {"main": "anthropic/main"},
        "default_key": "main",
    }
    config = {
        "roles": {"enterprise_roles": {"admin": {**admin, "models": ["claude-sonnet-4-*", "claude-haiku-4-*"]}}},
        "llm": llm,
        # Every request is held against it and settled; large enough never to refuse during the bench.
        "budgets": [{"scope": "user", "period": "month", "limit_usd": 10_000_000}],
    }
    (gateway.data_dir / "chamberlain.yaml").write_text(json.dumps(config))
    gateway.init()
    gateway.add_user(USER, USER_PASSWORD, role="admin")
    asyncio.run(store_api_key(gateway.data_dir))
    gateway.start()
    assert gateway.process is not None
    token = asyncio.run(user_access_token(gateway.base_url, f"{gateway.base_url}/llm"))
    target = Target("chamberlain", Server("chamberlain", gateway.process), gateway.port)
    target.headers = {"Authorization": f"Bearer {token}"}
    return gateway, target


def ensure_litellm() -> bool:
    """LiteLLM's proxy in bench/.peers/litellm (a venv of its own), installed once; False when that failed."""
    if LITELLM_STAMP.exists():
        return True
    print(f"  litellm: installing litellm[proxy] into {LITELLM} (a few minutes, once)", flush=True)
    shutil.rmtree(LITELLM, ignore_errors=True)
    python = getattr(sys, "_base_executable", sys.executable)
    steps = [
        [python, "-m", "venv", str(LITELLM)],
        [str(LITELLM / "bin" / "pip"), "install", "--quiet", "--upgrade", "pip"],
        [str(LITELLM / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"],
    ]
    for step in steps:
        if subprocess.run(step, check=False).returncode != 0:
            print(f"  litellm: '{' '.join(step)}' failed; skipping LiteLLM")
            return False
    LITELLM_STAMP.write_text("")
    return True


def litellm_version() -> str:
    found = subprocess.run(
        [str(LITELLM / "bin" / "pip"), "show", "litellm"], capture_output=True, text=True, check=False
    )
    return next(
        (line.split(":", 1)[1].strip() for line in found.stdout.splitlines() if line.startswith("Version")), "?"
    )


def start_litellm(work: Path, upstream: Target) -> Target:
    master_key = "sk-litellm-bench-" + secrets.token_hex(8)
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"anthropic/{MODEL}",
                    "api_base": f"http://127.0.0.1:{upstream.port}",
                    "api_key": UPSTREAM_KEY,
                },
            }
        ],
        "general_settings": {"master_key": master_key},
        "litellm_settings": {"telemetry": False},
    }
    (work / "litellm.yaml").write_text(json.dumps(config))
    port = free_port()
    inherited = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    env = {**inherited, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "true"}
    command = [str(LITELLM / "bin" / "litellm"), "--config", str(work / "litellm.yaml"), "--host", "127.0.0.1",
               "--port", str(port), "--num_workers", "1"]  # fmt: skip
    server = start_server("litellm", command, port, work / "litellm.log", env=env, cwd=work)
    return Target("litellm", server, port, {"Authorization": f"Bearer {master_key}"})


# -- load -------------------------------------------------------------------------------------------------------------


@dataclass
class Measured:
    target: Target
    phases: dict[tuple[str, int], PhaseResult] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def call(connection: RawConnection, request: bytes, mode: str, failures: list[str]) -> Request:
    complete = b'"usage"' if mode == "non-streamed" else b"message_stop"

    async def one() -> bool:
        try:
            status, body = await asyncio.wait_for(connection.send(request), REQUEST_TIMEOUT)
        except TimeoutError:
            await connection.close()  # the late answer must not be read as the next call's
            status, body = 0, f"no answer within {REQUEST_TIMEOUT:g} s".encode()
        if status == 200 and complete in body:
            return True
        if len(failures) < 3:
            failures.append(f"{mode} {status or 'timeout'}: {body[:200].decode(errors='replace')}")
        return False

    return one


async def load(target: Target, args: argparse.Namespace) -> Measured:
    measured = Measured(target)
    for mode in MODES:
        request = target.request(mode)
        for clients in LEVELS:
            connections = [RawConnection("127.0.0.1", target.port) for _ in range(clients)]
            workers = [call(connection, request, mode, measured.failures) for connection in connections]
            measured.phases[(mode, clients)] = await run_phase(
                f"{target.label} {mode}",
                workers,
                gateway=target.server,
                max_requests=1_000_000,  # in practice the deadline ends a level
                max_seconds=args.seconds,
                warmup=1_000_000,
                warmup_seconds=args.warmup_seconds,
                measure_db=False,
            )
            for connection in connections:
                await connection.close()
    return measured


def measure(target: Target, args: argparse.Namespace) -> Measured:
    print(f"  {target.label}: {', '.join(MODES)} at {', '.join(map(str, LEVELS))} clients ...", flush=True)
    return asyncio.run(load(target, args))


# -- report -----------------------------------------------------------------------------------------------------------


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def report(results: Sequence[Measured]) -> None:
    direct = results[0]
    for mode in MODES:
        rows = []
        for result in results:
            for clients in LEVELS:
                phase = result.phases[(mode, clients)]
                added = phase.p50 - direct.phases[(mode, clients)].p50 if result is not direct else None
                rows.append(
                    [
                        result.target.label,
                        str(clients),
                        num(phase.wall_rps),
                        num(phase.p50, 2),
                        num(phase.p99, 2),
                        num(added, 2),
                        num(phase.server_ms_per_request, 3),
                        num(phase.others_cores, 2),
                        num(phase.client_ms_per_request, 3),
                        str(phase.errors),
                    ]
                )
        print(f"\n/v1/messages, {mode}, keep-alive loopback connections")
        headers = ["target", "clients", "req/s", "p50 ms", "p99 ms", "added p50", "server CPU ms/req", "others"]
        print(table([*headers, "client ms/req", "errors"], rows))
    print("  (server CPU: the measured process tree per request, the stand-in itself for the direct rows; others:")
    print("   cores used by everything else, i.e. the stand-in behind a gateway; client: this load generator)")
    for result in results:
        for failure in result.failures:
            print(f"  {result.target.label} failed a call with {failure}")
    noise = max(phase.others_cores for phase in direct.phases.values())
    if noise > 0.25:
        print(f"  WARNING: other processes kept up to {noise:.2f} cores busy while the stand-in ran alone: rerun on a "
              "quiet machine.")  # fmt: skip

    by_label = {result.target.label: result for result in results}
    chamberlain, litellm = by_label.get("chamberlain"), by_label.get("litellm")
    print("\nratios")
    if chamberlain is not None and litellm is not None:
        for mode in MODES:
            for clients in LEVELS:
                ours, theirs = chamberlain.phases[(mode, clients)], litellm.phases[(mode, clients)]
                cpu = ratio(theirs.server_ms_per_request, ours.server_ms_per_request)
                rps = ratio(ours.wall_rps, theirs.wall_rps)
                print(f"  {mode:>12} at {clients:>2} clients: LiteLLM's CPU per request x{num(cpu, 1)} Chamberlain's; "
                      f"Chamberlain's throughput x{num(rps, 1)} LiteLLM's")  # fmt: skip
    if chamberlain is not None:
        print("\ntargets (issue 9, acceptance 5)")
        for mode in MODES:
            worst = max(chamberlain.phases[(mode, clients)].server_ms_per_request for clients in LEVELS)
            target = CPU_TARGET_MS[mode]
            print(f"  gateway CPU per {mode} request < {target:g} ms, worst level: {worst:.3f} ms, "
                  f"{'met' if worst < target else 'MISSED'}")  # fmt: skip
            added = chamberlain.phases[(mode, 1)].p50 - direct.phases[(mode, 1)].p50
            print(f"  added p50 at 1 client, {mode}, < {ADDED_P50_TARGET_MS:g} ms: {added:.2f} ms, "
                  f"{'met' if added < ADDED_P50_TARGET_MS else 'MISSED'}")  # fmt: skip


# -- main -------------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    work: Path
    args: argparse.Namespace
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def measure_each(self) -> Iterator[Measured]:
        upstream = start_upstream(self.work)
        self.started.append(upstream.server.process)
        yield measure(upstream, self.args)

        gateway, chamberlain = start_chamberlain(self.work, upstream)
        try:
            yield measure(chamberlain, self.args)
        finally:
            gateway.stop()

        if self.args.no_litellm or not ensure_litellm():
            return
        began = time.monotonic()
        litellm = start_litellm(self.work, upstream)
        self.started.append(litellm.server.process)
        print(f"  litellm {litellm_version()}: started in {time.monotonic() - began:.0f} s")
        yield measure(litellm, self.args)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            stop(process)


def main() -> None:
    args = parse_args()
    began = time.monotonic()
    print(
        f"llm_proxy_bench: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; per target, mode and level "
        f"{args.warmup_seconds:g} s warm-up, then {args.seconds:g} s measured"
    )
    work = Path(tempfile.mkdtemp(prefix="chamberlain-llm-bench-"))
    run = Run(work, args)
    try:
        results = list(run.measure_each())
    finally:
        run.stop_all()
        if args.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(results)
    print(f"\ntotal {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
