"""Proof Key for Code Exchange (RFC 7636), S256 only as OAuth 2.1 §4.1.1 and the MCP authorization spec require."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from chamberlain.oauth.errors import INVALID_GRANT, INVALID_REQUEST, OAuthError

# RFC 7636 §4.1: code_verifier = 43*128unreserved; §4.2: an S256 challenge is 43 base64url characters.
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


def validate_challenge(challenge: str | None, method: str | None) -> str:
    if not challenge:
        raise OAuthError(INVALID_REQUEST, "code_challenge is required (PKCE, RFC 7636)")
    if method != "S256":
        # RFC 7636 §4.3 defaults a missing method to "plain", which OAuth 2.1 and MCP forbid.
        raise OAuthError(INVALID_REQUEST, "code_challenge_method must be S256")
    if not _CHALLENGE.fullmatch(challenge):
        raise OAuthError(INVALID_REQUEST, "code_challenge is not a base64url SHA-256 digest")
    return challenge


def verify(challenge: str | None, verifier: str | None) -> None:
    """RFC 7636 §4.6. A verifier without an earlier challenge is a downgrade attempt (RFC 9700 §4.8.2)."""
    if challenge is None:
        if verifier is not None:
            raise OAuthError(INVALID_GRANT, "code_verifier sent but no code_challenge was given at authorization")
        raise OAuthError(INVALID_GRANT, "the authorization code was not bound to a code_challenge")
    if verifier is None:
        raise OAuthError(INVALID_GRANT, "code_verifier is required")
    if not _VERIFIER.fullmatch(verifier):
        raise OAuthError(INVALID_GRANT, "code_verifier does not match RFC 7636 §4.1 syntax")
    computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=")
    if not hmac.compare_digest(computed, challenge.encode("ascii")):
        raise OAuthError(INVALID_GRANT, "code_verifier does not match the code_challenge")
