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
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: `bench` and `tests` packages

from bench._common import REPO, Gateway, PhaseResult, free_port, http_request, num, table
from bench._proxy_run import (
    PHASE_HEADERS,
    Run,
    Server,
    load_level,
    measure_targets,
    parse_args,
    phase_row,
    prepare_chamberlain,
    print_failures,
    ratio,
    run_bench,
    serve_chamberlain,
    start_server,
)

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
MEASURED_PER = "target, mode and level"  # what one --seconds measures
MODEL = "claude-sonnet-4-5"
UPSTREAM_KEY = "sk-ant-api03-bench-key-for-the-stand-in"
LITELLM = REPO / "bench" / ".peers" / "litellm"
LITELLM_STAMP = LITELLM / ".installed"

# Issue 9, acceptance 5: Chamberlain's targets, with authentication, accounting and budgets on.
CPU_TARGET_MS = {"non-streamed": 1.0, "streamed": 2.0}
ADDED_P50_TARGET_MS = 1.0  # at one client


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
    gateway = prepare_chamberlain(work, config)
    asyncio.run(store_api_key(gateway.data_dir))
    server, token = serve_chamberlain(gateway, "/llm", client_name="llm proxy bench")
    return gateway, Target("chamberlain", server, gateway.port, {"Authorization": f"Bearer {token}"})


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


def start_peer(run: Run, upstream: Target) -> Target | None:
    """LiteLLM in front of the stand-in, unless skipped or its install failed."""
    if run.args.no_litellm or not ensure_litellm():
        return None
    began = time.monotonic()
    litellm = start_litellm(run.work, upstream)
    run.track(litellm.server)
    print(f"  litellm {litellm_version()}: started in {time.monotonic() - began:.0f} s")
    return litellm


# -- load -------------------------------------------------------------------------------------------------------------


@dataclass
class Measured:
    target: Target
    phases: dict[tuple[str, int], PhaseResult] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


async def load(target: Target, args: argparse.Namespace) -> Measured:
    measured = Measured(target)
    for mode in MODES:
        request = target.request(mode)
        for clients in LEVELS:
            measured.phases[(mode, clients)] = await load_level(
                target,
                clients,
                request,
                args,
                name=f"{target.label} {mode}",
                # a request counts only once its whole answer came: the usage ends a body, message_stop a stream
                complete=b'"usage"' if mode == "non-streamed" else b"message_stop",
                failures=measured.failures,
                failure_prefix=f"{mode} ",
                max_requests=1_000_000,  # in practice the deadline ends a level
            )
    return measured


def measure(target: Target, args: argparse.Namespace) -> Measured:
    print(f"  {target.label}: {', '.join(MODES)} at {', '.join(map(str, LEVELS))} clients ...", flush=True)
    return asyncio.run(load(target, args))


# -- report -----------------------------------------------------------------------------------------------------------


def report(results: Sequence[Measured]) -> None:
    direct = results[0]
    for mode in MODES:
        rows = []
        for result in results:
            for clients in LEVELS:
                alone = direct.phases[(mode, clients)] if result is not direct else None
                rows.append(phase_row(result.target.label, clients, result.phases[(mode, clients)], alone))
        print(f"\n/v1/messages, {mode}, keep-alive loopback connections")
        print(table(PHASE_HEADERS, rows))
    print("  (server CPU: the measured process tree per request, the stand-in itself for the direct rows; others:")
    print("   cores used by everything else, i.e. the stand-in behind a gateway; client: this load generator)")
    for result in results:
        print_failures(result.target.label, result.failures)
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


def measure_each(run: Run) -> Iterator[Measured]:
    return measure_targets(run, start_upstream, start_chamberlain, start_peer, measure)


def main() -> None:
    args = parse_args(__doc__ or "", measured_per=MEASURED_PER, peer="litellm", peer_name="LiteLLM")
    run_bench(
        "llm_proxy_bench",
        args,
        measured_per=MEASURED_PER,
        work_prefix="chamberlain-llm-bench-",
        measure_each=measure_each,
        report=report,
    )


if __name__ == "__main__":
    main()
