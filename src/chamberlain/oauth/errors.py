"""OAuth error responses: RFC 6749 §4.1.2.1 and §5.2, RFC 6750 §3.1, RFC 7591 §3.2.2, RFC 8707 §2."""

from __future__ import annotations

from starlette.responses import JSONResponse

# RFC 6749 §5.2 / §4.1.2.1
INVALID_REQUEST = "invalid_request"
INVALID_CLIENT = "invalid_client"
INVALID_GRANT = "invalid_grant"
UNAUTHORIZED_CLIENT = "unauthorized_client"
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
UNSUPPORTED_RESPONSE_TYPE = "unsupported_response_type"
INVALID_SCOPE = "invalid_scope"
ACCESS_DENIED = "access_denied"
SERVER_ERROR = "server_error"
TEMPORARILY_UNAVAILABLE = "temporarily_unavailable"
# RFC 7009 §2.2.1
UNSUPPORTED_TOKEN_TYPE = "unsupported_token_type"
# RFC 7591 §3.2.2
INVALID_REDIRECT_URI = "invalid_redirect_uri"
INVALID_CLIENT_METADATA = "invalid_client_metadata"
# RFC 8707 §2
INVALID_TARGET = "invalid_target"
# RFC 6750 §3.1
INVALID_TOKEN = "invalid_token"
INSUFFICIENT_SCOPE = "insufficient_scope"
QUOTA_EXCEEDED = "quota_exceeded"  # ours: the tenant may register no more clients (tenancy/config.py Quotas)

# RFC 6749 §5.1: responses carrying tokens or credentials must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    """A failure that the client is told about in the RFC's own error format."""

    def __init__(
        self,
        error: str,
        description: str | None = None,
        *,
        status_code: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status_code = status_code
        self.headers = headers or {}

    def as_dict(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body

    def to_response(self) -> JSONResponse:
        return JSONResponse(self.as_dict(), status_code=self.status_code, headers={**NO_STORE, **self.headers})


def invalid_client(description: str, *, basic_auth_attempted: bool = False) -> OAuthError:
    """RFC 6749 §5.2: 401 for a failed client authentication, with a challenge when Basic was tried."""
    headers = {"WWW-Authenticate": 'Basic realm="chamberlain"'} if basic_auth_attempted else {}
    return OAuthError(INVALID_CLIENT, description, status_code=401, headers=headers)
