"""RFC 7591 §2 client metadata: one strict parser shared by dynamic registration and CIMD documents.

Unknown members are ignored, as RFC 7591 §2 allows ("the authorization server MUST ignore any client
metadata sent by the client that it does not understand"); the size of the whole document is bounded
so that ignoring them costs nothing. Language-tagged variants (RFC 7591 §2.2, "client_name#fr") are
unknown members in that sense and are dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

from cryptography import x509

from chamberlain.oauth.errors import INVALID_CLIENT_METADATA, INVALID_REDIRECT_URI, OAuthError
from chamberlain.oauth.redirect_uri import validate_redirect_uri

TokenEndpointAuthMethod = Literal[
    "none",
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
]
JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"  # RFC 7523 §2.1 (ID-JAG)
GrantType = Literal[
    "authorization_code", "refresh_token", "client_credentials", "urn:ietf:params:oauth:grant-type:jwt-bearer"
]
ResponseType = Literal["code"]

# RFC 8705 §2.1 (PKI) and §2.2 (self-signed): the client proves itself with its TLS client certificate.
MTLS_AUTH_METHODS: Final[frozenset[str]] = frozenset({"tls_client_auth", "self_signed_tls_client_auth"})
# RFC 8705 §2.1.2: exactly one of these says which certificate a tls_client_auth client holds.
TLS_CLIENT_AUTH_NAMES: Final = (
    "tls_client_auth_subject_dn",
    "tls_client_auth_san_dns",
    "tls_client_auth_san_uri",
    "tls_client_auth_san_ip",
    "tls_client_auth_san_email",
)

TOKEN_ENDPOINT_AUTH_METHODS: Final[frozenset[str]] = frozenset(
    {"none", "client_secret_basic", "client_secret_post", "private_key_jwt", *MTLS_AUTH_METHODS}
)
GRANT_TYPES: Final[frozenset[str]] = frozenset(
    {"authorization_code", "refresh_token", "client_credentials", JWT_BEARER_GRANT}
)
RESPONSE_TYPES: Final[frozenset[str]] = frozenset({"code"})

MAX_STRING_LENGTH: Final = 2000
MAX_CLIENT_NAME_LENGTH: Final = 200
MAX_CONTACTS: Final = 10
MAX_TYPE_LIST: Final = 10
MAX_JWKS_KEYS: Final = 10
# The whole document, unknown members included, serialised as compact JSON.
MAX_DOCUMENT_BYTES: Final = 64 * 1024

# RFC 7517 §6.2.2 / §6.3.2 / §6.4.1: members that only appear in private or symmetric keys.
_PRIVATE_JWK_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), separated by single spaces.
_SCOPE = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+(?: [\x21\x23-\x5B\x5D-\x7E]+)*$")


@dataclass(frozen=True)
class ClientMetadata:
    """Validated RFC 7591 §2 client metadata.

    `token_endpoint_auth_method` defaults to "client_secret_basic" because RFC 7591 §2 says so when the
    member is omitted; callers that cannot issue secrets (CIMD) pass a different default to the parser.
    """

    redirect_uris: list[str] = field(default_factory=list)
    token_endpoint_auth_method: TokenEndpointAuthMethod = "client_secret_basic"
    grant_types: list[GrantType] = field(default_factory=lambda: ["authorization_code"])
    response_types: list[ResponseType] = field(default_factory=lambda: ["code"])
    client_name: str | None = None
    client_uri: str | None = None
    logo_uri: str | None = None
    scope: str | None = None
    contacts: list[str] = field(default_factory=list)
    tos_uri: str | None = None
    policy_uri: str | None = None
    jwks_uri: str | None = None
    jwks: dict[str, Any] | None = None
    software_id: str | None = None
    software_version: str | None = None
    # RFC 8705 §2.1.2: the one certificate field (name, value) a tls_client_auth client is recognised by.
    tls_client_auth_name: tuple[str, str] | None = None
    # RFC 8705 §3.4: access tokens for this client are bound to its TLS client certificate.
    tls_client_certificate_bound_access_tokens: bool = False

    @property
    def is_public(self) -> bool:
        """RFC 6749 §2.1: a client that cannot authenticate at the token endpoint."""
        return self.token_endpoint_auth_method == "none"

    @property
    def uses_secret(self) -> bool:
        """RFC 6749 §2.3.1: the methods that need a client secret issued at registration."""
        return self.token_endpoint_auth_method in ("client_secret_basic", "client_secret_post")

    @property
    def authenticates_with_certificate(self) -> bool:
        return self.token_endpoint_auth_method in MTLS_AUTH_METHODS

    @property
    def certificate_bound(self) -> bool:
        """Tokens carry `cnf.x5t#S256` (RFC 8705 §3.1): asked for (§3.4), or implied by mTLS authentication, since
        a client that holds a certificate loses nothing by it and a stolen token becomes useless without the key."""
        return self.tls_client_certificate_bound_access_tokens or self.authenticates_with_certificate

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready members, omitting unset ones; `parse_client_metadata` reads it back unchanged."""
        members: dict[str, Any] = {
            "redirect_uris": list(self.redirect_uris),
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "grant_types": list(self.grant_types),
            "response_types": list(self.response_types),
        }
        if self.contacts:
            members["contacts"] = list(self.contacts)
        for name in _OPTIONAL_STRING_FIELDS:
            value = getattr(self, name)
            if value is not None:
                members[name] = value
        if self.jwks is not None:
            members["jwks"] = json.loads(json.dumps(self.jwks))
        if self.tls_client_auth_name is not None:
            members[self.tls_client_auth_name[0]] = self.tls_client_auth_name[1]
        if self.tls_client_certificate_bound_access_tokens:
            members["tls_client_certificate_bound_access_tokens"] = True
        return members


_OPTIONAL_STRING_FIELDS: Final = (
    "client_name",
    "client_uri",
    "logo_uri",
    "scope",
    "tos_uri",
    "policy_uri",
    "jwks_uri",
    "software_id",
    "software_version",
)


def _metadata_error(description: str) -> OAuthError:
    return OAuthError(INVALID_CLIENT_METADATA, description)


def _redirect_error(description: str) -> OAuthError:
    return OAuthError(INVALID_REDIRECT_URI, description)


def _check_document_size(data: Mapping[str, Any]) -> None:
    try:
        size = len(json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError, RecursionError):
        raise _metadata_error("client metadata must be plain JSON") from None
    if size > MAX_DOCUMENT_BYTES:
        raise _metadata_error(f"client metadata must be at most {MAX_DOCUMENT_BYTES} bytes")


def _optional_string(data: Mapping[str, Any], name: str, max_length: int = MAX_STRING_LENGTH) -> str | None:
    # A JSON null is read as "not sent": several SDKs serialise unset optional members that way.
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _metadata_error(f"{name} must be a string")
    if not value or len(value) > max_length:
        raise _metadata_error(f"{name} must be between 1 and {max_length} characters")
    if not value.isprintable():
        raise _metadata_error(f"{name} must not contain control characters")
    return value


def _string_list(data: Mapping[str, Any], name: str, *, max_items: int) -> list[str] | None:
    make_error = _redirect_error if name == "redirect_uris" else _metadata_error
    value = data.get(name)
    if value is None:
        return None
    # RFC 7591 §2: these members are JSON arrays; a bare string is a type error, not a one-item list.
    if not isinstance(value, list):
        raise make_error(f"{name} must be a JSON array of strings")
    if len(value) > max_items:
        raise make_error(f"{name} must have at most {max_items} entries")
    items: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise make_error(f"{name} must contain only non-empty strings")
        if len(item) > MAX_STRING_LENGTH:
            raise make_error(f"each entry of {name} must be at most {MAX_STRING_LENGTH} characters")
        if not item.isprintable():
            raise make_error(f"{name} must not contain control characters")
        if item not in items:
            items.append(item)
    return items


def _https_uri(data: Mapping[str, Any], name: str) -> str | None:
    value = _optional_string(data, name)
    if value is None:
        return None
    # Checked before urlsplit, which silently drops tabs and newlines (WHATWG URL behaviour).
    if any(char.isspace() or not char.isprintable() or not char.isascii() for char in value):
        raise _metadata_error(f"{name} must not contain whitespace, control or non-ASCII characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for an out-of-range port
    except ValueError:
        raise _metadata_error(f"{name} must be a valid URL") from None
    if parts.scheme != "https" or not parts.hostname:
        # RFC 7591 §5: these URIs are shown to users on consent screens; served over anything but
        # https, a network attacker could swap the logo or the terms users are shown.
        raise _metadata_error(f"{name} must be an absolute https URL")
    if "@" in parts.netloc:
        raise _metadata_error(f"{name} must not contain userinfo")
    return value


def _auth_method(data: Mapping[str, Any], default: TokenEndpointAuthMethod) -> TokenEndpointAuthMethod:
    value = data.get("token_endpoint_auth_method")
    if value is None:
        return default
    if not isinstance(value, str) or value not in TOKEN_ENDPOINT_AUTH_METHODS:
        raise _metadata_error(
            "token_endpoint_auth_method must be one of " + ", ".join(sorted(TOKEN_ENDPOINT_AUTH_METHODS))
        )
    return cast(TokenEndpointAuthMethod, value)


def _grant_types(data: Mapping[str, Any]) -> list[GrantType]:
    values = _string_list(data, "grant_types", max_items=MAX_TYPE_LIST)
    if values is None:
        # RFC 7591 §2: the default is "authorization_code".
        return ["authorization_code"]
    unsupported = [value for value in values if value not in GRANT_TYPES]
    if unsupported:
        # OAuth 2.1 §10 removed the implicit and password grants; nothing else is implemented here.
        raise _metadata_error(f"unsupported grant_types: {', '.join(unsupported)}")
    if not values:
        raise _metadata_error("grant_types must not be empty")
    return cast(list[GrantType], values)


def _response_types(data: Mapping[str, Any], grant_types: list[GrantType]) -> list[ResponseType]:
    values = _string_list(data, "response_types", max_items=MAX_TYPE_LIST)
    if values is None:
        # RFC 7591 §2 defaults to "code"; a client without the authorization_code grant has no use for
        # it, and defaulting it in would make that client inconsistent under §2.1.
        return ["code"] if "authorization_code" in grant_types else []
    unsupported = [value for value in values if value not in RESPONSE_TYPES]
    if unsupported:
        raise _metadata_error(f"unsupported response_types: {', '.join(unsupported)} (only code)")
    return cast(list[ResponseType], values)


def _check_grant_consistency(
    grant_types: list[GrantType],
    response_types: list[ResponseType],
    redirect_uris: list[str],
    auth_method: TokenEndpointAuthMethod,
) -> None:
    # RFC 7591 §2.1: grant_types and response_types must agree.
    has_code_grant = "authorization_code" in grant_types
    if has_code_grant != ("code" in response_types):
        raise _metadata_error('grant type "authorization_code" and response type "code" go together')
    if has_code_grant and not redirect_uris:
        # RFC 6749 §3.1.2.2 (and RFC 9700 §4.1.3, which makes it exact-match): redirects need registered URIs.
        raise _redirect_error("redirect_uris is required for the authorization_code grant")
    if "refresh_token" in grant_types and not has_code_grant:
        # RFC 6749 §4.4.3: a client credentials response SHOULD NOT carry a refresh token, so a
        # refresh grant only makes sense alongside authorization_code.
        raise _metadata_error('grant type "refresh_token" requires "authorization_code"')
    if "client_credentials" in grant_types and auth_method == "none":
        # RFC 6749 §4.4: the client credentials grant MUST only be used by confidential clients.
        raise _metadata_error('grant type "client_credentials" requires a confidential client')
    if JWT_BEARER_GRANT in grant_types and auth_method == "none":
        # draft-ietf-oauth-identity-assertion-authz-grant §8.1: ID-JAGs are for confidential clients only.
        raise _metadata_error(f'grant type "{JWT_BEARER_GRANT}" requires a confidential client')


def _jwks(data: Mapping[str, Any]) -> dict[str, Any] | None:
    value = data.get("jwks")
    if value is None:
        return None
    # RFC 7517 §5: a JWK Set is an object with a "keys" array of JWK objects.
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise _metadata_error('jwks must be a JWK Set: an object with a "keys" array')
    keys = value["keys"]
    if not keys or len(keys) > MAX_JWKS_KEYS:
        raise _metadata_error(f"jwks must contain between 1 and {MAX_JWKS_KEYS} keys")
    for key in keys:
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str):
            raise _metadata_error('every key in jwks must be an object with a "kty" member (RFC 7517 §4.1)')
        if _PRIVATE_JWK_MEMBERS & key.keys():
            # RFC 7591 §2: jwks "contains the client's public keys"; a private or symmetric key here
            # would be a leaked secret, and accepting it would teach clients to publish them.
            raise _metadata_error("jwks must contain public keys only")
    return cast(dict[str, Any], json.loads(json.dumps(value)))


def _check_key_material(
    auth_method: TokenEndpointAuthMethod, jwks_uri: str | None, jwks: dict[str, Any] | None
) -> None:
    if jwks_uri is not None and jwks is not None:
        # RFC 7591 §2: "The jwks_uri and jwks parameters MUST NOT both be present in the same request".
        raise _metadata_error("jwks_uri and jwks must not both be present")
    if auth_method == "private_key_jwt" and jwks_uri is None and jwks is None:
        # RFC 7523 §2.2 client authentication needs the key to verify against.
        raise _metadata_error("private_key_jwt requires jwks or jwks_uri")
    if auth_method == "self_signed_tls_client_auth" and jwks_uri is None and jwks is None:
        # RFC 8705 §2.2.2: the self-signed certificate is registered in the client's jwks (x5c) or jwks_uri.
        raise _metadata_error("self_signed_tls_client_auth requires jwks or jwks_uri")


def _tls_client_auth_name(data: Mapping[str, Any], auth_method: TokenEndpointAuthMethod) -> tuple[str, str] | None:
    present = [name for name in TLS_CLIENT_AUTH_NAMES if data.get(name) is not None]
    if auth_method != "tls_client_auth":
        if present:
            raise _metadata_error(f"{present[0]} is only for token_endpoint_auth_method tls_client_auth")
        return None
    # RFC 8705 §2.1.2: "A client using the tls_client_auth authentication method MUST use exactly one of" them.
    if len(present) != 1:
        raise _metadata_error("tls_client_auth requires exactly one of " + ", ".join(TLS_CLIENT_AUTH_NAMES))
    name = present[0]
    value = _optional_string(data, name)
    assert value is not None
    if name == "tls_client_auth_subject_dn":
        value = canonical_dn(value)
    return name, value


def canonical_dn(value: str) -> str:
    """An RFC 4514 distinguished name as cryptography writes it, so that spelling variants compare equal."""
    try:
        return x509.Name.from_rfc4514_string(value).rfc4514_string()
    except ValueError:
        raise _metadata_error("tls_client_auth_subject_dn must be an RFC 4514 distinguished name") from None


def _bound_tokens(data: Mapping[str, Any]) -> bool:
    value = data.get("tls_client_certificate_bound_access_tokens", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _metadata_error("tls_client_certificate_bound_access_tokens must be a boolean")
    return value


def _scope(data: Mapping[str, Any]) -> str | None:
    value = _optional_string(data, "scope")
    if value is not None and not _SCOPE.match(value):
        raise _metadata_error("scope must be space-separated scope tokens (RFC 6749 §3.3)")
    return value


def _redirect_uris(data: Mapping[str, Any], max_redirect_uris: int) -> list[str]:
    values = _string_list(data, "redirect_uris", max_items=max_redirect_uris) or []
    for uri in values:
        validate_redirect_uri(uri)
    return values


def parse_client_metadata(
    data: object,
    *,
    max_redirect_uris: int = 10,
    default_auth_method: TokenEndpointAuthMethod = "client_secret_basic",
) -> ClientMetadata:
    """Validate RFC 7591 §2 client metadata; raise OAuthError(invalid_client_metadata | invalid_redirect_uri).

    `default_auth_method` applies when the member is absent; RFC 7591 §2 makes that
    "client_secret_basic", which is right for dynamic registration but impossible for a CIMD client.
    """
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        raise _metadata_error("client metadata must be a JSON object")
    document = cast(dict[str, Any], data)
    _check_document_size(document)
    auth_method = _auth_method(document, default_auth_method)
    grant_types = _grant_types(document)
    response_types = _response_types(document, grant_types)
    redirect_uris = _redirect_uris(document, max_redirect_uris)
    _check_grant_consistency(grant_types, response_types, redirect_uris, auth_method)
    jwks_uri = _https_uri(document, "jwks_uri")
    jwks = _jwks(document)
    _check_key_material(auth_method, jwks_uri, jwks)
    return ClientMetadata(
        redirect_uris=redirect_uris,
        token_endpoint_auth_method=auth_method,
        grant_types=grant_types,
        response_types=response_types,
        client_name=_optional_string(document, "client_name", MAX_CLIENT_NAME_LENGTH),
        client_uri=_https_uri(document, "client_uri"),
        logo_uri=_https_uri(document, "logo_uri"),
        scope=_scope(document),
        contacts=_string_list(document, "contacts", max_items=MAX_CONTACTS) or [],
        tos_uri=_https_uri(document, "tos_uri"),
        policy_uri=_https_uri(document, "policy_uri"),
        jwks_uri=jwks_uri,
        jwks=jwks,
        software_id=_optional_string(document, "software_id"),
        software_version=_optional_string(document, "software_version"),
        tls_client_auth_name=_tls_client_auth_name(document, auth_method),
        tls_client_certificate_bound_access_tokens=_bound_tokens(document),
    )
