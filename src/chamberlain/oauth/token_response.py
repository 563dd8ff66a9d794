"""The successful token response (RFC 6749 §5.1)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import JSONResponse

from chamberlain.crypto.tokens import digest, new_secret
from chamberlain.oauth.access_tokens import IssuedAccessToken
from chamberlain.oauth.errors import NO_STORE


@dataclass(frozen=True)
class RefreshToken:
    value: str
    digest: bytes

    @classmethod
    def new(cls) -> RefreshToken:
        value = new_secret()
        return cls(value, digest(value))


@dataclass(frozen=True)
class TokenResponse:
    access_token: IssuedAccessToken
    refresh_token: RefreshToken | None = None

    def to_response(self) -> JSONResponse:
        body: dict[str, str | int] = {
            "access_token": self.access_token.token,
            "token_type": "Bearer",
            "expires_in": self.access_token.expires_in,
            "scope": " ".join(sorted(self.access_token.claims.scopes)),
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token.value
        # RFC 6749 §5.1: responses carrying tokens must not be cached.
        return JSONResponse(body, headers=NO_STORE)
