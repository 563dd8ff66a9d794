"""The canary plugin (tests/support/canary.py) catches what it is there to catch: a pytest run whose tests leak the
canary through a log line, an audit event, an HTTP response or CLI output fails, and says where without printing the
value; a run that shows it only in the deliberate places (`vault get`'s standard output, a `canary_expected` block)
passes. The pieces are also tested in process, each with a private watch and its own secret, so that nothing here
trips the watch of this very run."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest

from chamberlain.audit.events import Action, Actor, AuditEvent
from tests.support.canary import (
    CANARY,
    AuditCheck,
    CanaryLogHandler,
    CanaryWatch,
    WatchedApp,
    check_cli_result,
    is_vault_get,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = "priv-canary/+=?%-0e4c1b"  # not the session's canary: these tests must not trip this run's own watch


def forms(value: str) -> list[str]:
    raw = value.encode()
    return [
        value,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(value, safe=""),
        quote(value),
    ]


# -- in process ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        f"token={SECRET}",
        "Basic " + base64.b64encode(f"client:{SECRET}".encode()).decode(),
        base64.urlsafe_b64encode(f"xx{SECRET}".encode()).decode(),
        "https://example.com/?key=" + quote(SECRET, safe=""),
        '{"key": "' + SECRET.replace("/", "\\/") + '"}',
    ],
    ids=["raw", "basic-base64", "urlsafe-base64", "percent", "json"],
)
def test_every_encoding_is_seen(written: str) -> None:
    watch = CanaryWatch([SECRET])
    assert watch.check("log", "somewhere", written)
    assert [sighting.channel for sighting in watch.unexpected()] == ["log"]


def test_other_text_and_a_prefix_are_not_sightings() -> None:
    watch = CanaryWatch([SECRET])
    assert not watch.check("log", "somewhere", "nothing to see " + SECRET[:-1] + " here")
    assert watch.sightings == []


def test_an_exemption_covers_its_channel_and_place_only_while_it_lasts() -> None:
    watch = CanaryWatch([SECRET])
    with watch.expected("log", where="tests.upstream"):
        watch.check("log", "tests.upstream.requests", SECRET)  # expected
        watch.check("log", "chamberlain.gateway", SECRET)  # another place
        watch.check("http", "GET /tests.upstream -> 200", SECRET)  # another channel
    watch.check("log", "tests.upstream.requests", SECRET)  # after the block
    assert [sighting.expected for sighting in watch.sightings] == [True, False, False, False]
    assert len(watch.unexpected()) == 3
    with pytest.raises(ValueError, match="name the channels"):
        watch.expected().__enter__()


def test_a_secret_split_across_chunks_is_seen() -> None:
    watch = CanaryWatch([SECRET])
    stream = watch.stream("http", "GET /x -> 200")
    stream.feed(b'{"text": "' + SECRET[:9].encode())
    stream.feed(SECRET[9:].encode() + b'"}')
    stream.close()
    assert [sighting.where for sighting in watch.unexpected()] == ["GET /x -> 200"]


def test_log_records_are_checked_with_arguments_exceptions_and_extras() -> None:
    watch = CanaryWatch([SECRET])
    handler = CanaryLogHandler(watch)

    def record(**fields: Any) -> logging.LogRecord:
        base: dict[str, Any] = {"name": "chamberlain.x", "msg": "plain", "args": (), "exc_info": None}
        return logging.makeLogRecord({**base, **fields})

    handler.handle(record(msg="token %s", args=(SECRET,)))
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        handler.handle(record(exc_info=sys.exc_info()))
    handler.handle(record(upstream_header=SECRET))  # logger.info(..., extra={"upstream_header": ...})
    handler.handle(record(msg="nothing"))
    assert len(watch.unexpected()) == 3
    assert {sighting.where for sighting in watch.unexpected()} == {"chamberlain.x"}


def test_audit_events_are_checked_once_in_every_field() -> None:
    watch = CanaryWatch([SECRET])
    check = AuditCheck(watch)
    calls: list[AuditEvent] = []
    recorded = check.wrap(lambda log, event: calls.append(event), is_async=False)
    leaking = AuditEvent(
        action=Action.ADMIN_CHANGE,
        outcome="success",
        tenant="default",
        actor=Actor("user", "u1"),
        target="credential:default/github/token",
        details={"after": {"header": base64.b64encode(SECRET.encode()).decode()}},
    )
    recorded(None, leaking)
    recorded(None, leaking)  # record_as_configured handing the same event on: one sighting, not two
    recorded(None, AuditEvent(action=Action.SIGN_IN, outcome="success", tenant="default", actor=Actor("user", "u")))
    assert calls[0] is leaking
    assert len(calls) == 3
    [sighting] = watch.unexpected()
    assert sighting.channel == "audit"
    assert sighting.where == "admin.change credential:default/github/token (tenant default)"
    assert sighting.encoding == "base64"


def test_http_responses_are_checked_headers_and_body() -> None:
    watch = CanaryWatch([SECRET])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": [(b"x-debug", SECRET.encode())]})
        await send({"type": "http.response.body", "body": b"error: " + SECRET[:5].encode(), "more_body": True})
        await send({"type": "http.response.body", "body": SECRET[5:].encode()})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request"}

    asyncio.run(WatchedApp(app, watch)({"type": "http", "method": "GET", "path": "/boom"}, receive, send))
    assert len(sent) == 3  # passed on unchanged
    assert [sighting.where for sighting in watch.unexpected()] == ["GET /boom -> 500 (headers)", "GET /boom -> 500"]


def test_cli_output_is_checked_but_vault_gets_standard_output() -> None:
    watch = CanaryWatch([SECRET])

    def result(stdout: str = "", stderr: str = "", exc_info: Any = None) -> SimpleNamespace:
        exception = exc_info[1] if exc_info else None
        return SimpleNamespace(
            stdout=stdout, stderr=stderr, output=stdout + stderr, exc_info=exc_info, exception=exception
        )

    check_cli_result(watch, ["vault", "get", "github", "token"], result(stdout=SECRET))  # where it belongs
    assert watch.sightings == []
    check_cli_result(watch, ["vault", "get", "github", "token"], result(stderr=f"error: {SECRET}"))
    check_cli_result(watch, "vault set github token", result(stdout=f"Stored {SECRET}"))
    try:
        raise ValueError(SECRET)
    except ValueError:
        check_cli_result(watch, ["users", "add"], result(exc_info=sys.exc_info()))
    assert [sighting.where for sighting in watch.unexpected()] == [
        "chamberlain vault get github (stderr)",
        "chamberlain vault set github",
        "chamberlain users add (exception)",
    ]
    assert is_vault_get(["vault", "get", "x", "y", "--data-dir", "d"])
    assert not is_vault_get(["vault", "list", "get"])
    assert not is_vault_get(["--data-dir", "d", "vault", "get"])  # not recognised: checked like any other


# -- a whole pytest run ----------------------------------------------------------------------------------------------

CONFTEST = """
from tests.support.canary import CanaryPlugin


def pytest_configure(config):
    config.pluginmanager.register(CanaryPlugin(), "chamberlain-canary")
"""

LEAKING = """
import asyncio
import base64
import logging
from urllib.parse import quote

import httpx
import typer
from typer.testing import CliRunner

from chamberlain.app import create_app
from chamberlain.audit.events import Action, Actor, AuditEvent
from chamberlain.audit.log import AuditLog
from chamberlain.audit.settings import AuditSettings
from chamberlain.crypto.master_key import MasterKey
from chamberlain.settings import load_settings
from tests.support.canary import CANARY, watch


def test_logs_it():
    logging.getLogger("chamberlain.gateway.somewhere").debug("injected %s", CANARY)


def test_audits_it():
    log = AuditLog(None, MasterKey(bytes(32)), AuditSettings())
    details = {"after": {"header": base64.b64encode(b"id:" + CANARY.encode()).decode()}}
    log.record(AuditEvent(Action.ADMIN_CHANGE, "success", "default", Actor("user", "u1"), "server:x", details=details))


def test_answers_it(tmp_path):
    # The request id is echoed in every response: a reflection to prove the app is watched, with a second secret.
    watch("reflected-secret-0123456789")
    app = create_app(load_settings(data_dir=tmp_path, environ={}))

    async def call():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await client.get("/nowhere", headers={"X-Request-Id": "reflected-secret-0123456789"})

    asyncio.run(call())


def test_prints_it():
    cli = typer.Typer()

    @cli.command()
    def show():
        print("key=" + quote(CANARY, safe=""))

    CliRunner().invoke(cli, [])
"""

CLEAN = """
import logging

import typer
from typer.testing import CliRunner

from tests.support.canary import CANARY, canary_expected


def test_vault_get_prints_the_value():
    cli = typer.Typer()
    vault = typer.Typer()
    cli.add_typer(vault, name="vault")

    @vault.command("get")
    def get():
        print(CANARY, end="")

    @vault.command("list")
    def listing():
        print("github/token")

    result = CliRunner().invoke(cli, ["vault", "get"])
    assert result.exit_code == 0
    assert result.stdout == CANARY
    assert CliRunner().invoke(cli, ["vault", "list"]).exit_code == 0


def test_the_upstream_stand_in_receives_it():
    with canary_expected("log", where="tests.upstream"):
        logging.getLogger("tests.upstream").warning("authorization: Bearer %s", CANARY)


def test_nothing_secret():
    logging.getLogger("chamberlain.gateway").info("relayed 1 answer")
"""


def run_pytest(tmp_path: Path, tests: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(tests))
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(tmp_path)]
    return subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300, check=False
    )


def test_a_run_that_leaks_the_canary_fails_and_names_each_place(tmp_path: Path) -> None:
    run = run_pytest(tmp_path, LEAKING)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "4 passed" in output  # every test passed: the canary alone fails the run
    assert "canary: a vault secret leaked" in output
    for place in (
        "log: chamberlain.gateway.somewhere (raw) during test_inner.py::test_logs_it",
        "audit: admin.change server:x (tenant default) (base64) during test_inner.py::test_audits_it",
        "http: GET /nowhere -> 404 (headers) (raw) during test_inner.py::test_answers_it",
        "cli: chamberlain  (raw+percent) during test_inner.py::test_prints_it",
    ):
        assert place in output, output
    for written in forms(CANARY) + forms("reflected-secret-0123456789")[1:]:
        assert written not in output  # named, never shown


def test_a_run_that_shows_the_canary_only_where_it_belongs_passes(tmp_path: Path) -> None:
    run = run_pytest(tmp_path, CLEAN)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "3 passed" in output
    assert "canary: seen only where expected (1 times)" in output
    assert "leaked" not in output
