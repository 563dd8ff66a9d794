"""The CLI's requests to a Chamberlain authorization server: metadata discovery (RFC 8414), dynamic registration as
a public native client (RFC 7591, RFC 8252 §8.4), the token endpoint (OAuth 2.1 §4.1.3 and §4.3) and revocation
(RFC 7009).

Error codes are the RFC's strings, not chamberlain.oauth.errors' constants: importing the server's modules would
cost `chamberlain token` a fifth of a second at every start.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from chamberlain import __version__
from chamberlain.net.hosts import is_loopback_host

TIMEOUT = 10.0  # seconds per request: Claude Code waits on `chamberlain token`
USER_AGENT = f"chamberlain-cli/{__version__}"
METADATA_PATH = "/.well-known/oauth-authorization-server"
CLIENT_NAME = "Chamberlain CLI"
SOFTWARE_ID = "chamberlain-cli"

# RFC 6749 §5.2: error codes that mean the stored grant or client is gone for good; anything else may be transient.
GRANT_ENDED = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
# RFC 6749 §5.2: error and error_description are limited to %x20-21 / %x23-5B / %x5D-7E; anything else a server
# sends is dropped before it reaches a terminal.
_PRINTABLE_ERROR = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,300}")


class ClientError(Exception):
    """A failure the CLI reports as one line; the message never contains a token."""


class Unreachable(ClientError):
    """The server could not be reached, or answered with something other than OAuth (a 5xx, an HTML page)."""


class OAuthFailure(ClientError):
    """The server answered with an OAuth error (RFC 6749 §4.1.2.1, §5.2; RFC 7591 §3.2.2; RFC 7009 §2.2.1)."""

    def __init__(self, error: str, description: str | None) -> None:
        self.error = error
        self.description = description
        super().__init__(f"{error}: {description}" if description else error)

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> OAuthFailure:
        return cls(_printable(params.get("error")) or "invalid_response", _printable(params.get("error_description")))

    @property
    def grant_ended(self) -> bool:
        return self.error in GRANT_ENDED


def _printable(value: object) -> str | None:
    return value if isinstance(value, str) and _PRINTABLE_ERROR.fullmatch(value) else None


def http_client() -> httpx.Client:
    # Redirects are never followed: an endpoint that redirects a token request is misconfigured or hostile.
    return httpx.Client(timeout=TIMEOUT, follow_redirects=False, headers={"User-Agent": USER_AGENT})


def check_url(url: str, what: str) -> str:
    """`url` without a trailing slash, when it is https, or http to this machine (RFC 8252 §8.3: tokens never
    travel in the clear off the device); a ClientError otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ClientError(f"{what} {url!r} is not a URL") from None
    if any(char.isspace() or not char.isprintable() for char in url) or not parts.hostname:
        raise ClientError(f"{what} {url!r} is not a URL")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ClientError(f"{what} {url!r} must use https (http only for 127.0.0.1 or localhost)")
    if parts.scheme not in ("https", "http"):
        raise ClientError(f"{what} {url!r} must be an https URL")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        # RFC 8414 §2: an issuer has no query or fragment; userinfo would only disguise the host.
        raise ClientError(f"{what} {url!r} must not have a user name, a query or a fragment")
    return url.rstrip("/")


def metadata_url(issuer: str) -> str:
    """RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path (`/t/acme`)."""
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}{METADATA_PATH}{parts.path.rstrip('/')}"


@dataclass(frozen=True, slots=True)
class AuthorizationServer:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    registration_endpoint: str | None
    revocation_endpoint: str | None
    # RFC 9207 §3: a server that announces `iss` in authorization responses must be held to it.
    iss_in_responses: bool


def discover(http: httpx.Client, issuer: str) -> AuthorizationServer:
    url = metadata_url(issuer)
    response = _send(http, "GET", url, issuer)
    if response.status_code != 200:
        raise ClientError(f"{issuer} is not a Chamberlain issuer ({url} answered {response.status_code})")
    document = _json_object(response, issuer)
    if document.get("issuer") != issuer:
        # RFC 8414 §3.3: the metadata must name the issuer it was fetched for, byte for byte.
        raise ClientError(f"the metadata at {url} names another issuer: use the URL it names")
    if "S256" not in _strings(document.get("code_challenge_methods_supported")):
        # RFC 8414 §2: without this member the server does not support PKCE, which OAuth 2.1 requires.
        raise ClientError(f"{issuer} does not support PKCE with S256")
    return AuthorizationServer(
        issuer=issuer,
        authorization_endpoint=_endpoint(document, "authorization_endpoint", required=True) or "",
        token_endpoint=_endpoint(document, "token_endpoint", required=True) or "",
        registration_endpoint=_endpoint(document, "registration_endpoint"),
        revocation_endpoint=_endpoint(document, "revocation_endpoint"),
        iss_in_responses=document.get("authorization_response_iss_parameter_supported") is True,
    )


def _endpoint(document: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = document.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ClientError(f"the server's metadata has no usable {name}")
    return check_url(value, name)


def _strings(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def register(http: httpx.Client, server: AuthorizationServer, redirect_uri: str) -> str:
    """A client_id for this CLI: RFC 7591 §3.1 registration as a public client (RFC 8252 §8.4: a native app
    cannot keep a secret) with a loopback redirect URI that may take any port at request time (RFC 8252 §7.3)."""
    if server.registration_endpoint is None:
        raise ClientError(
            f"{server.issuer} does not offer dynamic client registration: ask its administrator for a client id"
        )
    metadata = {
        "client_name": CLIENT_NAME,
        "redirect_uris": [redirect_uri],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "software_id": SOFTWARE_ID,
        "software_version": __version__,
    }
    response = _send(http, "POST", server.registration_endpoint, server.issuer, json=metadata)
    body = _answer(response, server.issuer, expected=201)
    client_id = body.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        raise ClientError(f"{server.issuer} registered the client but returned no client_id")
    return client_id


def client_is_known(http: httpx.Client, server: AuthorizationServer, client_id: str) -> bool:
    """Whether the server still knows `client_id`. There is no registration read endpoint (RFC 7592 is not
    offered), so a token request without a code is sent: the server authenticates the client first and answers
    invalid_client for one it does not know (RFC 6749 §5.2), something else for one it does."""
    try:
        form = {"grant_type": "authorization_code", "client_id": client_id}
        _token_request(http, server.issuer, server.token_endpoint, form)
    except OAuthFailure as failure:
        return failure.error != "invalid_client"
    return True


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str
    expires_in: int | None
    refresh_token: str | None
    scope: str | None


def exchange_code(
    http: httpx.Client,
    server: AuthorizationServer,
    *,
    client_id: str,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    resource: str,
) -> TokenSet:
    form = {
        "grant_type": "authorization_code",
        "client_id": client_id,
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
        "resource": resource,  # RFC 8707 §2.2
    }
    return _token_request(http, server.issuer, server.token_endpoint, form)


def refresh(
    http: httpx.Client, issuer: str, token_endpoint: str, *, client_id: str, refresh_token: str, resource: str
) -> TokenSet:
    form = {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": refresh_token, "resource": resource}
    return _token_request(http, issuer, token_endpoint, form)


def revoke(
    http: httpx.Client, issuer: str, revocation_endpoint: str | None, *, client_id: str, refresh_token: str
) -> None:
    """RFC 7009 §2.1; revoking the refresh token revokes its whole grant (§2.1 "SHOULD", which Chamberlain does)."""
    if revocation_endpoint is None:
        raise ClientError(f"{issuer} offers no revocation endpoint: the grant stays valid until it expires")
    form = {"token": refresh_token, "token_type_hint": "refresh_token", "client_id": client_id}
    response = _send(http, "POST", revocation_endpoint, issuer, data=form)
    if response.status_code != 200:
        _answer(response, issuer)


def _token_request(http: httpx.Client, issuer: str, token_endpoint: str, form: dict[str, str]) -> TokenSet:
    response = _send(http, "POST", token_endpoint, issuer, data=form)
    body = _answer(response, issuer)
    access_token = body.get("access_token")
    token_type = body.get("token_type")
    # RFC 6749 §5.1 and §7.1: the type is matched case-insensitively; only bearer tokens can be handed on.
    if not isinstance(access_token, str) or not access_token or not isinstance(token_type, str):
        raise ClientError(f"{issuer} answered the token request without an access token")
    if token_type.lower() != "bearer":
        raise ClientError(f"{issuer} issued a {token_type!r} token; only Bearer tokens can be used")
    expires_in = body.get("expires_in")
    refresh_token = body.get("refresh_token")
    scope = body.get("scope")
    return TokenSet(
        access_token=access_token,
        expires_in=expires_in if isinstance(expires_in, int) and expires_in > 0 else None,
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        scope=scope if isinstance(scope, str) else None,
    )


def _send(http: httpx.Client, method: str, url: str, issuer: str, **kwargs: Any) -> httpx.Response:
    try:
        return http.request(method, url, **kwargs)
    except httpx.HTTPError as problem:
        # httpx's message can quote the request; the exception's type and the host say enough.
        raise Unreachable(f"cannot reach {issuer} ({type(problem).__name__})") from None


def _answer(response: httpx.Response, issuer: str, *, expected: int = 200) -> dict[str, Any]:
    """The JSON object of a successful answer; an OAuthFailure for an OAuth error, Unreachable for anything else."""
    if response.status_code == expected:
        return _json_object(response, issuer)
    if response.status_code in (400, 401, 403):
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            raise OAuthFailure.from_params(body)
    raise Unreachable(f"{issuer} answered {response.status_code} {response.reason_phrase}".rstrip())


def _json_object(response: httpx.Response, issuer: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise Unreachable(f"{issuer} answered {response.request.url.path} with something other than a JSON object")
    return body
