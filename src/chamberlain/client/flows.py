"""Signing in (OAuth 2.1 authorization code with PKCE, as a native app: RFC 8252), handing out access tokens, and
signing out (RFC 7009), over the keychain entries of credentials.py."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import urlencode, urlsplit

import httpx

from chamberlain.client import oauth
from chamberlain.client.credentials import CachedAccessToken, Credentials, StoredGrant, refresh_lock
from chamberlain.client.loopback import REGISTERED_REDIRECT_URI, LoopbackReceiver
from chamberlain.client.oauth import AuthorizationServer, ClientError, OAuthFailure

DEFAULT_SCOPE = "offline_access"
LLM_AUDIENCE = "llm"


class NotSignedIn(ClientError):
    """Nothing stored for this resource, or the grant behind it has ended: the person must sign in again."""


def resource_for(issuer: str, audience: str) -> str:
    """The resource indicator (RFC 8707) for `audience`: a path under the issuer ("llm", "mcp/NAME") or a URL of a
    resource of that issuer, which is the only kind of resource its tokens can be for."""
    if "://" not in audience:
        path = audience.strip("/")
        if not path or any(segment in ("", ".", "..") for segment in path.split("/")):
            raise ClientError(f"audience {audience!r} is not a resource path such as llm or mcp/NAME")
        return f"{issuer}/{path}"
    resource = audience.rstrip("/")
    if not resource.startswith(issuer + "/") or urlsplit(resource).query or "#" in resource:
        raise ClientError(f"audience {audience!r} is not a resource of {issuer}")
    return resource


def new_code_verifier() -> str:
    """RFC 7636 §4.1: 64 random bytes as base64url, 86 characters of the unreserved alphabet."""
    return secrets.token_urlsafe(64)


def s256_challenge(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


def sign_in(
    http: httpx.Client,
    credentials: Credentials,
    resource: str,
    *,
    open_browser: Callable[[str], object],
    scope: str = DEFAULT_SCOPE,
    timeout: float = 300.0,
) -> str:
    """Runs one authorization in the person's browser, stores the grant and returns the client_id used.
    `open_browser` is handed the authorization URL (the CLI opens the system browser and prints it; tests sign in
    over HTTP)."""
    server = oauth.discover(http, credentials.issuer)
    client_id = _client_id(http, server, credentials)
    verifier, state = new_code_verifier(), secrets.token_urlsafe(32)
    with LoopbackReceiver(state=state, issuer=server.issuer, iss_required=server.iss_in_responses) as receiver:
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": receiver.redirect_uri,
            "scope": scope,
            "state": state,
            "code_challenge": s256_challenge(verifier),
            "code_challenge_method": "S256",
            "resource": resource,
        }
        separator = "&" if urlsplit(server.authorization_endpoint).query else "?"
        open_browser(server.authorization_endpoint + separator + urlencode(query))
        code = receiver.wait(timeout)
        redirect_uri = receiver.redirect_uri
    issued_at = time.time()
    tokens = oauth.exchange_code(
        http,
        server,
        client_id=client_id,
        code=code,
        redirect_uri=redirect_uri,
        code_verifier=verifier,
        resource=resource,
    )
    if tokens.refresh_token is None:
        raise ClientError(f"{server.issuer} issued no refresh token, so the sign-in cannot be kept")
    grant = StoredGrant(
        resource=resource,
        client_id=client_id,
        refresh_token=tokens.refresh_token,
        scope=tokens.scope,
        token_endpoint=server.token_endpoint,
        revocation_endpoint=server.revocation_endpoint,
    )
    with refresh_lock(credentials.issuer):
        replaced = credentials.grant(resource)
        # The cached token of the grant being replaced must never be handed out for this one: it goes first.
        credentials.forget(resource)
        credentials.save_grant(grant)
        _cache(credentials, resource, tokens, issued_at)
    if replaced is not None:
        # The earlier grant would stay valid at the server with nobody holding it; failing to end it changes nothing
        # for this sign-in, and the grant expires anyway.
        with contextlib.suppress(ClientError):
            _revoke(http, credentials.issuer, replaced)
    return client_id


def _client_id(http: httpx.Client, server: AuthorizationServer, credentials: Credentials) -> str:
    """The client registered by an earlier login when the server still knows it; a new registration otherwise
    (one client per issuer and machine, not one per login: registrations count against the tenant's quota)."""
    stored = credentials.client_id()
    if stored is not None and oauth.client_is_known(http, server, stored):
        return stored
    client_id = oauth.register(http, server, REGISTERED_REDIRECT_URI)
    credentials.save_client_id(client_id)
    return client_id


def access_token(http: httpx.Client, credentials: Credentials, resource: str) -> str:
    """A bearer token for `resource`: the cached one while it has enough life left, else a refreshed one (the
    rotated refresh token stored before the access token is used)."""
    cached = credentials.access_token(resource)
    if cached is not None and cached.usable(time.time()):
        return cached.access_token
    with refresh_lock(credentials.issuer):
        # Whoever held the lock before may have refreshed already: its token is as good, and the refresh token we
        # read before waiting has been rotated away.
        cached = credentials.access_token(resource)
        if cached is not None and cached.usable(time.time()):
            return cached.access_token
        grant = credentials.grant(resource)
        if grant is None:
            raise NotSignedIn(f"not signed in to {credentials.issuer} for {resource}")
        issued_at = time.time()
        try:
            tokens = oauth.refresh(
                http,
                credentials.issuer,
                grant.token_endpoint,
                client_id=grant.client_id,
                refresh_token=grant.refresh_token,
                resource=resource,
            )
        except OAuthFailure as failure:
            if not failure.grant_ended:
                raise
            credentials.forget(resource)
            raise NotSignedIn(f"the sign-in to {credentials.issuer} has ended ({failure.error})") from None
        if tokens.refresh_token is not None:
            credentials.save_grant(replace(grant, refresh_token=tokens.refresh_token))
        _cache(credentials, resource, tokens, issued_at)
    return tokens.access_token


def sign_out(http: httpx.Client, credentials: Credentials, resource: str) -> bool:
    """Revokes the grant at the server, then forgets it here; False when there was nothing to sign out of. When
    revocation fails the entries stay, so that it can be tried again."""
    with refresh_lock(credentials.issuer):
        grant = credentials.grant(resource)
        if grant is not None:
            _revoke(http, credentials.issuer, grant)
        credentials.forget(resource)
    return grant is not None


def _revoke(http: httpx.Client, issuer: str, grant: StoredGrant) -> None:
    try:
        oauth.revoke(
            http, issuer, grant.revocation_endpoint, client_id=grant.client_id, refresh_token=grant.refresh_token
        )
    except OAuthFailure as failure:
        if not failure.grant_ended:  # a client the server no longer knows has no grant left to revoke
            raise


def _cache(credentials: Credentials, resource: str, tokens: oauth.TokenSet, issued_at: float) -> None:
    if tokens.expires_in is None:
        credentials.forget_access_token(resource)  # of unknown lifetime: never handed out twice
        return
    credentials.save_access_token(
        CachedAccessToken(resource, tokens.access_token, issued_at + tokens.expires_in, float(tokens.expires_in))
    )
