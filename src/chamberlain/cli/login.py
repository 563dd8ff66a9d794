"""`chamberlain login`, `chamberlain token`, `chamberlain logout`: this machine's CLI signed in to a Chamberlain
issuer, the refresh token in the OS keychain.

`chamberlain token` is Claude Code's apiKeyHelper (settings.json: `"apiKeyHelper": "chamberlain token --url URL"`,
with ANTHROPIC_BASE_URL the same URL): on success it prints the access token and nothing else on stdout and exits
0; when the person must sign in again (or the server cannot be reached) it prints nothing on stdout, one line on
stderr saying what to do, and exits 1. Never a traceback: Claude Code shows stderr as it is.

This module imports neither the server nor cli.common (which loads it): it runs before Claude Code's requests.
"""

from __future__ import annotations

import contextlib
import sys
import webbrowser
from collections.abc import Callable, Iterator
from typing import Annotated, NoReturn

import typer

from chamberlain.client import oauth
from chamberlain.client.credentials import Credentials
from chamberlain.client.flows import (
    DEFAULT_SCOPE,
    LLM_AUDIENCE,
    NotSignedIn,
    access_token,
    resource_for,
    sign_in,
    sign_out,
)
from chamberlain.client.oauth import ClientError, Unreachable
from chamberlain.vault.backend import BackendUnavailable
from chamberlain.vault.keychain import ALLOW_FLAG, KeychainStore

IssuerUrl = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar=["CHAMBERLAIN_URL", "ANTHROPIC_BASE_URL"],
        help="The Chamberlain issuer: the gateway's URL, or a tenant's (…/t/NAME).",
        show_default=False,
    ),
]
Audience = Annotated[
    str,
    typer.Option("--audience", help="The resource: llm (the LLM gateway), a path such as mcp/NAME, or its URL."),
]
AllowInsecureKeychain = Annotated[
    bool,
    typer.Option(
        ALLOW_FLAG,
        envvar="CHAMBERLAIN_ALLOW_INSECURE_KEYCHAIN",
        help="Accept a keyring backend that keeps secrets in plain text (never the default).",
    ),
]


def login(
    url: IssuerUrl = None,
    audience: Audience = LLM_AUDIENCE,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the sign-in URL instead of opening a browser.")
    ] = False,
    scope: Annotated[str, typer.Option("--scope", help="Scopes to ask for (space-separated).")] = DEFAULT_SCOPE,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for the sign-in.")] = 300,
    allow_insecure_keychain: AllowInsecureKeychain = False,
) -> None:
    """Sign in through the browser; the refresh token goes to the OS keychain."""
    with _reported("login", url, audience):
        credentials, resource = _target(url, audience, allow_insecure_keychain)
        with oauth.http_client() as http:
            sign_in(http, credentials, resource, open_browser=_browser(no_browser), scope=scope, timeout=timeout)
    typer.echo(f"Signed in to {credentials.issuer} for {resource}.")


def token(
    url: IssuerUrl = None,
    audience: Audience = LLM_AUDIENCE,
    allow_insecure_keychain: AllowInsecureKeychain = False,
) -> None:
    """Print a fresh access token (Claude Code's apiKeyHelper); exit 1 with a message when a sign-in is needed."""
    with _reported("token", url, audience):
        credentials, resource = _target(url, audience, allow_insecure_keychain)
        with oauth.http_client() as http:
            value = access_token(http, credentials, resource)
    sys.stdout.write(value + "\n")


def logout(
    url: IssuerUrl = None,
    audience: Audience = LLM_AUDIENCE,
    allow_insecure_keychain: AllowInsecureKeychain = False,
) -> None:
    """Revoke the grant at the server (RFC 7009) and remove it from the keychain."""
    with _reported("logout", url, audience):
        credentials, resource = _target(url, audience, allow_insecure_keychain)
        with oauth.http_client() as http:
            ended = sign_out(http, credentials, resource)
    if ended:
        typer.echo(f"Signed out of {credentials.issuer} for {resource}: the grant is revoked and forgotten.")
    else:
        typer.echo(f"Not signed in to {credentials.issuer} for {resource}.")


def _target(url: str | None, audience: str, allow_insecure: bool) -> tuple[Credentials, str]:
    """The issuer's keychain entries and the resource URL `audience` names there: what login, token and logout all
    act on, resolved the same way (inside _reported, so a bad URL or keychain is one line on stderr)."""
    if not url:
        raise ClientError("no Chamberlain URL: pass --url or set CHAMBERLAIN_URL")
    credentials = Credentials(KeychainStore(oauth.check_url(url, "the URL"), allow_insecure=allow_insecure))
    return credentials, resource_for(credentials.issuer, audience)


def _browser(no_browser: bool) -> Callable[[str], object]:
    def open_browser(url: str) -> None:
        # The URL is printed either way: the browser may not open, or open on another display. It must be opened
        # on this machine, since the answer comes back to a port on 127.0.0.1 (RFC 8252 §7.3).
        typer.echo(f"To sign in, open this URL in a browser on this machine:\n\n  {url}\n", err=True)
        if not no_browser:
            webbrowser.open(url)

    return open_browser


@contextlib.contextmanager
def _reported(command: str, url: str | None, audience: str) -> Iterator[None]:
    """Every failure as one line on stderr and exit 1 (130 when interrupted); nothing on stdout."""
    again = f"chamberlain login --url {url}" + ("" if audience == LLM_AUDIENCE else f" --audience {audience}")
    try:
        yield
    except NotSignedIn as problem:
        _fail(command, f"{problem}: run `{again}`")
    except Unreachable as problem:
        _fail(command, f"{problem}: try again when it is reachable" + ("" if command == "login" else f", or `{again}`"))
    except (ClientError, BackendUnavailable) as problem:
        _fail(command, str(problem))
    except EOFError:
        # keyrings that ask for a password (keyrings.cryptfile) read it from a terminal Claude Code does not give.
        _fail(command, "the keychain asked for its password and no terminal was there to answer; unlock it first")
    except KeyboardInterrupt:
        _fail(command, "interrupted", code=130)
    except Exception as problem:  # a bug: still one line, since Claude Code shows stderr verbatim
        _fail(command, f"unexpected {type(problem).__name__}; please report it")


def _fail(command: str, message: str, code: int = 1) -> NoReturn:
    typer.echo(f"chamberlain {command}: {message}", err=True)
    raise typer.Exit(code)
