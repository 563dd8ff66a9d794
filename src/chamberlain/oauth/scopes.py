"""Scope strings: RFC 6749 §3.3 syntax, one canonical form (sorted, deduplicated) for storage and comparison."""

from __future__ import annotations

import re
from collections.abc import Iterable

from chamberlain.oauth.errors import INVALID_SCOPE, OAuthError

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), separated by single spaces.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")
MAX_SCOPES = 50


def parse_scope(value: str | None) -> frozenset[str]:
    if not value:
        return frozenset()
    tokens = value.split(" ")
    if len(tokens) > MAX_SCOPES or not all(_SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise OAuthError(INVALID_SCOPE, "scope is not a space-separated list of scope tokens (RFC 6749 §3.3)")
    return frozenset(tokens)


def format_scope(scopes: frozenset[str] | set[str]) -> str:
    return " ".join(sorted(scopes))


def granted_scopes(
    requested: str | None, *, known: Iterable[str], resource_scopes: tuple[str, ...], client_scope: str | None
) -> frozenset[str]:
    """The scopes a request gets: what it asked for (the resource's own scopes when it asked for none), which must
    be known here and, when the client registered a `scope` (RFC 7591 §2), within it."""
    scopes = parse_scope(requested) or frozenset(resource_scopes)
    allowed = frozenset(known) | frozenset(resource_scopes)
    if client_scope is not None:
        allowed &= parse_scope(client_scope)
    if not scopes <= allowed:
        raise OAuthError(INVALID_SCOPE, f"scope not allowed for this client: {format_scope(set(scopes - allowed))}")
    return scopes
