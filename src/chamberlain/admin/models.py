"""The admin API's request and response bodies.

Requests forbid unknown members and bound every string and list; responses are explicit models too, so the OpenAPI
document describes exactly what is returned (and schemathesis can hold the API to it). Secret values (passwords,
upstream credentials) appear only in request models, as write-only `SecretStr`; responses say whether one is set.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator

from chamberlain.identity.passwords import MAX_LENGTH as PASSWORD_MAX_LENGTH
from chamberlain.identity.passwords import MIN_LENGTH as PASSWORD_MIN_LENGTH
from chamberlain.policy.roles import RolesDocument
from chamberlain.tenancy.config import Quotas, RateLimits, TenantConfig


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Printable, no leading or trailing white space: what a person can read back and type again.
Username = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=200, pattern=r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"
    ),
]
# policy.roles: 1-64 of letters, digits, '.', '_' and '-', starting with a letter or digit.
RoleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
RoleList = Annotated[list[RoleName], Field(max_length=64)]
# An IdP group: a claim value, a SAML attribute value or an LDAP DN (which may contain '/', ',' and '=').
GroupName = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$")]
# store/servers.py SERVER_NAME: it becomes a URL path segment and part of token audiences.
ServerName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
# tenancy/config.py TENANT_ID.
TenantId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
# RFC 6749 §3.3 scope-token.
ScopeToken = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$")]
# The length rule is identity/passwords.py's, checked there with its own message (pydantic's would say "items" and
# the length given); the schema still states it.
Password = Annotated[
    SecretStr, Field(json_schema_extra={"minLength": PASSWORD_MIN_LENGTH, "maxLength": PASSWORD_MAX_LENGTH})
]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=500)]
# gateway/server_config.py VaultReference: SOURCE/NAME of a vault secret in the server's own tenant (not a secret).
VaultRef = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}/[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"),
    Field(description="SOURCE/NAME of a vault secret of this tenant"),
]
WriteOnlySecret = Annotated[SecretStr, Field(min_length=1, max_length=8192, description="write-only")]


# -- who is asking --------------------------------------------------------------------------------------------------


class Me(_Response):
    user_id: str
    username: str
    roles: list[str]
    tenant: str
    platform: bool = Field(description="an administrator of the default tenant, who also manages tenants")
    authenticated_by: Literal["token", "session"]
    csrf_token: str | None = Field(
        description="for a session: send it as X-CSRF-Token with POST, PUT, PATCH and DELETE; null for a token"
    )


# -- users ----------------------------------------------------------------------------------------------------------


class UserOut(_Response):
    id: str
    username: str
    roles: list[str]
    disabled: bool
    locked: bool = Field(description="locked out after failed sign-ins, until locked_until")
    locked_until: datetime | None
    mfa_enrolled: bool
    must_change_password: bool
    created_at: datetime
    last_login_at: datetime | None


class UserPage(_Response):
    items: list[UserOut]
    next_page_token: str | None


class UserCreate(_Request):
    username: Username
    password: Password = Field(description="the initial password (write-only)")
    roles: RoleList = Field(default_factory=list)
    must_change_password: bool = Field(True, description="ask for a new password at the first sign-in")


class UserUpdate(_Request):
    roles: RoleList | None = None
    disabled: bool | None = None


class UserRevocation(_Response):
    """What signing a user out everywhere ended."""

    sessions_revoked: int
    grants_revoked: int
    consents_withdrawn: int


# -- roles ----------------------------------------------------------------------------------------------------------


class RolesOut(_Response):
    document: RolesDocument
    source: Literal["configuration file", "stored", "built-in default"]
    editable: bool = Field(description="false when the configuration file sets the roles (it wins)")
    administrative_roles: list[str]
    warnings: list[str] = Field(description="server names no registered server answers to (reported, not fatal)")


# -- groups ---------------------------------------------------------------------------------------------------------


class GroupOut(_Response):
    group: str
    roles: list[str]
    created_at: datetime


class GroupList(_Response):
    items: list[GroupOut]


class GroupRoles(_Request):
    roles: Annotated[list[RoleName], Field(min_length=1, max_length=64)]


# -- clients --------------------------------------------------------------------------------------------------------


class ClientOut(_Response):
    client_id: str
    registration: Literal["dynamic", "metadata_document", "static"]
    client_name: str | None
    redirect_uris: list[str]
    grant_types: list[str]
    token_endpoint_auth_method: str | None
    scope: str | None
    created_at: datetime
    revoked_at: datetime | None
    metadata: dict[str, Any] = Field(description="the registered metadata (RFC 7591 §2), without any secret")


class ClientPage(_Response):
    items: list[ClientOut]
    next_page_token: str | None


class ClientRevocation(_Response):
    client: ClientOut
    grants_revoked: int


# -- consents -------------------------------------------------------------------------------------------------------


class ConsentOut(_Response):
    id: int
    user_id: str
    client_id: str
    redirect_uri: str
    scope: str
    resource: str
    created_at: datetime


class ConsentPage(_Response):
    items: list[ConsentOut]
    next_page_token: str | None


# -- servers --------------------------------------------------------------------------------------------------------


class CredentialOut(_Response):
    type: Literal["none", "header", "client_credentials", "token_exchange", "refresh_token"]
    header: str | None = None
    token_endpoint: str | None = None
    client_id: str | None = None
    audience: str | None = None
    resource: str | None = None
    scope: str | None = None
    vault: str | None = Field(None, description="the vault secret holding the header value or the refresh token")
    client_secret_vault: str | None = Field(None, description="the vault secret holding the client secret")
    per_user: bool | None = Field(None, description="refresh_token: each user's own grant (NAME.USER_ID)")
    secret_set: bool = Field(description="whether a secret value is stored with the server (it is never returned)")


class ServerOut(_Response):
    name: str
    resource: str = Field(description="the URL clients use as RFC 8707 resource and token audience")
    source: Literal["database", "config"]
    transport: Literal["http", "stdio", "built-in"]
    url: str | None
    command: list[str] | None
    env_names: list[str] = Field(description="names of the stdio environment's variables (values are secret)")
    scopes: list[str]
    external: bool
    timeout: float | None
    max_message_bytes: int | None
    credential: CredentialOut
    created_at: datetime | None


class ServerList(_Response):
    items: list[ServerOut]


class NoCredentialIn(_Request):
    type: Literal["none"]


# Each secret is given inline (write-only, stored encrypted with the server) or named in the vault, not both: the
# server configuration's own rules (gateway/server_config.py) decide, and their errors name the key.


class HeaderCredentialIn(_Request):
    type: Literal["header"]
    header: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")] = "Authorization"
    value: WriteOnlySecret | None = None
    vault: VaultRef | None = None


class ClientCredentialsIn(_Request):
    type: Literal["client_credentials"]
    token_endpoint: Url
    client_id: ShortText
    client_secret: WriteOnlySecret | None = None
    client_secret_vault: VaultRef | None = None
    scope: ShortText | None = None
    resource: Url | None = None


class TokenExchangeIn(_Request):
    type: Literal["token_exchange"]
    token_endpoint: Url
    client_id: ShortText
    client_secret: WriteOnlySecret | None = None
    client_secret_vault: VaultRef | None = None
    audience: ShortText | None = None
    resource: Url | None = None
    scope: ShortText | None = None


class RefreshTokenIn(_Request):
    """Access tokens refreshed (RFC 6749 §6) from a refresh token in the vault: the gateway's own, or with
    `per_user` each user's own (the secret NAME.USER_ID, bound to that user)."""

    type: Literal["refresh_token"]
    token_endpoint: Url
    client_id: ShortText
    client_secret: WriteOnlySecret | None = None
    client_secret_vault: VaultRef | None = None
    vault: VaultRef
    scope: ShortText | None = None
    resource: Url | None = None
    per_user: bool = False


CredentialIn = Annotated[
    NoCredentialIn | HeaderCredentialIn | ClientCredentialsIn | TokenExchangeIn | RefreshTokenIn,
    Field(discriminator="type"),
]


class ServerCreate(_Request):
    """An upstream reached over streamable HTTP. Stdio servers (a command the gateway runs) are registered with
    the CLI or the configuration file only: over an API, a command line would be remote code execution."""

    name: ServerName
    url: Url
    scopes: Annotated[list[ScopeToken], Field(min_length=1, max_length=32)] | None = None
    external: bool = False
    timeout: Annotated[float, Field(gt=0, le=3600)] | None = None
    max_message_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] | None = None
    credential: CredentialIn = Field(default_factory=lambda: NoCredentialIn(type="none"))


# -- sessions -------------------------------------------------------------------------------------------------------


class SessionOut(_Response):
    handle: str = Field(description="identifies the session to administrators; it is not the session id")
    user_id: str
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime | None
    idle_expires_at: datetime | None
    mfa: bool
    client_id: str | None
    roles: list[str] | None


class SessionPage(_Response):
    items: list[SessionOut]
    next_page_token: str | None


# -- quotas ---------------------------------------------------------------------------------------------------------


class Usage(_Response):
    users: int
    clients: int
    servers: int


class QuotasOut(_Response):
    quotas: Quotas
    rate_limits: RateLimits
    usage: Usage
    editable: bool = Field(description="false when the configuration file sets them, or for a tenant's own admins")


# A count beyond this is no quota (and would not fit the 64-bit integers JSON tools and the audit log handle).
MAX_QUOTA = 10**12


def _check_quotas(quotas: Quotas | None) -> None:
    for name, value in quotas or Quotas():
        if value is not None and value > MAX_QUOTA:
            raise ValueError(f"quotas.{name} may be at most {MAX_QUOTA}")


class QuotasIn(_Request):
    quotas: Quotas
    rate_limits: RateLimits

    @model_validator(mode="after")
    def _bounded(self) -> QuotasIn:
        _check_quotas(self.quotas)
        return self


# -- tenants --------------------------------------------------------------------------------------------------------


class TenantOut(_Response):
    id: str
    name: str
    issuer: str
    admin_api: str
    created_at: datetime
    config: TenantConfig = Field(description="the stored configuration (the configuration file's sections win)")


class TenantList(_Response):
    items: list[TenantOut]


class InitialAdmin(_Request):
    """The new tenant's first administrator: nobody else can sign in to it."""

    username: Username
    password: Password
    roles: Annotated[list[RoleName], Field(min_length=1, max_length=64)] = Field(default_factory=lambda: ["admin"])


class TenantCreate(_Request):
    id: TenantId
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    config: TenantConfig | None = None
    initial_admin: InitialAdmin | None = None

    @model_validator(mode="after")
    def _bounded(self) -> TenantCreate:
        _check_quotas(self.config.quotas if self.config else None)
        return self


class TenantCreated(TenantOut):
    initial_admin_id: str | None


class TenantUpdate(_Request):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    config: TenantConfig | None = None

    @model_validator(mode="after")
    def _bounded(self) -> TenantUpdate:
        _check_quotas(self.config.quotas if self.config else None)
        return self
