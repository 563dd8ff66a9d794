"""The canary (issue 6, acceptance 4): a secret that vault tests store, searched for in everything the test run
produces. It must appear nowhere, in no encoding, except where it is meant to go.

Watched, for the whole session (enabled from tests/conftest.py):
  - log: every record reaching the root logger (message with its arguments, exception and stack text, `extra`
    fields), from any thread; the `chamberlain` loggers are set to DEBUG for the session so that a secret in a debug
    message is caught too;
  - audit: every event given to `AuditLog.record`, `record_durably` or `record_as_configured`, all its fields;
  - http: every response of an app made by `chamberlain.app.create_app` (its headers and its body, chunk by chunk
    with values split across chunks found): error bodies, redirects, relayed MCP answers;
  - cli: every `typer.testing.CliRunner.invoke` result (standard output and error, and the exception it caught).
Searched for as `LeakGuard` finds credentials: raw, standard and URL-safe base64 at any alignment, percent-encoded
and JSON-escaped (src/chamberlain/vault/leak_guard.py).

Deliberate places, the only exemptions:
  - the standard output of `chamberlain vault get` (a CliRunner invocation whose arguments begin "vault", "get"):
    the one documented way a value leaves the vault; its standard error is still watched;
  - whatever a test wraps in `canary_expected(channel, where=...)`: while the block runs, a sighting in that channel
    (and, with `where`, only one whose location contains that text, such as a logger name or a request path) is
    counted as expected. Servers run on their own threads, so the exemption is process-wide while it lasts: keep the
    block and the `where` narrow.
Not watched: processes the tests start (a `chamberlain serve`, the stdio upstream), which log to their own output.

At the end of the session the run fails (exit status 1) if the canary was seen anywhere else, and the summary names
each place (channel, where, which test, which encoding), never the value. Vault tests store `CANARY`; `watch()`
adds another secret (a test that generates its own).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shlex
import sys
import threading
import traceback
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping, Sequence
from typing import Any, Literal

import pytest
import typer.testing

import chamberlain.app
from chamberlain.audit.events import AuditEvent
from chamberlain.audit.log import AuditLog
from chamberlain.vault.leak_guard import LeakGuard, StreamScanner

# Characters that base64 and percent-encoding both change, so every encoded form differs from the raw one.
CANARY = "cnry-5d0a8e/+&=?#%-vault-f27c91"

Channel = Literal["log", "audit", "http", "cli"]
CHANNELS: tuple[Channel, ...] = ("log", "audit", "http", "cli")
_TENANT = "canary"
_STANDARD_LOG_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[MutableMapping[str, Any]]], Callable[..., Awaitable[None]]],
    Awaitable[None],
]


@dataclasses.dataclass(frozen=True, slots=True)
class Sighting:
    channel: Channel
    where: str  # a logger name, an audit action and target, an HTTP method, path and status, a CLI command
    encoding: str  # as LeakGuard reports it: raw, base64, base64url, with +percent / +json
    test: str  # the test running when it was seen (servers run on other threads: the best attribution there is)
    expected: bool

    def describe(self) -> str:
        return f"{self.channel}: {self.where} ({self.encoding}) during {self.test}"


class CanaryWatch:
    """What the canary plugin keeps: the secrets to look for, where they were seen, the exemptions in force.
    Thread-safe: test servers run on their own threads and log, audit and answer from there."""

    def __init__(self, secrets: Iterable[str | bytes] = (CANARY,)) -> None:
        self._guard = LeakGuard()
        self._lock = threading.RLock()
        self._expected: list[tuple[frozenset[Channel], str | None]] = []
        self.sightings: list[Sighting] = []
        self.current_test = "(outside any test)"
        for secret in secrets:
            self.watch(secret)

    def watch(self, secret: str | bytes, label: str = "canary") -> None:
        """Looks for another secret too (at least 8 bytes: LeakGuard's minimum)."""
        with self._lock:
            if not self._guard.remember(_TENANT, secret, label):
                raise ValueError("a canary must be 8 bytes or more")

    def check(self, channel: Channel, where: str, data: str | bytes) -> bool:
        """Records a sighting if `data` holds a canary; True when it did."""
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        with self._lock:
            findings = self._guard.scan(_TENANT, raw).findings
            self._record(channel, where, [finding.encoding for finding in findings])
        return bool(findings)

    def stream(self, channel: Channel, where: str) -> CanaryStream:
        """A checker for data that arrives in pieces (a canary split between two of them is found)."""
        with self._lock:
            return CanaryStream(self, channel, where, self._guard.stream(_TENANT, across_line_breaks=True))

    @contextlib.contextmanager
    def expected(self, *channels: Channel, where: str | None = None) -> Iterator[None]:
        if not channels or not set(channels) <= set(CHANNELS):
            raise ValueError(f"name the channels where the canary is expected: some of {', '.join(CHANNELS)}")
        entry = (frozenset(channels), where)
        with self._lock:
            self._expected.append(entry)
        try:
            yield
        finally:
            with self._lock:
                self._expected.remove(entry)

    def unexpected(self) -> list[Sighting]:
        with self._lock:
            return [sighting for sighting in self.sightings if not sighting.expected]

    def _record(self, channel: Channel, where: str, encodings: Iterable[str]) -> None:
        with self._lock:
            expected = any(
                channel in channels and (place is None or place in where) for channels, place in self._expected
            )
            for encoding in dict.fromkeys(encodings):
                self.sightings.append(Sighting(channel, where, encoding, self.current_test, expected))


class CanaryStream:
    def __init__(self, watch: CanaryWatch, channel: Channel, where: str, scanner: StreamScanner) -> None:
        self._watch = watch
        self._channel = channel
        self.where = where
        self._scanner = scanner

    def feed(self, chunk: bytes) -> None:
        with self._watch._lock:
            found = self._scanner.feed(chunk).findings
            self._watch._record(self._channel, self.where, [finding.encoding for finding in found])

    def close(self) -> None:
        with self._watch._lock:
            found = self._scanner.close().findings
            self._watch._record(self._channel, self.where, [finding.encoding for finding in found])


# -- the channels ----------------------------------------------------------------------------------------------------


class CanaryLogHandler(logging.Handler):
    def __init__(self, watch: CanaryWatch) -> None:
        super().__init__(logging.NOTSET)
        self._watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        try:
            parts = [record.getMessage()]
        except Exception:  # a malformed format: what would be logged is the raw message and its arguments
            parts = [str(record.msg), repr(record.args)]
        if record.exc_info and record.exc_info[1] is not None:
            parts.append("".join(traceback.format_exception(*record.exc_info)))
        elif record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(record.stack_info)
        parts += [f"{key}={value!r}" for key, value in vars(record).items() if key not in _STANDARD_LOG_ATTRIBUTES]
        self._watch.check("log", record.name, "\n".join(parts))

    def close(self) -> None:
        # logging.config.dictConfig (uvicorn configures its loggers with it) closes every handler it finds but
        # leaves them attached: this one keeps working.
        return None


def audit_text(event: AuditEvent) -> str:
    return repr({**event.public_fields(), "personal": dict(event.personal)})


def audit_where(event: AuditEvent) -> str:
    return f"{event.action} {event.target or '-'} (tenant {event.tenant})"


class AuditCheck:
    """Checks each event once, though record_as_configured hands it on to record or record_durably."""

    def __init__(self, watch: CanaryWatch) -> None:
        self._watch = watch
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, event: AuditEvent) -> None:
        with self._lock:
            if event.id in self._seen:
                return
            self._seen[event.id] = None
            if len(self._seen) > 4096:
                self._seen.popitem(last=False)
        self._watch.check("audit", audit_where(event), audit_text(event))

    def wrap(self, method: Callable[..., Any], *, is_async: bool) -> Callable[..., Any]:
        if is_async:

            async def checked_async(log: AuditLog, event: AuditEvent, *args: Any, **kwargs: Any) -> Any:
                self(event)
                return await method(log, event, *args, **kwargs)

            return checked_async

        def checked(log: AuditLog, event: AuditEvent, *args: Any, **kwargs: Any) -> Any:
            self(event)
            return method(log, event, *args, **kwargs)

        return checked


class WatchedApp:
    """An ASGI wrapper that shows every HTTP response's headers and body to the watch, then passes it on."""

    def __init__(self, app: ASGIApp, watch: CanaryWatch) -> None:
        self._app = app
        self._watch = watch

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[..., Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request = f"{scope.get('method', '?')} {scope.get('path', '?')}"
        body: CanaryStream | None = None

        async def watched_send(message: MutableMapping[str, Any]) -> None:
            nonlocal body
            if message["type"] == "http.response.start":
                where = f"{request} -> {message.get('status')}"
                headers = b"\n".join(name + b": " + value for name, value in message.get("headers", ()))
                self._watch.check("http", where + " (headers)", headers)
                body = self._watch.stream("http", where)
            elif message["type"] == "http.response.body" and body is not None:
                body.feed(message.get("body", b""))
                if not message.get("more_body", False):
                    body.close()
                    body = None
            await send(message)

        try:
            await self._app(scope, receive, watched_send)
        finally:
            if body is not None:  # the response was cut short: check what was sent
                body.close()


def watch_app(app: Any, watch: CanaryWatch) -> Any:
    """Puts the watch around a Starlette app's whole middleware stack (error pages included), keeping the app object
    itself (tests reach `app.state`)."""
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: WatchedApp(build(), watch)
    return app


def is_vault_get(args: str | Sequence[str] | None) -> bool:
    tokens = shlex.split(args) if isinstance(args, str) else list(args or ())
    return tokens[:2] == ["vault", "get"]


def check_cli_result(watch: CanaryWatch, args: str | Sequence[str] | None, result: Any) -> None:
    tokens = shlex.split(args) if isinstance(args, str) else list(args or ())
    command = "chamberlain " + " ".join(token for token in tokens[:3] if not token.startswith("-"))
    if is_vault_get(args):
        watch.check("cli", command + " (stderr)", result.stderr)  # stdout is where the value is meant to go
    else:
        watch.check("cli", command, result.output)
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        watch.check("cli", command + " (exception)", "".join(traceback.format_exception(*result.exc_info)))


# -- the plugin ------------------------------------------------------------------------------------------------------

_session_watch: CanaryWatch | None = None


def session_watch() -> CanaryWatch:
    if _session_watch is None:
        raise RuntimeError("the canary plugin is not enabled (tests/conftest.py registers it)")
    return _session_watch


def canary_expected(*channels: Channel, where: str | None = None) -> contextlib.AbstractContextManager[None]:
    """Marks the canary as meant to appear in `channels` (at places containing `where`) while the block runs."""
    return session_watch().expected(*channels, where=where)


def watch(secret: str | bytes, label: str = "canary") -> None:
    """Also looks for `secret` (a test's own generated value) for the rest of the session."""
    session_watch().watch(secret, label)


class CanaryPlugin:
    def __init__(self, secrets: Iterable[str | bytes] = (CANARY,)) -> None:
        self.watch = CanaryWatch(secrets)
        self._patch = pytest.MonkeyPatch()
        self._handler = CanaryLogHandler(self.watch)
        self._chamberlain_level = logging.NOTSET
        self._original_create_app = chamberlain.app.create_app
        self._unexpected: list[Sighting] = []

    # Installed when the plugin is registered (tests/conftest.py's pytest_configure), before any test module is
    # imported, so every later `from chamberlain.app import create_app` gets the watched one.
    def pytest_configure(self, config: pytest.Config) -> None:
        global _session_watch
        _session_watch = self.watch
        logging.getLogger().addHandler(self._handler)
        chamberlain_logger = logging.getLogger("chamberlain")
        self._chamberlain_level = chamberlain_logger.level
        chamberlain_logger.setLevel(logging.DEBUG)
        audit = AuditCheck(self.watch)
        for name, is_async in (("record", False), ("record_durably", True), ("record_as_configured", True)):
            self._patch.setattr(AuditLog, name, audit.wrap(getattr(AuditLog, name), is_async=is_async))
        original_invoke = typer.testing.CliRunner.invoke
        watch = self.watch

        def invoke(runner: typer.testing.CliRunner, app: Any, args: Any = None, *rest: Any, **options: Any) -> Any:
            result = original_invoke(runner, app, args, *rest, **options)
            check_cli_result(watch, args, result)
            return result

        self._patch.setattr(typer.testing.CliRunner, "invoke", invoke)
        self._patch.setattr(chamberlain.app, "create_app", self._create_app)
        self._rebind_create_app()

    def _create_app(self, *args: Any, **kwargs: Any) -> Any:
        return watch_app(self._original_create_app(*args, **kwargs), self.watch)

    def _rebind_create_app(self) -> None:
        # Modules that imported create_app by name before the patch (tests/support/server.py, imported by
        # tests/conftest.py) still hold the original.
        for module in list(sys.modules.values()):
            if module is not None and getattr(module, "create_app", None) is self._original_create_app:
                self._patch.setattr(module, "create_app", self._create_app)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._rebind_create_app()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        self.watch.current_test = item.nodeid
        try:
            return (yield)
        finally:
            self.watch.current_test = "(between tests)"

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self._unexpected = self.watch.unexpected()
        if self._unexpected and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        expected = len(self.watch.sightings) - len(self._unexpected)
        if not self._unexpected:
            if expected:
                terminalreporter.write_line(f"canary: seen only where expected ({expected} times)")
            return
        terminalreporter.section("canary: a vault secret leaked", sep="=", red=True, bold=True)
        places = dict.fromkeys(sighting.describe() for sighting in self._unexpected)
        for place in places:
            terminalreporter.write_line(f"  {place}")
        terminalreporter.write_line(
            f"The canary secret was seen {len(self._unexpected)} times where it must not appear (the value is not "
            "shown here). This run fails."
        )

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        global _session_watch
        self._patch.undo()
        logging.getLogger().removeHandler(self._handler)
        logging.getLogger("chamberlain").setLevel(self._chamberlain_level)
        _session_watch = None
