"""`chamberlain serve`: run the gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
import uvicorn
from pydantic import ValidationError

from chamberlain.app import create_app
from chamberlain.audit.export.sinks import SinkConfigurationError, build_sink
from chamberlain.cli.common import ConfigFile, DataDir, console, fail, initialised_store, run, settings_from
from chamberlain.crypto.master_key import load_master_key
from chamberlain.net.hosts import is_loopback_host
from chamberlain.settings import Settings
from chamberlain.transport.peer_gate import UnixSocketServer
from chamberlain.transport.settings import TlsSettings
from chamberlain.transport.tls import ServerTls, TlsConfig, TlsConfigurationError
from chamberlain.transport.unix_socket import UnixSocketError, unix_listener

_UVICORN_OPTIONS: dict[str, Any] = {
    "log_level": "info",
    "access_log": False,
    "server_header": False,
    "proxy_headers": False,
}


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    # Graceful shutdown: after SIGTERM (and the drain delay), in-flight requests and streams get
    # `shutdown_grace_seconds` before they are cancelled; then the lifespan writes queued audit events and usage.
    return {**_UVICORN_OPTIONS, "timeout_graceful_shutdown": settings.shutdown_grace_seconds}


def serve(
    data_dir: DataDir = None,
    config: ConfigFile = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default: 8080).")] = None,
    issuer: Annotated[
        str | None,
        typer.Option(help="Public base URL clients use; http only on loopback (default: http://HOST:PORT)."),
    ] = None,
    uds: Annotated[
        Path | None,
        typer.Option(
            "--uds",
            help="Listen on this Unix socket instead of TCP, for uds.allowed_uids/gids only (default: uds.path).",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Serve HTTPS with this PEM certificate chain (tls.certificate).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="The certificate's PEM private key (tls.private_key).")
    ] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option("--tls-client-ca", help="Require client certificates from these PEM CAs (tls.client_ca)."),
    ] = None,
) -> None:
    """Run the gateway: OAuth authorization server, login pages and MCP endpoints."""
    settings = settings_from(data_dir, config, host=host, port=port, issuer=issuer)
    settings = with_tls_options(settings, certificate=tls_cert, private_key=tls_key, client_ca=tls_client_ca)
    problem = issuer_problem(settings)
    if problem:
        fail(problem)
    run(_check_store(settings))
    socket_path = uds or settings.uds.path
    if socket_path is not None:
        _serve_unix_socket(settings, socket_path)
        return
    if settings.tls.enabled:
        _serve_tls(settings)
        return
    console.print(f"Chamberlain listening on http://{settings.host}:{settings.port}  issuer {settings.public_url}")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, **_uvicorn_options(settings))


def with_tls_options(settings: Settings, **options: Path | None) -> Settings:
    """The `tls:` section with the --tls-* options over it; with TLS on, the default issuer is https."""
    given = {key: value for key, value in options.items() if value is not None}
    tls = settings.tls
    if given:
        try:
            tls = TlsSettings.model_validate({**settings.tls.model_dump(exclude_unset=True), **given})
        except ValidationError as problem:
            fail("; ".join(str(error["msg"]).removeprefix("Value error, ") for error in problem.errors()))
    update: dict[str, object] = {"tls": tls}
    if tls.enabled and not settings.issuer:
        update["issuer"] = f"https://{settings.host}:{settings.port}"
    return settings.model_copy(update=update)


def _serve_tls(settings: Settings) -> None:
    try:
        tls = ServerTls(settings.tls)
    except TlsConfigurationError as problem:
        fail(str(problem))
    mode = settings.tls.client_certificate_mode
    console.print(
        f"Chamberlain listening on https://{settings.host}:{settings.port} (client certificates: {mode})"
        f"  issuer {settings.public_url}"
    )
    config = TlsConfig(
        create_app(settings), tls=tls, host=settings.host, port=settings.port, **_uvicorn_options(settings)
    )
    uvicorn.Server(config).run()


def _serve_unix_socket(settings: Settings, path: Path) -> None:
    """Only the socket listens: no TCP port is opened."""
    try:
        with unix_listener(path) as listener:
            console.print(f"Chamberlain listening on unix socket {path}  issuer {settings.public_url}")
            UnixSocketServer(
                create_app(settings), listener, settings.uds.policy, **_uvicorn_options(settings)
            ).serve_forever()
    except UnixSocketError as problem:
        fail(str(problem))


async def _check_store(settings: Settings) -> None:
    """Refuse to start on a missing store, master key or audit sink secret with one clear line, before uvicorn."""
    load_master_key(settings.data_dir)
    async with initialised_store(settings):
        pass
    for sink in settings.audit.sinks:
        try:
            await build_sink(sink).aclose()
        except SinkConfigurationError as problem:
            fail(f"audit.sinks: {problem}")


def issuer_problem(settings: Settings) -> str | None:
    """OAuth 2.1 §1.5 requires TLS for every endpoint except loopback; an http issuer elsewhere would leak tokens."""
    parts = urlsplit(settings.public_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"the issuer must be an absolute http(s) URL, not {settings.public_url!r}"
    if parts.query or parts.fragment:
        return "the issuer must not have a query or fragment (RFC 8414 §2)"
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return f"an http issuer is accepted only on loopback; use https for {parts.hostname}"
    return None
