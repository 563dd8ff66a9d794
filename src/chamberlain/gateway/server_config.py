"""How one upstream MCP server is reached: its transport, the credential the gateway presents, and its limits.

The same model is read from the YAML config (`servers:`) and stored per server in the database (the CLI, the admin
API), so the ways of registering a server cannot drift apart. Secret values are `SecretStr`: they never print.

A credential holds its secret inline (`value`, `client_secret`: stored encrypted under the master key with the
server) or names a vault secret instead (`vault`, `client_secret_vault`: "SOURCE/NAME" in the server's own tenant),
never both. A vault reference is not a secret: it is shown and recorded like any other setting. Inline secret fields
stay typed `SecretStr` with "" meaning "not given", because the server store finds the fields to encrypt by that
annotation (store/servers.py): an optional `SecretStr | None` would be written to the clear-text column.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from chamberlain.dlp.levels import LevelName
from chamberlain.net.hosts import is_loopback_host
from chamberlain.transport.settings import parse_spki_pin
from chamberlain.vault.backend import check_name

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
    # hide_input_in_errors: a model-level check (an inline secret and a vault reference together) would otherwise
    # put the whole input, secret values included, into the ValidationError's text.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _authorization_server_url(url: str, what: str, rule: str, *, query: bool = True) -> str:
    """An admin-configured URL of an upstream authorization server: trusted, but what crosses to it (the gateway's
    client secret, an authorization code) must not cross the network in clear text (RFC 6749 §2.3.1, §3.1.2.1;
    OAuth 2.1 §1.5), so plain http is allowed on loopback only; absolute, with no fragment (`rule` names where
    that comes from), no user or password, and no query where `query` is false."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ValueError(f"the {what} must be an absolute https URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError(f"the {what} must be an absolute https URL")
    if parts.fragment or (parts.query and not query):
        forbidden = "a fragment" if query else "a query or fragment"
        raise ValueError(f"the {what} must not contain {forbidden} ({rule})")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"the {what} must not carry a user or password")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ValueError(f"the {what} must use https (plain http is allowed only on loopback)")
    return url


def _token_endpoint_url(url: str) -> str:
    return _authorization_server_url(url, "token endpoint", "RFC 6749 §3.2")


TokenEndpointUrl = Annotated[str, AfterValidator(_token_endpoint_url)]
NOT_GIVEN = SecretStr("")  # an inline secret that was not given (the credential names a vault secret instead)
# A per-user secret's name: the configured name, a dot, then the user's id. User ids are UUIDs, inside the secret
# name alphabet; any other id (from a future identity connector) is replaced by a digest so the name stays valid.
# A suffix that is an id has at most 64 characters, a digest 66, so the two kinds never coincide.
_USER_ID_IN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_PER_USER_NAME = 128 - 1 - 66  # a secret name's limit, the dot, and the longest suffix ("u-" + 64 hex digits)


VAULT_REFERENCE_FORMAT = "vault-reference"


def _vault_reference(reference: str) -> str:
    """A reference "SOURCE/NAME": a secret of the server's own tenant. No tenant part: a server can never name another
    tenant's secret, whatever it writes."""
    source, separator, name = reference.partition("/")
    if not separator or "/" in name:
        raise ValueError("a vault reference is SOURCE/NAME (the secret NAME of source SOURCE in this tenant)")
    check_name(source, "vault source")
    check_name(name, "vault secret name")
    return reference


# Marked in JSON Schema (the admin API's OpenAPI): a field of this type names a secret and never holds one.
VaultReference = Annotated[
    str, AfterValidator(_vault_reference), Field(json_schema_extra={"format": VAULT_REFERENCE_FORMAT})
]


def split_vault_reference(reference: str) -> tuple[str, str]:
    """(source, name) of a reference the model validated."""
    source, _, name = reference.partition("/")
    return source, name


def _given(secret: SecretStr) -> bool:
    return bool(secret.get_secret_value())


def _one_of(inline: SecretStr, reference: str | None, inline_key: str, reference_key: str, *, required: bool) -> None:
    """An inline secret or a vault reference, not both (and one of them when `required`)."""
    if _given(inline) and reference is not None:
        raise ValueError(f"give '{inline_key}' or '{reference_key}', not both")
    if required and not _given(inline) and reference is None:
        raise ValueError(f"give '{inline_key}' (or '{inline_key}_env') or '{reference_key}' (a vault secret)")


class NoCredential(_Model):
    """The upstream needs no credential (an internal server on a trusted network)."""

    type: Literal["none"] = "none"


class HeaderCredential(_Model):
    """A static secret sent in one header: an API key, or `Authorization: Bearer …` for a fixed token. The value is
    inline (`value`) or a vault secret (`vault`), read from the vault and checked the same way when first used."""

    type: Literal["header"] = "header"
    header: str = Field("Authorization", pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # RFC 9110 §5.1 token
    value: SecretStr = NOT_GIVEN
    vault: VaultReference | None = None

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
        if _given(value) and not is_field_value(value.get_secret_value()):
            raise ValueError("the header value must be non-empty printable ASCII (no line breaks)")
        return value

    @model_validator(mode="after")
    def _value_or_vault(self) -> HeaderCredential:
        if not _given(self.value) and self.vault is None:
            raise ValueError(
                "the header value must be non-empty printable ASCII (no line breaks), or name a vault secret "
                "with 'vault'"
            )
        _one_of(self.value, self.vault, "value", "vault", required=True)
        return self


def is_field_value(value: str) -> bool:
    """RFC 9110 §5.5: a non-empty header field value of visible ASCII, spaces and tabs (no CR or LF)."""
    return bool(_FIELD_VALUE.fullmatch(value))


class ClientCredentialsCredential(_Model):
    """An OAuth token the gateway obtains for itself (RFC 6749 §4.4) and renews shortly before it expires."""

    type: Literal["client_credentials"] = "client_credentials"
    token_endpoint: TokenEndpointUrl
    client_id: str
    client_secret: SecretStr = NOT_GIVEN
    client_secret_vault: VaultReference | None = None
    scope: str | None = None
    resource: str | None = None  # RFC 8707 resource indicator for the upstream

    @model_validator(mode="after")
    def _one_secret(self) -> ClientCredentialsCredential:
        _one_of(self.client_secret, self.client_secret_vault, "client_secret", "client_secret_vault", required=True)
        return self


class TokenExchangeCredential(_Model):
    """RFC 8693: a token for this user and this upstream's audience, from the upstream's token endpoint.

    The subject token is a short-lived JWT Chamberlain signs for the user (never the client's own token).
    """

    type: Literal["token_exchange"] = "token_exchange"
    token_endpoint: TokenEndpointUrl
    client_id: str
    client_secret: SecretStr = NOT_GIVEN
    client_secret_vault: VaultReference | None = None
    audience: str | None = None
    resource: str | None = None
    scope: str | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> TokenExchangeCredential:
        _one_of(self.client_secret, self.client_secret_vault, "client_secret", "client_secret_vault", required=True)
        return self


def _authorization_endpoint_url(url: str) -> str:
    # A query is kept when the request's parameters are added (RFC 6749 §3.1).
    return _authorization_server_url(url, "authorization endpoint", "RFC 6749 §3.1")


def _issuer_identifier(url: str) -> str:
    return _authorization_server_url(url, "issuer", "RFC 8414 §2", query=False)


AuthorizationEndpointUrl = Annotated[str, AfterValidator(_authorization_endpoint_url)]
IssuerIdentifier = Annotated[str, AfterValidator(_issuer_identifier)]


class RefreshTokenCredential(_Model):
    """A long-lived refresh token kept in the vault, exchanged at the upstream's token endpoint for short-lived
    access tokens (RFC 6749 §6), which are cached until shortly before they expire.

    Shared (`per_user: false`): the gateway's own grant, the secret `vault` names. Per user (`per_user: true`): each
    user's own grant to the source, so the source's document-level permissions apply to that user. The user's
    refresh token is the secret `NAME.USER_ID` of the same source (see `per_user_secret_name`), stored as a
    per-user credential bound to that user; it is used on that user's requests only.

    With `authorization_endpoint` (per-user only), users store their own grant: `{issuer}/connect/SERVER` sends the
    signed-in user to the upstream's authorization endpoint (the authorization code grant with PKCE, RFC 6749 §4.1,
    RFC 7636), asking for `scope` (and `resource`, RFC 8707), and the refresh token it yields becomes the user's
    secret (web/connect.py): no administrator handles it. `issuer` is the upstream authorization server's issuer
    identifier (RFC 8414 §2); when set, the authorization response must name it in `iss` (RFC 9207 §2.4), which
    stops a mix-up with another server's response. Without `authorization_endpoint`, an administrator stores each
    user's token (`chamberlain vault set SOURCE NAME.USER_ID --user NAME --kind refresh_token --bind SERVER`).

    The client authenticates with client_secret_basic when it has a secret (inline or in the vault); without one
    it is a public client and sends only `client_id` (RFC 6749 §2.3.1, §3.2.1). A rotated refresh token in the
    answer (RFC 6749 §6, OAuth 2.1 §4.3.1) is stored back as the secret's next version. An `invalid_grant` answer
    (the grant was revoked or expired) marks the credential unhealthy: the user must consent again.
    """

    type: Literal["refresh_token"] = "refresh_token"
    token_endpoint: TokenEndpointUrl
    client_id: str
    client_secret: SecretStr = NOT_GIVEN
    client_secret_vault: VaultReference | None = None
    vault: VaultReference
    scope: str | None = None  # RFC 6749 §3.3: asked for at authorization (connect) and on each refresh
    resource: str | None = None  # RFC 8707 §2.2: a resource in the refresh request narrows the access token
    per_user: bool = False
    authorization_endpoint: AuthorizationEndpointUrl | None = None  # per-user only: where users connect
    issuer: IssuerIdentifier | None = None  # RFC 9207: the `iss` the authorization response must carry

    @model_validator(mode="after")
    def _at_most_one_secret(self) -> RefreshTokenCredential:
        _one_of(self.client_secret, self.client_secret_vault, "client_secret", "client_secret_vault", required=False)
        if self.per_user and len(split_vault_reference(self.vault)[1]) > MAX_PER_USER_NAME:
            raise ValueError(
                f"with per_user the vault secret's name must be at most {MAX_PER_USER_NAME} characters: each "
                "user's secret is named NAME.USER_ID"
            )
        if self.authorization_endpoint is not None and not self.per_user:
            raise ValueError(
                "'authorization_endpoint' is for per_user credentials (each user connects their own grant); a "
                "shared refresh token is stored by an administrator"
            )
        if self.issuer is not None and self.authorization_endpoint is None:
            raise ValueError("'issuer' is checked in authorization responses: give 'authorization_endpoint' too")
        return self

    @property
    def connectable(self) -> bool:
        """Users connect their own grant at `{issuer}/connect/SERVER` (web/connect.py)."""
        return self.per_user and self.authorization_endpoint is not None


def per_user_secret_name(name: str, user_id: str) -> str:
    """The name of `user_id`'s own secret under a per-user credential's configured `name`. The vault record's
    user binding is what enforces ownership; the name only keeps the users' secrets apart."""
    suffix = user_id if _USER_ID_IN_NAME.fullmatch(user_id) else "u-" + hashlib.sha256(user_id.encode()).hexdigest()
    return check_name(f"{name}.{suffix}", "per-user secret name")


class UpstreamClientCertificate(_Model):
    """The gateway's TLS client certificate for an upstream that demands one (mutual TLS): both PEM, in the vault."""

    certificate: VaultReference = Field(description="PEM certificate (then its intermediates), a vault secret")
    private_key: VaultReference = Field(description="its unencrypted PEM private key, a vault secret")


UpstreamCredentialConfig = Annotated[
    NoCredential | HeaderCredential | ClientCredentialsCredential | TokenExchangeCredential | RefreshTokenCredential,
    Field(discriminator="type"),
]


class ServerConfig(_Model):
    """One upstream: exactly one of `url` (streamable HTTP) or `command` (a stdio process the gateway runs)."""

    url: str | None = None
    command: tuple[str, ...] | None = None
    env: dict[str, str] = Field(default_factory=dict)  # extra environment for a stdio command
    scopes: tuple[str, ...] = DEFAULT_SCOPES  # scopes a client token needs to reach this server
    # Data protection (dlp/): a server or tool marked external sends what it receives outside the company, so the
    # arguments it gets are held to the levels external lookups may receive; `classification` is the level of
    # everything the server returns (labels, rules and detectors may raise it, never lower it).
    external: bool = False
    external_tools: tuple[str, ...] = Field((), description="tools of this server that are external")
    classification: LevelName | None = None
    credential: UpstreamCredentialConfig = NoCredential()
    timeout: float = Field(30.0, gt=0, le=3600, description="seconds to wait for the upstream's answer")
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # TLS to an https upstream (gateway/http_upstream.py): a client certificate for mutual TLS, the CAs to trust
    # instead of the public ones (a PEM file, or a vault secret), and pins of the upstream's key (SHA-256 of its
    # SubjectPublicKeyInfo, hex or base64url), checked after the chain.
    client_certificate: UpstreamClientCertificate | None = None
    ca: Path | None = Field(None, description="PEM file of the CAs the upstream's certificate must chain to")
    ca_vault: VaultReference | None = Field(None, description="the same as a vault secret")
    pinned_spki: tuple[str, ...] = ()

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
        tls_options = self.client_certificate is not None or self.ca or self.ca_vault or self.pinned_spki
        if tls_options and not (self.url or "").startswith("https://"):
            raise ValueError("client_certificate, ca, ca_vault and pinned_spki need an https:// url")
        if self.ca is not None and self.ca_vault is not None:
            raise ValueError("give 'ca' or 'ca_vault', not both")
        for pin in self.pinned_spki:
            parse_spki_pin(pin)
        return self
