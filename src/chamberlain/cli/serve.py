"""`chamberlain serve`: run the gateway."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

import typer
import uvicorn

from chamberlain.app import create_app
from chamberlain.audit.export.sinks import SinkConfigurationError, build_sink
from chamberlain.cli.common import ConfigFile, DataDir, console, fail, initialised_store, run, settings_from
from chamberlain.crypto.master_key import load_master_key
from chamberlain.net.hosts import is_loopback_host
from chamberlain.settings import Settings


def serve(
    data_dir: DataDir = None,
    config: ConfigFile = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8080].")] = None,
    issuer: Annotated[
        str | None,
        typer.Option(help="Public base URL clients use; http only on loopback [default: http://HOST:PORT]."),
    ] = None,
) -> None:
    """Run the gateway: OAuth authorization server, login pages and MCP endpoints."""
    settings = settings_from(data_dir, config, host=host, port=port, issuer=issuer)
    problem = issuer_problem(settings)
    if problem:
        fail(problem)
    run(_check_store(settings))
    console.print(f"Chamberlain listening on http://{settings.host}:{settings.port}  issuer {settings.public_url}")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )


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
