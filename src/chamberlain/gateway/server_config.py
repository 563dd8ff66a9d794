"""How one upstream MCP server is reached: its transport, the credential the gateway presents, and its limits.

The same model is read from the YAML config (`servers:`) and stored per server in the database (the CLI), so the
two ways of registering a server cannot drift apart. Secret values are `SecretStr`: they never print.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from chamberlain.net.hosts import is_loopback_host

DEFAULT_SCOPES = ("mcp:tools",)
_FIELD_VALUE = re.compile(r"[\x20-\x7e\t]+")
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "accept",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "last-event-id",
    }
)
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _token_endpoint_url(url: str) -> str:
    """An admin-configured token endpoint: trusted, but the gateway's client secret must not cross the network in
    clear text (RFC 6749 §2.3.1, §3.2: TLS is required), so plain http is allowed on loopback only."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ValueError("the token endpoint must be an absolute https URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError("the token endpoint must be an absolute https URL")
    if parts.fragment:
        raise ValueError("the token endpoint must not contain a fragment (RFC 6749 §3.2)")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ValueError("the token endpoint must use https (plain http is allowed only on loopback)")
    return url


TokenEndpointUrl = Annotated[str, AfterValidator(_token_endpoint_url)]


class NoCredential(_Model):
    """The upstream needs no credential (an internal server on a trusted network)."""

    type: Literal["none"] = "none"


class HeaderCredential(_Model):
    """A static secret sent in one header: an API key, or `Authorization: Bearer …` for a fixed token."""

    type: Literal["header"] = "header"
    header: str = Field("Authorization", pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # RFC 9110 §5.1 token
    value: SecretStr

    @field_validator("header")
    @classmethod
    def _not_a_transport_header(cls, header: str) -> str:
        # The connection's own headers (RFC 9110 §7.6.1, §8.6; RFC 9112 §6.1) and the MCP transport's are set by
        # the gateway; a credential must not replace them.
        lowered = header.lower()
        if lowered in _RESERVED_HEADERS or lowered.startswith("mcp-"):
            raise ValueError(f"{header!r} is set by the gateway itself and cannot carry a credential")
        return header

    @field_validator("value")
    @classmethod
    def _printable(cls, value: SecretStr) -> SecretStr:
        # RFC 9110 §5.5: visible ASCII, spaces and tabs; a line break would smuggle in another header.
        if not value.get_secret_value() or not _FIELD_VALUE.fullmatch(value.get_secret_value()):
            raise ValueError("the header value must be non-empty printable ASCII (no line breaks)")
        return value


class ClientCredentialsCredential(_Model):
    """An OAuth token the gateway obtains for itself (RFC 6749 §4.4) and renews shortly before it expires."""

    type: Literal["client_credentials"] = "client_credentials"
    token_endpoint: TokenEndpointUrl
    client_id: str
    client_secret: SecretStr
    scope: str | None = None
    resource: str | None = None  # RFC 8707 resource indicator for the upstream


class TokenExchangeCredential(_Model):
    """RFC 8693: a token for this user and this upstream's audience, from the upstream's token endpoint.

    The subject token is a short-lived JWT Chamberlain signs for the user (never the client's own token).
    """

    type: Literal["token_exchange"] = "token_exchange"
    token_endpoint: TokenEndpointUrl
    client_id: str
    client_secret: SecretStr
    audience: str | None = None
    resource: str | None = None
    scope: str | None = None


UpstreamCredentialConfig = Annotated[
    NoCredential | HeaderCredential | ClientCredentialsCredential | TokenExchangeCredential,
    Field(discriminator="type"),
]


class ServerConfig(_Model):
    """One upstream: exactly one of `url` (streamable HTTP) or `command` (a stdio process the gateway runs)."""

    url: str | None = None
    command: tuple[str, ...] | None = None
    env: dict[str, str] = Field(default_factory=dict)  # extra environment for a stdio command
    scopes: tuple[str, ...] = DEFAULT_SCOPES  # scopes a client token needs to reach this server
    external: bool = False  # true when the server sends data outside the company (DLP rules apply)
    credential: UpstreamCredentialConfig = NoCredential()
    timeout: float = Field(30.0, gt=0, le=3600, description="seconds to wait for the upstream's answer")
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)

    @field_validator("url")
    @classmethod
    def _upstream_url(cls, url: str | None) -> str | None:
        if url is None:
            return url
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            host = None
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError("the upstream url must be an absolute http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            # A credential in the URL would be logged and shown; credentials go in `credential`.
            raise ValueError("the upstream url must not carry a user or password: use 'credential'")
        if parts.fragment:
            raise ValueError("the upstream url must not contain a fragment")
        return url

    @field_validator("scopes")
    @classmethod
    def _scope_tokens(cls, scopes: tuple[str, ...]) -> tuple[str, ...]:
        # RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        for scope in scopes:
            if not _SCOPE_TOKEN.fullmatch(scope):
                raise ValueError(f"{scope!r} is not a valid OAuth scope (RFC 6749 §3.3)")
        return scopes

    @model_validator(mode="after")
    def _one_transport(self) -> ServerConfig:
        if (self.url is None) == (self.command is None):
            raise ValueError("give exactly one of 'url' (streamable HTTP) or 'command' (stdio)")
        if self.command is not None and not self.command:
            raise ValueError("'command' must name a program")
        return self
